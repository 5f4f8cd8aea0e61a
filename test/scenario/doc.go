// Package scenario holds the end-to-end scenario of the shipped rule
// library: on a real node (test/node: kube-apiserver, kube-controller-manager,
// the kubelet, containerd, real pods) and the real kernel (the eBPF sensors
// through internal/agent), a benign cluster lifecycle runs and then a
// scripted attack; the kube-apiserver audit log and the sensors' events are
// recorded. Tests assert, source by source, exactly which rules fire on the
// attack and that the benign part fires none.
//
// The live scenario runs with the build tag e2enode (root, the node's
// Debian packages, make testenv); `go test -tags e2enode ./test/scenario
// -update` rewrites the recording in testdata, which the untagged tests
// replay on every `go test` and the audit replay benchmark reads.
package scenario
