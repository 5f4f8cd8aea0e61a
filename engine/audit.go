package engine

import (
	"bytes"
	"encoding/json"
	"strings"
	"time"
	"unicode/utf8"
)

// Audit is an audit.k8s.io/v1 Event exactly as kube-apiserver writes it (same
// field names), so a line of a real audit log can be pasted into a rule test.
// SourcePod is riposte's addition: the pod the request came from, decided
// from what the API server authenticated (see SourcePodClaims and
// ConnectionIP), never from a header the client chose.
type Audit struct {
	Kind                     string            `json:"kind,omitempty"`
	APIVersion               string            `json:"apiVersion,omitempty"`
	Level                    string            `json:"level,omitempty"`
	AuditID                  string            `json:"auditID,omitempty"`
	Stage                    string            `json:"stage,omitempty"`
	RequestURI               string            `json:"requestURI,omitempty"`
	Verb                     string            `json:"verb,omitempty"`
	User                     UserInfo          `json:"user,omitzero"`
	ImpersonatedUser         UserInfo          `json:"impersonatedUser,omitzero"`
	SourceIPs                []string          `json:"sourceIPs,omitempty"`
	UserAgent                string            `json:"userAgent,omitempty"`
	ObjectRef                AuditObjectRef    `json:"objectRef,omitzero"`
	ResponseStatus           Status            `json:"responseStatus,omitzero"`
	RequestObject            Body              `json:"requestObject,omitempty"`
	ResponseObject           Body              `json:"responseObject,omitempty"`
	RequestReceivedTimestamp time.Time         `json:"requestReceivedTimestamp,omitzero"`
	StageTimestamp           time.Time         `json:"stageTimestamp,omitzero"`
	Annotations              map[string]string `json:"annotations,omitempty"`

	SourcePod Peer `json:"sourcePod,omitzero"`
}

// UserInfo is authentication.k8s.io/v1 UserInfo.
type UserInfo struct {
	Username string              `json:"username,omitempty"`
	UID      string              `json:"uid,omitempty"`
	Groups   []string            `json:"groups,omitempty"`
	Extra    map[string][]string `json:"extra,omitempty"`
}

// AuditObjectRef is audit.k8s.io/v1 ObjectReference.
type AuditObjectRef struct {
	Resource        string `json:"resource,omitempty"`
	Namespace       string `json:"namespace,omitempty"`
	Name            string `json:"name,omitempty"`
	UID             string `json:"uid,omitempty"`
	APIGroup        string `json:"apiGroup,omitempty"`
	APIVersion      string `json:"apiVersion,omitempty"`
	ResourceVersion string `json:"resourceVersion,omitempty"`
	Subresource     string `json:"subresource,omitempty"`
}

// Status is the subset of meta/v1 Status that audit events carry.
type Status struct {
	Kind       string         `json:"kind,omitempty"`
	APIVersion string         `json:"apiVersion,omitempty"`
	Metadata   map[string]any `json:"metadata,omitempty"`
	Status     string         `json:"status,omitempty"`
	Message    string         `json:"message,omitempty"`
	Reason     string         `json:"reason,omitempty"`
	Details    map[string]any `json:"details,omitempty"`
	Code       int64          `json:"code,omitempty"`
}

// Claims of bound ServiceAccount tokens in UserInfo.Extra: the API server
// puts the pod (and node) the token was issued for there when it
// authenticates the request, so they name the caller's pod for certain.
const (
	ExtraPodName  = "authentication.kubernetes.io/pod-name"
	ExtraPodUID   = "authentication.kubernetes.io/pod-uid"
	ExtraNodeName = "authentication.kubernetes.io/node-name"
)

// SourcePodClaims returns the pod a request came from when the API server
// authenticated it with a ServiceAccount token bound to that pod: its name
// and uid from the token's claims, its namespace from the ServiceAccount's
// username. ok is false for any other caller.
func SourcePodClaims(a *Audit) (p Peer, ok bool) {
	ns, rest, isSA := strings.Cut(strings.TrimPrefix(a.User.Username, "system:serviceaccount:"), ":")
	if !isSA || !strings.HasPrefix(a.User.Username, "system:serviceaccount:") || ns == "" || rest == "" {
		return Peer{}, false
	}
	name, uid := a.User.Extra[ExtraPodName], a.User.Extra[ExtraPodUID]
	if len(name) != 1 || len(uid) != 1 || name[0] == "" || uid[0] == "" {
		return Peer{}, false
	}
	return Peer{Pod: name[0], PodUID: uid[0], Namespace: ns}, true
}

// ConnectionIP is the address the API server accepted the request's
// connection from: the last entry of sourceIPs. kube-apiserver lists the
// addresses of an X-Forwarded-For header (which the client writes) first, so
// only the last one is the API server's own observation (or that of a proxy
// in front of it).
func ConnectionIP(a *Audit) string {
	if len(a.SourceIPs) == 0 {
		return ""
	}
	return a.SourceIPs[len(a.SourceIPs)-1]
}

// Body is the request or response body of an audit event, a JSON object as
// a dynamic map. A body that is not an object (a JSON patch is an array; a
// few subresources take a string) reads as absent instead of failing the
// whole event: the request, its user and its verb still count.
type Body map[string]any

// UnmarshalJSON decodes an object and leaves anything else absent.
func (b *Body) UnmarshalJSON(data []byte) error {
	if d := bytes.TrimLeft(data, " \t\r\n"); len(d) == 0 || d[0] != '{' {
		*b = nil
		return nil
	}
	var m map[string]any
	if !utf8.Valid(data) || fastJSON.Unmarshal(data, &m) != nil {
		m = nil
		if err := json.Unmarshal(data, &m); err != nil {
			return err
		}
	}
	*b = m
	return nil
}
