package enrich_test

import (
	"fmt"
	"time"

	"github.com/riposte-dev/riposte/engine"
	"github.com/riposte-dev/riposte/engine/enrich"
)

func ExampleParsePath() {
	ref, ok := enrich.ParsePath("/kubepods.slice/kubepods-burstable.slice/" +
		"kubepods-burstable-pod8d3f2a1c_1b2c_4d5e_8f90_123456789abc.slice/" +
		"cri-containerd-0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef.scope")
	fmt.Println(ok, ref.Runtime, ref.PodUID, ref.ContainerID[:12])
	// Output: true containerd 8d3f2a1c-1b2c-4d5e-8f90-123456789abc 0123456789ab
}

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
		return tx.PutCgroup(enrich.Ref{ContainerID: id}, 4242)
	})
	ev := engine.Event{Kind: engine.KindExec, Time: time.Now(), Process: engine.Process{CgroupID: 4242}}
	store.Enrich(&ev)
	fmt.Println(ev.Pod.Namespace, ev.Pod.Name, ev.Container.ImageDigest, ev.Workload.Kind, ev.Workload.Name)
	// Output: shop web-5d8-x sha256:ab Deployment web
}
