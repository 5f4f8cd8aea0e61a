package node

import (
	"context"
	"fmt"
	"os"
	"testing"
	"time"
)

// StartT starts a node for one test and stops it at cleanup (which also runs
// when the test fails). A start failure fails the test, never skips it.
func StartT(t testing.TB, opts Options) *Node {
	t.Helper()
	n, err := Start(context.Background(), opts)
	if err != nil {
		t.Fatalf("start test node: %v", err)
	}
	t.Cleanup(func() {
		if err := n.Stop(); err != nil {
			t.Errorf("stop test node: %v", err)
		}
	})
	t.Logf("test node started in %s (%s)", n.StartDuration().Round(time.Millisecond), n.StartPhases())
	return n
}

// Main is for TestMain: one node for the whole package, handed to use, then
// the tests, then Stop. It returns the exit code for os.Exit.
func Main(m *testing.M, opts Options, use func(*Node)) int {
	n, err := Start(context.Background(), opts)
	if err != nil {
		fmt.Fprintf(os.Stderr, "FAIL: start test node: %v\n", err)
		return 1
	}
	fmt.Fprintf(os.Stderr, "test node started in %s (%s), dir %s\n", n.StartDuration().Round(time.Millisecond), n.StartPhases(), n.Dir())
	use(n)
	code := m.Run()
	if err := n.Stop(); err != nil {
		fmt.Fprintf(os.Stderr, "FAIL: stop test node: %v\n", err)
		if code == 0 {
			code = 1
		}
	}
	return code
}
