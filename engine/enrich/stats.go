package enrich

import (
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
)

// Kind is what Enrich tried to resolve.
type Kind int

// Resolution kinds.
const (
	KindContainer   Kind = iota // process → container, pod, workload
	KindPeer                    // network peer IP → pod or service
	KindAuditSource             // audit source IP → pod
	numKinds
)

var kindNames = [numKinds]string{"container", "peer", "audit_source"}

func (k Kind) String() string { return kindNames[k] }

// Outcome is how a resolution ended.
type Outcome int

// Outcomes. Tombstoned answers count as resolved too, but separately, so a
// rising share shows events arriving late or evidence outliving the pods.
const (
	Resolved   Outcome = iota // from a live container, pod or lease
	Tombstoned                // from a deleted pod or exited container still retained
	Unresolved                // nothing known (or the tombstone had expired): left empty
	Host                      // the process runs in a host cgroup, in no container
	numOutcomes
)

var outcomeNames = [numOutcomes]string{"resolved", "tombstoned", "unresolved", "host"}

func (o Outcome) String() string { return outcomeNames[o] }

// Stats counts resolutions per kind and outcome.
type Stats struct {
	n [numKinds][numOutcomes]atomic.Uint64
}

func (s *Stats) count(k Kind, o Outcome) { s.n[k][o].Add(1) }

// Get returns how many resolutions of kind k ended in outcome o.
func (s *Stats) Get(k Kind, o Outcome) uint64 { return s.n[k][o].Load() }

// Stats returns the store's resolution counters.
func (s *Store) Stats() *Stats { return &s.stats }

var resolutionsDesc = prometheus.NewDesc(
	"riposte_enrich_resolutions_total",
	"Identity resolutions by Enrich, by kind (container, peer, audit_source) and outcome (resolved, tombstoned, unresolved, host).",
	[]string{"kind", "outcome"}, nil)

// Collector exposes the store's counters to Prometheus. The counters stay
// plain atomics so the per-event path pays nothing for metrics.
func (s *Store) Collector() prometheus.Collector { return collector{s} }

type collector struct{ s *Store }

func (c collector) Describe(ch chan<- *prometheus.Desc) { ch <- resolutionsDesc }

func (c collector) Collect(ch chan<- prometheus.Metric) {
	for k := range numKinds {
		for o := range numOutcomes {
			ch <- prometheus.MustNewConstMetric(resolutionsDesc, prometheus.CounterValue,
				float64(c.s.stats.Get(k, o)), k.String(), o.String())
		}
	}
}
