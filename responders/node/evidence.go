package node

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/riposte-dev/riposte/evidence"
	"github.com/riposte-dev/riposte/host"
	"github.com/riposte-dev/riposte/responders"
)

// Bounds on what one capture copies. The suspect decides how many
// processes, executables and changed files there are and how large
// (hard links or memfds give one large file many names), so every size,
// count and time is bounded, and whatever a bound cuts is said in the
// bundle (node/not-captured.txt, the copied/notCopied fields) and in the
// step's message.
const (
	// MaxBundle bounds the bytes of the whole node bundle, executables
	// included.
	MaxBundle = 256 << 20
	// MaxExecutable bounds one executable.
	MaxExecutable = 64 << 20
	// MaxChangedFile and MaxChangedTotal bound the changed files copied:
	// each, and all of a capture together.
	MaxChangedFile  = 1 << 20
	MaxChangedTotal = 64 << 20
	// MaxChangedFiles bounds the entries (files, directories, links,
	// deletions) listed per container.
	MaxChangedFiles = 10000
	// MaxChangedList bounds the listing of changed files (its paths) kept in
	// memory until it is written.
	MaxChangedList = 8 << 20
	// MaxProcessFacts bounds the process facts (command lines, environment
	// names, open files) kept in memory until they are written.
	MaxProcessFacts = 16 << 20
	// MaxNetTable bounds each socket table copied.
	MaxNetTable = 4 << 20
	// MaxWalk bounds the time spent listing changed files; a step timeout
	// shortens it to half of what is left, so the bundle is still written.
	MaxWalk = 10 * time.Second
)

// Limits bound one capture; a zero field takes the default constant of
// the same name (Bundle: MaxBundle, and so on).
type Limits struct {
	Bundle, Executable, ChangedFile, ChangedTotal, ChangedList, ProcessFacts, NetTable int64
	ChangedFiles                                                                       int
	Walk                                                                               time.Duration
}

func (l Limits) withDefaults() Limits {
	def := func(v *int64, d int64) {
		if *v <= 0 {
			*v = d
		}
	}
	def(&l.Bundle, MaxBundle)
	def(&l.Executable, MaxExecutable)
	def(&l.ChangedFile, MaxChangedFile)
	def(&l.ChangedTotal, MaxChangedTotal)
	def(&l.ChangedList, MaxChangedList)
	def(&l.ProcessFacts, MaxProcessFacts)
	def(&l.NetTable, MaxNetTable)
	if l.ChangedFiles <= 0 {
		l.ChangedFiles = MaxChangedFiles
	}
	if l.Walk <= 0 {
		l.Walk = MaxWalk
	}
	return l
}

// Changed is a file a container created, modified or deleted since it started.
type Changed struct {
	// Container is the container whose root file system holds the file.
	Container string `json:"container"`
	// Path as the container sees it.
	Path    string    `json:"path"`
	Deleted bool      `json:"deleted,omitempty"`
	Size    int64     `json:"size,omitempty"`
	Mode    string    `json:"mode,omitempty"`
	ModTime time.Time `json:"modTime,omitzero"`
	SHA256  string    `json:"sha256,omitempty"`
	// Copied says the content is in the bundle under changed/<container>/<path>.
	Copied bool `json:"copied,omitempty"`
	// NotCopied says why the content of a regular file (or what a
	// directory holds) is not in the bundle.
	NotCopied string `json:"notCopied,omitempty"`
}

// Executable is what a process runs, one per process: processes running
// the same file (device and inode: hard links, one memfd) share one copy.
type Executable struct {
	PID int `json:"pid"`
	// Path is where /proc/<pid>/exe points.
	Path  string `json:"path"`
	Dev   uint64 `json:"dev,omitempty"`
	Inode uint64 `json:"inode,omitempty"`
	Size  int64  `json:"size,omitempty"`
	// Copy is the bundle file holding it.
	Copy      string `json:"copy,omitempty"`
	NotCopied string `json:"notCopied,omitempty"`
}

// budget is what is left of a capture's byte bound.
type budget struct{ left int64 }

func (b *budget) take(n int64) bool {
	if n > b.left {
		return false
	}
	b.left -= n
	return true
}

// capture is one Evidence call in progress.
type capture struct {
	lim    Limits
	budget budget
	spool  string
	files  []evidence.File
	notes  []string
	cut    []string
}

// spoolCopy streams at most limit bytes of r into a spooled file (hashing
// them into h when set) and reports how many, and whether r had more.
func (c *capture) spoolCopy(name string, r io.Reader, limit int64, h hash.Hash) (int64, bool, error) {
	f, err := os.CreateTemp(c.spool, "capture-*")
	if err != nil {
		return 0, false, fmt.Errorf("spool %s: %w", name, err)
	}
	var w io.Writer = f
	if h != nil {
		w = io.MultiWriter(f, h)
	}
	n, err := io.Copy(w, io.LimitReader(r, limit))
	more := false
	if err == nil && n == limit {
		var one [1]byte
		k, _ := r.Read(one[:])
		more = k > 0
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		_ = os.Remove(f.Name())
		return 0, false, fmt.Errorf("copy %s: %w", name, err)
	}
	c.files = append(c.files, evidence.File{Name: name, Path: f.Name()})
	return n, more, nil
}

// note records something not captured; notes are charged to the budget
// too (there is at most one per process, entry or table).
func (c *capture) note(s string) {
	c.budget.left -= int64(len(s)) + 1
	c.notes = append(c.notes, s)
}

// add keeps a small, generated file in memory, charged to the budget.
func (c *capture) add(name string, data []byte) {
	c.budget.left -= int64(len(data))
	c.files = append(c.files, evidence.File{Name: name, Data: data})
}

func mib(n int64) string {
	if n%(1<<20) == 0 {
		return fmt.Sprintf("%d MiB", n>>20)
	}
	return fmt.Sprintf("%d bytes", n)
}

// Evidence implements responders.Node: the processes of the container (of
// every container of the pod when the target names no container, or the one
// host process of a target with neither) with command lines, open files and
// sockets, the socket tables of their network namespace, a copy of each
// distinct executable read through /proc/<pid>/exe (so a binary deleted after
// start is still captured), the files each container changed since it
// started (its overlay upper directory, located through the runtime's mount
// in the host's mount table, read beneath it without following any link),
// and the flight recorder, all within Limits. Environment values are left
// out unless includeSecrets.
func (l *Local) Evidence(ctx context.Context, t responders.ProcessTarget, includeSecrets bool) (ne responders.NodeEvidence, err error) {
	cg := l.cgroups()
	var pids []int
	var containers []string
	switch {
	case t.ContainerID != "":
		dir, err := cg.ContainerDir(t.PodUID, t.ContainerID)
		if err != nil {
			return ne, err
		}
		if pids, err = host.PIDs(dir); err != nil {
			return ne, err
		}
		_, id := host.SplitContainerID(t.ContainerID)
		containers = []string{id}
	case t.PodUID != "":
		dir, err := cg.PodDir(t.PodUID)
		if err != nil {
			return ne, err
		}
		if pids, err = host.PIDs(dir); err != nil {
			return ne, err
		}
		ents, _ := os.ReadDir(dir)
		for _, e := range ents {
			if ref, ok := host.ParsePath("/" + e.Name()); ok && e.IsDir() {
				containers = append(containers, ref.ContainerID)
			}
		}
	case t.PID > 0:
		pids = []int{t.PID}
	default:
		return ne, errors.New("the capture names no pod, container or process")
	}

	lim := l.Limits.withDefaults()
	c := &capture{lim: lim, budget: budget{left: lim.Bundle}, spool: l.SpoolDir}
	if c.spool == "" {
		c.spool = os.TempDir()
	}
	defer func() {
		if err != nil {
			evidence.Discard(c.files)
		}
	}()

	procs, err := l.processes(ctx, c, pids, includeSecrets)
	if err != nil {
		return ne, err
	}
	js, _ := json.MarshalIndent(procs, "", "  ")
	c.add("node/processes.json", js)
	c.add("node/pstree.txt", host.Tree(procs))
	// Executables come first (their processes may be gone soon) but take
	// only what the later parts cannot claim, so large executables never
	// crowd out the socket tables or the changed files.
	later := int64(len(netTables))*lim.NetTable + exeListCost*int64(len(procs))
	if len(containers) > 0 {
		later += lim.ChangedTotal + lim.ChangedList
	}
	c.budget.left -= later
	exes, err := l.executables(ctx, c, procs)
	if err != nil {
		return ne, err
	}
	c.budget.left += later
	xj, _ := json.MarshalIndent(exes, "", "  ")
	c.add("node/executables.json", xj)
	if len(procs) > 0 {
		// The containers of a pod share its network namespace.
		for _, n := range netTables {
			c.netTable(l.Proc.Dir(procs[0].PID), n)
		}
	}

	if len(containers) > 0 {
		walkFor := lim.Walk
		if dl, ok := ctx.Deadline(); ok {
			walkFor = min(walkFor, time.Until(dl)/2)
		}
		wctx, cancel := context.WithTimeout(ctx, walkFor)
		var changed []Changed
		total := int64(0)
		for _, id := range containers {
			upper, err := host.RootfsUpper(l.mountinfo(), id)
			if err != nil {
				c.note(fmt.Sprintf("changed files of container %s: %v", id, err))
				continue
			}
			// The path is the host's; the agent (in its own mount namespace as a
			// DaemonSet pod) reaches the host's file system through init's root.
			changed = append(changed, c.changedFiles(wctx, walkFor, l.hostPath(upper), id, &total)...)
		}
		cancel()
		if err := ctx.Err(); err != nil {
			return ne, err
		}
		cj, _ := json.MarshalIndent(changed, "", "  ")
		c.add("node/changed-files.json", cj)
	}
	if l.FlightRecorder != nil && t.PodUID != "" {
		var buf bytes.Buffer
		for _, ev := range l.FlightRecorder(t.PodUID) {
			buf.Write(bytes.TrimSpace(ev))
			buf.WriteByte('\n')
		}
		c.add("node/flight-recorder.jsonl", buf.Bytes())
	}
	if len(c.notes) > 0 || len(c.cut) > 0 {
		sort.Strings(c.notes)
		lines := append(append([]string(nil), c.cut...), c.notes...)
		c.files = append(c.files, evidence.File{Name: "node/not-captured.txt", Data: []byte(strings.Join(lines, "\n") + "\n")})
	}
	return responders.NodeEvidence{Files: c.files, Cut: c.cut}, nil
}

// netTables are the socket tables of the network namespace a capture copies.
var netTables = []string{"tcp", "tcp6", "udp", "udp6", "unix"}

// exeListCost and changedListCost are about what an entry of
// executables.json and of changed-files.json takes, besides its paths.
const (
	exeListCost     = 512
	changedListCost = 512
)

// factsSize is about what a process's facts take in memory and in JSON.
func factsSize(p host.Process) int64 {
	n := 256 + len(p.Name) + len(p.Exe) + len(p.Cwd) + len(p.Cgroup)
	for _, s := range p.Cmdline {
		n += len(s) + 4
	}
	for _, s := range p.Env {
		n += len(s) + 8
	}
	for k, v := range p.FDs {
		n += len(k) + len(v) + 12
	}
	return int64(n)
}

// processes reads the facts of pids within the process-facts bound, itself
// charged to the bundle's budget.
func (l *Local) processes(ctx context.Context, c *capture, pids []int, includeSecrets bool) ([]host.Process, error) {
	var procs []host.Process
	facts := budget{left: min(c.lim.ProcessFacts, c.budget.left)}
	for i, pid := range pids {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		p, err := l.Proc.Process(pid, includeSecrets)
		if err != nil {
			continue // exited while we looked
		}
		if !facts.take(factsSize(p)) {
			c.cut = append(c.cut, fmt.Sprintf("processes: %d of %d recorded, process facts bound %s reached", len(procs), len(procs)+len(pids)-i, mib(c.lim.ProcessFacts)))
			break
		}
		procs = append(procs, p)
	}
	return procs, nil
}

// executables copies each distinct executable of procs once, by device and
// inode, streamed from /proc/<pid>/exe to the spool within the bounds.
func (l *Local) executables(ctx context.Context, c *capture, procs []host.Process) ([]Executable, error) {
	type key struct{ dev, ino uint64 }
	copied := map[key]Executable{}
	var out []Executable
	distinct, done, overFile, overBudget, failed := 0, 0, 0, 0, 0
	for _, p := range procs {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		e := Executable{PID: p.PID, Path: p.Exe}
		// /proc/<pid>/exe is a magic link to the file the kernel runs:
		// following it is the point.
		f, err := os.Open(filepath.Join(l.Proc.Dir(p.PID), "exe"))
		if err != nil {
			e.NotCopied = err.Error()
			out = append(out, e)
			continue
		}
		var st syscall.Stat_t
		if err := syscall.Fstat(int(f.Fd()), &st); err != nil {
			f.Close()
			e.NotCopied = err.Error()
			out = append(out, e)
			continue
		}
		k := key{st.Dev, st.Ino}
		e.Dev, e.Inode, e.Size = st.Dev, st.Ino, st.Size
		if prev, ok := copied[k]; ok {
			f.Close()
			e.Copy, e.NotCopied = prev.Copy, prev.NotCopied
			out = append(out, e)
			continue
		}
		distinct++
		switch {
		case st.Mode&syscall.S_IFMT != syscall.S_IFREG:
			e.NotCopied = "not a regular file"
			failed++
		case st.Size > c.lim.Executable:
			e.NotCopied = fmt.Sprintf("larger than the bound of %s per executable", mib(c.lim.Executable))
			overFile++
		case !c.budget.take(st.Size):
			e.NotCopied = fmt.Sprintf("byte budget %s reached", mib(c.lim.Bundle))
			overBudget++
		default:
			name := fmt.Sprintf("exe/%d-%s", p.PID, filepath.Base(p.Exe))
			n, _, err := c.spoolCopy(name, f, st.Size, nil)
			c.budget.left += st.Size - n
			if err != nil {
				e.NotCopied = err.Error()
				failed++
			} else {
				e.Copy = name
				done++
			}
		}
		f.Close()
		copied[k] = e
		out = append(out, e)
	}
	for _, e := range out {
		if e.NotCopied != "" {
			c.note(fmt.Sprintf("executable of pid %d (%s): %s", e.PID, e.Path, e.NotCopied))
		}
	}
	if done < distinct {
		msg := fmt.Sprintf("executables: %d of %d copied", done, distinct)
		if overBudget > 0 {
			msg += fmt.Sprintf(", byte budget %s reached", mib(c.lim.Bundle))
		}
		if overFile > 0 {
			msg += fmt.Sprintf(", %d over the bound of %s each", overFile, mib(c.lim.Executable))
		}
		if failed > 0 {
			msg += fmt.Sprintf(", %d unreadable", failed)
		}
		c.cut = append(c.cut, msg)
	}
	return out, nil
}

// netTable copies /proc/<pid>/net/<name> within its bound and the budget.
func (c *capture) netTable(procDir, name string) {
	f, err := os.Open(filepath.Join(procDir, "net", name))
	if err != nil {
		return
	}
	defer f.Close()
	limit := min(c.lim.NetTable, c.budget.left)
	if limit <= 0 {
		c.cut = append(c.cut, fmt.Sprintf("node/net/%s: byte budget %s reached", name, mib(c.lim.Bundle)))
		return
	}
	n, more, err := c.spoolCopy("node/net/"+name, f, limit, nil)
	c.budget.left -= n
	switch {
	case err != nil:
		c.note(fmt.Sprintf("node/net/%s: %v", name, err))
	case more:
		c.cut = append(c.cut, fmt.Sprintf("node/net/%s: cut at %s", name, mib(limit)))
	}
}

// maxStoredPath bounds the path of a changed file copied into a bundle, so
// the bundle's own path (its root, id and changed/<container>/) stays
// within PATH_MAX and one deep file cannot make the whole bundle fail.
const maxStoredPath = 2048

// changedFiles lists (and copies, within bounds) the files of an overlay
// upper directory. A character device 0:0 is overlayfs' mark of a
// deletion. The container owns everything in it, so the directory is
// read beneath itself (host.Beneath: openat2, no link followed in any
// element); directories count against the bound on entries like files do,
// and the walk stops at ctx's deadline. total is what the capture's
// changed files copied so far.
func (c *capture) changedFiles(ctx context.Context, walkFor time.Duration, upper, container string, total *int64) []Changed {
	short := shortID(container)
	b, err := host.OpenBeneath(upper)
	if err != nil {
		c.note(fmt.Sprintf("changed files of container %s: not read: %v", container, err))
		if errors.Is(err, host.ErrNoOpenat2) {
			c.cut = append(c.cut, fmt.Sprintf("changed files of %s: refused, openat2 unavailable", short))
		}
		return nil
	}
	defer b.Close()
	var list []Changed
	dirs := map[string]int{} // index in list of each directory listed
	listBytes := int64(0)
	regular, copied := 0, 0
	var stopped, budgetCut string
	err = b.Walk(ctx, func(rel string, st *unix.Stat_t, err error) error {
		path := "/" + rel
		if err != nil {
			// A directory that could not be read: swapped for a link, removed.
			c.note(fmt.Sprintf("changed files of container %s: %v", container, err))
			if i, ok := dirs[path]; ok {
				list[i].NotCopied = err.Error()
			}
			return nil
		}
		if len(list) >= c.lim.ChangedFiles {
			stopped = fmt.Sprintf("bound of %d entries reached", c.lim.ChangedFiles)
			return fs.SkipAll
		}
		cost := int64(len(path)) + changedListCost
		if listBytes+cost > c.lim.ChangedList || !c.budget.take(cost) {
			stopped = fmt.Sprintf("listing bound %s or byte budget %s reached", mib(c.lim.ChangedList), mib(c.lim.Bundle))
			return fs.SkipAll
		}
		listBytes += cost
		mode := fileMode(st.Mode)
		ch := Changed{Container: container, Path: path, Mode: mode.String(), ModTime: time.Unix(st.Mtim.Unix()).UTC()}
		switch {
		case mode&fs.ModeCharDevice != 0 && st.Rdev == 0:
			ch = Changed{Container: container, Path: path, Deleted: true}
		case mode&fs.ModeSymlink != 0:
			ch.NotCopied = "symbolic link, not followed"
		case mode.IsRegular():
			regular++
			ch.Size = st.Size
			switch {
			case len(rel) > maxStoredPath:
				ch.NotCopied = fmt.Sprintf("path longer than the %d bytes a bundle stores", maxStoredPath)
			case st.Size > c.lim.ChangedFile:
				ch.NotCopied = fmt.Sprintf("larger than the bound of %s per file", mib(c.lim.ChangedFile))
			case *total+st.Size > c.lim.ChangedTotal || !c.budget.take(st.Size):
				ch.NotCopied = fmt.Sprintf("changed-file bound %s or byte budget %s reached", mib(c.lim.ChangedTotal), mib(c.lim.Bundle))
				budgetCut = ch.NotCopied
			default:
				ch.NotCopied = c.copyChanged(b, rel, short, st.Size, total, &ch)
				if ch.Copied {
					copied++
				} else {
					c.note(fmt.Sprintf("changed file %s of container %s: %s", path, container, ch.NotCopied))
				}
			}
		}
		if mode.IsDir() {
			dirs[path] = len(list)
		}
		list = append(list, ch)
		return nil
	})
	if err != nil {
		if walkFor > time.Millisecond {
			walkFor = walkFor.Round(time.Millisecond)
		}
		stopped = fmt.Sprintf("walk deadline %v reached", walkFor)
		if !errors.Is(err, context.DeadlineExceeded) {
			stopped = err.Error()
		}
	}
	if stopped != "" {
		c.cut = append(c.cut, fmt.Sprintf("changed files of %s: listing stopped after %d entries, %s", short, len(list), stopped))
	}
	if copied < regular {
		msg := fmt.Sprintf("changed files of %s: %d of %d regular files copied", short, copied, regular)
		if budgetCut != "" {
			msg += ", " + budgetCut
		}
		c.cut = append(c.cut, msg)
	}
	return list
}

// copyChanged streams one changed file, opened beneath the upper
// directory, into the spool; it returns why it was not copied, or "".
func (c *capture) copyChanged(b *host.Beneath, rel, short string, size int64, total *int64, ch *Changed) string {
	f, _, err := b.OpenFile(rel)
	if err != nil {
		c.budget.left += size
		return err.Error()
	}
	defer f.Close()
	h := sha256.New()
	n, more, err := c.spoolCopy("changed/"+short+"/"+rel, f, size, h)
	c.budget.left += size - n
	if err != nil {
		return err.Error()
	}
	*total += n
	ch.Copied, ch.Size, ch.SHA256 = true, n, hex.EncodeToString(h.Sum(nil))
	if more {
		return fmt.Sprintf("grew while copied: the first %d bytes", n)
	}
	return ""
}

// fileMode converts a stat(2) mode to an fs.FileMode.
func fileMode(m uint32) fs.FileMode {
	mode := fs.FileMode(m & 0o777)
	switch m & unix.S_IFMT {
	case unix.S_IFDIR:
		mode |= fs.ModeDir
	case unix.S_IFLNK:
		mode |= fs.ModeSymlink
	case unix.S_IFIFO:
		mode |= fs.ModeNamedPipe
	case unix.S_IFSOCK:
		mode |= fs.ModeSocket
	case unix.S_IFCHR:
		mode |= fs.ModeDevice | fs.ModeCharDevice
	case unix.S_IFBLK:
		mode |= fs.ModeDevice
	}
	if m&unix.S_ISUID != 0 {
		mode |= fs.ModeSetuid
	}
	if m&unix.S_ISGID != 0 {
		mode |= fs.ModeSetgid
	}
	if m&unix.S_ISVTX != 0 {
		mode |= fs.ModeSticky
	}
	return mode
}

func shortID(id string) string {
	if len(id) > 12 {
		return id[:12]
	}
	return id
}

// SpoolIn prepares the spool folder of captures inside an evidence store's
// root, <root>/.spool (no bundle id can name it: ids start with a
// namespace), so bundles take spooled files by rename. What an interrupted
// capture left there is removed.
func SpoolIn(root string) (string, error) {
	dir := filepath.Join(root, ".spool")
	if err := os.RemoveAll(dir); err != nil {
		return "", fmt.Errorf("empty the capture spool %s: %w", dir, err)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", fmt.Errorf("create the capture spool %s: %w", dir, err)
	}
	return dir, nil
}
