// Package cluster starts a real, throw-away Kubernetes control plane for tests:
// etcd, kube-apiserver and optionally kube-controller-manager run as processes
// (the real binaries built by `make testenv`) on free loopback ports, with a
// fresh CA and certificates, RBAC+Node authorization, a service-account issuer
// (so TokenRequest mints real tokens), an audit policy and an optional audit
// webhook. Everything lives in one temp dir that Stop removes, and every process
// runs in its own process group that Stop kills.
//
// Start costs a few seconds, so share one instance per package from TestMain:
//
//	var shared *cluster.Cluster
//
//	func TestMain(m *testing.M) {
//		os.Exit(cluster.Main(m, cluster.Options{}, func(c *cluster.Cluster) { shared = c }))
//	}
//
// Tests that share it must isolate themselves by namespace (or by unique names
// for cluster-scoped objects). A test that needs its own control plane, for
// example a different audit policy, calls StartT, which stops it at cleanup.
//
// The binaries are taken from $RIPOSTE_TESTENV_BIN (set by make) or from the
// newest complete .cache/testenv/<key>/bin under the module root. A missing
// binary is an error naming it and `make testenv`: the test fails, never skips.
package cluster
