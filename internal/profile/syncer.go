package profile

import (
	"context"
	"sync/atomic"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
)

// Syncer drains a Learner every Interval and writes the reports: one
// WorkloadProfile read and at most two writes per profile and interval,
// whatever the number of events.
type Syncer struct {
	Learner  *Learner
	Writer   *Writer
	Interval time.Duration
	// OnError sees each report that could not be written.
	OnError func(error)

	failures atomic.Uint64
}

// Failures counts reports that could not be written (they are dropped:
// the next interval reports the behaviour again if it recurs).
func (s *Syncer) Failures() uint64 { return s.failures.Load() }

// Run writes until ctx ends.
func (s *Syncer) Run(ctx context.Context) error {
	t := time.NewTicker(s.Interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			s.Flush(ctx)
		}
	}
}

// Flush writes what was learnt since the last flush.
func (s *Syncer) Flush(ctx context.Context) {
	for _, r := range s.Learner.Drain() {
		var err error
		for range 3 { // a concurrent writer (another node's agent): read again
			if err = s.Writer.Write(ctx, r); !apierrors.IsConflict(err) && !apierrors.IsAlreadyExists(err) {
				break
			}
		}
		if err != nil {
			s.failures.Add(1)
			if s.OnError != nil {
				s.OnError(err)
			}
		}
	}
}
