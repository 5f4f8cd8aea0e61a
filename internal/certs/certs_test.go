package certs

import (
	"testing"
	"time"
)

func TestServingCertificateRenewal(t *testing.T) {
	ca, err := NewCA("test")
	if err != nil {
		t.Fatal(err)
	}
	kp, err := ca.Serving("svc.ns.svc", "127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	if NeedsRenewal(kp.Cert, ca, "svc.ns.svc", now) || NeedsRenewal(kp.Cert, ca, "127.0.0.1", now) {
		t.Error("a fresh certificate needs renewal")
	}
	if !NeedsRenewal(kp.Cert, ca, "other.ns.svc", now) {
		t.Error("a certificate for another host does not need renewal")
	}
	if !NeedsRenewal(kp.Cert, ca, "svc.ns.svc", now.Add(ServingValidity-24*time.Hour)) {
		t.Error("a certificate a day from expiry does not need renewal")
	}
	other, _ := NewCA("other")
	if !NeedsRenewal(kp.Cert, other, "svc.ns.svc", now) {
		t.Error("a certificate from another CA does not need renewal")
	}
	if back, err := LoadCA(ca.KeyPair); err != nil || NeedsRenewal(kp.Cert, back, "svc.ns.svc", now) {
		t.Errorf("reloaded CA: %v", err)
	}
}
