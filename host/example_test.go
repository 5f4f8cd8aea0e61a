package host_test

import (
	"fmt"

	"github.com/riposte-dev/riposte/host"
)

func ExampleParsePath() {
	ref, ok := host.ParsePath("/kubepods.slice/kubepods-burstable.slice/" +
		"kubepods-burstable-pod8d3f2a1c_1b2c_4d5e_8f90_123456789abc.slice/" +
		"cri-containerd-0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef.scope")
	fmt.Println(ok, ref.Runtime, ref.PodUID, ref.ContainerID[:12])
	// Output: true containerd 8d3f2a1c-1b2c-4d5e-8f90-123456789abc 0123456789ab
}
