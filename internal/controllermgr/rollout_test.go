package controllermgr_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/fluxcd/pkg/runtime/conditions"
	"github.com/go-logr/logr"
	coordinationv1 "k8s.io/api/coordination/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/cli-utils/pkg/kstatus/status"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/riposte-dev/riposte/api/v1alpha1"
	"github.com/riposte-dev/riposte/internal/rollout"
)

// A node rule is Ready but still Reconciling (RollingOut) until every live
// agent reports its generation; status.nodes shows loaded/total.
func TestRuleStatusShowsNodesLoaded(t *testing.T) {
	ctx := context.Background()
	rule := &v1alpha1.ClusterDetectionRule{
		ObjectMeta: metav1.ObjectMeta{Name: "e2e-node-rule"},
		Spec:       v1alpha1.DetectionRuleSpec{Source: "process", Severity: "low", Condition: `process.binary == "/bin/sh"`},
	}
	if err := k8s.Create(ctx, rule); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = k8s.Delete(context.Background(), rule) })

	// Two agents: one has loaded the rule, one has not yet.
	agents := map[string]*rollout.Reporter{}
	for _, node := range []string{"node-a", "node-b"} {
		agents[node] = &rollout.Reporter{Client: k8s, Namespace: controllerNS, Node: node, Log: logr.Discard()}
		agents[node].Set(nil)
		if err := agents[node].Write(ctx, time.Minute); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			_ = k8s.Delete(context.Background(), &coordinationv1.Lease{ObjectMeta: metav1.ObjectMeta{Name: rollout.LeaseName(node), Namespace: controllerNS}})
		})
	}
	if err := k8s.Get(ctx, client.ObjectKeyFromObject(rule), rule); err != nil {
		t.Fatal(err)
	}
	agents["node-a"].Set(map[types.UID]int64{rule.UID: rule.Generation})
	if err := agents["node-a"].Write(ctx, time.Minute); err != nil {
		t.Fatal(err)
	}
	eventually(t, 40*time.Second, "nodes 1/2, rolling out", func() error {
		if err := k8s.Get(ctx, client.ObjectKeyFromObject(rule), rule); err != nil {
			return err
		}
		if rule.Status.Nodes != "1/2" || !conditions.IsReconciling(rule) || conditions.GetReason(rule, v1alpha1.ReconcilingCondition) != v1alpha1.RolloutReason {
			return fmt.Errorf("nodes %q conditions %+v", rule.Status.Nodes, rule.Status.Conditions)
		}
		return nil
	})
	wantKstatus(t, rule, "ClusterDetectionRule", status.InProgressStatus)
	agents["node-b"].Set(map[types.UID]int64{rule.UID: rule.Generation})
	if err := agents["node-b"].Write(ctx, time.Minute); err != nil {
		t.Fatal(err)
	}
	eventually(t, 40*time.Second, "nodes 2/2, Ready and not Reconciling", func() error {
		if err := k8s.Get(ctx, client.ObjectKeyFromObject(rule), rule); err != nil {
			return err
		}
		if rule.Status.Nodes != "2/2" || conditions.IsReconciling(rule) || !conditions.IsReady(rule) {
			return fmt.Errorf("nodes %q conditions %+v", rule.Status.Nodes, rule.Status.Conditions)
		}
		return nil
	})
	wantKstatus(t, rule, "ClusterDetectionRule", status.CurrentStatus)
	t.Logf("rollout: nodes %s, %s", rule.Status.Nodes, conditions.GetMessage(rule, v1alpha1.ReadyCondition))
}
