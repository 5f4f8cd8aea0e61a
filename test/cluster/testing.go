package cluster

import (
	"context"
	"fmt"
	"os"
	"testing"
	"time"
)

// StartT starts a cluster for one test and stops it at cleanup, which also
// runs when the test fails or panics. A start failure fails the test (it never
// skips: a missing binary means `make testenv` was not run).
func StartT(t testing.TB, opts Options) *Cluster {
	t.Helper()
	c, err := Start(context.Background(), opts)
	if err != nil {
		t.Fatalf("start test cluster: %v", err)
	}
	t.Cleanup(func() {
		if err := c.Stop(); err != nil {
			t.Errorf("stop test cluster: %v", err)
		}
	})
	t.Logf("test cluster started in %s (%s) at %s", c.StartDuration().Round(time.Millisecond), c.StartPhases(), c.Host())
	return c
}

// Main is for TestMain: it starts one cluster for the whole package, hands it
// to use (store it in a package variable), runs the tests and stops it. It
// returns the exit code for os.Exit; a start failure is a failed run.
//
// If a test panics the binary exits without reaching Stop: the processes die
// with it (Pdeathsig) and the next Start removes the stale temp dir.
func Main(m *testing.M, opts Options, use func(*Cluster)) int {
	c, err := Start(context.Background(), opts)
	if err != nil {
		fmt.Fprintf(os.Stderr, "FAIL: start test cluster: %v\n", err)
		return 1
	}
	fmt.Fprintf(os.Stderr, "test cluster started in %s (%s) at %s (dir %s)\n",
		c.StartDuration().Round(time.Millisecond), c.StartPhases(), c.Host(), c.Dir())
	use(c)
	code := m.Run()
	if err := c.Stop(); err != nil {
		fmt.Fprintf(os.Stderr, "FAIL: stop test cluster: %v\n", err)
		if code == 0 {
			code = 1
		}
	}
	return code
}
