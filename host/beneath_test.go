package host_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/riposte-dev/riposte/host"
)

// containerTree builds what a container could leave in its upper
// directory: a file, a directory, and links (to a directory and a file
// outside, absolute and relative) next to an outside directory holding a
// secret. It returns the upper directory and the secret's path.
func containerTree(t *testing.T) (string, string) {
	t.Helper()
	base := t.TempDir()
	outside := filepath.Join(base, "host")
	upper := filepath.Join(base, "upper")
	for _, d := range []string{outside, filepath.Join(upper, "etc", "app")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	secret := filepath.Join(outside, "secret")
	for p, body := range map[string]string{secret: "host secret", filepath.Join(upper, "etc", "app", "conf"): "inside"} {
		if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	for link, target := range map[string]string{
		"dir-link":     outside,           // an intermediate directory leading out
		"rel-dir-link": "../host",         // the same, relative
		"file-link":    secret,            // the last element leading out
		"etc/up":       "../../..",        // up through ".."
		"etc/app/self": "/proc/self/root", // a magic link's path
	} {
		if err := os.Symlink(target, filepath.Join(upper, link)); err != nil {
			t.Fatal(err)
		}
	}
	if err := syscall.Mkfifo(filepath.Join(upper, "fifo"), 0o600); err != nil {
		t.Fatal(err)
	}
	return upper, secret
}

// TestBeneathRefusesLinksInAnyElement: a file is read only when no element
// of its path is a link and it stays below the root; an intermediate
// directory swapped for a link to the host (what a container can do between
// listing and reading) is refused, not followed.
func TestBeneathRefusesLinksInAnyElement(t *testing.T) {
	upper, _ := containerTree(t)
	b, err := host.OpenBeneath(upper)
	if err != nil {
		t.Fatalf("OpenBeneath: %v", err)
	}
	defer b.Close()
	f, size, err := b.OpenFile("etc/app/conf")
	if err != nil {
		t.Fatalf("OpenFile of a plain file: %v", err)
	}
	got, _ := io.ReadAll(f)
	f.Close()
	if string(got) != "inside" || size != 6 {
		t.Fatalf("OpenFile = %q (size %d)", got, size)
	}
	for _, rel := range []string{
		"dir-link/secret", "rel-dir-link/secret", "file-link", "etc/up/host/secret",
		"../host/secret", "/etc/passwd", "etc/app/self/etc/passwd",
		"etc", "fifo",
	} {
		f, _, err := b.OpenFile(rel)
		if err == nil {
			got, _ := io.ReadAll(f)
			f.Close()
			t.Errorf("OpenFile(%s) read %q, want a refusal", rel, got)
		}
	}
}

// TestBeneathWalkListsWithoutFollowing: the walk lists every entry once,
// links as links (never entered), and stops on fs.SkipAll and when its
// context is done.
func TestBeneathWalkListsWithoutFollowing(t *testing.T) {
	upper, _ := containerTree(t)
	b, err := host.OpenBeneath(upper)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	var got []string
	err = b.Walk(context.Background(), func(rel string, st *unix.Stat_t, err error) error {
		if err != nil {
			t.Errorf("walk %s: %v", rel, err)
			return nil
		}
		kind := map[uint32]string{unix.S_IFDIR: "d", unix.S_IFREG: "f", unix.S_IFLNK: "l", unix.S_IFIFO: "p"}[st.Mode&unix.S_IFMT]
		got = append(got, kind+" "+rel)
		return nil
	})
	if err != nil {
		t.Fatalf("Walk: %v", err)
	}
	slices.Sort(got)
	want := []string{"d etc", "d etc/app", "f etc/app/conf", "l dir-link", "l etc/app/self", "l etc/up", "l file-link", "l rel-dir-link", "p fifo"}
	if !slices.Equal(got, want) {
		t.Fatalf("Walk listed\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	n := 0
	if err := b.Walk(context.Background(), func(string, *unix.Stat_t, error) error { n++; return fs.SkipAll }); err != nil || n != 1 {
		t.Fatalf("SkipAll: %d entries, %v", n, err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	n = 0
	err = b.Walk(ctx, func(string, *unix.Stat_t, error) error { n++; cancel(); return nil })
	if !errors.Is(err, context.Canceled) || n != 1 {
		t.Fatalf("a walk whose context ended: %d entries, %v; want 1, context.Canceled", n, err)
	}
}

// TestBeneathRefusesWithoutOpenat2: where openat2 fails with ENOSYS (an
// old kernel, or a seccomp profile: here a real seccomp filter in a child
// process), nothing is opened; there is no fallback that follows links.
func TestBeneathRefusesWithoutOpenat2(t *testing.T) {
	if dir := os.Getenv("RIPOSTE_NO_OPENAT2"); dir != "" {
		if err := denyOpenat2(); err != nil {
			fmt.Println("seccomp:", err)
			return
		}
		b, err := host.OpenBeneath(dir)
		switch {
		case errors.Is(err, host.ErrNoOpenat2):
			fmt.Println("refused:", err)
		case err == nil:
			b.Close()
			fmt.Println("opened without openat2")
		default:
			fmt.Println("other error:", err)
		}
		return
	}
	upper, _ := containerTree(t)
	cmd := exec.Command(os.Args[0], "-test.run=^TestBeneathRefusesWithoutOpenat2$")
	cmd.Env = append(os.Environ(), "RIPOSTE_NO_OPENAT2="+upper)
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "refused: "+host.ErrNoOpenat2.Error()) {
		t.Fatalf("child without openat2: %v\n%s", err, out)
	}
}

// denyOpenat2 installs a seccomp filter on every thread of this process
// that fails openat2 with ENOSYS, as on a kernel before 5.6.
func denyOpenat2() error {
	filter := []unix.SockFilter{
		{Code: unix.BPF_LD | unix.BPF_W | unix.BPF_ABS, K: 0}, // seccomp_data.nr
		{Code: unix.BPF_JMP | unix.BPF_JEQ | unix.BPF_K, Jt: 0, Jf: 1, K: unix.SYS_OPENAT2},
		{Code: unix.BPF_RET | unix.BPF_K, K: unix.SECCOMP_RET_ERRNO | uint32(unix.ENOSYS)},
		{Code: unix.BPF_RET | unix.BPF_K, K: unix.SECCOMP_RET_ALLOW},
	}
	prog := unix.SockFprog{Len: uint16(len(filter)), Filter: &filter[0]}
	if err := unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); err != nil {
		return err
	}
	if _, _, e := unix.Syscall(unix.SYS_SECCOMP, unix.SECCOMP_SET_MODE_FILTER, unix.SECCOMP_FILTER_FLAG_TSYNC, uintptr(unsafe.Pointer(&prog))); e != 0 {
		return e
	}
	return nil
}
