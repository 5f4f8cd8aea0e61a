package gitops

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"testing"
	"time"

	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"

	"github.com/riposte-dev/riposte/test/proc"
	"github.com/riposte-dev/riposte/test/stack"
)

// envFluxBin names the folder holding source-controller and
// kustomize-controller; make sets it to the exact cache folder of the
// current pins. Flux's CRDs are in crds/ beside it.
const envFluxBin = "RIPOSTE_FLUX_BIN"

// fluxNamespace is where Flux runs and its objects live, as `flux install`
// makes it.
const fluxNamespace = "flux-system"

var fluxControllers = []string{"source-controller", "kustomize-controller"}

// fluxBinDir returns $RIPOSTE_FLUX_BIN, or else the most recently built
// complete .cache/flux/*/bin of the repository at root.
func fluxBinDir(root string) (string, error) {
	check := func(dir string) error {
		for _, name := range fluxControllers {
			if info, err := os.Stat(filepath.Join(dir, name)); err != nil || info.Mode()&0o111 == 0 {
				return fmt.Errorf("%s not in %s", name, dir)
			}
		}
		if crds, _ := filepath.Glob(filepath.Join(dir, "..", "crds", "*.yaml")); len(crds) == 0 {
			return fmt.Errorf("no Flux CRDs in %s", filepath.Join(dir, "..", "crds"))
		}
		return nil
	}
	if dir := os.Getenv(envFluxBin); dir != "" {
		if err := check(dir); err != nil {
			return "", fmt.Errorf("%s=%s: %w (run `make testenv`)", envFluxBin, dir, err)
		}
		return dir, nil
	}
	dirs, _ := filepath.Glob(filepath.Join(root, ".cache", "flux", "*", "bin"))
	sort.Slice(dirs, func(i, j int) bool { return modTime(dirs[i]) > modTime(dirs[j]) })
	for _, dir := range dirs {
		if check(dir) == nil {
			return dir, nil
		}
	}
	return "", fmt.Errorf("Flux's source-controller and kustomize-controller are not built (no complete %s/.cache/flux/*/bin and %s unset): run `make testenv`",
		root, envFluxBin)
}

func modTime(path string) int64 {
	info, err := os.Stat(path)
	if err != nil {
		return 0
	}
	return info.ModTime().UnixNano()
}

// startFlux installs Flux's CRDs and the controllers' RBAC, then runs
// source-controller and kustomize-controller as processes, each with a
// kubeconfig holding a token of its own ServiceAccount. They are stopped at
// cleanup; on failure their logs are shown.
func startFlux(ctx context.Context, t *testing.T, s *stack.Stack) {
	t.Helper()
	bin, err := fluxBinDir(s.Root)
	if err != nil {
		t.Fatal(err)
	}
	c := s.Cluster
	crds, err := c.InstallCRDs(ctx, filepath.Join(bin, "..", "crds"))
	if err != nil {
		t.Fatalf("install Flux CRDs: %v", err)
	}
	t.Logf("Flux CRDs: %v", crds)
	if out, err := c.Kubectl(ctx, "apply", "-f", "testdata/flux-rbac.yaml").CombinedOutput(); err != nil {
		t.Fatalf("apply Flux RBAC: %v\n%s", err, out)
	}

	dir := t.TempDir()
	ports, err := proc.FreePorts(5)
	if err != nil {
		t.Fatal(err)
	}
	storage := fmt.Sprintf("127.0.0.1:%d", ports[0])
	if err := os.Mkdir(filepath.Join(dir, "storage"), 0o755); err != nil {
		t.Fatal(err)
	}
	args := map[string][]string{
		"source-controller": {
			"--storage-path=" + filepath.Join(dir, "storage"),
			"--storage-addr=" + storage,
			// What kustomize-controller downloads artifacts from; in a
			// cluster the Service's name.
			"--storage-adv-addr=" + storage,
			fmt.Sprintf("--metrics-addr=127.0.0.1:%d", ports[1]),
			fmt.Sprintf("--health-addr=127.0.0.1:%d", ports[2]),
		},
		"kustomize-controller": {
			fmt.Sprintf("--metrics-addr=127.0.0.1:%d", ports[3]),
			fmt.Sprintf("--health-addr=127.0.0.1:%d", ports[4]),
		},
	}
	health := map[string]int{"source-controller": ports[2], "kustomize-controller": ports[4]}
	for _, name := range fluxControllers {
		cfg, err := c.ServiceAccountConfig(ctx, fluxNamespace, name)
		if err != nil {
			t.Fatal(err)
		}
		kubeconfig := filepath.Join(dir, name+".kubeconfig")
		if err := writeKubeconfig(kubeconfig, cfg, name); err != nil {
			t.Fatal(err)
		}
		// The upstream Deployments' flags, but no leader election: one
		// replica each.
		a := append([]string{"--watch-all-namespaces", "--log-level=info", "--log-encoding=json"}, args[name]...)
		p, err := proc.Start(dir, name, filepath.Join(bin, name), a,
			[]string{"KUBECONFIG=" + kubeconfig, "RUNTIME_NAMESPACE=" + fluxNamespace})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			p.Stop(10 * time.Second)
			if t.Failed() {
				t.Logf("%s", p.Tail(40))
			}
		})
		if err := waitReady(ctx, fmt.Sprintf("http://127.0.0.1:%d/readyz", health[name]), p); err != nil {
			t.Fatal(p.Failure("wait for /readyz", err))
		}
	}
}

// waitReady polls a health endpoint until it answers 200, the process
// exits, or 60 s pass.
func waitReady(ctx context.Context, url string, p *proc.Process) error {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	client := &http.Client{Timeout: 2 * time.Second}
	for {
		if done, err := p.Exited(); done {
			return fmt.Errorf("exited: %v", err)
		}
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if resp, err := client.Do(req); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return errors.New("no 200 from " + url + " within 60 s")
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// writeKubeconfig writes a kubeconfig for a bearer-token config.
func writeKubeconfig(path string, cfg *rest.Config, user string) error {
	kc := clientcmdapi.NewConfig()
	kc.Clusters["test"] = &clientcmdapi.Cluster{Server: cfg.Host, CertificateAuthorityData: cfg.CAData}
	kc.AuthInfos[user] = &clientcmdapi.AuthInfo{Token: cfg.BearerToken}
	kc.Contexts["test"] = &clientcmdapi.Context{Cluster: "test", AuthInfo: user}
	kc.CurrentContext = "test"
	return clientcmd.WriteToFile(*kc, path)
}
