// Package audit is the Kubernetes audit-log source: an HTTPS endpoint for
// kube-apiserver's audit webhook backend. It authenticates the caller
// (client certificate or bearer token), bounds the body, and hands batches to
// a bounded queue; when the queue is full it answers 429 so the API server
// retries, instead of dropping events silently. Workers match each event
// against the live rules and pass matches on.
package audit
