// Package controller holds one reconciler per riposte kind. Each follows the
// kustomize-controller skeleton: fetch, take a serial patcher, decide the
// conditions (Ready, Reconciling, Stalled with reasons from api/v1alpha1) and
// patch status in a defer, so a status is written however the reconcile ends.
//
// Rule reconcilers also keep the Registry of live rules that the audit and
// object sources match against: a rule is live exactly when it is Ready.
package controller
