package cluster_test

import (
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/riposte-dev/riposte/test/cluster"
)

// checkLeftovers reports (on stderr) and returns 1 if a stopped cluster left a
// process, a listening port or its temp dir behind, and, with noChildren, if
// any process still has the test binary as parent (true once every cluster of
// the package is stopped).
func checkLeftovers(c *cluster.Cluster, noChildren bool) int {
	var problems []string
	for _, pid := range c.PIDs() {
		if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
			problems = append(problems, fmt.Sprintf("process %d still exists (kill 0: %v)", pid, err))
		}
		// The whole process group, not just its leader.
		if err := syscall.Kill(-pid, 0); !errors.Is(err, syscall.ESRCH) {
			problems = append(problems, fmt.Sprintf("process group %d still has members (kill 0: %v)", pid, err))
		}
	}
	for _, port := range c.Ports() {
		conn, err := net.DialTimeout("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), time.Second)
		if err == nil {
			conn.Close()
			problems = append(problems, fmt.Sprintf("port %d still accepts connections", port))
		}
	}
	if _, err := os.Stat(c.Dir()); !errors.Is(err, os.ErrNotExist) {
		problems = append(problems, fmt.Sprintf("temp dir %s still exists (stat: %v)", c.Dir(), err))
	}
	if noChildren {
		problems = append(problems, children()...)
	}
	for _, p := range problems {
		fmt.Fprintln(os.Stderr, "FAIL: leftover:", p)
	}
	if len(problems) > 0 {
		return 1
	}
	return 0
}

// children lists processes whose parent is this test binary (the control-plane
// programs are our direct children).
func children() []string {
	var found []string
	me := strconv.Itoa(os.Getpid())
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		if _, err := strconv.Atoi(e.Name()); err != nil {
			continue
		}
		stat, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue // exited meanwhile
		}
		// Fields after "(comm)": state ppid ...; comm may contain spaces.
		rest := string(stat[strings.LastIndexByte(string(stat), ')')+1:])
		fields := strings.Fields(rest)
		if len(fields) > 1 && fields[1] == me {
			found = append(found, fmt.Sprintf("child process %s: %s", e.Name(), strings.TrimSpace(string(stat[:strings.LastIndexByte(string(stat), ')')+1]))))
		}
	}
	return found
}
