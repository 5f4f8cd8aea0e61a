// Package hack_test checks the scripts behind make.
package hack_test

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"strings"
	"testing"
)

// runSetup runs hack/setup.sh as uid (through setpriv when not 0) with
// extra packages required, and returns its output and exit code.
func runSetup(t *testing.T, uid int, extra string, args ...string) (string, int) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatal("this test runs hack/setup.sh as root and as an unprivileged user: run it as root")
	}
	argv := append([]string{"bash", "setup.sh"}, args...)
	if uid != 0 {
		argv = append([]string{"setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--"}, argv...)
	}
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = append(os.Environ(), "RIPOSTE_SETUP_EXTRA="+extra)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	var ee *exec.ExitError
	switch {
	case err == nil:
		return out.String(), 0
	case errors.As(err, &ee):
		return out.String(), ee.ExitCode()
	}
	t.Fatalf("run %v: %v", argv, err)
	return "", 0
}

// As an unprivileged user, hack/setup.sh fails at once when a package is
// missing, naming it and the command that installs it, and tries nothing.
// (The package required here is not installed on any machine; the shipped
// list is installed, since make test has run the script as root before.)
func TestSetupNamesMissingPackagesWhenNotRoot(t *testing.T) {
	const absent = "riposte-setup-absent-package"
	if exec.Command("dpkg-query", "-W", absent).Run() == nil {
		t.Fatalf("%s is installed: the test needs a package that is not", absent)
	}
	out, code := runSetup(t, 65534, absent, "test")
	if code != 1 {
		t.Fatalf("exit %d, want 1; output:\n%s", code, out)
	}
	for _, want := range []string{
		"setup: missing Debian packages: " + absent + "\n",
		"sudo apt-get install --no-install-recommends " + absent + "\n",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "installing") {
		t.Errorf("it tried to install as an unprivileged user:\n%s", out)
	}
}

// With everything installed the script says nothing and succeeds, as root
// and as an unprivileged user, for both targets.
func TestSetupIsSilentWhenNothingIsMissing(t *testing.T) {
	for _, uid := range []int{0, 65534} {
		for _, target := range []string{"run", "test"} {
			if out, code := runSetup(t, uid, "", target); code != 0 || out != "" {
				t.Errorf("uid %d, %s: exit %d, output %q; want 0 and nothing", uid, target, code, out)
			}
		}
	}
	if out, code := runSetup(t, 0, "", "deploy"); code != 2 || !strings.Contains(out, "usage:") {
		t.Errorf("unknown target: exit %d, output %q; want 2 and the usage", code, out)
	}
}
