package main

import (
	"context"
	"fmt"
	"os"
	"time"

	"github.com/spf13/pflag"
	"k8s.io/apimachinery/pkg/runtime"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/riposte-dev/riposte/api/v1alpha1"
	"github.com/riposte-dev/riposte/internal/profile"
)

func init() {
	register(command{name: "profile", summary: "export a WorkloadProfile as plain YAML to review and commit (profile export NAME)", run: profileCmd})
}

// profileCmd runs `riposte profile export NAME`: the profile from the API
// server (KUBECONFIG), canonical, without status, on stdout or --output.
func profileCmd(args []string) int {
	if len(args) == 0 || args[0] != "export" {
		fmt.Fprintln(os.Stderr, "usage: riposte profile export NAME [-n NAMESPACE] [-o FILE]")
		return exitBadUsage
	}
	fs := pflag.NewFlagSet("riposte profile export", pflag.ContinueOnError)
	ns := fs.StringP("namespace", "n", "default", "the profile's namespace")
	out := fs.StringP("output", "o", "", "write to this file instead of stdout")
	reviewed := fs.Bool("reviewed", false, "set spec.reviewed: the exported profile, applied from Git, is the reviewed truth")
	if err := fs.Parse(args[1:]); err != nil {
		return exitBadUsage
	}
	if fs.NArg() != 1 {
		fmt.Fprintln(os.Stderr, "riposte profile export: want one profile name")
		return exitBadUsage
	}
	cfg, err := ctrl.GetConfig()
	if err != nil {
		fmt.Fprintf(os.Stderr, "riposte profile export: API server config: %v\n", err)
		return exitBadUsage
	}
	scheme := runtime.NewScheme()
	if err := v1alpha1.AddToScheme(scheme); err != nil {
		fmt.Fprintln(os.Stderr, "riposte profile export:", err)
		return exitFailed
	}
	c, err := client.New(cfg, client.Options{Scheme: scheme})
	if err != nil {
		fmt.Fprintf(os.Stderr, "riposte profile export: %v\n", err)
		return exitBadUsage
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var wp v1alpha1.WorkloadProfile
	if err := c.Get(ctx, client.ObjectKey{Namespace: *ns, Name: fs.Arg(0)}, &wp); err != nil {
		fmt.Fprintf(os.Stderr, "riposte profile export: get WorkloadProfile %s/%s: %v\n", *ns, fs.Arg(0), err)
		return exitBadUsage
	}
	if *reviewed {
		wp.Spec.Reviewed = true
	}
	b, err := profile.Export(&wp)
	if err != nil {
		fmt.Fprintf(os.Stderr, "riposte profile export: %v\n", err)
		return exitFailed
	}
	if *out == "" {
		_, err = os.Stdout.Write(b)
	} else {
		err = os.WriteFile(*out, b, 0o644)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "riposte profile export: write: %v\n", err)
		return exitFailed
	}
	return exitOK
}
