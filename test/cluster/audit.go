package cluster

import (
	"context"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"sync"
)

// AuditEvent is the part of an audit.k8s.io/v1 Event that tests assert on,
// with the same JSON names, so the harness does not need k8s.io/apiserver.
type AuditEvent struct {
	Level      string   `json:"level"`
	AuditID    string   `json:"auditID"`
	Stage      string   `json:"stage"`
	RequestURI string   `json:"requestURI"`
	Verb       string   `json:"verb"`
	User       UserInfo `json:"user"`
	SourceIPs  []string `json:"sourceIPs"`
	UserAgent  string   `json:"userAgent"`
	ObjectRef  *struct {
		Resource    string `json:"resource"`
		Namespace   string `json:"namespace"`
		Name        string `json:"name"`
		APIGroup    string `json:"apiGroup"`
		APIVersion  string `json:"apiVersion"`
		Subresource string `json:"subresource"`
	} `json:"objectRef"`
	ResponseStatus *struct {
		Code int `json:"code"`
	} `json:"responseStatus"`
	RequestObject  json.RawMessage   `json:"requestObject"`
	ResponseObject json.RawMessage   `json:"responseObject"`
	Annotations    map[string]string `json:"annotations"`
	// Raw is the event as received, for decoding into other types.
	Raw json.RawMessage `json:"-"`
}

// UserInfo is authentication.k8s.io/v1 UserInfo.
type UserInfo struct {
	Username string   `json:"username"`
	UID      string   `json:"uid"`
	Groups   []string `json:"groups"`
}

// AuditSink is an HTTPS audit webhook on loopback that keeps every event it
// receives. Create it before the cluster and pass Webhook() in Options.
type AuditSink struct {
	srv *httptest.Server

	mu      sync.Mutex
	events  []AuditEvent
	changed chan struct{} // closed and replaced on every append
	err     error         // first malformed batch, reported by Wait
}

// NewAuditSink starts the webhook server; Close stops it.
func NewAuditSink() *AuditSink {
	s := &AuditSink{changed: make(chan struct{})}
	s.srv = httptest.NewUnstartedServer(http.HandlerFunc(s.serve))
	// kube-apiserver drops the connection when it shuts down mid-batch; that
	// is not worth a log line in every test run.
	s.srv.Config.ErrorLog = log.New(io.Discard, "", 0)
	s.srv.StartTLS()
	return s
}

// Webhook tells kube-apiserver where to post and which CA to trust (the
// server's self-signed certificate is its own CA).
func (s *AuditSink) Webhook() *AuditWebhook {
	return &AuditWebhook{
		URL:    s.srv.URL + "/audit",
		CAData: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: s.srv.Certificate().Raw}),
	}
}

// Close stops the server.
func (s *AuditSink) Close() { s.srv.Close() }

func (s *AuditSink) serve(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		http.Error(w, "POST an audit.k8s.io/v1 EventList", http.StatusMethodNotAllowed)
		return
	}
	var list struct {
		Kind  string            `json:"kind"`
		Items []json.RawMessage `json:"items"`
	}
	events, err := func() ([]AuditEvent, error) {
		if err := json.NewDecoder(r.Body).Decode(&list); err != nil {
			return nil, fmt.Errorf("decode audit batch: %w", err)
		}
		if list.Kind != "EventList" {
			return nil, fmt.Errorf("decode audit batch: kind %q, want EventList", list.Kind)
		}
		events := make([]AuditEvent, 0, len(list.Items))
		for i, raw := range list.Items {
			var ev AuditEvent
			if err := json.Unmarshal(raw, &ev); err != nil {
				return nil, fmt.Errorf("decode audit batch item %d: %w", i, err)
			}
			ev.Raw = raw
			events = append(events, ev)
		}
		return events, nil
	}()
	s.mu.Lock()
	defer s.mu.Unlock()
	if err != nil {
		if s.err == nil {
			s.err = err
		}
		close(s.changed)
		s.changed = make(chan struct{})
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	s.events = append(s.events, events...)
	close(s.changed)
	s.changed = make(chan struct{})
}

// Events returns a copy of everything received so far.
func (s *AuditSink) Events() []AuditEvent {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]AuditEvent(nil), s.events...)
}

// Wait returns the first event (received so far or later) for which match is
// true, or an error when ctx ends or a malformed batch arrived.
func (s *AuditSink) Wait(ctx context.Context, match func(AuditEvent) bool) (AuditEvent, error) {
	next := 0
	for {
		s.mu.Lock()
		if s.err != nil {
			err := s.err
			s.mu.Unlock()
			return AuditEvent{}, err
		}
		for ; next < len(s.events); next++ {
			if match(s.events[next]) {
				ev := s.events[next]
				s.mu.Unlock()
				return ev, nil
			}
		}
		changed := s.changed
		s.mu.Unlock()
		select {
		case <-ctx.Done():
			return AuditEvent{}, fmt.Errorf("wait for audit event (%d received, none matched): %w", next, ctx.Err())
		case <-changed:
		}
	}
}
