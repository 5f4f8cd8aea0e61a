// Package bpf holds riposte's eBPF sensors and their Go side: the C programs
// (c/, compiled by bpf2go; the generated Go and object files are committed so
// a plain `go build` needs no clang), the decoder of ring-buffer records into
// engine.Event, the translation of rule constraints into the in-kernel
// prefilter maps (Filter) with a Go model of the kernel's decision, and the
// loader that attaches everything, reads the one ring buffer and counts every
// event seen, dropped, submitted and lost.
//
// Soundness is the invariant of the prefilter: an event some rule would match
// is never dropped in the kernel. What the kernel cannot check passes.
package bpf
