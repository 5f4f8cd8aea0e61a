package enrich_test

import (
	"fmt"
	"time"

	"github.com/riposte-dev/riposte/engine"
	"github.com/riposte-dev/riposte/engine/enrich"
	"github.com/riposte-dev/riposte/host"
)

func ExampleStore_Enrich() {
	store, _ := enrich.New(enrich.Options{})
	const id = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
	// A source writes pods and containers; the cgroup scanner maps cgroups.
	_ = store.Update(func(tx *enrich.Txn) error {
		pod := &enrich.Pod{
			Pod:      engine.Pod{UID: "u1", Name: "web-5d8-x", Namespace: "shop"},
			Workload: engine.Workload{Kind: "Deployment", Name: "web", Namespace: "shop"},
		}
		if err := tx.PutPod(pod, []*enrich.Container{{ID: id, Name: "nginx", ImageDigest: "sha256:ab"}}); err != nil {
			return err
		}
		return tx.PutCgroup(host.Ref{ContainerID: id}, 4242)
	})
	ev := engine.Event{Kind: engine.KindExec, Time: time.Now(), Process: engine.Process{CgroupID: 4242}}
	store.Enrich(&ev)
	fmt.Println(ev.Pod.Namespace, ev.Pod.Name, ev.Container.ImageDigest, ev.Workload.Kind, ev.Workload.Name)
	// Output: shop web-5d8-x sha256:ab Deployment web
}
