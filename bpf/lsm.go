package bpf

import (
	"errors"
	"fmt"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"
)

// ProbeLSM loads and attaches a BPF LSM program that allows everything, the
// only reliable test of whether this kernel lets riposte deny: "bpf" in
// /sys/kernel/security/lsm is not enough (a kernel can list it and still
// refuse the load with EPERM). It returns "" when BPF LSM works, else why not.
func ProbeLSM() (refused string) {
	prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{
		Name:         "riposte_probe",
		Type:         ebpf.LSM,
		AttachType:   ebpf.AttachLSMMac,
		AttachTo:     "bprm_check_security",
		License:      "GPL",
		Instructions: asm.Instructions{asm.Mov.Imm(asm.R0, 0), asm.Return()},
	})
	if err != nil {
		return "BPF LSM program load refused: " + lsmLoadError(err)
	}
	defer prog.Close()
	l, err := link.AttachLSM(link.LSMOptions{Program: prog})
	if err != nil {
		return fmt.Sprintf("BPF LSM attach refused: %v", err)
	}
	l.Close()
	return ""
}

// lsmLoadError names why the kernel refused a program. cilium/ebpf appends a
// MEMLOCK hint to every EPERM, which misleads here: BPF memory is
// memcg-accounted on the kernels riposte supports, and an EPERM for an LSM
// program means the kernel or its lockdown does not allow BPF LSM.
func lsmLoadError(err error) string {
	if errors.Is(err, unix.EPERM) {
		return "operation not permitted (EPERM): the kernel does not allow BPF LSM programs here (lockdown, a container's seccomp or a missing lsm=bpf boot parameter)"
	}
	return err.Error()
}
