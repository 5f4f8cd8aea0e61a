// Package faults holds fault tests that put riposte's parts under load on
// the real control plane and report the figures of docs/reliability.md.
// They live apart from the packages they test so that make test runs them
// without the race detector, whose slowdown would change the figures and
// the duration, not what the tests prove (the packages' own concurrency
// tests run under it).
package faults
