package controller

import (
	"testing"
)

func TestRegistrySnapshotVersions(t *testing.T) {
	r := NewRegistry()
	v0, rules := r.Snapshot()
	if len(rules) != 0 {
		t.Fatal("new registry not empty")
	}
	r.Delete("nothing")
	if r.Version() != v0 {
		t.Error("deleting an absent key changed the version")
	}
	r.Put("k", nil, 1)
	v1, rules := r.Snapshot()
	if v1 == v0 || len(rules) != 1 {
		t.Errorf("after Put: version %d (was %d), %d rules", v1, v0, len(rules))
	}
	r.Put("k", nil, 1)
	if r.Version() != v1 {
		t.Error("putting the same rule and generation again changed the version")
	}
	if _, gen, ok := r.Get("k"); !ok || gen != 1 {
		t.Errorf("Get = %d, %v", gen, ok)
	}
}
