package cluster

// DefaultAuditPolicy is the audit policy the harness gives kube-apiserver unless
// Options.AuditPolicy replaces it. First matching rule wins:
//   - probes and Lease heartbeats: None (several a second, no signal);
//   - secrets, serviceaccounts/token, tokenreviews: Metadata, so no secret or
//     token ever lands in the audit stream, whatever follows;
//   - access reviews (reconnaissance) and interactive access to workloads or
//     nodes (exec, attach, port-forward, proxy, ephemeral containers):
//     RequestResponse, because the body is the evidence (what was asked, what
//     the answer was);
//   - everything else: Metadata (who did what to which object, no bodies).
//
// RequestReceived is omitted: every request still produces ResponseComplete
// (or Panic); dropping the duplicate halves what tests have to wade through.
const DefaultAuditPolicy = `apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [RequestReceived]
rules:
- level: None
  nonResourceURLs: ["/healthz*", "/readyz*", "/livez*"]
- level: None
  resources:
  - group: coordination.k8s.io
    resources: [leases]
- level: Metadata
  resources:
  - group: ""
    resources: [secrets, serviceaccounts/token]
  - group: authentication.k8s.io
    resources: [tokenreviews]
- level: RequestResponse
  resources:
  - group: authorization.k8s.io
    resources: [selfsubjectaccessreviews, selfsubjectrulesreviews, subjectaccessreviews, localsubjectaccessreviews]
  - group: authentication.k8s.io
    resources: [selfsubjectreviews]
  - group: ""
    resources: [pods/exec, pods/attach, pods/portforward, pods/proxy, pods/ephemeralcontainers, nodes/proxy, services/proxy]
- level: Metadata
`
