// Package evidence captures what a host says about a process at the moment
// a rule fired, before the process or its container is gone: the /proc facts
// (status, command line, environment, maps, open files, sockets, cgroup,
// namespaces), the executable itself and the event, into one folder with a
// SHA-256 manifest.
package evidence

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
	"strconv"
	"strings"
	"time"

	"github.com/riposte-dev/riposte/engine"
)

// MaxFileBytes bounds each captured file (an executable can be large).
const MaxFileBytes = 64 << 20

// Manifest lists every captured file with its SHA-256.
type Manifest struct {
	Rule    string            `json:"rule"`
	PID     int64             `json:"pid"`
	Time    time.Time         `json:"time"`
	Files   map[string]string `json:"files"` // name -> sha256 hex
	Missing map[string]string `json:"missing,omitempty"`
	// SHA256 is the digest of the sorted "sha256  name" lines (MANIFEST.sha256).
	SHA256 string `json:"sha256"`
}

// procFiles are the /proc/<pid> entries copied as they are.
var procFiles = []string{"status", "cmdline", "environ", "maps", "cgroup", "mountinfo", "stat", "net/tcp", "net/tcp6", "net/udp", "net/udp6"}

// Capture writes the evidence of ev's process for a rule under dir, in a
// new folder it returns. Files the process no longer has are listed as
// missing, not errors: processes die.
func Capture(dir, rule string, ev *engine.Event) (string, *Manifest, error) {
	pid := ev.Process.PID
	name := fmt.Sprintf("%s-%s-%d", ev.Time.UTC().Format("20060102T150405.000000000Z"), sanitize(rule), pid)
	out := filepath.Join(dir, name)
	if err := os.MkdirAll(out, 0o700); err != nil {
		return "", nil, fmt.Errorf("capture evidence for %s pid %d: %w", rule, pid, err)
	}
	m := &Manifest{Rule: rule, PID: pid, Time: ev.Time, Files: map[string]string{}, Missing: map[string]string{}}
	proc := filepath.Join("/proc", strconv.FormatInt(pid, 10))
	save := func(name string, r io.Reader) {
		sum, err := write(filepath.Join(out, name), r)
		if err != nil {
			m.Missing[name] = err.Error()
			return
		}
		m.Files[name] = sum
	}
	for _, f := range procFiles {
		src, err := os.Open(filepath.Join(proc, f))
		if err != nil {
			m.Missing["proc/"+f] = err.Error()
			continue
		}
		save("proc/"+f, src)
		src.Close()
	}
	var links strings.Builder
	for _, l := range []string{"exe", "cwd", "root", "ns/mnt", "ns/pid", "ns/net", "ns/user"} {
		t, err := os.Readlink(filepath.Join(proc, l))
		if err != nil {
			t = "error: " + err.Error()
		}
		fmt.Fprintf(&links, "%s -> %s\n", l, t)
	}
	if fds, err := os.ReadDir(filepath.Join(proc, "fd")); err == nil {
		for _, fd := range fds {
			t, _ := os.Readlink(filepath.Join(proc, "fd", fd.Name()))
			fmt.Fprintf(&links, "fd/%s -> %s\n", fd.Name(), t)
		}
	}
	save("proc/links.txt", strings.NewReader(links.String()))
	// The executable through /proc/<pid>/exe: works even when the file was
	// deleted or lives in a container's file system.
	if exe, err := os.Open(filepath.Join(proc, "exe")); err == nil {
		save("exe", io.LimitReader(exe, MaxFileBytes))
		exe.Close()
	} else {
		m.Missing["exe"] = err.Error()
	}
	evJSON, _ := json.MarshalIndent(ev, "", "  ")
	save("event.json", strings.NewReader(string(evJSON)))

	names := make([]string, 0, len(m.Files))
	for n := range m.Files {
		names = append(names, n)
	}
	sort.Strings(names)
	var sums strings.Builder
	for _, n := range names {
		fmt.Fprintf(&sums, "%s  %s\n", m.Files[n], n)
	}
	if err := os.WriteFile(filepath.Join(out, "MANIFEST.sha256"), []byte(sums.String()), 0o600); err != nil {
		return out, m, fmt.Errorf("write evidence manifest: %w", err)
	}
	d := sha256.Sum256([]byte(sums.String()))
	m.SHA256 = hex.EncodeToString(d[:])
	mj, _ := json.MarshalIndent(m, "", "  ")
	if err := os.WriteFile(filepath.Join(out, "manifest.json"), mj, 0o600); err != nil {
		return out, m, fmt.Errorf("write evidence manifest: %w", err)
	}
	return out, m, nil
}

func write(path string, r io.Reader) (string, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return "", err
	}
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_EXCL, 0o600)
	if err != nil {
		return "", err
	}
	h := sha256.New()
	_, err = io.Copy(io.MultiWriter(f, h), r)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(path)
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

func sanitize(s string) string {
	return strings.Map(func(r rune) rune {
		if r == '/' || r == os.PathSeparator || r < ' ' {
			return '_'
		}
		return r
	}, s)
}

// ErrNoEvidence is returned by Verify when a manifest names a missing file.
var ErrNoEvidence = errors.New("evidence file missing")

// Verify recomputes every file's digest against MANIFEST.sha256.
func Verify(dir string) error {
	b, err := os.ReadFile(filepath.Join(dir, "MANIFEST.sha256"))
	if err != nil {
		return fmt.Errorf("verify evidence %s: %w", dir, err)
	}
	for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		sum, name, ok := strings.Cut(line, "  ")
		if !ok {
			return fmt.Errorf("verify evidence %s: malformed line %q", dir, line)
		}
		f, err := os.Open(filepath.Join(dir, name))
		if err != nil {
			return fmt.Errorf("verify evidence %s: %s: %w", dir, name, ErrNoEvidence)
		}
		h := sha256.New()
		io.Copy(h, f)
		f.Close()
		if hex.EncodeToString(h.Sum(nil)) != sum {
			return fmt.Errorf("verify evidence %s: %s: digest mismatch", dir, name)
		}
	}
	return nil
}
