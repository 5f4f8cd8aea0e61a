package responders

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"path"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/runtime"

	"github.com/riposte-dev/riposte/api/v1alpha1"
)

// Notify posts the Incident as JSON to a webhook, in riposte's own form or in
// the Falco output form Falcosidekick accepts on its / endpoint, so existing
// alert routing can be reused.
type Notify struct {
	// HTTP is the client used (default: 10s timeout). Redirects are never
	// followed, whatever the client says.
	HTTP *http.Client
	// AllowedURLs are the URL prefixes a namespaced ResponsePlaybook may
	// notify (scheme://host[:port][/path]); the cluster admin sets them
	// (--notify-allow). Empty: namespaced playbooks may not notify at all.
	// ClusterResponsePlaybooks, written by cluster admins, may notify any
	// http(s) URL.
	AllowedURLs []string
}

// Message is the riposte notification payload.
type Message struct {
	Incident  string                 `json:"incident"`
	Namespace string                 `json:"namespace"`
	Rule      string                 `json:"rule"`
	RuleKind  string                 `json:"ruleKind"`
	Severity  string                 `json:"severity"`
	Tags      []string               `json:"tags,omitempty"`
	Output    string                 `json:"output,omitempty"`
	Subject   v1alpha1.Subject       `json:"subject"`
	Count     int64                  `json:"count,omitempty"`
	Time      time.Time              `json:"time"`
	Events    []runtime.RawExtension `json:"events,omitempty"`
}

// FalcoPayload is the Falco JSON output that Falcosidekick reads.
type FalcoPayload struct {
	UUID         string         `json:"uuid"`
	Output       string         `json:"output"`
	Priority     string         `json:"priority"`
	Rule         string         `json:"rule"`
	Time         time.Time      `json:"time"`
	Source       string         `json:"source"`
	Tags         []string       `json:"tags,omitempty"`
	Hostname     string         `json:"hostname,omitempty"`
	OutputFields map[string]any `json:"output_fields"`
}

// falcoPriority maps riposte severities to Falco priorities.
var falcoPriority = map[string]string{
	"critical": "Critical", "high": "Error", "medium": "Warning", "low": "Notice", "info": "Informational",
}

// Payload builds the body for format ("riposte" or "falcosidekick").
func Payload(inc *v1alpha1.Incident, format string, now time.Time) ([]byte, error) {
	s := inc.Spec.Subject
	t := now
	if inc.Status.FirstSeen != nil {
		t = inc.Status.FirstSeen.Time
	}
	if format != "falcosidekick" {
		return json.Marshal(Message{
			Incident: inc.Name, Namespace: inc.Namespace, Rule: inc.Spec.Rule, RuleKind: inc.Spec.RuleKind,
			Severity: inc.Spec.Severity, Tags: inc.Spec.Tags, Output: inc.Spec.Output, Subject: s,
			Count: inc.Status.Count, Time: t.UTC(), Events: inc.Status.SampleEvents,
		})
	}
	fields := map[string]any{"riposte.incident": inc.Namespace + "/" + inc.Name}
	set := func(k, v string) {
		if v != "" {
			fields[k] = v
		}
	}
	set("k8s.ns.name", s.Namespace)
	set("k8s.pod.name", s.Pod)
	set("k8s.pod.uid", s.PodUID)
	set("container.name", s.Container)
	set("container.id", s.ContainerID)
	set("container.image", s.Image)
	set("proc.exepath", s.Binary)
	set("ka.user.name", s.User)
	set("ka.verb", s.Verb)
	set("ka.target.resource", s.Resource)
	set("ka.target.subresource", s.Subresource)
	if s.PID != 0 {
		fields["proc.pid"] = s.PID
	}
	source := "syscall"
	if s.Verb != "" {
		source = "k8s_audit"
	}
	prio := falcoPriority[inc.Spec.Severity]
	if prio == "" {
		prio = "Warning"
	}
	out := inc.Spec.Output
	if out == "" {
		out = inc.Spec.Rule
	}
	return json.Marshal(FalcoPayload{
		UUID: string(inc.UID), Output: out, Priority: prio, Rule: inc.Spec.Rule, Time: t.UTC(),
		Source: source, Tags: inc.Spec.Tags, Hostname: s.Node, OutputFields: fields,
	})
}

func (a *Notify) target(req *Request) (*v1alpha1.NotifyParams, error) {
	p := req.Step.Notify
	if p == nil || p.URL == "" {
		return nil, fmt.Errorf("notify step has no url")
	}
	u, err := url.Parse(p.URL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("notify url must be an absolute http or https URL")
	}
	if !req.ClusterPlaybook() && !AllowedURL(a.AllowedURLs, u) {
		// A tenant's playbook must not make the controller reach whatever
		// it can reach (cloud metadata, the API server, other tenants).
		return nil, refused("notify %s: a namespaced ResponsePlaybook may only notify URLs the cluster admin allowed (--notify-allow)", redactURL(p.URL))
	}
	return p, nil
}

// AllowedURL reports whether u starts with one of the allowed prefixes,
// compared as parsed URLs (scheme, host and port exactly, then the path), so
// "https://hooks.example" does not allow "https://hooks.example.evil". The
// path is compared unescaped and must already be in its clean form: a path
// with "." or ".." segments (escaped or not), "//", a backslash, a ';' or a
// '%' left after unescaping is refused outright, since the server that
// receives it may resolve it to a path outside the prefix
// ("/team-a/../admin", "/team-a/%2e%2e/admin", "/team-a/..;/admin").
func AllowedURL(allowed []string, u *url.URL) bool {
	p, ok := cleanURLPath(u.Path)
	if !ok || u.User != nil {
		return false
	}
	for _, a := range allowed {
		au, err := url.Parse(a)
		if err != nil || au.Scheme != u.Scheme || !strings.EqualFold(au.Host, u.Host) {
			continue
		}
		prefix, ok := cleanURLPath(au.Path)
		if !ok {
			continue
		}
		prefix = strings.TrimSuffix(prefix, "/")
		if prefix == "" || p == prefix || strings.HasPrefix(p, prefix+"/") {
			return true
		}
	}
	return false
}

// cleanURLPath returns an unescaped URL path ("" counts as "/") and whether
// it is clean: path.Clean leaves it unchanged (but for one trailing slash)
// and it holds none of the characters servers give a meaning of their own.
func cleanURLPath(p string) (string, bool) {
	if p == "" {
		p = "/"
	}
	if !strings.HasPrefix(p, "/") || strings.ContainsAny(p, "\\%;") {
		return "", false
	}
	c := path.Clean(p)
	if p != c && p != c+"/" {
		return "", false
	}
	return p, true
}

func redactURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "(invalid url)"
	}
	return u.Redacted()
}

func format(p *v1alpha1.NotifyParams) string {
	if p.Format == "" {
		return "riposte"
	}
	return p.Format
}

// Plan implements Action.
func (a *Notify) Plan(ctx context.Context, req *Request) (string, error) {
	p, err := a.target(req)
	if err != nil {
		return "", err
	}
	return fmt.Sprintf("POST a %s payload to %s", format(p), redactURL(p.URL)), nil
}

// Do implements Action. A restart between the POST and the status update
// sends the notification again: delivery is at least once.
func (a *Notify) Do(ctx context.Context, req *Request) (Result, error) {
	p, err := a.target(req)
	if err != nil {
		return Result{}, err
	}
	body, err := Payload(req.Incident, format(p), time.Now())
	if err != nil {
		return Result{}, fmt.Errorf("encode %s payload: %w", format(p), err)
	}
	hc := &http.Client{Timeout: 10 * time.Second}
	if a.HTTP != nil {
		c := *a.HTTP
		hc = &c
	}
	// A redirect would send the Incident (and the controller) elsewhere
	// than the URL that was allowed.
	hc.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	hreq, err := http.NewRequestWithContext(ctx, http.MethodPost, p.URL, bytes.NewReader(body))
	if err != nil {
		return Result{}, fmt.Errorf("notify %s: %w", redactURL(p.URL), err)
	}
	hreq.Header.Set("Content-Type", "application/json")
	hreq.Header.Set("User-Agent", "riposte")
	resp, err := hc.Do(hreq)
	if err != nil {
		return Result{}, fmt.Errorf("notify %s: %w", redactURL(p.URL), err)
	}
	defer resp.Body.Close()
	// The response body stays out of the Incident: whatever answered chose
	// it, and the status is read by more people than the endpoint.
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	if resp.StatusCode/100 != 2 {
		return Result{}, fmt.Errorf("notify %s: HTTP %d %s", redactURL(p.URL), resp.StatusCode, http.StatusText(resp.StatusCode))
	}
	return Result{Message: fmt.Sprintf("POSTed %d-byte %s payload to %s: HTTP %d", len(body), format(p), redactURL(p.URL), resp.StatusCode)}, nil
}
