package host_test

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/riposte-dev/riposte/host"
)

const rootfsLine = `1520 1300 0:123 / /run/containerd/io.containerd.runtime.v2.task/k8s.io/` + hostTestID +
	`/rootfs rw,relatime - overlay overlay rw,lowerdir=/var/lib/containerd/snapshots/3/fs,upperdir=/var/lib/containerd/snapshots/9/fs,workdir=/var/lib/containerd/snapshots/9/work`

func writeMountinfo(t *testing.T, lines ...string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "mountinfo")
	if err := os.WriteFile(p, []byte(strings.Join(lines, "\n")+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestRootfsUpperFromTheRuntimeMount(t *testing.T) {
	p := writeMountinfo(t, "22 1 8:1 / / rw - ext4 /dev/vda rw", rootfsLine)
	got, err := host.RootfsUpper(p, "containerd://"+hostTestID)
	if err != nil || got != "/var/lib/containerd/snapshots/9/fs" {
		t.Fatalf("RootfsUpper = %q, %v", got, err)
	}
}

// TestRootfsUpperRefusesWhatAContainerCouldWrite: lines a container could
// place in a mount table (its own overlay over "/", a relative or unclean
// upperdir, a second rootfs mount for the same id) never pass as the
// runtime's mount.
func TestRootfsUpperRefusesWhatAContainerCouldWrite(t *testing.T) {
	for name, lines := range map[string][]string{
		"own overlay over /":  {"900 800 0:99 / / rw - overlay overlay rw,lowerdir=/l,upperdir=/etc,workdir=/w"},
		"unclean upperdir":    {strings.Replace(rootfsLine, "upperdir=/var/lib/containerd/snapshots/9/fs", "upperdir=/var/lib/../../etc", 1)},
		"relative upperdir":   {strings.Replace(rootfsLine, "upperdir=/var/lib/containerd/snapshots/9/fs", "upperdir=etc", 1)},
		"not under a task":    {strings.Replace(rootfsLine, "/run/containerd/io.containerd.runtime.v2.task/k8s.io/", "/tmp/x/", 1)},
		"two rootfs mounts":   {rootfsLine, strings.Replace(rootfsLine, "1520 1300", "1600 1520", 1)},
		"not an overlay":      {strings.Replace(rootfsLine, " - overlay overlay", " - ext4 /dev/vdb", 1)},
		"another container":   {strings.Replace(rootfsLine, hostTestID, strings.Repeat("e", 64), 1)},
		"malformed remainder": {"garbage", "1 2 3", " - "},
	} {
		p := writeMountinfo(t, lines...)
		if got, err := host.RootfsUpper(p, hostTestID); err == nil {
			t.Errorf("%s: RootfsUpper = %q, want a refusal", name, got)
		}
	}
	if _, err := host.RootfsUpper(writeMountinfo(t, rootfsLine), "../../etc"); err == nil {
		t.Error("a container id that is not one was accepted")
	}
	if _, err := host.RootfsUpper(writeMountinfo(t), hostTestID); !errors.Is(err, host.ErrNoRootfs) {
		t.Errorf("empty table: %v, want ErrNoRootfs", err)
	}
}

func TestParseMountUnescapes(t *testing.T) {
	m, ok := host.ParseMount(`36 35 98:0 /mnt1 /mnt\0402 rw,noatime master:1 shared:2 - ext3 /dev/root rw,errors=continue`)
	if !ok || m.Point != "/mnt 2" || m.FSType != "ext3" || m.SuperOptions != "rw,errors=continue" || m.ID != 36 || m.Parent != 35 {
		t.Errorf("ParseMount = %+v, %v", m, ok)
	}
}

// FuzzParseMount: any line parses or is refused without panicking, and the
// fields never contain the separator.
func FuzzParseMount(f *testing.F) {
	f.Add(rootfsLine)
	f.Add(`36 35 98:0 /mnt1 /mnt\0402 rw,noatime master:1 - ext3 /dev/root rw`)
	f.Add(` - `)
	f.Add(`1 2 3 4 5 6 - \777`)
	f.Fuzz(func(t *testing.T, line string) {
		m, ok := host.ParseMount(line)
		if ok && (m.FSType == "" || strings.Contains(m.FSType, " ")) {
			t.Errorf("ParseMount(%q) = %+v", line, m)
		}
	})
}
