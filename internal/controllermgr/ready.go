package controllermgr

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sync/atomic"
	"time"

	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
)

// cacheSynced is a readiness check that passes once every informer the
// controller has started has synced: before that, rule status, playbook
// lookups and Incident folding read an empty or partial cache.
func cacheSynced(c cache.Cache) healthz.Checker {
	return func(req *http.Request) error {
		ctx, cancel := context.WithTimeout(req.Context(), time.Second)
		defer cancel()
		if !c.WaitForCacheSync(ctx) {
			return errors.New("the informer caches have not synced")
		}
		return nil
	}
}

// servingCheck is a readiness check that passes while a TLS server answers
// a handshake on the address it was bound to: the listener is open and the
// serving certificate is loaded.
type servingCheck struct {
	addr atomic.Pointer[string]
}

// bound records the listener's address (serveTLS calls it).
func (s *servingCheck) bound(a net.Addr) {
	addr := dialable(a)
	s.addr.Store(&addr)
}

// Check is the healthz.Checker.
func (s *servingCheck) Check(req *http.Request) error {
	addr := s.addr.Load()
	if addr == nil {
		return errors.New("not listening yet")
	}
	ctx, cancel := context.WithTimeout(req.Context(), time.Second)
	defer cancel()
	// Only the handshake is checked, not who signed the certificate: the
	// probe asks whether the server is up, the clients verify it.
	d := tls.Dialer{Config: &tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS12}}
	conn, err := d.DialContext(ctx, "tcp", *addr)
	if err != nil {
		return fmt.Errorf("TLS handshake with %s: %w", *addr, err)
	}
	return conn.Close()
}

// dialable turns a listener's address into one to dial: a wildcard address
// (Go listens dual-stack on ":port") is reached through 127.0.0.1.
func dialable(a net.Addr) string {
	tcp, ok := a.(*net.TCPAddr)
	if !ok {
		return a.String()
	}
	ip := tcp.IP
	if ip == nil || ip.IsUnspecified() {
		ip = net.IPv4(127, 0, 0, 1)
	}
	return net.JoinHostPort(ip.String(), fmt.Sprint(tcp.Port))
}
