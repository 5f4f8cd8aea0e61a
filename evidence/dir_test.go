package evidence_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/riposte-dev/riposte/evidence"
)

func TestWriteThenVerifyDetectsTampering(t *testing.T) {
	d := &evidence.Dir{Root: t.TempDir(), Node: "node-a"}
	files := []evidence.File{{Name: "pod.yaml", Data: []byte("kind: Pod\n")}, {Name: "logs/app.log", Data: []byte("hello\n")}}
	s, err := d.Write(context.Background(), "shop/inc-1/capture", files, time.Unix(0, 0))
	if err != nil {
		t.Fatal(err)
	}
	if s.Files != 2 || !strings.HasPrefix(s.Location, "node-a:") || len(s.ManifestSHA256) != 64 {
		t.Fatalf("sealed %+v", s)
	}
	m, err := evidence.Verify(s.Path, s.ManifestSHA256)
	if err != nil {
		t.Fatalf("verify: %v", err)
	}
	// sha256("hello\n")
	if m.Files[0].Name != "logs/app.log" || m.Files[0].SHA256 != "5891b5b522d5df086d0ff0b110fbd9d21bb4fc7163af34d08286a2e846f6be03" {
		t.Fatalf("manifest %+v", m.Files)
	}
	// Rewriting the same id replaces the bundle whole.
	s2, err := d.Write(context.Background(), "shop/inc-1/capture", files[:1], time.Unix(1, 0))
	if err != nil || s2.Files != 1 {
		t.Fatalf("rewrite: %+v %v", s2, err)
	}
	if _, err := os.Stat(filepath.Join(s2.Path, "logs")); !os.IsNotExist(err) {
		t.Fatalf("old files survive a rewrite")
	}
	p := filepath.Join(s2.Path, "pod.yaml")
	_ = os.Chmod(p, 0o600)
	if err := os.WriteFile(p, []byte("kind: Secret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := evidence.Verify(s2.Path, s2.ManifestSHA256); err == nil || !strings.Contains(err.Error(), "pod.yaml") {
		t.Fatalf("tampered file not detected: %v", err)
	}
	if _, err := evidence.Verify(s2.Path, s.ManifestSHA256); err == nil {
		t.Fatalf("wrong manifest hash accepted")
	}
}

func TestWriteRejectsPathsLeavingTheRoot(t *testing.T) {
	d := &evidence.Dir{Root: t.TempDir()}
	for _, id := range []string{"../x", "a//b", "a/./b"} {
		if _, err := d.Write(context.Background(), id, nil, time.Now()); err == nil {
			t.Errorf("id %q accepted", id)
		}
	}
	if _, err := d.Write(context.Background(), "ok", []evidence.File{{Name: "../../etc/passwd", Data: nil}}, time.Now()); err == nil {
		t.Errorf("file name leaving the bundle accepted")
	}
}

// TestWriteTakesSpooledFiles: a file spooled on disk is moved into the
// bundle and hashed from there; a Write that fails still removes what was
// spooled, so nothing piles up.
func TestWriteTakesSpooledFiles(t *testing.T) {
	spool := t.TempDir()
	spooled := func(body string) string {
		f, err := os.CreateTemp(spool, "capture-*")
		if err != nil {
			t.Fatal(err)
		}
		if _, err := f.WriteString(body); err != nil {
			t.Fatal(err)
		}
		f.Close()
		return f.Name()
	}
	d := &evidence.Dir{Root: t.TempDir()}
	s, err := d.Write(context.Background(), "ns/inc/capture", []evidence.File{{Name: "exe/1-sh", Path: spooled("hello\n")}, {Name: "small", Data: []byte("x")}}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	m, err := evidence.Verify(s.Path, s.ManifestSHA256)
	if err != nil {
		t.Fatal(err)
	}
	// sha256("hello\n")
	if m.Files[0].Name != "exe/1-sh" || m.Files[0].Size != 6 || m.Files[0].SHA256 != "5891b5b522d5df086d0ff0b110fbd9d21bb4fc7163af34d08286a2e846f6be03" {
		t.Fatalf("manifest %+v", m.Files)
	}
	bad := []evidence.File{{Name: "a", Path: spooled("1")}, {Name: "../escape", Path: spooled("2")}, {Name: "b", Path: spooled("3")}}
	if _, err := d.Write(context.Background(), "ns/inc/bad", bad, time.Now()); err == nil {
		t.Fatal("a bundle with an invalid name was written")
	}
	if ents, _ := os.ReadDir(spool); len(ents) != 0 {
		t.Fatalf("%d spooled files left behind", len(ents))
	}
}
