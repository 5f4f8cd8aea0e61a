package main

import (
	"context"
	"testing"
)

// The cluster demo of `make run` is part of the product's story: it must keep
// working. run fails when any step of it does not happen for real (a rule not
// Ready, the broken rule admitted, an expected Incident missing, the playbook
// not finished, the webhook not called, a secret in the evidence).
func TestClusterDemo(t *testing.T) {
	if err := run(context.Background()); err != nil {
		t.Fatal(err)
	}
}
