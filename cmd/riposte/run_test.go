package main

import (
	"bytes"
	"io"
	"os"
	"strings"
	"testing"
)

// TestRunReportsAHostAlertAndExits: the bounded mode attaches, runs the
// command, prints the alert of the shipped rule it triggers and exits 0.
func TestRunReportsAHostAlertAndExits(t *testing.T) {
	r, w, _ := os.Pipe()
	stdout := os.Stdout
	os.Stdout = w
	code := runCmd([]string{"--rules", "../../rules", "--exec", "head -c0 /proc/self/mem"})
	w.Close()
	os.Stdout = stdout
	var out bytes.Buffer
	io.Copy(&out, r)
	if code != exitOK {
		t.Fatalf("exit %d (root and BTF are required); output:\n%s", code, out.String())
	}
	if !strings.Contains(out.String(), "process-memory-access:") || !strings.Contains(out.String(), "/mem on the host") {
		t.Errorf("no process-memory-access alert in:\n%s", out.String())
	}
}
