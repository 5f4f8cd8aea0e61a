package kube

import (
	"context"
	"errors"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"

	"github.com/riposte-dev/riposte/engine/enrich"
)

// Source keeps an enrich.Store in step with the API server's pods and
// Services.
type Source struct {
	Client kubernetes.Interface
	Store  *enrich.Store
	// Owners resolves pods' owner chains (usually *Owners).
	Owners enrich.OwnerLookup
	// Node limits pods to those bound to one node (the agent); "" watches
	// every pod (the controller, which resolves audit source IPs).
	Node string
	// PeerPods, with Node set, also watches the pods of every other node,
	// reduced in the informer to identity, owners and IPs, so that network
	// peers and audit sources elsewhere in the cluster resolve on the agent.
	PeerPods bool
	// RetryInterval is how soon a pod whose owners could not be looked up
	// is tried again; 5s when zero.
	RetryInterval time.Duration
	// OnError receives errors that do not stop the source; may be nil.
	OnError func(error)
	// OnNodePod, when set, sees every change of a pod of Node (the agent
	// follows its pods' isolation labels with it, without a watch of its
	// own). It runs in the informer's goroutine and must not block.
	OnNodePod func(p *corev1.Pod, deleted bool)

	changes chan change
	done    <-chan struct{}
}

// change is one informer notification, or a barrier when done is set.
type change struct {
	pod     *corev1.Pod
	deleted bool
	done    chan struct{}
}

// Start runs the informers until ctx ends. It returns once the initial
// lists are written to the store, so a caller may enrich right away.
func (s *Source) Start(ctx context.Context) error {
	if s.Client == nil || s.Store == nil || s.Owners == nil {
		return errors.New("start kube source: Client, Store and Owners are required")
	}
	s.changes = make(chan change, 1024)
	s.done = ctx.Done()

	podOpts := []informers.SharedInformerOption{informers.WithTransform(strip)}
	if s.Node != "" {
		sel := fields.OneTermEqualSelector("spec.nodeName", s.Node).String()
		podOpts = append(podOpts, informers.WithTweakListOptions(func(o *metav1.ListOptions) { o.FieldSelector = sel }))
	}
	pods := informers.NewSharedInformerFactoryWithOptions(s.Client, 0, podOpts...)
	services := informers.NewSharedInformerFactoryWithOptions(s.Client, 0, informers.WithTransform(strip))

	podInformer := pods.Core().V1().Pods().Informer()
	if _, err := podInformer.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(o any) { s.enqueuePod(o, false); s.nodePod(o, false) },
		UpdateFunc: func(_, o any) { s.enqueuePod(o, false); s.nodePod(o, false) },
		DeleteFunc: func(o any) { s.enqueuePod(o, true); s.nodePod(o, true) },
	}); err != nil {
		return fmt.Errorf("watch pods: %w", err)
	}
	svcInformer := services.Core().V1().Services().Informer()
	if _, err := svcInformer.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(o any) { s.putService(o, false) },
		UpdateFunc: func(_, o any) { s.putService(o, false) },
		DeleteFunc: func(o any) { s.putService(o, true) },
	}); err != nil {
		return fmt.Errorf("watch services: %w", err)
	}

	stores := []cache.Store{podInformer.GetStore()}
	synced := []cache.InformerSynced{podInformer.HasSynced, svcInformer.HasSynced}
	if s.PeerPods && s.Node != "" {
		peers := informers.NewSharedInformerFactoryWithOptions(s.Client, 0, informers.WithTransform(peerOnly))
		peerInformer := peers.Core().V1().Pods().Informer()
		// This node's pods come complete from the node informer and the
		// reduced copy must not overwrite them; unscheduled pods hold no IP.
		// (Not a FilteringResourceEventHandler: it turns a pod leaving the
		// filter, as one scheduled here does, into a delete.)
		other := func(o any) bool {
			if d, ok := o.(cache.DeletedFinalStateUnknown); ok {
				o = d.Obj
			}
			p, ok := o.(*corev1.Pod)
			return ok && p.Spec.NodeName != "" && p.Spec.NodeName != s.Node
		}
		if _, err := peerInformer.AddEventHandler(cache.ResourceEventHandlerFuncs{
			AddFunc: func(o any) {
				if other(o) {
					s.enqueuePod(o, false)
				}
			},
			UpdateFunc: func(_, o any) {
				if other(o) {
					s.enqueuePod(o, false)
				}
			},
			DeleteFunc: func(o any) {
				if other(o) {
					s.enqueuePod(o, true)
				}
			},
		}); err != nil {
			return fmt.Errorf("watch peer pods: %w", err)
		}
		stores = append(stores, peerInformer.GetStore())
		synced = append(synced, peerInformer.HasSynced)
		peers.Start(ctx.Done())
	}

	go s.write(ctx, stores)
	pods.Start(ctx.Done())
	services.Start(ctx.Done())
	if !cache.WaitForCacheSync(ctx.Done(), synced...) {
		return fmt.Errorf("sync pod and service informers: %w", context.Cause(ctx))
	}
	return s.Flush(ctx)
}

// Flush returns once every change seen so far is in the store.
func (s *Source) Flush(ctx context.Context) error {
	done := make(chan struct{})
	select {
	case s.changes <- change{done: done}:
	case <-ctx.Done():
		return ctx.Err()
	}
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (s *Source) enqueuePod(o any, deleted bool) {
	if d, ok := o.(cache.DeletedFinalStateUnknown); ok {
		o, deleted = d.Obj, true
	}
	if p, ok := o.(*corev1.Pod); ok {
		select {
		case s.changes <- change{pod: p, deleted: deleted}:
		case <-s.done: // the writer has stopped; do not block the informer
		}
	}
}

// nodePod passes a pod of the watched node to OnNodePod.
func (s *Source) nodePod(o any, deleted bool) {
	if d, ok := o.(cache.DeletedFinalStateUnknown); ok {
		o, deleted = d.Obj, true
	}
	if p, ok := o.(*corev1.Pod); ok && s.OnNodePod != nil && s.Node != "" {
		s.OnNodePod(p, deleted)
	}
}

// putService writes Services directly: they are few and change rarely.
func (s *Source) putService(o any, deleted bool) {
	if d, ok := o.(cache.DeletedFinalStateUnknown); ok {
		o, deleted = d.Obj, true
	}
	svc, ok := o.(*corev1.Service)
	if !ok {
		return
	}
	err := s.Store.Update(func(t *enrich.Txn) error {
		if deleted {
			return t.DeleteService(svc.Namespace, svc.Name)
		}
		return t.PutService(svc.Namespace, svc.Name, svc.Spec.ClusterIPs)
	})
	if err != nil {
		s.report(err)
	}
}

// write drains pod changes in batches (one store transaction each) and
// retries pods whose owners could not be resolved.
func (s *Source) write(ctx context.Context, pods []cache.Store) {
	retryEvery := s.RetryInterval
	if retryEvery <= 0 {
		retryEvery = 5 * time.Second
	}
	tick := time.NewTicker(retryEvery)
	defer tick.Stop()
	retry := map[string]struct{}{} // pod keys
	const maxBatch = 256
	for {
		var batch []change
		select {
		case <-ctx.Done():
			return
		case c := <-s.changes:
			batch = append(batch, c)
		drain:
			for len(batch) < maxBatch {
				select {
				case c := <-s.changes:
					batch = append(batch, c)
				default:
					break drain
				}
			}
		case <-tick.C:
			for key := range retry {
				delete(retry, key)
				for _, st := range pods {
					if o, ok, _ := st.GetByKey(key); ok {
						batch = append(batch, change{pod: o.(*corev1.Pod)})
						break
					}
				}
			}
		}
		s.apply(ctx, batch, retry)
		for _, c := range batch {
			if c.done != nil {
				close(c.done)
			}
		}
	}
}

func (s *Source) apply(ctx context.Context, batch []change, retry map[string]struct{}) {
	type put struct {
		pod        *enrich.Pod
		containers []*enrich.Container
	}
	var puts []put
	var deletes []string
	for _, c := range batch {
		if c.pod == nil {
			continue
		}
		if c.deleted {
			deletes = append(deletes, string(c.pod.UID))
			continue
		}
		p, cs := enrich.PodFromKube(c.pod)
		octx, cancel := context.WithTimeout(ctx, 5*time.Second)
		w, err := enrich.TopOwner(octx, s.Owners, &p.Pod)
		cancel()
		if err != nil {
			// Store the pod without a workload (unknown, not wrong) and try
			// again later.
			s.report(err)
			retry[c.pod.Namespace+"/"+c.pod.Name] = struct{}{}
		}
		p.Workload = w
		puts = append(puts, put{p, cs})
	}
	if len(puts) == 0 && len(deletes) == 0 {
		return
	}
	err := s.Store.Update(func(t *enrich.Txn) error {
		for _, p := range puts {
			if err := t.PutPod(p.pod, p.containers); err != nil {
				return err
			}
		}
		for _, uid := range deletes {
			if err := t.DeletePod(uid, t.Now()); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		s.report(fmt.Errorf("write %d pods to the identity store: %w", len(puts)+len(deletes), err))
	}
}

func (s *Source) report(err error) {
	if s.OnError != nil {
		s.OnError(err)
	}
}

// strip drops what the informer cache does not need to keep: managed fields
// and the last-applied annotation are most of a typical object's size.
func strip(o any) (any, error) {
	if m, ok := o.(metav1.Object); ok {
		m.SetManagedFields(nil)
		delete(m.GetAnnotations(), "kubectl.kubernetes.io/last-applied-configuration")
	}
	return o, nil
}

// peerOnly reduces a pod of another node to what resolving a peer needs:
// about a tenth of a typical pod's size in the informer cache and the store.
func peerOnly(o any) (any, error) {
	p, ok := o.(*corev1.Pod)
	if !ok {
		return o, nil
	}
	out := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: p.Name, Namespace: p.Namespace, UID: p.UID,
			ResourceVersion: p.ResourceVersion, OwnerReferences: p.OwnerReferences},
		Spec:   corev1.PodSpec{NodeName: p.Spec.NodeName, HostNetwork: p.Spec.HostNetwork},
		Status: corev1.PodStatus{Phase: p.Status.Phase, PodIP: p.Status.PodIP, PodIPs: p.Status.PodIPs},
	}
	if v, ok := p.Annotations[enrich.MirrorAnnotation]; ok {
		out.Annotations = map[string]string{enrich.MirrorAnnotation: v}
	}
	return out, nil
}
