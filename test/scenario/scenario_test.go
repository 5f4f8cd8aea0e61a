package scenario

import (
	"compress/gzip"
	"encoding/json"
	"io"
	"os"
	"slices"
	"sort"
	"testing"
	"time"

	"github.com/riposte-dev/riposte/engine"
	"github.com/riposte-dev/riposte/engine/ruleset"
)

// The recording in testdata.
const (
	auditFile  = "testdata/audit.jsonl.gz"  // the kube-apiserver audit log, as written
	kernelFile = "testdata/kernel.jsonl.gz" // the sensors' events of the node's containers and runtime
	phaseFile  = "testdata/phases.json"
)

// phases are the time windows of a recording.
type phases struct {
	// Begin is before the node starts: the node's and the ServiceAccounts'
	// bootstrap belong to the benign part.
	Begin time.Time `json:"begin"`
	// Attack ends the benign part and starts the attack; End ends it.
	Attack time.Time `json:"attack"`
	End    time.Time `json:"end"`
	// Harness is the user the test sets the cluster up as (the rule library
	// applied, the vulnerable RBAC the attack starts from): its requests are
	// in no part.
	Harness string `json:"harness"`
}

// attackRules are exactly the rules the attack fires, by source. The benign
// part fires none.
var attackRules = map[engine.Source][]string{
	engine.SourceAudit: {
		"admission-webhook-changed", "anonymous-request-allowed", "binding-to-anonymous",
		"cluster-admin-binding-created", "csr-approved-for-client-identity", "csr-for-client-identity",
		"daemonset-created-in-kube-system", "detection-objects-deleted", "ephemeral-container-added",
		"events-deleted", "exec-into-privileged-pod", "impersonation-used", "kubelet-api-through-nodes-proxy", "kubernetes-client-from-pod",
		"node-created-by-non-kubelet", "pod-exec-or-attach", "pod-port-forward",
		"role-grants-escalate-bind-or-impersonate", "role-grants-pods-exec", "role-with-wildcard",
		"serviceaccount-access-review-then-secrets",
		"serviceaccount-lists-secrets", "serviceaccount-reads-secret", "serviceaccount-selfsubjectaccessreview",
		"system-role-deleted", "tokenrequest-for-other-serviceaccount",
	},
	engine.SourceObject: {
		"dangerous-capabilities-pod", "host-namespace-pod", "image-not-pinned-by-digest", "nodeport-service-created",
		"ownerless-pod-created", "pod-created-in-kube-namespace", "privilege-escalation-allowed-pod", "privileged-pod",
		"sensitive-hostpath-pod", "service-exposed-in-sensitive-namespace", "serviceaccount-created-in-kube-namespace",
		"system-clusterrole-modified",
	},
	engine.SourceProcess: {
		"credential-search", "crypto-miner", "data-destruction-tool", "drift-executable",
		"fetch-and-execute", "mount-in-container", "namespace-escape-attempt", "network-tool-in-container",
		"reverse-shell", "shell-in-container",
	},
	engine.SourceFile: {
		"kubelet-or-runtime-state-from-container", "process-environ-read", "serviceaccount-token-read-by-tool",
		"shadow-file-read", "token-read-then-api-server", "write-below-binary-dirs-in-container", "write-below-etc-in-container",
	},
	engine.SourceNetwork: {
		"api-server-from-workload", "bind-shell-listener", "cloud-metadata-from-workload",
		"connection-from-drifted-binary", "kubelet-api-from-workload", "mining-pool-connection",
		"outbound-to-suspicious-port",
	},
}

// hit is one match of a replayed recording.
type hit struct {
	rule   string
	source engine.Source
	at     time.Time
	user   string // the audit user, for audit and object events
	output string
}

// library loads the shipped rules that would go live.
func library(t testing.TB) []*engine.Rule {
	t.Helper()
	set, errs := ruleset.Load("../../rules")
	if len(errs) > 0 {
		t.Fatalf("load rules/: %v", errs)
	}
	live, notLive := set.Live()
	if len(notLive) > 0 {
		t.Fatalf("rules/ has rules that would not go live: %v", notLive)
	}
	return live
}

// replay matches a recorded stream the way the controller and the agent do:
// every event, and the object event each audit event carries. Throttling is
// left out: the question is which rules fire, not how often.
func replay(t testing.TB, r io.Reader, m *engine.Matcher) []hit {
	t.Helper()
	var out []hit
	var matches []engine.Match
	match := func(ev *engine.Event) {
		matches = m.Match(ev, matches[:0])
		for _, mt := range matches {
			out = append(out, hit{rule: mt.Rule.Name(), source: mt.Rule.Source(), at: ev.Time, user: ev.Audit.User.Username, output: mt.Output})
		}
	}
	bad := 0
	err := engine.ReadStream(r, func(ev *engine.Event, err error) {
		if err != nil {
			bad++
			if bad <= 3 {
				t.Errorf("recorded line does not decode: %v", err)
			}
			return
		}
		match(ev)
		if obj, ok := engine.ObjectFromAudit(ev); ok {
			match(&obj)
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	if bad > 0 {
		t.Errorf("%d recorded lines do not decode", bad)
	}
	return out
}

// check asserts, for one source, that the benign part fires no rule and the
// attack exactly attackRules[src].
func check(t *testing.T, hits []hit, ph phases, src engine.Source) {
	t.Helper()
	var benign []hit
	attack := map[string][]hit{}
	for _, h := range hits {
		if h.source != src || (h.user != "" && h.user == ph.Harness) || h.at.Before(ph.Begin) || h.at.After(ph.End) {
			continue
		}
		if h.at.Before(ph.Attack) {
			benign = append(benign, h)
			continue
		}
		attack[h.rule] = append(attack[h.rule], h)
	}
	for i, h := range benign {
		if i == 20 {
			t.Errorf("... and %d more", len(benign)-i)
			break
		}
		t.Errorf("benign part fired %s at %s: %s", h.rule, h.at.Format(time.RFC3339Nano), h.output)
	}
	var got []string
	for r := range attack {
		got = append(got, r)
	}
	sort.Strings(got)
	want := append([]string(nil), attackRules[src]...)
	sort.Strings(want)
	for _, r := range got {
		if !slices.Contains(want, r) {
			t.Errorf("the attack fired %s, which it should not: %s", r, attack[r][0].output)
		}
	}
	for _, r := range want {
		if _, ok := attack[r]; !ok {
			t.Errorf("the attack did not fire %s", r)
		}
	}
	for _, r := range got {
		t.Logf("%s ×%d: %s", r, len(attack[r]), attack[r][0].output)
	}
}

// checkRecording replays an audit log and a kernel stream and checks every
// source.
func checkRecording(t *testing.T, audit, kernel io.Reader, ph phases) {
	t.Helper()
	m := engine.NewMatcher(library(t))
	hits := append(replay(t, audit, m), replay(t, kernel, m)...)
	for _, src := range engine.Sources {
		t.Run(string(src), func(t *testing.T) { check(t, hits, ph, src) })
	}
}

func readPhases(t testing.TB, path string) phases {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("read %s: %v (the recording is made by `go test -tags e2enode ./test/scenario -update`)", path, err)
	}
	var ph phases
	if err := json.Unmarshal(b, &ph); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return ph
}

// openRecording opens a gzipped recording.
func openRecording(t testing.TB, path string) io.Reader {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatalf("%v (the recording is made by `go test -tags e2enode ./test/scenario -update`)", err)
	}
	t.Cleanup(func() { f.Close() })
	z, err := gzip.NewReader(f)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return z
}

// TestRecordedScenario replays the recording of the live scenario (a real
// control plane's audit log, the real kernel's events of a real node)
// through the shipped library, source by source.
func TestRecordedScenario(t *testing.T) {
	checkRecording(t, openRecording(t, auditFile), openRecording(t, kernelFile), readPhases(t, phaseFile))
}
