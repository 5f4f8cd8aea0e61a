package incident

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"regexp"
	"strings"
	"sync"
	"time"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/time/rate"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/riposte-dev/riposte/api/v1alpha1"
	"github.com/riposte-dev/riposte/engine"
	"github.com/riposte-dev/riposte/evidence"
	"github.com/riposte-dev/riposte/internal/trust"
)

// Defaults for Options.
const (
	// DefaultWindow folds matches of rules without a throttle: without it a
	// noisy rule would create one object per event.
	DefaultWindow     = time.Minute
	DefaultFlush      = time.Second
	DefaultWriteQPS   = 20
	DefaultWriteBurst = 40
	DefaultMaxSamples = 5
	DefaultMaxOpen    = 10000
	// maxSampleBytes bounds one sample event; bigger ones lose their object
	// bodies (requestObject, responseObject, object).
	maxSampleBytes = 8 << 10
	// maxWriteFailures is how many flushes in a row may fail to write an
	// Incident before its pending changes are dropped (and counted).
	maxWriteFailures = 10
)

// Options tune a Writer. Zero values take the defaults.
type Options struct {
	// Namespace holds Incidents about cluster-level subjects (a node, a
	// non-service-account user): the controller's namespace.
	Namespace string
	// Flush is how often pending changes are written.
	Flush time.Duration
	// WriteQPS and WriteBurst bound API writes.
	WriteQPS   float64
	WriteBurst int
	// MaxSamples bounds sample events per Incident.
	MaxSamples int
	// MaxOpen bounds the windows kept in memory.
	MaxOpen int
	// Now is the clock; tests replace it.
	Now func() time.Time
	// Origin is recorded in every Incident's OriginLabel: the controller or
	// an agent.
	Origin v1alpha1.Origin
	// Signer, in the controller, signs each Incident so the controller
	// later knows it wrote it (package trust).
	Signer *trust.Signer
	// SpoolDir, when set, keeps Incidents whose writes fail because the
	// API server cannot be reached on disk, one file each, until they are
	// written, also by the next run of the process: they are not given up
	// after a number of failures. Beyond SpoolMax files an Incident is lost,
	// counted (riposte_incident_spool_lost_total) and logged.
	SpoolDir string
	// SpoolMax bounds the files in SpoolDir (default DefaultSpoolMax).
	SpoolMax int
	// Timeline, in the agent, is the subject container's flight recorder
	// up to an event: written into a new Incident's status.timeline.
	Timeline func(ev *engine.Event) []v1alpha1.TimelineEntry
}

// Writer folds matches into Incidents and writes them. Record is safe for
// concurrent use and never blocks on the API server.
type Writer struct {
	c    client.Client
	opts Options
	log  logr.Logger
	lim  *rate.Limiter

	mu      sync.Mutex
	open    map[string]*window
	dirty   []*window
	spooled map[string]bool // files in the spool

	metrics metrics
}

// window is one Incident being folded into.
type window struct {
	key     string
	name    string
	ns      string
	spec    v1alpha1.IncidentSpec
	until   time.Time
	first   time.Time
	last    time.Time
	count   int64
	base    int64 // count already in the object when we found it (restart)
	samples []runtime.RawExtension
	created bool
	queued  bool
	// subjectFilled: a later match filled in identity the first lacked;
	// spec.subject is patched at the next write.
	subjectFilled bool
	failures      int // consecutive failed writes
	// changes are the object changes folded in (changeKey), so the same
	// change seen by the live watch and in the audit log counts once.
	changes map[string]bool
	// restored: read back from the spool, count is the Incident's total.
	restored bool
	// spooled: the window has a file in the spool; changedSinceSpool: a
	// match came after the file was written.
	spooled, changedSinceSpool bool
	// timeline is the container's flight recorder at the first match.
	timeline []v1alpha1.TimelineEntry
}

type metrics struct {
	matches, folded, dropped prometheus.Counter
	writes                   *prometheus.CounterVec
	writeErrors              prometheus.Counter
	open                     prometheus.GaugeFunc
	spoolLost                prometheus.Counter
	spooledNow               prometheus.GaugeFunc
}

// NewWriter returns a writer using c. Call Run to start writing.
func NewWriter(c client.Client, log logr.Logger, opts Options) *Writer {
	if opts.Flush <= 0 {
		opts.Flush = DefaultFlush
	}
	if opts.WriteQPS <= 0 {
		opts.WriteQPS = DefaultWriteQPS
	}
	if opts.WriteBurst <= 0 {
		opts.WriteBurst = DefaultWriteBurst
	}
	if opts.MaxSamples <= 0 {
		opts.MaxSamples = DefaultMaxSamples
	}
	if opts.MaxOpen <= 0 {
		opts.MaxOpen = DefaultMaxOpen
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.SpoolMax <= 0 {
		opts.SpoolMax = DefaultSpoolMax
	}
	w := &Writer{c: c, opts: opts, log: log, lim: rate.NewLimiter(rate.Limit(opts.WriteQPS), opts.WriteBurst), open: map[string]*window{}, spooled: map[string]bool{}}
	w.metrics = metrics{
		matches:     prometheus.NewCounter(prometheus.CounterOpts{Name: "riposte_incident_matches_total", Help: "Rule matches offered to the incident writer."}),
		folded:      prometheus.NewCounter(prometheus.CounterOpts{Name: "riposte_incident_folded_total", Help: "Matches folded into an existing Incident."}),
		dropped:     prometheus.NewCounter(prometheus.CounterOpts{Name: "riposte_incident_dropped_total", Help: "Matches dropped because too many Incident windows were open."}),
		writes:      prometheus.NewCounterVec(prometheus.CounterOpts{Name: "riposte_incident_writes_total", Help: "Incident API writes by operation."}, []string{"op"}),
		writeErrors: prometheus.NewCounter(prometheus.CounterOpts{Name: "riposte_incident_write_errors_total", Help: "Incident API writes that failed (retried at the next flush)."}),
		spoolLost: prometheus.NewCounter(prometheus.CounterOpts{Name: "riposte_incident_spool_lost_total",
			Help: "Incidents lost while the API server could not be reached: the spool was at its bound (or a spool file was unreadable)."}),
	}
	w.metrics.spooledNow = prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "riposte_incident_spooled", Help: "Incidents kept on disk until the API server takes them."}, func() float64 {
		w.mu.Lock()
		defer w.mu.Unlock()
		return float64(len(w.spooled))
	})
	w.metrics.open = prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "riposte_incident_open_windows", Help: "Incident windows held in memory."}, func() float64 {
		w.mu.Lock()
		defer w.mu.Unlock()
		return float64(len(w.open))
	})
	return w
}

// Collectors returns the writer's Prometheus collectors for registration.
func (w *Writer) Collectors() []prometheus.Collector {
	m := &w.metrics
	return append([]prometheus.Collector{m.matches, m.folded, m.dropped, m.writes, m.writeErrors, m.open, m.spoolLost, m.spooledNow, truncatedCollector}, sequenceCollectors...)
}

// truncatedCollector exports engine.TruncatedEvents with the writer's
// metrics, which every process that matches events (agent, controller)
// registers: events cut to the evaluation bounds before matching.
var truncatedCollector = prometheus.NewCounterFunc(prometheus.CounterOpts{
	Name: "riposte_events_truncated_total",
	Help: "Events with a field longer than the evaluation bounds, cut before matching (such an event says truncated: true).",
}, func() float64 { return float64(engine.TruncatedEvents()) })

// Record folds one match of ev into its Incident.
func (w *Writer) Record(m engine.Match, ev *engine.Event) {
	w.metrics.matches.Inc()
	now := w.opts.Now()
	subject := SubjectOf(ev)
	key := Key(m.Rule, ev, &subject)

	w.mu.Lock()
	defer w.mu.Unlock()
	win := w.open[key]
	if win != nil && now.Before(win.until) {
		w.metrics.folded.Inc()
	} else {
		if win == nil && len(w.open) >= w.opts.MaxOpen {
			w.sweep(now)
			if len(w.open) >= w.opts.MaxOpen {
				w.metrics.dropped.Inc()
				w.log.V(1).Info("dropping match: too many open incident windows", "rule", m.Rule.Name())
				return
			}
		}
		win = w.newWindow(key, m, ev, subject, now)
		if w.opts.Timeline != nil {
			win.timeline = w.opts.Timeline(ev)
		}
		// A replaced window may still have unwritten changes: it stays
		// queued (it is referenced by dirty) and is written before it goes.
		w.open[key] = win
	}
	if !win.sawChange(changeKey(ev)) {
		win.count++
	}
	win.last = now
	win.changedSinceSpool = true
	if backfill(&win.spec.Subject, &subject) {
		win.subjectFilled = true
	}
	switch {
	case len(m.Steps) > 0 && len(win.samples) == 0:
		// A sequence's Incident carries the event of each step.
		win.samples = stepSamples(m.Steps)
	case len(win.samples) < w.opts.MaxSamples:
		win.samples = append(win.samples, sample(ev))
	}
	if !win.queued {
		win.queued = true
		w.dirty = append(w.dirty, win)
	}
}

// backfill completes dst's identity from src, a later match of the same
// Incident, and reports whether it changed anything. A container's first
// process can run before the kubelet reports the container's status, so the
// first match may know the container id and pod but not the container's
// name and image; the next one does. An object seen by the live watch and
// in the audit log folds into one Incident (Key): the audit side brings the
// actor, the watch a uid the request body lacked. Fields are only filled,
// never changed, and only from a match of the same container (or, for
// pod-level fields, the same pod; for the actor, the same object), so an
// Incident never mixes two identities.
func backfill(dst, src *v1alpha1.Subject) bool {
	changed := false
	fill := func(d *string, v string) {
		if *d == "" && v != "" {
			*d = v
			changed = true
		}
	}
	sameContainer := dst.ContainerID != "" && dst.ContainerID == src.ContainerID
	// Object subjects have no container; the same name and namespace is the
	// same object unless both know a uid and the uids differ (recreated).
	sameObject := dst.ContainerID == "" && src.ContainerID == "" && dst.Namespace == src.Namespace &&
		(dst.PodUID == "" || src.PodUID == "" || dst.PodUID == src.PodUID) &&
		((dst.Pod != "" && dst.Pod == src.Pod) || (dst.WorkloadName != "" && dst.WorkloadKind == src.WorkloadKind && dst.WorkloadName == src.WorkloadName))
	if sameObject {
		fill(&dst.PodUID, src.PodUID)
		fill(&dst.User, src.User)
		fill(&dst.Verb, src.Verb)
		fill(&dst.Resource, src.Resource)
		fill(&dst.Subresource, src.Subresource)
		if len(dst.SourceIPs) == 0 && len(src.SourceIPs) > 0 {
			dst.SourceIPs = append([]string(nil), src.SourceIPs...)
			changed = true
		}
	}
	samePod := sameContainer || sameObject || (dst.PodUID != "" && dst.PodUID == src.PodUID)
	if sameContainer {
		fill(&dst.PodUID, src.PodUID)
		fill(&dst.Container, src.Container)
		fill(&dst.Image, src.Image)
		fill(&dst.ImageDigest, src.ImageDigest)
	}
	if samePod {
		fill(&dst.Namespace, src.Namespace)
		fill(&dst.Pod, src.Pod)
		fill(&dst.WorkloadKind, src.WorkloadKind)
		fill(&dst.WorkloadName, src.WorkloadName)
		fill(&dst.ServiceAccount, src.ServiceAccount)
		fill(&dst.Node, src.Node)
	}
	return changed
}

// Key is what folds matches together: for an object event the rule and the
// object (so the live watch and the audit log of one change make one
// Incident), else the rule and its throttle key, or the subject when the
// rule has no throttle key.
func Key(r *engine.Rule, ev *engine.Event, subject *v1alpha1.Subject) string {
	id := ruleKind(r) + "/" + r.Namespace() + "/" + r.Name()
	if ev.Kind == engine.KindObject {
		if oid := objectIdentity(ev.Object); oid != "" {
			return id + "\x00object\x00" + oid
		}
	}
	if tk := r.ThrottleKey(ev); tk != "" {
		return id + "\x00" + tk
	}
	b, _ := json.Marshal(subject)
	return id + "\x00" + string(b)
}

func ruleKind(r *engine.Rule) string {
	if r.Namespace() == "" {
		return "ClusterDetectionRule"
	}
	return "DetectionRule"
}

func (w *Writer) newWindow(key string, m engine.Match, ev *engine.Event, subject v1alpha1.Subject, now time.Time) *window {
	r := m.Rule
	win := r.ThrottleWindow()
	if win <= 0 {
		win = DefaultWindow
	}
	ns := r.Namespace()
	if ns == "" {
		ns = subject.Namespace
	}
	if ns == "" {
		ns = w.opts.Namespace
	}
	spec := v1alpha1.IncidentSpec{
		Rule:        r.Name(),
		RuleKind:    ruleKind(r),
		Severity:    r.Severity(),
		Tags:        append([]string(nil), r.Spec().Tags...),
		Output:      m.Output,
		Subject:     subject,
		ThrottleKey: r.ThrottleKey(ev),
	}
	spec.Playbooks = trust.PlaybookRefs(r.Namespace(), r.Spec().Playbooks)
	// The name is a function of the key and the window start, so a
	// restarted controller finds (rather than duplicates) an Incident.
	start := now.Truncate(win)
	sum := sha256.Sum256([]byte(fmt.Sprintf("%s\x00%d", key, start.Unix())))
	return &window{
		key:   key,
		name:  objectName(r.Name(), hex.EncodeToString(sum[:5])),
		ns:    ns,
		spec:  spec,
		until: now.Add(win),
		first: now,
	}
}

var notDNS = regexp.MustCompile(`[^a-z0-9-]+`)

// objectName makes a DNS-1123 name from a rule name and a hash suffix.
func objectName(rule, suffix string) string {
	base := notDNS.ReplaceAllString(strings.ToLower(rule), "-")
	base = strings.Trim(base, "-")
	if max := 253 - len(suffix) - 1; len(base) > max {
		base = base[:max]
	}
	if base == "" {
		base = "incident"
	}
	return base + "-" + suffix
}

// sample renders an event for status.sampleEvents, bounded in size, with env
// values and Secret data redacted.
func sample(ev *engine.Event) runtime.RawExtension {
	if ev.Profile != nil {
		// The profile's name, not its lists: the output names the missing entry.
		named := *ev
		named.Profile = ev.Profile.Named()
		ev = &named
	}
	b, err := json.Marshal(ev)
	if err == nil && len(b) > maxSampleBytes {
		small := *ev
		small.Object = nil
		small.Audit.RequestObject, small.Audit.ResponseObject = nil, nil
		b, err = json.Marshal(&small)
	}
	if err != nil || len(b) > maxSampleBytes {
		b = []byte(fmt.Sprintf(`{"kind":%q,"time":%q,"truncated":true}`, ev.Kind, ev.Time.Format(time.RFC3339Nano)))
	}
	// Incidents are read by more people than Secrets and pod specs are.
	return runtime.RawExtension{Raw: evidence.RedactJSON(b)}
}

// sweep drops windows that have ended and have nothing left to write.
func (w *Writer) sweep(now time.Time) {
	for k, win := range w.open {
		if !now.Before(win.until) && !win.queued {
			delete(w.open, k)
		}
	}
}

// Run writes pending changes every flush interval until ctx ends, then
// writes what is left with a short grace period.
//
// With a SpoolDir, the Incidents an earlier run left there are written
// first; Run fails if the folder cannot be created or read.
func (w *Writer) Run(ctx context.Context) error {
	if w.opts.SpoolDir != "" {
		w.mu.Lock()
		err := w.loadSpool()
		w.mu.Unlock()
		if err != nil {
			return err
		}
	}
	t := time.NewTicker(w.opts.Flush)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			final, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			w.Flush(final)
			cancel()
			return nil
		case <-t.C:
			w.Flush(ctx)
		}
	}
}

// Flush writes every pending change now, rate limited. Failed writes stay
// pending for the next flush.
func (w *Writer) Flush(ctx context.Context) {
	w.mu.Lock()
	batch := w.dirty
	w.dirty = nil
	w.mu.Unlock()

	var retry []*window
	down := false // the API server could not be reached in this flush
	for i, win := range batch {
		if down {
			// Not tried again until the next flush: spooled as it is.
			w.mu.Lock()
			if w.spool(win) {
				retry = append(retry, win)
			}
			w.mu.Unlock()
			continue
		}
		if err := w.lim.Wait(ctx); err != nil {
			retry = append(retry, batch[i:]...)
			break
		}
		if err := w.write(ctx, win); err != nil {
			w.metrics.writeErrors.Inc()
			if w.opts.SpoolDir != "" && unreachable(err) {
				// An outage is no fault of the Incident: it waits on disk,
				// however long, within the spool's bound.
				if !down {
					w.log.Error(err, "API server unreachable: spooling incidents", "dir", w.opts.SpoolDir)
				}
				down = true
				w.mu.Lock()
				if w.spool(win) {
					retry = append(retry, win)
				}
				w.mu.Unlock()
				continue
			}
			w.mu.Lock()
			win.failures++
			giveUp := win.failures >= maxWriteFailures
			w.mu.Unlock()
			if giveUp {
				// A namespace being deleted, a quota: never retry without
				// end, and never silently.
				w.metrics.dropped.Inc()
				w.log.Error(err, "giving up on incident after repeated write failures", "namespace", win.ns, "name", win.name, "failures", maxWriteFailures)
				continue
			}
			w.log.Error(err, "write incident", "namespace", win.ns, "name", win.name)
			retry = append(retry, win)
			continue
		}
		w.mu.Lock()
		win.failures = 0
		if !win.queued { // nothing came in while it was written
			w.unspool(win)
		}
		w.mu.Unlock()
	}
	w.mu.Lock()
	for _, win := range retry {
		win.queued = true
		w.dirty = append(w.dirty, win)
	}
	w.sweep(w.opts.Now())
	w.mu.Unlock()
}

// write creates the Incident if needed and patches its count, times and
// samples. It writes only the status fields it owns, so the responders'
// steps and phase are never overwritten.
func (w *Writer) write(ctx context.Context, win *window) error {
	w.mu.Lock()
	win.queued = false
	created := win.created
	spec := win.spec
	filled := win.subjectFilled
	win.subjectFilled = false
	w.mu.Unlock()

	if !created {
		inc := &v1alpha1.Incident{
			ObjectMeta: metav1.ObjectMeta{
				Name: win.name, Namespace: win.ns,
				Labels: w.labels(spec),
			},
			Spec: spec,
		}
		w.sign(inc)
		err := w.c.Create(ctx, inc)
		switch {
		case err == nil:
			w.metrics.writes.WithLabelValues("create").Inc()
		case apierrors.IsAlreadyExists(err):
			// Written by an earlier run of the controller: continue its count.
			if err := w.c.Get(ctx, client.ObjectKeyFromObject(inc), inc); err != nil {
				return fmt.Errorf("get existing incident: %w", err)
			}
			w.mu.Lock()
			if !win.restored { // a spooled count is already the total
				win.base = inc.Status.Count
			}
			if inc.Status.FirstSeen != nil {
				win.first = inc.Status.FirstSeen.Time
			}
			w.mu.Unlock()
		default:
			return fmt.Errorf("create incident: %w", err)
		}
		w.mu.Lock()
		win.created = true
		w.mu.Unlock()
	} else if filled {
		if err := w.patchSubject(ctx, win, spec); err != nil {
			w.mu.Lock()
			win.subjectFilled = true // again at the next write
			w.mu.Unlock()
			return err
		}
	}

	w.mu.Lock()
	st := map[string]any{
		"count":        win.base + win.count,
		"firstSeen":    metav1.NewTime(win.first),
		"lastSeen":     metav1.NewTime(win.last),
		"sampleEvents": append([]runtime.RawExtension(nil), win.samples...),
	}
	if len(win.timeline) > 0 {
		st["timeline"] = win.timeline
	}
	w.mu.Unlock()
	return w.mergePatch(ctx, win, "status", map[string]any{"status": st})
}

// patchSubject writes a subject that later matches completed, signed anew.
func (w *Writer) patchSubject(ctx context.Context, win *window, spec v1alpha1.IncidentSpec) error {
	body := map[string]any{"spec": map[string]any{"subject": spec.Subject}}
	inc := &v1alpha1.Incident{ObjectMeta: metav1.ObjectMeta{Name: win.name, Namespace: win.ns, Labels: w.labels(spec)}, Spec: spec}
	if w.sign(inc) {
		body["metadata"] = map[string]any{"annotations": inc.Annotations}
	}
	return w.mergePatch(ctx, win, "subject", body)
}

// labels are an Incident's labels: its rule, who created it, and the node
// whose agent acts for it.
func (w *Writer) labels(spec v1alpha1.IncidentSpec) map[string]string {
	l := ruleLabels(spec)
	if w.opts.Origin != "" {
		l[v1alpha1.OriginLabel] = string(w.opts.Origin)
	}
	if n := spec.Subject.Node; n != "" && len(n) <= 63 {
		l[v1alpha1.NodeLabel] = n
	}
	return l
}

// sign puts the Signer's signature on inc, if the writer has a Signer.
func (w *Writer) sign(inc *v1alpha1.Incident) bool {
	if w.opts.Signer == nil {
		return false
	}
	if inc.Annotations == nil {
		inc.Annotations = map[string]string{}
	}
	inc.Annotations[v1alpha1.SignatureAnnotation] = w.opts.Signer.Sign(inc)
	return true
}

// mergePatch applies body to the window's Incident: to its status
// subresource when what is "status", else to the object. An Incident deleted
// while matches kept coming is created again at the next write.
func (w *Writer) mergePatch(ctx context.Context, win *window, what string, body map[string]any) error {
	b, err := json.Marshal(body)
	if err != nil {
		return fmt.Errorf("encode incident %s: %w", what, err)
	}
	inc := &v1alpha1.Incident{ObjectMeta: metav1.ObjectMeta{Name: win.name, Namespace: win.ns}}
	patch, owner := client.RawPatch(types.MergePatchType, b), client.FieldOwner("riposte-controller")
	if what == "status" {
		err = w.c.Status().Patch(ctx, inc, patch, owner)
	} else {
		err = w.c.Patch(ctx, inc, patch, owner)
	}
	if err != nil {
		if apierrors.IsNotFound(err) {
			w.mu.Lock()
			win.created = false
			w.mu.Unlock()
		}
		return fmt.Errorf("patch incident %s: %w", what, err)
	}
	w.metrics.writes.WithLabelValues(what).Inc()
	return nil
}

// RuleSelector selects the Incidents of one rule: kind is DetectionRule or
// ClusterDetectionRule, namespace is empty for a ClusterDetectionRule.
func RuleSelector(kind, namespace, name string) map[string]string {
	l := map[string]string{v1alpha1.RuleKindLabel: kind, v1alpha1.RuleLabel: labelValue(name)}
	if namespace != "" {
		l[v1alpha1.RuleNamespaceLabel] = namespace
	}
	return l
}

func ruleLabels(spec v1alpha1.IncidentSpec) map[string]string {
	l := map[string]string{v1alpha1.RuleKindLabel: spec.RuleKind}
	if ns, name, ok := strings.Cut(spec.Rule, "/"); ok {
		l[v1alpha1.RuleNamespaceLabel] = ns
		l[v1alpha1.RuleLabel] = labelValue(name)
	} else {
		l[v1alpha1.RuleLabel] = labelValue(spec.Rule)
	}
	return l
}

// labelValue fits a rule name into a label value (63 characters).
func labelValue(s string) string {
	if len(s) > 63 {
		s = s[:63]
	}
	return strings.Trim(s, "-_.")
}
