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
	code := runCmd([]string{"--rules", "../../rules", "--exec", "head -c0 /etc/shadow"})
	w.Close()
	os.Stdout = stdout
	var out bytes.Buffer
	io.Copy(&out, r)
	if code != exitOK {
		t.Fatalf("exit %d (root and BTF are required); output:\n%s", code, out.String())
	}
	if !strings.Contains(out.String(), "shadow-file-read:") || !strings.Contains(out.String(), "/etc/shadow as uid 0 on the host") {
		t.Errorf("no shadow-file-read alert in:\n%s", out.String())
	}
}
