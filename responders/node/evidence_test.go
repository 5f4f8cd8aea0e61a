package node_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/riposte-dev/riposte/evidence"
	"github.com/riposte-dev/riposte/host"
	"github.com/riposte-dev/riposte/responders"
	"github.com/riposte-dev/riposte/responders/node"
)

// upperOf makes dir the container's overlay upper directory, as the
// runtime's mount in the host's mount table names it; the capture reaches
// it through /proc/<this process>/root.
func upperOf(t *testing.T, l *node.Local, containerID, dir string) {
	t.Helper()
	line := fmt.Sprintf("1520 1300 0:123 / /run/containerd/io.containerd.runtime.v2.task/k8s.io/%s/rootfs rw,relatime - overlay overlay rw,lowerdir=/var/lib/lower,upperdir=%s,workdir=/var/lib/work\n", containerID, dir)
	p := filepath.Join(t.TempDir(), "mountinfo")
	if err := os.WriteFile(p, []byte(line), 0o600); err != nil {
		t.Fatal(err)
	}
	l.HostMountinfo, l.HostPID = p, os.Getpid()
}

// copyFile copies the test binary (an executable to run in the pod).
func copyFile(t *testing.T, from, to string) {
	t.Helper()
	in, err := os.Open(from)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	out, err := os.OpenFile(to, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o755)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(out, in); err != nil {
		t.Fatal(err)
	}
	if err := out.Close(); err != nil {
		t.Fatal(err)
	}
}

// bundle writes what Evidence returned and reads it back: every file's
// content by name, and the manifest.
func bundle(t *testing.T, ne responders.NodeEvidence) (map[string][]byte, *evidence.Manifest) {
	t.Helper()
	d := &evidence.Dir{Root: t.TempDir()}
	sealed, err := d.Write(context.Background(), "ns/incident/capture-node", ne.Files, time.Now())
	if err != nil {
		t.Fatalf("write bundle: %v", err)
	}
	m, err := evidence.Verify(sealed.Path, sealed.ManifestSHA256)
	if err != nil {
		t.Fatalf("verify bundle: %v", err)
	}
	out := map[string][]byte{}
	for _, f := range m.Files {
		b, err := os.ReadFile(filepath.Join(sealed.Path, filepath.FromSlash(f.Name)))
		if err != nil {
			t.Fatal(err)
		}
		out[f.Name] = b
	}
	return out, m
}

// TestCaptureBoundsDuplicatedExecutablesAndADirectoryBomb: seven processes
// run one large file under seven hard-linked names and an eighth runs a
// copy of it; the container's upper directory holds thousands of empty
// directories. The hard links are copied once (by device and inode), the
// copy does not fit the byte budget, nothing is read whole into memory,
// the directories count against the bound on entries, and the walk stops
// at its deadline; every cut is in the bundle and in the step's lines.
func TestCaptureBoundsDuplicatedExecutablesAndADirectoryBomb(t *testing.T) {
	pod := NewPod(t)
	bin := t.TempDir()
	first := filepath.Join(bin, "miner")
	copyFile(t, os.Args[0], first)
	fi, err := os.Stat(first)
	if err != nil {
		t.Fatal(err)
	}
	size := fi.Size()
	for i := 1; i < 7; i++ {
		if err := os.Link(first, filepath.Join(bin, fmt.Sprintf("miner-%d", i))); err != nil {
			t.Fatal(err)
		}
	}
	copyFile(t, first, filepath.Join(bin, "other"))
	names := []string{"miner", "miner-1", "miner-2", "miner-3", "miner-4", "miner-5", "miner-6", "other"}
	for _, n := range names {
		pod.StartBinary(t, filepath.Join(bin, n), "serve")
	}

	upper := t.TempDir()
	const bomb = 40 * 50
	for i := 0; i < 40; i++ {
		for j := 0; j < 50; j++ {
			if err := os.MkdirAll(filepath.Join(upper, fmt.Sprintf("d%02d", i), fmt.Sprintf("e%02d", j)), 0o755); err != nil {
				t.Fatal(err)
			}
		}
	}
	// One budget: the executable once, not twice, besides what the socket
	// tables and changed files may take.
	lim := node.Limits{ChangedTotal: 64 << 10, ChangedList: 1 << 20, ChangedFiles: 500}
	lim.Bundle = size + size/2 + 5*node.MaxNetTable + lim.ChangedTotal + lim.ChangedList + int64(len(names))*4096
	l := &node.Local{Cgroups: host.Cgroups{Root: pod.Root}, Limits: lim, SpoolDir: t.TempDir()}
	upperOf(t, l, pod.ContainerID, upper)
	target := responders.ProcessTarget{PodUID: pod.UID, ContainerID: "containerd://" + pod.ContainerID}

	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	ne, err := l.Evidence(context.Background(), target, false)
	runtime.ReadMemStats(&after)
	if err != nil {
		t.Fatalf("evidence: %v", err)
	}
	if alloc := after.TotalAlloc - before.TotalAlloc; alloc > uint64(size/2) {
		t.Errorf("capture allocated %d bytes for executables of %d bytes: something was read whole into memory", alloc, size)
	}
	files, _ := bundle(t, ne)
	if ents, _ := os.ReadDir(l.SpoolDir); len(ents) != 0 {
		t.Errorf("the spool keeps %d files after the bundle was written", len(ents))
	}

	var total int64
	var exeCopies []string
	for name, b := range files {
		total += int64(len(b))
		if strings.HasPrefix(name, "exe/") {
			exeCopies = append(exeCopies, name)
		}
	}
	if total > lim.Bundle {
		t.Errorf("the bundle holds %d bytes, over its budget of %d", total, lim.Bundle)
	}
	if len(exeCopies) != 1 {
		t.Fatalf("executable copies %v, want exactly one (seven names of one file, one copy over budget)", exeCopies)
	}
	self, _ := os.ReadFile(first)
	if !bytes.Equal(files[exeCopies[0]], self) {
		t.Errorf("the copy %s differs from the executable", exeCopies[0])
	}
	var exes []node.Executable
	if err := json.Unmarshal(files["node/executables.json"], &exes); err != nil || len(exes) != len(names) {
		t.Fatalf("executables.json: %d entries, %v; want %d", len(exes), err, len(names))
	}
	shared := 0
	for _, e := range exes {
		if e.Copy == exeCopies[0] {
			shared++
		}
	}
	if shared != 7 && shared != 1 {
		t.Errorf("%d processes point to the one copy; want the seven hard links (or the copy alone)", shared)
	}

	var changed []node.Changed
	if err := json.Unmarshal(files["node/changed-files.json"], &changed); err != nil {
		t.Fatal(err)
	}
	if len(changed) != lim.ChangedFiles {
		t.Errorf("changed files listed %d entries of a %d-directory bomb, want the bound %d", len(changed), bomb, lim.ChangedFiles)
	}
	short := pod.ContainerID[:12]
	wantCut := []string{
		"executables: 1 of 2 copied, byte budget " + fmt.Sprintf("%d bytes", lim.Bundle) + " reached",
		"changed files of " + short + ": listing stopped after 500 entries, bound of 500 entries reached",
	}
	// (The socket tables are the host's here, whose size this test does
	// not control.)
	for _, c := range wantCut {
		if !slices.Contains(ne.Cut, c) {
			t.Errorf("cut lines lack %q:\n%s", c, strings.Join(ne.Cut, "\n"))
		}
		if !strings.Contains(string(files["node/not-captured.txt"]), c) {
			t.Errorf("not-captured.txt lacks %q:\n%s", c, files["node/not-captured.txt"])
		}
	}

	// The walk's deadline: a capture whose walk may take no time stops at
	// once, says so, and still delivers the rest.
	l.Limits.Walk = time.Nanosecond
	ne, err = l.Evidence(context.Background(), target, false)
	if err != nil {
		t.Fatalf("evidence with an expired walk: %v", err)
	}
	files, _ = bundle(t, ne)
	if err := json.Unmarshal(files["node/changed-files.json"], &changed); err != nil || len(changed) >= bomb {
		t.Errorf("the walk past its deadline listed %d entries (%v)", len(changed), err)
	}
	if got := strings.Join(ne.Cut, "\n"); !strings.Contains(got, "changed files of "+short+": listing stopped after 0 entries, walk deadline 1ns reached") {
		t.Errorf("cut lines lack the walk's deadline:\n%s", got)
	}
	if len(files["node/processes.json"]) == 0 {
		t.Errorf("no process facts when the walk ran out of time")
	}

	// Process facts (command lines, environments, open files) are bounded
	// in memory too.
	l.Limits = node.Limits{ProcessFacts: 1, Executable: 1}
	ne, err = l.Evidence(context.Background(), target, false)
	if err != nil {
		t.Fatalf("evidence with no room for process facts: %v", err)
	}
	if got := strings.Join(ne.Cut, "\n"); !strings.Contains(got, fmt.Sprintf("processes: 0 of %d recorded, process facts bound 1 bytes reached", len(names))) {
		t.Errorf("cut lines lack the process facts bound:\n%s", got)
	}
	evidence.Discard(ne.Files)
}

// TestCaptureNeverFollowsLinksOutOfTheContainer: the container's upper
// directory holds a link to a host directory, and directories that the
// container keeps swapping for such links while captures run (between the
// listing of a directory and the reading of what is in it). No capture
// holds the host's secret; the links are listed as not followed.
func TestCaptureNeverFollowsLinksOutOfTheContainer(t *testing.T) {
	pod := NewPod(t)
	pod.StartCommand(t, "sleep", "60")
	base := t.TempDir()
	outside, upper := filepath.Join(base, "host"), filepath.Join(base, "upper")
	// Made at run time: a literal would be in the test binary.
	secret := fmt.Sprintf("host secret %x, never in a bundle", time.Now().UnixNano())
	const swapped = 32
	files := map[string]string{filepath.Join(outside, "secret"): secret, filepath.Join(upper, "etc", "app.conf"): "inside"}
	for i := 0; i < swapped; i++ {
		files[filepath.Join(upper, fmt.Sprintf("swap%02d", i), "secret")] = "the container's own"
	}
	for p, body := range files {
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Symlink(outside, filepath.Join(upper, "dir-link")); err != nil {
		t.Fatal(err)
	}
	l := &node.Local{Cgroups: host.Cgroups{Root: pod.Root}, SpoolDir: t.TempDir()}
	upperOf(t, l, pod.ContainerID, upper)

	// The container: each swapNN is a real directory one moment, a link to
	// the host directory (holding a file of the same name) the next.
	var stop atomic.Bool
	var wg sync.WaitGroup
	var swaps atomic.Int64
	for w := 0; w < 2; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; !stop.Load(); i = (i + 2) % swapped {
				swap := filepath.Join(upper, fmt.Sprintf("swap%02d", i))
				aside := swap + ".aside"
				if os.Rename(swap, aside) == nil && os.Symlink(outside, swap) == nil {
					swaps.Add(1)
					_ = os.Remove(swap)
					_ = os.Rename(aside, swap)
				}
			}
		}()
	}
	defer func() { stop.Store(true); wg.Wait() }()
	target := responders.ProcessTarget{PodUID: pod.UID, ContainerID: "containerd://" + pod.ContainerID}
	sawDirLink := false
	for i := 0; i < 100; i++ {
		ne, err := l.Evidence(context.Background(), target, false)
		if err != nil {
			t.Fatalf("capture %d: %v", i, err)
		}
		files, _ := bundle(t, ne)
		for name, b := range files {
			if strings.Contains(string(b), secret) {
				t.Fatalf("capture %d: %s holds the host's secret (after %d swaps)", i, name, swaps.Load())
			}
		}
		var changed []node.Changed
		_ = json.Unmarshal(files["node/changed-files.json"], &changed)
		for _, c := range changed {
			if c.Path == "/dir-link" && c.NotCopied == "symbolic link, not followed" {
				sawDirLink = true
			}
		}
	}
	if !sawDirLink {
		t.Errorf("the link to the host directory is not listed as not followed")
	}
	t.Logf("%d swaps during 100 captures", swaps.Load())
}
