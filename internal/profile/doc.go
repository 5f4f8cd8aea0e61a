// Package profile turns what a workload's containers do into
// WorkloadProfiles: a bounded learner fed with the agent's events, the
// canonical form (sorted lists, each entry once) that makes two profiles
// diff line by line, and the plain YAML that `riposte profile export` writes
// for review in Git.
package profile
