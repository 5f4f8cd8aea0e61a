package evidence

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"
)

// File is one piece of evidence. Name is a slash-separated relative path.
type File struct {
	Name string
	Data []byte
	// Path, when set, names a file on this machine that holds the content
	// instead of Data: what may be large (executables, a container's
	// files) is spooled to disk as it is captured, never held in memory.
	// Write takes the file: it moves it into the bundle (copies it across
	// file systems) and removes it whatever happens.
	Path string
}

// Discard removes the spooled files (File.Path) of files that will not be
// written.
func Discard(files []File) {
	for _, f := range files {
		if f.Path != "" {
			_ = os.Remove(f.Path)
		}
	}
}

// Entry is a file's line in the manifest.
type Entry struct {
	Name   string `json:"name"`
	SHA256 string `json:"sha256"`
	Size   int64  `json:"size"`
}

// Manifest lists a bundle's files.
type Manifest struct {
	ID         string    `json:"id"`
	CapturedAt time.Time `json:"capturedAt"`
	Files      []Entry   `json:"files"`
}

// ManifestFile is the manifest's name inside a bundle.
const ManifestFile = "manifest.json"

// Sealed describes a written bundle.
type Sealed struct {
	// Location is node:path (or the folder path when Node is empty).
	Location       string
	Path           string
	ManifestSHA256 string
	Files          int
	CapturedAt     time.Time
}

// Dir stores bundles under Root on a node folder or a mounted PVC.
type Dir struct {
	Root string
	// Node names the node in locations (node:path), for finding the bundle later.
	Node string
}

// safeID turns an id like "ns/incident/step" into a relative path that cannot
// leave Root.
func safeID(id string) (string, error) {
	var parts []string
	for _, p := range strings.Split(id, "/") {
		if p == "" || p == "." || p == ".." {
			return "", fmt.Errorf("bundle id %q: empty, . or .. path element", id)
		}
		parts = append(parts, p)
	}
	return filepath.Join(parts...), nil
}

// Write stores files as bundle id. Writing the same id again replaces the
// bundle whole: it is built in a temporary folder and renamed into place, so a
// crash never leaves a half-written bundle under its final name.
func (d *Dir) Write(ctx context.Context, id string, files []File, now time.Time) (Sealed, error) {
	rel, err := safeID(id)
	if err != nil {
		return Sealed{}, err
	}
	final := filepath.Join(d.Root, rel)
	defer Discard(files)
	if err := os.MkdirAll(filepath.Dir(final), 0o700); err != nil {
		return Sealed{}, fmt.Errorf("create evidence folder: %w", err)
	}
	tmp, err := os.MkdirTemp(filepath.Dir(final), ".tmp-")
	if err != nil {
		return Sealed{}, fmt.Errorf("create evidence folder: %w", err)
	}
	defer os.RemoveAll(tmp)
	m := Manifest{ID: id, CapturedAt: now.UTC()}
	seen := map[string]bool{}
	for _, f := range files {
		if err := ctx.Err(); err != nil {
			return Sealed{}, err
		}
		name, err := safeID(f.Name)
		if err != nil || f.Name == ManifestFile || seen[f.Name] {
			return Sealed{}, fmt.Errorf("evidence file name %q is invalid or repeated", f.Name)
		}
		seen[f.Name] = true
		p := filepath.Join(tmp, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
			return Sealed{}, fmt.Errorf("write evidence %s: %w", f.Name, err)
		}
		e := Entry{Name: f.Name}
		if f.Path != "" {
			if e.SHA256, e.Size, err = place(f.Path, p); err != nil {
				return Sealed{}, fmt.Errorf("write evidence %s: %w", f.Name, err)
			}
		} else {
			if err := os.WriteFile(p, f.Data, 0o400); err != nil {
				return Sealed{}, fmt.Errorf("write evidence %s: %w", f.Name, err)
			}
			sum := sha256.Sum256(f.Data)
			e.SHA256, e.Size = hex.EncodeToString(sum[:]), int64(len(f.Data))
		}
		m.Files = append(m.Files, e)
	}
	sort.Slice(m.Files, func(i, j int) bool { return m.Files[i].Name < m.Files[j].Name })
	data, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return Sealed{}, err
	}
	if err := os.WriteFile(filepath.Join(tmp, ManifestFile), data, 0o400); err != nil {
		return Sealed{}, fmt.Errorf("write evidence manifest: %w", err)
	}
	if err := os.RemoveAll(final); err != nil {
		return Sealed{}, fmt.Errorf("replace evidence bundle %s: %w", id, err)
	}
	if err := os.Rename(tmp, final); err != nil {
		return Sealed{}, fmt.Errorf("seal evidence bundle %s: %w", id, err)
	}
	sum := sha256.Sum256(data)
	loc := final
	if d.Node != "" {
		loc = d.Node + ":" + final
	}
	return Sealed{Location: loc, Path: final, ManifestSHA256: hex.EncodeToString(sum[:]), Files: len(m.Files), CapturedAt: m.CapturedAt}, nil
}

// place moves the spooled file src to dst (copying it when they are on
// different file systems) and returns the SHA-256 and size of what dst
// holds, reading it as a stream.
func place(src, dst string) (string, int64, error) {
	if err := os.Rename(src, dst); err != nil {
		in, err := os.Open(src)
		if err != nil {
			return "", 0, err
		}
		defer in.Close()
		out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o400)
		if err != nil {
			return "", 0, err
		}
		h := sha256.New()
		n, err := io.Copy(io.MultiWriter(out, h), in)
		if cerr := out.Close(); err == nil {
			err = cerr
		}
		return hex.EncodeToString(h.Sum(nil)), n, err
	}
	if err := os.Chmod(dst, 0o400); err != nil {
		return "", 0, err
	}
	f, err := os.Open(dst)
	if err != nil {
		return "", 0, err
	}
	defer f.Close()
	h := sha256.New()
	n, err := io.Copy(h, f)
	return hex.EncodeToString(h.Sum(nil)), n, err
}

// Verify re-hashes a bundle folder against its manifest and the manifest
// against want (the hash recorded in the Incident).
func Verify(path, want string) (*Manifest, error) {
	data, err := os.ReadFile(filepath.Join(path, ManifestFile))
	if err != nil {
		return nil, fmt.Errorf("read manifest: %w", err)
	}
	sum := sha256.Sum256(data)
	if got := hex.EncodeToString(sum[:]); got != want {
		return nil, fmt.Errorf("manifest sha256 %s, recorded %s", got, want)
	}
	var m Manifest
	if err := json.Unmarshal(data, &m); err != nil {
		return nil, fmt.Errorf("decode manifest: %w", err)
	}
	for _, e := range m.Files {
		got, err := hashFile(filepath.Join(path, filepath.FromSlash(e.Name)))
		if err != nil {
			return nil, fmt.Errorf("read %s: %w", e.Name, err)
		}
		if got != e.SHA256 {
			return nil, fmt.Errorf("%s: sha256 %s, manifest says %s", e.Name, got, e.SHA256)
		}
	}
	return &m, nil
}

func hashFile(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}
