// Package incidentview renders an Incident for a person (riposte incident show).
package incidentview

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/riposte-dev/riposte/api/v1alpha1"
	"github.com/riposte-dev/riposte/engine"
)

// maxShown bounds a line's user-chosen strings (arguments, paths) in Show.
const maxShown = 200

// Show prints an Incident for a person: the rule, the subject and its
// identity, who is behind its process (status.session), the process tree
// and the matched events in time order, and the response. Every string from
// the cluster is quoted and cut, so a crafted argument cannot forge lines.
func Show(w io.Writer, inc *v1alpha1.Incident) {
	p := func(format string, a ...any) { fmt.Fprintf(w, format+"\n", a...) }
	sp := &inc.Spec
	p("Incident %s/%s", inc.Namespace, inc.Name)
	p("  rule      %s %s (%s)", sp.RuleKind, sp.Rule, sp.Severity)
	if sp.Output != "" {
		p("  output    %s", q(sp.Output))
	}
	s := &sp.Subject
	p("Subject")
	if s.Pod != "" {
		p("  pod       %s/%s uid %s", s.Namespace, s.Pod, orDash(s.PodUID))
	}
	if s.ContainerID != "" {
		p("  container %s id %s", orDash(s.Container), short(s.ContainerID))
		p("  image     %s", strings.TrimSpace(orDash(s.Image)+" "+s.ImageDigest))
	}
	if s.WorkloadName != "" {
		p("  workload  %s/%s", s.WorkloadKind, s.WorkloadName)
	}
	if s.ServiceAccount != "" {
		p("  account   %s", s.ServiceAccount)
	}
	if s.Node != "" {
		p("  node      %s", s.Node)
	}
	if s.PID != 0 || s.Binary != "" {
		p("  process   %d %s", s.PID, q(s.Binary))
	}
	if s.User != "" {
		p("  user      %s %s %s/%s from %v", q(s.User), s.Verb, s.Resource, s.Subresource, s.SourceIPs)
	}
	p("Session (who is behind the process)")
	origin := orDash(s.Origin)
	if s.OriginPID != 0 {
		origin += fmt.Sprintf(", entered the container as pid %d", s.OriginPID)
		if s.OriginTime != nil {
			origin += " at " + s.OriginTime.UTC().Format(time.RFC3339Nano)
		}
	}
	p("  origin    %s", origin)
	switch ss := inc.Status.Session; {
	case ss == nil:
		p("  session   not decided yet")
	case ss.User != "":
		p("  user      %s groups %s", q(ss.User), q(strings.Join(ss.Groups, ",")))
		if ss.ImpersonatedBy != "" {
			p("  impersonated by %s", q(ss.ImpersonatedBy))
		}
		p("  request   %s pods/%s container %s received %s audit id %s", ss.Verb, ss.Subresource, q(ss.Container), timeOf(ss.RequestReceived), ss.AuditID)
		p("  command   %s", q(strings.Join(ss.Command, " ")))
		p("  from      %v agent %s", ss.SourceIPs, q(ss.UserAgent))
	default:
		p("  user      none: %s", ss.Message)
	}
	var evs []engine.Event
	for _, raw := range inc.Status.SampleEvents {
		var ev engine.Event
		if json.Unmarshal(raw.Raw, &ev) == nil {
			evs = append(evs, ev)
		}
	}
	if len(evs) > 0 && evs[0].Process.PID != 0 {
		p("Process tree (first match)")
		pr := &evs[0].Process
		depth := 0
		for i := len(pr.Ancestors) - 1; i >= 0; i-- {
			a := &pr.Ancestors[i]
			p("  %s%d %s", strings.Repeat("  ", depth), a.PID, q(cmd(a.Binary, a.Args)))
			depth++
		}
		p("  %s%d %s  <- matched (uid %d)", strings.Repeat("  ", depth), pr.PID, q(cmd(pr.Binary, pr.Args)), pr.UID)
	}
	if tl := inc.Status.Timeline; len(tl) > 0 {
		p("Timeline (the container before the first match, %d events)", len(tl))
		for _, e := range tl {
			what := q(cmd(e.Binary, e.Args))
			switch {
			case e.Path != "":
				what = q(e.Path)
			case e.Peer != "":
				what = q(e.Peer)
			}
			p("  %s %-7s pid %d (parent %d) %s", e.Time.UTC().Format("15:04:05.000000"), q(e.Kind), e.PID, e.PPID, what)
		}
	}
	p("Matched events (%d of %d)", len(evs), inc.Status.Count)
	for i := range evs {
		p("  %s", line(&evs[i]))
	}
	p("Response  phase %s", orDash(string(inc.Status.Phase)))
	for _, st := range inc.Status.Steps {
		p("  %s/%s %s: %s %s", st.Playbook, st.Name, st.Action, st.Phase, q(st.Message))
	}
	for _, e := range inc.Status.Evidence {
		p("  evidence %s sha256 %s (%d files)", e.Location, e.ManifestSHA256, e.Files)
	}
}

// line is one event of a timeline.
func line(ev *engine.Event) string {
	t := ev.Time.UTC().Format("15:04:05.000")
	switch ev.Kind {
	case engine.KindOpen:
		return fmt.Sprintf("%s open    pid %d %s", t, ev.Process.PID, q(ev.File.Path))
	case engine.KindConnect, engine.KindAccept, engine.KindListen:
		return fmt.Sprintf("%s %-7s pid %d %s:%d %s", t, ev.Kind, ev.Process.PID, ev.Net.Peer.IP, ev.Net.Peer.Port, q(ev.Net.Peer.Pod))
	case engine.KindAudit:
		a := &ev.Audit
		return fmt.Sprintf("%s audit   %s %s %s/%s %s", t, q(a.User.Username), a.Verb, a.ObjectRef.Resource, a.ObjectRef.Subresource, q(a.ObjectRef.Name))
	case engine.KindObject:
		return fmt.Sprintf("%s object  %s", t, ev.Op)
	}
	return fmt.Sprintf("%s %-7s pid %d (parent %d) %s", t, ev.Kind, ev.Process.PID, ev.Process.Parent.PID, q(cmd(ev.Process.Binary, ev.Process.Args)))
}

func cmd(binary string, args []string) string {
	if len(args) == 0 {
		return binary
	}
	return binary + " [" + strings.Join(args, " ") + "]"
}

// q cuts s and quotes it when it holds anything but printable text, so a
// crafted value cannot end a line or pose as another field.
func q(s string) string {
	cut := len(s) > maxShown
	if cut {
		s = s[:maxShown]
	}
	if strings.ContainsFunc(s, func(r rune) bool { return r < 0x20 || r == 0x7f || r == '"' }) {
		s = fmt.Sprintf("%q", s)
	}
	if cut {
		s += "…"
	}
	return s
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func short(id string) string {
	if len(id) > 12 {
		return id[:12]
	}
	return id
}

func timeOf(t *metav1.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.UTC().Format(time.RFC3339Nano)
}
