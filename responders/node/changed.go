package node

import (
	"bufio"
	"crypto/sha256"
	"encoding/hex"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/riposte-dev/riposte/evidence"
)

// Bounds on the content copied from a container's changed files.
const (
	MaxChangedFile  = 1 << 20
	MaxChangedTotal = 64 << 20
)

// Changed is a file a container created, modified or deleted since it started.
type Changed struct {
	// PID is a process whose root holds the file (one per container).
	PID int `json:"pid"`
	// Path as the container sees it.
	Path    string    `json:"path"`
	Deleted bool      `json:"deleted,omitempty"`
	Size    int64     `json:"size,omitempty"`
	Mode    string    `json:"mode,omitempty"`
	ModTime time.Time `json:"modTime,omitempty"`
	SHA256  string    `json:"sha256,omitempty"`
	// Copied says the content is in the bundle under changed/<pid>/<path>.
	Copied bool `json:"copied,omitempty"`
}

// upperDir returns the overlay upper directory of the process's root file
// system — where the runtime's snapshotter keeps everything the container
// wrote — or "" when the root is not an overlay.
func (l *Local) upperDir(pid int) string {
	f, err := os.Open(filepath.Join(l.proc(), itoa(pid), "mountinfo"))
	if err != nil {
		return ""
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		// 36 35 98:0 / / rw,relatime - overlay overlay rw,lowerdir=…,upperdir=…,workdir=…
		pre, post, ok := strings.Cut(sc.Text(), " - ")
		fields := strings.Fields(pre)
		if !ok || len(fields) < 5 || fields[4] != "/" {
			continue
		}
		after := strings.Fields(post)
		if len(after) < 3 || after[0] != "overlay" {
			return ""
		}
		for _, opt := range strings.Split(after[2], ",") {
			if v, ok := strings.CutPrefix(opt, "upperdir="); ok {
				return v
			}
		}
	}
	return ""
}

// changedFiles lists (and copies, within bounds) the files of an overlay
// upper directory. A character device 0:0 is overlayfs' mark of a deletion.
func changedFiles(upper string, pid int, budget *int64) ([]Changed, []evidence.File) {
	var list []Changed
	var files []evidence.File
	_ = filepath.WalkDir(upper, func(path string, d fs.DirEntry, err error) error {
		if err != nil || path == upper {
			return nil
		}
		rel := "/" + filepath.ToSlash(strings.TrimPrefix(path, upper+string(os.PathSeparator)))
		info, err := d.Info()
		if err != nil {
			return nil
		}
		c := Changed{PID: pid, Path: rel, Mode: info.Mode().String(), ModTime: info.ModTime().UTC()}
		switch {
		case info.Mode()&fs.ModeCharDevice != 0:
			if st, ok := info.Sys().(*syscall.Stat_t); ok && st.Rdev == 0 {
				c = Changed{PID: pid, Path: rel, Deleted: true}
			}
		case info.Mode().IsRegular():
			c.Size = info.Size()
			if b, err := readBounded(path, MaxChangedFile); err == nil {
				sum := sha256.Sum256(b)
				c.SHA256 = hex.EncodeToString(sum[:])
				if *budget >= int64(len(b)) {
					*budget -= int64(len(b))
					c.Copied = true
					files = append(files, evidence.File{Name: "changed/" + strconv.Itoa(pid) + rel, Data: b})
				}
			}
		case info.IsDir():
			return nil // its files are listed one by one
		}
		list = append(list, c)
		return nil
	})
	return list, files
}

func itoa(i int) string { return strconv.Itoa(i) }
