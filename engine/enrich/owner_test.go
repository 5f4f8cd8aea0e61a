package enrich

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/riposte-dev/riposte/engine"
)

// mapLookup is an OwnerLookup over a fixed set of objects keyed "Kind/name".
type mapLookup map[string]Object

func (m mapLookup) Owner(_ context.Context, _ string, ref engine.OwnerReference) (Object, error) {
	if ref.Kind == "Widget" {
		return Object{}, ErrUnknownKind
	}
	if ref.Kind == "Broken" {
		return Object{}, errors.New("connection refused")
	}
	o, ok := m[ref.Kind+"/"+ref.Name]
	if !ok {
		return Object{}, fmt.Errorf("get %s: %w", ref.Name, ErrNotFound)
	}
	return o, nil
}

func ctrl(kind, name string) []engine.OwnerReference {
	return []engine.OwnerReference{{Kind: kind, Name: name, UID: kind + "-" + name, Controller: true}}
}

func TestTopOwner(t *testing.T) {
	lookup := mapLookup{
		"ReplicaSet/web-5d8":   {Kind: "ReplicaSet", Name: "web-5d8", UID: "ReplicaSet-web-5d8", Owners: ctrl("Deployment", "web")},
		"Deployment/web":       {Kind: "Deployment", Name: "web", UID: "Deployment-web"},
		"Job/backup-2891":      {Kind: "Job", Name: "backup-2891", UID: "Job-backup-2891", Owners: ctrl("CronJob", "backup")},
		"CronJob/backup":       {Kind: "CronJob", Name: "backup", UID: "CronJob-backup"},
		"Job/once":             {Kind: "Job", Name: "once", UID: "Job-once"},
		"StatefulSet/db":       {Kind: "StatefulSet", Name: "db", UID: "StatefulSet-db"},
		"DaemonSet/agent":      {Kind: "DaemonSet", Name: "agent", UID: "DaemonSet-agent"},
		"ReplicaSet/recreated": {Kind: "ReplicaSet", Name: "recreated", UID: "another-uid", Owners: ctrl("Deployment", "web")},
	}
	tests := []struct {
		name    string
		pod     engine.Pod
		want    engine.Workload
		wantErr bool
	}{
		{"deployment via replicaset", engine.Pod{Name: "web-5d8-x", Namespace: "shop", OwnerReferences: ctrl("ReplicaSet", "web-5d8")},
			engine.Workload{Kind: "Deployment", Name: "web", Namespace: "shop", UID: "Deployment-web"}, false},
		{"cronjob via job", engine.Pod{Name: "backup-2891-x", Namespace: "ops", OwnerReferences: ctrl("Job", "backup-2891")},
			engine.Workload{Kind: "CronJob", Name: "backup", Namespace: "ops", UID: "CronJob-backup"}, false},
		{"plain job", engine.Pod{Name: "once-x", Namespace: "ops", OwnerReferences: ctrl("Job", "once")},
			engine.Workload{Kind: "Job", Name: "once", Namespace: "ops", UID: "Job-once"}, false},
		{"statefulset", engine.Pod{Name: "db-0", Namespace: "shop", OwnerReferences: ctrl("StatefulSet", "db")},
			engine.Workload{Kind: "StatefulSet", Name: "db", Namespace: "shop", UID: "StatefulSet-db"}, false},
		{"daemonset", engine.Pod{Name: "agent-x", Namespace: "kube-system", OwnerReferences: ctrl("DaemonSet", "agent")},
			engine.Workload{Kind: "DaemonSet", Name: "agent", Namespace: "kube-system", UID: "DaemonSet-agent"}, false},
		{"static pod owned by its node", engine.Pod{Name: "etcd-n1", Namespace: "kube-system", Static: true, Node: "n1", OwnerReferences: ctrl("Node", "n1")},
			engine.Workload{Kind: "Node", Name: "n1", UID: "Node-n1"}, false},
		{"static pod without owner reference", engine.Pod{Name: "etcd-n1", Namespace: "kube-system", Static: true, Node: "n1"},
			engine.Workload{Kind: "Node", Name: "n1"}, false},
		{"bare pod owns itself", engine.Pod{UID: "p1", Name: "debug", Namespace: "shop", Ownerless: true},
			engine.Workload{Kind: "Pod", Name: "debug", Namespace: "shop", UID: "p1"}, false},
		{"orphaned replicaset stops at the last known owner", engine.Pod{Name: "x", Namespace: "shop", OwnerReferences: ctrl("ReplicaSet", "gone")},
			engine.Workload{Kind: "ReplicaSet", Name: "gone", Namespace: "shop", UID: "ReplicaSet-gone"}, false},
		{"owner recreated under the same name is not followed", engine.Pod{Name: "x", Namespace: "shop", OwnerReferences: ctrl("ReplicaSet", "recreated")},
			engine.Workload{Kind: "ReplicaSet", Name: "recreated", Namespace: "shop", UID: "ReplicaSet-recreated"}, false},
		{"custom controller kind is the top", engine.Pod{Name: "x", Namespace: "shop", OwnerReferences: ctrl("Widget", "w")},
			engine.Workload{Kind: "Widget", Name: "w", Namespace: "shop", UID: "Widget-w"}, false},
		{"lookup failure leaves the workload unknown", engine.Pod{Name: "x", Namespace: "shop", OwnerReferences: ctrl("Broken", "b")},
			engine.Workload{}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := TopOwner(context.Background(), lookup, &tt.pod)
			if (err != nil) != tt.wantErr || got != tt.want {
				t.Errorf("TopOwner = %+v, %v; want %+v (error %v)", got, err, tt.want, tt.wantErr)
			}
		})
	}
}
