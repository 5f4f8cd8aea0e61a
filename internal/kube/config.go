package kube

import (
	"fmt"

	"k8s.io/client-go/discovery/cached/memory"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/metadata"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/restmapper"

	"github.com/riposte-dev/riposte/engine/enrich"
)

// NewSource builds a Source from a client config: typed client for the
// informers, metadata client and a discovery-backed RESTMapper for owners
// of any kind. node is the agent's node name, or "" for every pod.
func NewSource(cfg *rest.Config, store *enrich.Store, node string) (*Source, error) {
	client, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("build clientset for the identity source: %w", err)
	}
	md, err := metadata.NewForConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("build metadata client for owner lookups: %w", err)
	}
	mapper := restmapper.NewDeferredDiscoveryRESTMapper(memory.NewMemCacheClient(client.Discovery()))
	return &Source{
		Client: client,
		Store:  store,
		Owners: &Owners{Client: md, Mapper: mapper},
		Node:   node,
		// An agent still needs every pod's IP to name its network peers.
		PeerPods: node != "",
	}, nil
}
