package bpf

// The sensors are compiled with Debian's clang 14 (apt: clang llvm libbpf-dev
// bpftool) against c/vmlinux.h, which `make generate-bpf` dumps from the
// running kernel's BTF. CO-RE relocations make the object portable.
//go:generate go run github.com/cilium/ebpf/cmd/bpf2go -cc clang -cflags "-O2 -g -Wall -Werror" -target amd64 -type filter_cfg -type proc_v sensors c/sensors.bpf.c -- -I./c -I/usr/include/x86_64-linux-gnu
