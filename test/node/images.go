package node

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"time"
)

// The images every node has; pods name them with imagePullPolicy Never.
const (
	// PauseImage is the sandbox image (containerd's sandbox_image): a static
	// Go program that waits for SIGTERM.
	PauseImage = "localhost/pause:1"
	// BusyboxImage is the workload image: /bin/busybox from busybox-static
	// with a symlink per applet (sh, cat, sleep, wget, nc, …), /etc/passwd,
	// /etc/group and an /etc/shadow to read, and /pause (as in PauseImage)
	// for an entrypoint that is not busybox: riposte sees every busybox
	// applet's exec as an exec of /bin/busybox. Its default command is sh.
	BusyboxImage = "localhost/busybox:1"
)

// file is one entry of an image layer.
type file struct {
	name string // without leading slash
	mode int64
	dir  bool
	link string // symlink target
	data []byte
}

// writeImages writes both images as docker-archive tarballs into dir and
// returns their paths.
func writeImages(ctx context.Context, dir, busybox string) ([]string, error) {
	pause, err := buildPause(ctx, dir)
	if err != nil {
		return nil, err
	}
	pauseTar := filepath.Join(dir, "pause-image.tar")
	if err := writeArchive(pauseTar, PauseImage, []file{{name: "pause", mode: 0o755, data: pause}},
		map[string]any{"Entrypoint": []string{"/pause"}}); err != nil {
		return nil, fmt.Errorf("write %s: %w", PauseImage, err)
	}
	files, err := busyboxFiles(busybox)
	if err != nil {
		return nil, err
	}
	files = append(files, file{name: "pause", mode: 0o755, data: pause})
	busyboxTar := filepath.Join(dir, "busybox-image.tar")
	if err := writeArchive(busyboxTar, BusyboxImage, files, map[string]any{
		"Cmd": []string{"sh"},
		"Env": []string{"PATH=/bin"},
	}); err != nil {
		return nil, fmt.Errorf("write %s: %w", BusyboxImage, err)
	}
	return []string{pauseTar, busyboxTar}, nil
}

// buildPause compiles test/node/pause as a static binary (the Go build
// cache makes this quick after the first time).
func buildPause(ctx context.Context, dir string) ([]byte, error) {
	gobin, err := exec.LookPath("go")
	if err != nil {
		return nil, fmt.Errorf("%w: the go command, to build the pause program: %w", ErrMissing, err)
	}
	out := filepath.Join(dir, "pause")
	cmd := exec.CommandContext(ctx, gobin, "build", "-trimpath", "-o", out, "github.com/riposte-dev/riposte/test/node/pause")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("build the pause program (go build test/node/pause): %w\n%s", err, b)
	}
	defer os.Remove(out)
	return os.ReadFile(out)
}

func busyboxFiles(busybox string) ([]file, error) {
	bin, err := os.ReadFile(busybox)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", busybox, err)
	}
	list, err := exec.Command(busybox, "--list").Output()
	if err != nil {
		return nil, fmt.Errorf("%s --list: %w", busybox, err)
	}
	files := []file{
		{name: "bin", dir: true, mode: 0o755},
		{name: "bin/busybox", mode: 0o755, data: bin},
		{name: "dev", dir: true, mode: 0o755},
		{name: "etc", dir: true, mode: 0o755},
		{name: "etc/passwd", mode: 0o644, data: []byte("root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n")},
		{name: "etc/group", mode: 0o644, data: []byte("root:x:0:\nnogroup:x:65534:\n")},
		{name: "etc/shadow", mode: 0o640, data: []byte("root:*:20000:0:99999:7:::\nnobody:*:20000:0:99999:7:::\n")},
		{name: "proc", dir: true, mode: 0o755},
		{name: "root", dir: true, mode: 0o700},
		{name: "sys", dir: true, mode: 0o755},
		{name: "tmp", dir: true, mode: 0o1777},
	}
	for _, applet := range strings.Fields(string(list)) {
		if applet == "busybox" || strings.Contains(applet, "/") {
			continue
		}
		files = append(files, file{name: "bin/" + applet, link: "busybox", mode: 0o777})
	}
	return files, nil
}

// writeArchive writes a one-layer image in the docker-archive format that
// `ctr images import` reads: manifest.json, the config and layer.tar.
func writeArchive(path, tag string, files []file, config map[string]any) error {
	epoch := time.Unix(0, 0).UTC()
	var layer bytes.Buffer
	tw := tar.NewWriter(&layer)
	for _, f := range files {
		h := &tar.Header{Name: f.name, Mode: f.mode, ModTime: epoch, Format: tar.FormatPAX}
		switch {
		case f.dir:
			h.Typeflag, h.Name = tar.TypeDir, f.name+"/"
		case f.link != "":
			h.Typeflag, h.Linkname = tar.TypeSymlink, f.link
		default:
			h.Typeflag, h.Size = tar.TypeReg, int64(len(f.data))
		}
		if err := tw.WriteHeader(h); err != nil {
			return err
		}
		if _, err := tw.Write(f.data); err != nil {
			return err
		}
	}
	if err := tw.Close(); err != nil {
		return err
	}
	layerSum := sha256.Sum256(layer.Bytes())
	layerHex := hex.EncodeToString(layerSum[:])
	cfg, err := json.Marshal(map[string]any{
		"architecture": runtime.GOARCH,
		"os":           "linux",
		"created":      epoch.Format(time.RFC3339),
		"config":       config,
		"rootfs":       map[string]any{"type": "layers", "diff_ids": []string{"sha256:" + layerHex}},
		"history":      []map[string]any{{"created": epoch.Format(time.RFC3339), "created_by": "riposte test/node"}},
	})
	if err != nil {
		return err
	}
	cfgSum := sha256.Sum256(cfg)
	cfgName := hex.EncodeToString(cfgSum[:]) + ".json"
	manifest, err := json.Marshal([]map[string]any{{
		"Config":   cfgName,
		"RepoTags": []string{tag},
		"Layers":   []string{layerHex + "/layer.tar"},
	}})
	if err != nil {
		return err
	}
	out, err := os.Create(path)
	if err != nil {
		return err
	}
	defer out.Close()
	aw := tar.NewWriter(out)
	for _, e := range []struct {
		name string
		data []byte
	}{{cfgName, cfg}, {layerHex + "/layer.tar", layer.Bytes()}, {"manifest.json", manifest}} {
		if strings.Contains(e.name, "/") {
			if err := aw.WriteHeader(&tar.Header{Name: filepath.Dir(e.name) + "/", Typeflag: tar.TypeDir, Mode: 0o755, ModTime: epoch}); err != nil {
				return err
			}
		}
		if err := aw.WriteHeader(&tar.Header{Name: e.name, Typeflag: tar.TypeReg, Mode: 0o644, Size: int64(len(e.data)), ModTime: epoch}); err != nil {
			return err
		}
		if _, err := aw.Write(e.data); err != nil {
			return err
		}
	}
	if err := aw.Close(); err != nil {
		return err
	}
	return out.Close()
}
