// Package e2e proves riposte end to end on a real node (test/node): the
// controller and the real `riposte agent` binary, the shipped rule library,
// pods of a Deployment in real containers, and Incidents that name them.
// Its tests carry the build tag e2enode and run with `make e2e-node`.
package e2e
