package cluster

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"time"

	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	apiextensionsclient "k8s.io/apiextensions-apiserver/pkg/client/clientset/clientset"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
)

// InstallCRDs creates (or updates) every CustomResourceDefinition in the YAML
// files of dir and waits until each is Established, i.e. its API is served.
// It returns the CRD names in file order.
func (c *Cluster) InstallCRDs(ctx context.Context, dir string) ([]string, error) {
	crds, err := readCRDs(dir)
	if err != nil {
		return nil, err
	}
	client, err := apiextensionsclient.NewForConfig(c.AdminConfig())
	if err != nil {
		return nil, fmt.Errorf("build apiextensions client: %w", err)
	}
	api := client.ApiextensionsV1().CustomResourceDefinitions()
	var names []string
	for _, crd := range crds {
		_, err := api.Create(ctx, crd, metav1.CreateOptions{})
		if apierrors.IsAlreadyExists(err) {
			// A shared cluster may have them from an earlier test: converge.
			var current *apiextensionsv1.CustomResourceDefinition
			if current, err = api.Get(ctx, crd.Name, metav1.GetOptions{}); err == nil {
				crd.ResourceVersion = current.ResourceVersion
				_, err = api.Update(ctx, crd, metav1.UpdateOptions{})
			}
		}
		if err != nil {
			return nil, fmt.Errorf("install CRD %s: %w", crd.Name, err)
		}
		names = append(names, crd.Name)
	}
	for _, name := range names {
		if err := waitEstablished(ctx, client, name); err != nil {
			return nil, err
		}
	}
	return names, nil
}

func readCRDs(dir string) ([]*apiextensionsv1.CustomResourceDefinition, error) {
	var paths []string
	for _, pattern := range []string{"*.yaml", "*.yml", "*.json"} {
		matches, err := filepath.Glob(filepath.Join(dir, pattern))
		if err != nil {
			return nil, fmt.Errorf("list CRD files in %s: %w", dir, err)
		}
		paths = append(paths, matches...)
	}
	sort.Strings(paths)
	var crds []*apiextensionsv1.CustomResourceDefinition
	for _, path := range paths {
		fileCRDs, err := readCRDFile(path)
		if err != nil {
			return nil, err
		}
		crds = append(crds, fileCRDs...)
	}
	if len(crds) == 0 {
		return nil, fmt.Errorf("read CRDs: no CustomResourceDefinition in %s", dir)
	}
	return crds, nil
}

func readCRDFile(path string) ([]*apiextensionsv1.CustomResourceDefinition, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("read CRDs: %w", err)
	}
	defer f.Close()
	dec := utilyaml.NewYAMLOrJSONDecoder(f, 4096)
	var crds []*apiextensionsv1.CustomResourceDefinition
	for i := 0; ; i++ {
		crd := &apiextensionsv1.CustomResourceDefinition{}
		if err := dec.Decode(crd); errors.Is(err, io.EOF) {
			return crds, nil
		} else if err != nil {
			return nil, fmt.Errorf("read CRDs: %s: document %d: %w", path, i+1, err)
		}
		if crd.Kind == "" && crd.Name == "" {
			continue // empty document between two ---
		}
		if crd.Kind != "CustomResourceDefinition" {
			return nil, fmt.Errorf("read CRDs: %s: document %d is a %s, want CustomResourceDefinition", path, i+1, crd.Kind)
		}
		crds = append(crds, crd)
	}
}

func waitEstablished(ctx context.Context, client apiextensionsclient.Interface, name string) error {
	for {
		crd, err := client.ApiextensionsV1().CustomResourceDefinitions().Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return fmt.Errorf("wait for CRD %s to be established: %w", name, err)
		}
		for _, cond := range crd.Status.Conditions {
			if cond.Type == apiextensionsv1.NamesAccepted && cond.Status == apiextensionsv1.ConditionFalse {
				return fmt.Errorf("CRD %s: names not accepted: %s", name, cond.Message)
			}
			if cond.Type == apiextensionsv1.Established && cond.Status == apiextensionsv1.ConditionTrue {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("wait for CRD %s to be established: %w", name, ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
}
