package profile

import (
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/riposte-dev/riposte/api/v1alpha1"
	"github.com/riposte-dev/riposte/engine"
)

func reviewedProfile(name, image string, exes ...string) *v1alpha1.WorkloadProfile {
	return &v1alpha1.WorkloadProfile{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "shop"},
		Spec: v1alpha1.WorkloadProfileSpec{
			Workload: v1alpha1.ProfileWorkloadRef{Kind: "Deployment", Name: "web"}, Container: "nginx",
			Image: image, Reviewed: true, ProfileBehaviour: v1alpha1.ProfileBehaviour{Executables: exes},
		},
	}
}

func TestIndexAttachesTheReviewedProfileForTheReviewedImageOnly(t *testing.T) {
	var x Index
	ev := podEvent("web-1", "exec")
	ev.Process.Binary = "/bin/sh"
	x.Attach(&ev)
	if ev.Profile != nil {
		t.Fatal("a profile attached from an empty index")
	}
	if err := x.Set(reviewedProfile("deployment-web-nginx", "registry.example/web:1.2", "/usr/sbin/nginx")); err != nil {
		t.Fatal(err)
	}
	x.Attach(&ev)
	if ev.Profile == nil || ev.Profile.Name != "shop/deployment-web-nginx" || ev.Profile.Missing(&ev) != "executable /bin/sh" {
		t.Fatalf("attached %+v", ev.Profile)
	}
	if !x.Reviewed(Key{Namespace: "shop", Kind: "Deployment", Workload: "web", Container: "nginx"}) {
		t.Error("Reviewed = false for the reviewed key")
	}
	// A new image: the reviewed profile does not describe it.
	ev.Container.Image = "registry.example/web:1.3"
	x.Attach(&ev)
	if ev.Profile != nil {
		t.Error("a profile reviewed for 1.2 judged a 1.3 container")
	}
	// Same workload name in another namespace, another container: no profile.
	other := podEvent("web-1", "exec")
	other.Workload.Namespace, other.Pod.Namespace = "evil", "evil"
	x.Attach(&other)
	side := podEvent("web-1", "exec")
	side.Container.Name = "sidecar"
	x.Attach(&side)
	if other.Profile != nil || side.Profile != nil {
		t.Error("a profile attached to another namespace's or container's events")
	}
	// Unreviewing (a spec change in Git) stops judging.
	unreviewed := reviewedProfile("deployment-web-nginx", "registry.example/web:1.2")
	unreviewed.Spec.Reviewed = false
	if err := x.Set(unreviewed); err != nil {
		t.Fatal(err)
	}
	ev.Container.Image = "registry.example/web:1.2"
	x.Attach(&ev)
	if ev.Profile != nil {
		t.Error("an unreviewed profile judged events")
	}
}

func TestIndexRefusesABadProfileAndForgetsIt(t *testing.T) {
	var x Index
	wp := reviewedProfile("p", "")
	wp.Spec.WriteDirectories = []string{"relative"}
	if err := x.Set(wp); err == nil {
		t.Fatal("a relative write directory was accepted")
	}
	ev := podEvent("web-1", "exec")
	x.Attach(&ev)
	if ev.Profile != nil {
		t.Error("a refused profile judged events")
	}
}

// Two reviewed profiles for one workload and container: the first by name
// decides, whatever order they came in.
func TestIndexTwoProfilesForOneContainerIsOrderIndependent(t *testing.T) {
	for _, order := range [][]string{{"a", "b"}, {"b", "a"}} {
		var x Index
		for _, n := range order {
			if err := x.Set(reviewedProfile(n, "", "/bin/"+n)); err != nil {
				t.Fatal(err)
			}
		}
		ev := podEvent("web-1", "exec")
		ev.Process.Binary = "/bin/a"
		x.Attach(&ev)
		if ev.Profile == nil || ev.Profile.Name != "shop/a" {
			t.Errorf("order %v: attached %v", order, ev.Profile)
		}
	}
}

func BenchmarkIndexAttach(b *testing.B) {
	var x Index
	for i := range 500 {
		wp := reviewedProfile("p", "", "/usr/sbin/nginx")
		wp.Name = "p" + string(rune('a'+i%26)) + string(rune('a'+i/26))
		wp.Spec.Workload.Name = wp.Name
		if err := x.Set(wp); err != nil {
			b.Fatal(err)
		}
	}
	ev := podEvent("web-1", "exec")
	ev.Workload.Name = "paa"
	b.ReportAllocs()
	for b.Loop() {
		x.Attach(&ev)
	}
	var _ = engine.KindExec
}
