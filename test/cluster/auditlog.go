package cluster

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/riposte-dev/riposte/engine"
)

// AuditEvents reads the API server's own audit log (Dir()/audit.log) and
// returns the events whose line contains substr: what the API server
// recorded, to count against what riposte received.
func (c *Cluster) AuditEvents(substr string) ([]engine.Audit, error) {
	f, err := os.Open(filepath.Join(c.dir, "audit.log"))
	if err != nil {
		return nil, fmt.Errorf("the API server's audit log: %w", err)
	}
	defer f.Close()
	var out []engine.Audit
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 16<<20)
	for sc.Scan() {
		if !strings.Contains(sc.Text(), substr) {
			continue
		}
		var ev engine.Audit
		if json.Unmarshal(sc.Bytes(), &ev) == nil {
			out = append(out, ev)
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read the API server's audit log: %w", err)
	}
	return out, nil
}
