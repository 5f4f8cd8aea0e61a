package main

import (
	"context"
	"fmt"
	"os"
	"time"

	"github.com/spf13/pflag"
	"k8s.io/apimachinery/pkg/util/yaml"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/riposte-dev/riposte/api/v1alpha1"
	"github.com/riposte-dev/riposte/internal/controllermgr"
	"github.com/riposte-dev/riposte/internal/incidentview"
)

func init() {
	register(command{name: "incident", summary: "show an Incident readably: subject, who is behind it, process tree, timeline, response", run: incidentCmd})
}

func incidentCmd(args []string) int {
	fs := pflag.NewFlagSet("riposte incident", pflag.ContinueOnError)
	fs.Usage = func() {
		fmt.Fprintln(os.Stderr, "usage: riposte incident show NAME [-n NAMESPACE] [--kubeconfig FILE]\n       riposte incident show -f FILE\n\nPrints an Incident from the cluster (or a YAML/JSON file) for a person.")
		fs.PrintDefaults()
	}
	ns := fs.StringP("namespace", "n", "default", "the Incident's namespace")
	file := fs.StringP("file", "f", "", "read the Incident from this file instead of the cluster")
	fs.String("kubeconfig", "", "kubeconfig file (default: $KUBECONFIG, in-cluster, ~/.kube/config)")
	if err := fs.Parse(args); err != nil {
		return exitBadUsage
	}
	rest := fs.Args()
	if len(rest) == 0 || rest[0] != "show" || (*file == "" && len(rest) != 2) || (*file != "" && len(rest) != 1) {
		fs.Usage()
		return exitBadUsage
	}
	inc := &v1alpha1.Incident{}
	if *file != "" {
		f, err := os.Open(*file)
		if err != nil {
			fmt.Fprintln(os.Stderr, "riposte incident:", err)
			return exitBadUsage
		}
		defer f.Close()
		if err := yaml.NewYAMLOrJSONDecoder(f, 64<<10).Decode(inc); err != nil {
			fmt.Fprintf(os.Stderr, "riposte incident: decode %s: %v\n", *file, err)
			return exitBadUsage
		}
	} else {
		if kc, _ := fs.GetString("kubeconfig"); kc != "" {
			os.Setenv("KUBECONFIG", kc)
		}
		cfg, err := ctrl.GetConfig()
		if err != nil {
			fmt.Fprintln(os.Stderr, "riposte incident: load kubeconfig:", err)
			return exitBadUsage
		}
		c, err := client.New(cfg, client.Options{Scheme: controllermgr.Scheme()})
		if err != nil {
			fmt.Fprintln(os.Stderr, "riposte incident:", err)
			return exitBadUsage
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := c.Get(ctx, client.ObjectKey{Namespace: *ns, Name: rest[1]}, inc); err != nil {
			fmt.Fprintf(os.Stderr, "riposte incident: get %s/%s: %v\n", *ns, rest[1], err)
			return exitFailed
		}
	}
	incidentview.Show(os.Stdout, inc)
	return exitOK
}
