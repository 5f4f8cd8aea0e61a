package argocd

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"testing"

	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	sigsjson "sigs.k8s.io/json"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"
	"sigs.k8s.io/yaml"

	"github.com/riposte-dev/riposte/engine/ruleset"
)

// application is the part of Argo CD's Application (argoproj.io/v1alpha1)
// the example uses, with Argo CD's field names: decoding is strict and
// case-sensitive, so a misspelt field in application.yaml fails here instead
// of being ignored by Argo CD.
type application struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
	Metadata   struct {
		Name        string            `json:"name"`
		Namespace   string            `json:"namespace"`
		Annotations map[string]string `json:"annotations"`
	} `json:"metadata"`
	Spec struct {
		Project string `json:"project"`
		Source  struct {
			RepoURL        string `json:"repoURL"`
			TargetRevision string `json:"targetRevision"`
			Path           string `json:"path"`
			Directory      *struct {
				Recurse bool   `json:"recurse"`
				Include string `json:"include"`
				Exclude string `json:"exclude"`
			} `json:"directory"`
		} `json:"source"`
		Destination struct {
			Server    string `json:"server"`
			Namespace string `json:"namespace"`
		} `json:"destination"`
		SyncPolicy struct {
			Automated *struct {
				Prune    bool `json:"prune"`
				SelfHeal bool `json:"selfHeal"`
			} `json:"automated"`
			SyncOptions []string `json:"syncOptions"`
		} `json:"syncPolicy"`
	} `json:"spec"`
}

// object is what the test reads of a rendered manifest.
type object struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
	Metadata   struct {
		Name      string `json:"name"`
		Namespace string `json:"namespace"`
	} `json:"metadata"`
	Data map[string]string `json:"data"`
}

// TestApplicationsRenderWhatArgoCDWouldSync decodes config/argocd's
// Applications strictly and renders each source the way Argo CD's repo
// server does, from this repository: a path with a kustomization.yaml is
// kustomize-built, a directory source takes the files its include pattern
// selects. The controller's Application must render riposte's CRDs,
// Deployment, webhook and agent into its destination namespace, and the
// rules' Application exactly the rules `riposte test` loads from rules/,
// in a later sync wave.
func TestApplicationsRenderWhatArgoCDWouldSync(t *testing.T) {
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	apps := readApplications(t, "application.yaml")
	if len(apps) != 2 {
		t.Fatalf("want the controller's and the rules' Applications, got %d", len(apps))
	}
	byName := map[string]application{}
	for _, a := range apps {
		if a.APIVersion != "argoproj.io/v1alpha1" || a.Kind != "Application" {
			t.Errorf("%s: %s %s is not an Argo CD Application", a.Metadata.Name, a.APIVersion, a.Kind)
		}
		if a.Metadata.Namespace != "argocd" || a.Spec.Project == "" || a.Spec.Destination.Server == "" {
			t.Errorf("%s: namespace %q, project %q, destination %q", a.Metadata.Name, a.Metadata.Namespace, a.Spec.Project, a.Spec.Destination.Server)
		}
		if a.Spec.SyncPolicy.Automated == nil || !a.Spec.SyncPolicy.Automated.Prune {
			t.Errorf("%s: not synced automatically with pruning: %+v", a.Metadata.Name, a.Spec.SyncPolicy)
		}
		byName[a.Metadata.Name] = a
	}
	ctrl, rules := byName["riposte"], byName["riposte-rules"]
	if wave(t, ctrl) >= wave(t, rules) {
		t.Errorf("the rules (wave %d) must sync after the controller and its webhook (wave %d)", wave(t, rules), wave(t, ctrl))
	}

	// The controller: a kustomization, built as Argo CD builds it.
	objs := render(t, root, ctrl)
	kinds := map[string][]string{}
	for _, o := range objs {
		kinds[o.Kind] = append(kinds[o.Kind], o.Metadata.Name)
		if o.Metadata.Namespace != "" && o.Metadata.Namespace != ctrl.Spec.Destination.Namespace {
			t.Errorf("%s %s renders into namespace %s, not the Application's %s", o.Kind, o.Metadata.Name, o.Metadata.Namespace, ctrl.Spec.Destination.Namespace)
		}
	}
	crdFiles, _ := filepath.Glob(filepath.Join(root, "config/crd/bases/*.yaml"))
	if len(kinds["CustomResourceDefinition"]) != len(crdFiles) || len(crdFiles) == 0 {
		t.Errorf("the controller's Application renders CRDs %v, want the %d of config/crd/bases", kinds["CustomResourceDefinition"], len(crdFiles))
	}
	for _, k := range []string{"Deployment", "DaemonSet", "ValidatingWebhookConfiguration", "ServiceAccount", "ClusterRole", "Service"} {
		if len(kinds[k]) == 0 {
			t.Errorf("the controller's Application renders no %s (kinds: %v)", k, keys(kinds))
		}
	}
	// CRDs this size exceed the 256 KiB last-applied annotation of
	// client-side apply; Argo CD must apply them server-side.
	if !contains(ctrl.Spec.SyncPolicy.SyncOptions, "ServerSideApply=true") {
		t.Errorf("the controller's Application does not sync with ServerSideApply=true: %v", ctrl.Spec.SyncPolicy.SyncOptions)
	}

	// The rules: a directory source.
	objs = render(t, root, rules)
	var got []string
	for _, o := range objs {
		if !strings.HasPrefix(o.APIVersion, "riposte.dev/") {
			t.Errorf("the rules' Application renders %s %s, not a riposte kind", o.Kind, o.Metadata.Name)
		}
		if o.Kind == "ClusterDetectionRule" || o.Kind == "DetectionRule" {
			got = append(got, o.Metadata.Name)
		}
	}
	set, errs := ruleset.Load(filepath.Join(root, rules.Spec.Source.Path))
	if len(errs) > 0 {
		t.Fatalf("load %s: %v", rules.Spec.Source.Path, errs)
	}
	var want []string
	for _, r := range set.Rules {
		want = append(want, r.Name)
	}
	sort.Strings(got)
	sort.Strings(want)
	if strings.Join(got, ",") != strings.Join(want, ",") || len(want) == 0 {
		t.Errorf("the rules' Application renders rules\n %v\nwant the %d riposte loads from %s:\n %v", got, len(want), rules.Spec.Source.Path, want)
	}
}

// TestHealthChecksBuildIntoArgoCDConfigMap kustomize-builds this folder (what
// `kubectl apply -k config/argocd` applies): argocd-cm in the argocd
// namespace with one health check per riposte kind of config/crd/bases,
// each the health.lua the Lua tests run.
func TestHealthChecksBuildIntoArgoCDConfigMap(t *testing.T) {
	objs := kustomizeBuild(t, ".")
	if len(objs) != 1 || objs[0].Kind != "ConfigMap" || objs[0].Metadata.Name != "argocd-cm" || objs[0].Metadata.Namespace != "argocd" {
		t.Fatalf("want the ConfigMap argocd/argocd-cm, got %+v", objs)
	}
	data := objs[0].Data
	crdFiles, _ := filepath.Glob("../crd/bases/*.yaml")
	for _, f := range crdFiles {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		var crd struct {
			Spec struct {
				Group string `json:"group"`
				Names struct {
					Kind string `json:"kind"`
				} `json:"names"`
			} `json:"spec"`
		}
		if err := yaml.Unmarshal(b, &crd); err != nil {
			t.Fatal(err)
		}
		key := "resource.customizations.health." + crd.Spec.Group + "_" + crd.Spec.Names.Kind
		script, err := Script(".", crd.Spec.Group, crd.Spec.Names.Kind)
		if err != nil {
			t.Fatal(err)
		}
		if data[key] != script {
			t.Errorf("argocd-cm %s is not health/%s/%s/health.lua (%d bytes, want %d)", key, crd.Spec.Group, crd.Spec.Names.Kind, len(data[key]), len(script))
		}
		delete(data, key)
	}
	if len(crdFiles) == 0 || len(data) != 0 {
		t.Errorf("argocd-cm has keys for no riposte kind: %v (%d CRDs)", keys(data), len(crdFiles))
	}
}

func readApplications(t *testing.T, path string) []application {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	r := utilyaml.NewYAMLReader(bufio.NewReader(f))
	var apps []application
	for {
		doc, err := r.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		if len(bytes.TrimSpace(doc)) == 0 {
			continue
		}
		j, err := yaml.YAMLToJSON(doc)
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		// Case-sensitive like Argo CD's decoder: encoding/json would take
		// a misspelt "selfheal" for selfHeal.
		var a application
		strict, err := sigsjson.UnmarshalStrict(j, &a, sigsjson.DisallowDuplicateFields, sigsjson.DisallowUnknownFields)
		if err != nil || len(strict) > 0 {
			t.Fatalf("%s: %v %v", path, err, strict)
		}
		apps = append(apps, a)
	}
	return apps
}

func wave(t *testing.T, a application) int {
	t.Helper()
	w, err := strconv.Atoi(a.Metadata.Annotations["argocd.argoproj.io/sync-wave"])
	if err != nil {
		t.Fatalf("%s: sync-wave: %v", a.Metadata.Name, err)
	}
	return w
}

// render produces an Application's manifests from this repository as Argo
// CD's repo server would for its revision.
func render(t *testing.T, root string, a application) []object {
	t.Helper()
	src := a.Spec.Source
	if src.RepoURL != "https://github.com/riposte-dev/riposte" {
		t.Fatalf("%s: repoURL %s is not this repository", a.Metadata.Name, src.RepoURL)
	}
	dir := filepath.Join(root, filepath.FromSlash(src.Path))
	if _, err := os.Stat(filepath.Join(dir, "kustomization.yaml")); err == nil {
		if src.Directory != nil {
			// Argo CD refuses a directory source holding a kustomization.
			t.Fatalf("%s: directory source %s holds a kustomization.yaml", a.Metadata.Name, src.Path)
		}
		return kustomizeBuild(t, dir)
	}
	d := src.Directory
	if d == nil {
		t.Fatalf("%s: %s has no kustomization.yaml and the source is no directory", a.Metadata.Name, src.Path)
	}
	var objs []object
	err := filepath.WalkDir(dir, func(path string, e fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, path)
		if e.IsDir() {
			if path != dir && !d.Recurse {
				return filepath.SkipDir
			}
			return nil
		}
		ext := filepath.Ext(path)
		if ext != ".yaml" && ext != ".yml" && ext != ".json" {
			return nil
		}
		if (d.Include != "" && !argoGlob(d.Include, rel)) || (d.Exclude != "" && argoGlob(d.Exclude, rel)) {
			return nil
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		for _, o := range decodeAll(t, path, b) {
			if o.Kind == "Kustomization" {
				t.Errorf("%s: %s is a kustomization inside a directory source", a.Metadata.Name, rel)
			}
			objs = append(objs, o)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return objs
}

// argoGlob matches a path relative to the source the way Argo CD's
// directory include and exclude do: a glob with {a,b} alternatives, in
// which * also matches across '/'.
func argoGlob(pattern, path string) bool {
	var re strings.Builder
	re.WriteString("^")
	for _, r := range pattern {
		switch r {
		case '*':
			re.WriteString(".*")
		case '?':
			re.WriteString(".")
		case '{':
			re.WriteString("(")
		case '}':
			re.WriteString(")")
		case ',':
			re.WriteString("|")
		default:
			re.WriteString(regexp.QuoteMeta(string(r)))
		}
	}
	re.WriteString("$")
	ok, _ := regexp.MatchString(re.String(), filepath.ToSlash(path))
	return ok
}

func kustomizeBuild(t *testing.T, dir string) []object {
	t.Helper()
	m, err := krusty.MakeKustomizer(krusty.MakeDefaultOptions()).Run(filesys.MakeFsOnDisk(), dir)
	if err != nil {
		t.Fatalf("kustomize build %s: %v", dir, err)
	}
	b, err := m.AsYaml()
	if err != nil {
		t.Fatal(err)
	}
	return decodeAll(t, dir, b)
}

func decodeAll(t *testing.T, name string, b []byte) []object {
	t.Helper()
	r := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(b)))
	var objs []object
	for {
		doc, err := r.Read()
		if errors.Is(err, io.EOF) {
			return objs
		}
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if len(bytes.TrimSpace(doc)) == 0 {
			continue
		}
		var o object
		if err := yaml.Unmarshal(doc, &o); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if o.Kind == "" {
			continue // a comment-only document
		}
		objs = append(objs, o)
	}
}

func keys[V any](m map[string]V) []string {
	var ks []string
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}

func contains(list []string, s string) bool {
	for _, e := range list {
		if e == s {
			return true
		}
	}
	return false
}
