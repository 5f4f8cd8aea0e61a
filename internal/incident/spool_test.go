package incident

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/riposte-dev/riposte/api/v1alpha1"
	"github.com/riposte-dev/riposte/engine"
	"github.com/riposte-dev/riposte/test/cluster"
)

// The API server is stopped (etcd keeps running) while matches come in: the
// writer keeps every Incident it cannot write on disk, up to the spool's
// bound, and counts and logs the ones beyond it as lost. The process is then
// replaced (a new writer on the same folder, as an agent restarted during the
// outage) and the API server started again: every spooled Incident is
// written once, with its count, and the folder empties.
func TestAPIServerOutageSpoolsIncidentsAndWritesThemAfter(t *testing.T) {
	ctx := context.Background()
	c, err := cluster.Start(ctx, cluster.Options{})
	if err != nil {
		t.Fatalf("start kube-apiserver and etcd (RIPOSTE_TESTENV_BIN): %v", err)
	}
	defer c.Stop()
	if _, err := c.InstallCRDs(ctx, "../../config/crd/bases"); err != nil {
		t.Fatal(err)
	}
	s := runtime.NewScheme()
	_ = v1alpha1.AddToScheme(s)
	_ = corev1.AddToScheme(s)
	cl, err := client.New(c.AdminConfig(), client.Options{Scheme: s})
	if err != nil {
		t.Fatal(err)
	}
	const ns = "spool"
	if err := cl.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}); err != nil {
		t.Fatal(err)
	}
	rule := compile(t, "spool-ssar", "", v1alpha1.DetectionRuleSpec{
		Source: "audit", Severity: "medium", Condition: `audit.verb == "create"`,
		Throttle: &v1alpha1.Throttle{Window: metav1.Duration{Duration: time.Hour}, Key: []string{"audit.user.username"}},
	})
	user := func(i int) string { return fmt.Sprintf("system:serviceaccount:%s:sa-%d", ns, i) }
	record := func(w *Writer, i int) {
		ev := ssarEvent(user(i))
		w.Record(engine.Match{Rule: rule, Output: "out"}, &ev)
	}
	const bound, before, during = 20, 5, 30
	dir := filepath.Join(t.TempDir(), "spool")
	opts := Options{Namespace: ns, WriteQPS: 1000, SpoolDir: dir, SpoolMax: bound}

	// Written while the API server is up: nothing spooled.
	w1 := NewWriter(cl, logr.Discard(), opts)
	if err := w1.loadSpool(); err != nil {
		t.Fatal(err)
	}
	for i := range before {
		record(w1, i)
	}
	w1.Flush(ctx)
	if n := len(incidents(t, cl, ns)); n != before {
		t.Fatalf("%d Incidents before the outage, want %d", n, before)
	}

	err = c.RestartAPIServer(ctx, func() {
		// The outage: one more match for a written Incident, then new ones,
		// more than the spool holds.
		record(w1, 0)
		for i := before; i < before+during; i++ {
			record(w1, i)
		}
		w1.Flush(ctx)
		if got := value(w1.metrics.spooledNow); got != bound {
			t.Errorf("spooled while the API server is down = %v, want the bound %d", got, bound)
		}
		if got, want := value(w1.metrics.spoolLost), float64(1+during-bound); got != want {
			t.Errorf("lost beyond the bound = %v, want %v", got, want)
		}
		if files, _ := filepath.Glob(filepath.Join(dir, "*.json")); len(files) != bound {
			t.Errorf("%d files in the spool, want %d", len(files), bound)
		}
		// A second flush in the outage neither rewrites nor loses more.
		w1.Flush(ctx)
		if got := value(w1.metrics.spoolLost); got != float64(1+during-bound) {
			t.Errorf("lost after a second flush in the outage = %v, want %v", got, 1+during-bound)
		}
	})
	if err != nil {
		t.Fatalf("restart kube-apiserver: %v", err)
	}

	// The process is replaced; the new one writes what the old one spooled.
	w2 := NewWriter(cl, logr.Discard(), Options{Namespace: ns, WriteQPS: 1000, SpoolDir: dir, SpoolMax: bound, Flush: 50 * time.Millisecond})
	runCtx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- w2.Run(runCtx) }()
	deadline := time.Now().Add(30 * time.Second)
	for value(w2.metrics.spooledNow) != 0 || len(incidents(t, cl, ns)) < before+bound-1 {
		if time.Now().After(deadline) {
			t.Fatalf("after 30 s: %v still spooled, %d Incidents", value(w2.metrics.spooledNow), len(incidents(t, cl, ns)))
		}
		time.Sleep(50 * time.Millisecond)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}

	// The spool holds the update of sa-0 and the first 19 new ones, in
	// the order they came; the last 11 were lost, and counted.
	got := incidents(t, cl, ns)
	if len(got) != before+bound-1 {
		t.Errorf("%d Incidents after the outage, want %d (%d before, %d spooled new ones)", len(got), before+bound-1, before, bound-1)
	}
	for i := range before + during {
		inc, ok := got[user(i)]
		switch {
		case i < before+bound-1 && !ok:
			t.Errorf("no Incident for %s, which was spooled", user(i))
		case i >= before+bound-1 && ok:
			t.Errorf("an Incident for %s, which was counted as lost", user(i))
		case i == 0 && inc.Status.Count != 2:
			t.Errorf("count of the Incident matched before and during the outage = %d, want 2", inc.Status.Count)
		case ok && i != 0 && inc.Status.Count != 1:
			t.Errorf("count of %s = %d, want 1", user(i), inc.Status.Count)
		}
	}
	if files, _ := os.ReadDir(dir); len(files) != 0 {
		t.Errorf("%d files left in the spool after writing", len(files))
	}
}

// incidents lists the Incidents of ns by subject user; a second Incident
// for one user fails the test (names are idempotent).
func incidents(t *testing.T, cl client.Client, ns string) map[string]v1alpha1.Incident {
	t.Helper()
	var list v1alpha1.IncidentList
	if err := cl.List(context.Background(), &list, client.InNamespace(ns)); err != nil {
		t.Fatalf("list Incidents: %v", err)
	}
	out := map[string]v1alpha1.Incident{}
	for _, inc := range list.Items {
		if _, dup := out[inc.Spec.Subject.User]; dup {
			t.Errorf("two Incidents for %s", inc.Spec.Subject.User)
		}
		out[inc.Spec.Subject.User] = inc
	}
	return out
}

// Files in the spool that the writer did not write (garbage, oversized, a
// name that does not match the Incident inside) are removed and counted as
// lost, never loaded and never a panic.
func TestUnreadableSpoolFilesAreCountedAsLost(t *testing.T) {
	dir := t.TempDir()
	w := NewWriter(kc, logr.Discard(), Options{Namespace: "x", SpoolDir: dir})
	good := spoolRecord{Name: "r-0123456789", Namespace: "shop", Count: 3}
	b, _ := json.Marshal(good)
	for name, content := range map[string][]byte{
		filepath.Base(w.spoolFile("shop", "r-0123456789")): b,
		"garbage.json":      []byte("{not json"),
		"misnamed.json":     b,
		"oversized.json":    make([]byte, maxSpoolFileBytes+1),
		"leftover.json.tmp": []byte("half"),
	} {
		if err := os.WriteFile(filepath.Join(dir, name), content, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.loadSpool(); err != nil {
		t.Fatal(err)
	}
	if got := value(w.metrics.spoolLost); got != 3 {
		t.Errorf("lost = %v, want 3 (garbage, misnamed, oversized)", got)
	}
	if len(w.dirty) != 1 || w.dirty[0].name != good.Name || w.dirty[0].count != 3 || !w.dirty[0].restored {
		t.Errorf("loaded windows %+v, want the one good record", w.dirty)
	}
	for _, gone := range []string{"garbage.json", "misnamed.json", "oversized.json"} {
		if _, err := os.Stat(filepath.Join(dir, gone)); !os.IsNotExist(err) {
			t.Errorf("%s left in the spool", gone)
		}
	}
}

// value reads a counter or gauge.
func value(c prometheus.Metric) float64 {
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		return -1
	}
	if m.Counter != nil {
		return m.Counter.GetValue()
	}
	return m.Gauge.GetValue()
}
