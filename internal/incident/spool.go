package incident

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime"

	"github.com/riposte-dev/riposte/api/v1alpha1"
)

// DefaultSpoolMax bounds the Incidents kept on disk while the API server
// cannot be reached. A file holds one Incident with at most MaxSamples
// samples of 8 KiB: with the defaults, under 50 MiB.
const DefaultSpoolMax = 1000

// maxSpoolFileBytes bounds a spool file read back: bigger ones were not
// written by the writer and are removed (and counted as lost).
const maxSpoolFileBytes = 1 << 20

// spoolRecord is one Incident waiting on disk for the API server: enough to
// write it as the window would have, with its total count.
type spoolRecord struct {
	Key       string                 `json:"key"`
	Name      string                 `json:"name"`
	Namespace string                 `json:"namespace"`
	Spec      v1alpha1.IncidentSpec  `json:"spec"`
	Count     int64                  `json:"count"`
	First     time.Time              `json:"first"`
	Last      time.Time              `json:"last"`
	Until     time.Time              `json:"until"`
	Samples   []runtime.RawExtension `json:"samples,omitempty"`
	// Timeline is the container's flight recorder at the first match.
	Timeline []v1alpha1.TimelineEntry `json:"timeline,omitempty"`
}

// unreachable reports whether a write failed because the API server (or
// its storage) could not take it, rather than because it refused the
// Incident: only then is waiting worth it.
func unreachable(err error) bool {
	var st apierrors.APIStatus
	if !errors.As(err, &st) {
		return true // no answer: connection refused or reset, a deadline
	}
	return apierrors.IsServiceUnavailable(err) || apierrors.IsServerTimeout(err) || apierrors.IsTimeout(err) ||
		apierrors.IsTooManyRequests(err) || apierrors.IsInternalError(err)
}

// spoolFile names the file of an Incident: a hash, so nothing from the
// Incident's name or namespace reaches the path.
func (w *Writer) spoolFile(ns, name string) string {
	sum := sha256.Sum256([]byte(ns + "/" + name))
	return filepath.Join(w.opts.SpoolDir, hex.EncodeToString(sum[:12])+".json")
}

// spool writes win to disk, or counts and logs it as lost when the spool is
// full; it reports whether win is kept. Called with w.mu held.
func (w *Writer) spool(win *window) bool {
	if win.spooled && !win.changedSinceSpool {
		return true
	}
	if !win.spooled && len(w.spooled) >= w.opts.SpoolMax {
		w.metrics.spoolLost.Inc()
		w.log.Error(nil, "incident spool full: incident lost", "namespace", win.ns, "name", win.name, "bound", w.opts.SpoolMax)
		if w.open[win.key] == win {
			delete(w.open, win.key)
		}
		return false
	}
	rec := spoolRecord{Key: win.key, Name: win.name, Namespace: win.ns, Spec: win.spec, Count: win.base + win.count,
		First: win.first, Last: win.last, Until: win.until, Samples: win.samples, Timeline: win.timeline}
	b, err := json.Marshal(&rec)
	if err == nil {
		err = writeFileAtomic(w.spoolFile(win.ns, win.name), b)
	}
	if err != nil {
		// The window stays in memory and is retried; only a restart
		// before the API server is back would lose it.
		w.log.Error(err, "spool incident", "namespace", win.ns, "name", win.name)
		return true
	}
	win.spooled, win.changedSinceSpool = true, false
	w.spooled[w.spoolFile(win.ns, win.name)] = true
	return true
}

// unspool removes win's file once it is written. Called with w.mu held.
func (w *Writer) unspool(win *window) {
	if !win.spooled {
		return
	}
	f := w.spoolFile(win.ns, win.name)
	if err := os.Remove(f); err != nil && !errors.Is(err, os.ErrNotExist) {
		w.log.Error(err, "remove spooled incident", "file", f)
	}
	delete(w.spooled, f)
	win.spooled = false
}

// loadSpool reads the Incidents an earlier run left on disk into windows
// to write, up to the bound; the rest are removed and counted as lost.
func (w *Writer) loadSpool() error {
	if err := os.MkdirAll(w.opts.SpoolDir, 0o700); err != nil {
		return fmt.Errorf("create incident spool %s: %w", w.opts.SpoolDir, err)
	}
	entries, err := os.ReadDir(w.opts.SpoolDir)
	if err != nil {
		return fmt.Errorf("read incident spool %s: %w", w.opts.SpoolDir, err)
	}
	sort.Slice(entries, func(i, j int) bool { return entries[i].Name() < entries[j].Name() })
	now := w.opts.Now()
	for _, e := range entries {
		path := filepath.Join(w.opts.SpoolDir, e.Name())
		if e.IsDir() || !strings.HasSuffix(e.Name(), ".json") {
			continue // a temporary file of a write cut short is overwritten later
		}
		rec, err := readSpoolFile(path)
		if err == nil && path != w.spoolFile(rec.Namespace, rec.Name) {
			err = errors.New("file name does not match the incident")
		}
		if err != nil || len(w.spooled) >= w.opts.SpoolMax {
			if err == nil {
				err = fmt.Errorf("spool over its bound of %d", w.opts.SpoolMax)
			}
			w.metrics.spoolLost.Inc()
			w.log.Error(err, "incident spool: incident lost", "file", path)
			_ = os.Remove(path)
			continue
		}
		win := &window{key: rec.Key, name: rec.Name, ns: rec.Namespace, spec: rec.Spec, count: rec.Count,
			first: rec.First, last: rec.Last, until: rec.Until, samples: rec.Samples, timeline: rec.Timeline,
			restored: true, spooled: true, queued: true}
		w.spooled[path] = true
		w.dirty = append(w.dirty, win)
		if rec.Key != "" && now.Before(rec.Until) && w.open[rec.Key] == nil {
			w.open[rec.Key] = win
		}
	}
	return nil
}

func readSpoolFile(path string) (spoolRecord, error) {
	var rec spoolRecord
	f, err := os.Open(path)
	if err != nil {
		return rec, err
	}
	defer f.Close()
	if info, err := f.Stat(); err != nil || info.Size() > maxSpoolFileBytes {
		return rec, fmt.Errorf("spool file over %d bytes", maxSpoolFileBytes)
	}
	// The file may grow after Stat: the decoder reads no more than the bound.
	if err := json.NewDecoder(io.LimitReader(f, maxSpoolFileBytes)).Decode(&rec); err != nil {
		return rec, fmt.Errorf("decode spool file: %w", err)
	}
	if rec.Name == "" || rec.Namespace == "" {
		return rec, errors.New("spool file without name or namespace")
	}
	return rec, nil
}

// writeFileAtomic replaces path with b: a crash leaves the old file or the
// new one, never half of one.
func writeFileAtomic(path string, b []byte) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}
