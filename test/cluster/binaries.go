package cluster

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

// EnvBinDir names the folder holding the control-plane binaries; make sets it
// to the exact cache folder for the current pins.
const EnvBinDir = "RIPOSTE_TESTENV_BIN"

// Binaries is every program the harness may run; kubectl is not started but
// offered through Cluster.Kubectl.
var Binaries = []string{"etcd", "kube-apiserver", "kube-controller-manager", "kubectl"}

// ErrBinaryMissing is wrapped by every error about a control-plane binary that
// is not there, so callers can tell "not built" from "failed to start".
var ErrBinaryMissing = errors.New("control-plane binary missing (run `make testenv`)")

// BinDir returns the folder with the control-plane binaries: $RIPOSTE_TESTENV_BIN
// if set, else the most recently built complete .cache/testenv/*/bin found at
// the root of the module that contains the working directory.
func BinDir() (string, error) {
	if dir := os.Getenv(EnvBinDir); dir != "" {
		if err := checkBinaries(dir); err != nil {
			return "", fmt.Errorf("%s=%s: %w", EnvBinDir, dir, err)
		}
		return dir, nil
	}
	root, err := moduleRoot()
	if err != nil {
		return "", fmt.Errorf("find control-plane binaries: %w: %w", err, ErrBinaryMissing)
	}
	candidates, _ := filepath.Glob(filepath.Join(root, ".cache", "testenv", "*", "bin"))
	// Newest first: after a pin change the new key's folder is the one make built
	// last; an older key's folder is only a fallback.
	sort.Slice(candidates, func(i, j int) bool { return modTime(candidates[i]) > modTime(candidates[j]) })
	var lastErr error
	for _, dir := range candidates {
		if lastErr = checkBinaries(dir); lastErr == nil {
			return dir, nil
		}
	}
	if lastErr != nil {
		return "", fmt.Errorf("find control-plane binaries under %s: %w", root, lastErr)
	}
	return "", fmt.Errorf("find control-plane binaries: %s not built (no %s/.cache/testenv/*/bin) and %s unset: %w",
		strings.Join(Binaries, ", "), root, EnvBinDir, ErrBinaryMissing)
}

func checkBinaries(dir string) error {
	for _, name := range Binaries {
		info, err := os.Stat(filepath.Join(dir, name))
		if err != nil || info.IsDir() || info.Mode()&0o111 == 0 {
			return fmt.Errorf("%s not found in %s: %w", name, dir, ErrBinaryMissing)
		}
	}
	return nil
}

// moduleRoot walks up from the working directory (go test runs in the package
// folder) to the first go.mod.
func moduleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		} else if !errors.Is(err, fs.ErrNotExist) {
			return "", err
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("no go.mod above the working directory")
		}
		dir = parent
	}
}

func modTime(path string) int64 {
	info, err := os.Stat(path)
	if err != nil {
		return 0
	}
	return info.ModTime().UnixNano()
}
