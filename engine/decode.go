package engine

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
)

// DecodeEvent decodes one event in riposte's JSON form. Unknown fields are
// errors, so a misspelt field in a rule test is caught rather than ignored.
// The event is normalised and bounded (see Normalize and MaxArgs).
func DecodeEvent(data []byte) (Event, error) {
	ev, err := decodeStrict(data)
	if err != nil {
		return Event{}, fmt.Errorf("decode event: %w", err)
	}
	return ev, nil
}

func decodeStrict(data []byte) (Event, error) {
	var ev Event
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&ev); err != nil {
		return Event{}, jsonErr(err)
	}
	if dec.More() {
		return Event{}, errors.New("trailing data after the event")
	}
	if ev.Kind == "" {
		return Event{}, errors.New("missing \"kind\"")
	}
	if ev.Kind != KindEnforce && ev.Kind.Source() == "" {
		return Event{}, fmt.Errorf("unknown kind %q", ev.Kind)
	}
	bound(&ev)
	Normalize(&ev)
	return ev, nil
}

// DecodeAuditEvent decodes one audit.k8s.io Event, as kube-apiserver writes
// it to its log file or posts it to an audit webhook, into an audit event.
// Fields riposte does not know are ignored: the API server may add some.
func DecodeAuditEvent(data []byte) (Event, error) {
	var a Audit
	if err := json.Unmarshal(data, &a); err != nil {
		return Event{}, fmt.Errorf("decode audit event: %w", jsonErr(err))
	}
	ev, err := auditEvent(&a)
	if err != nil {
		return Event{}, fmt.Errorf("decode audit event: %w", err)
	}
	return ev, nil
}

// IsAuditLine reports whether a JSON line is taken for an audit event rather
// than a riposte event: by apiVersion audit.k8s.io/*, or, without one, by the
// fields only audit events have (auditID, stage, verb, requestURI, user).
func IsAuditLine(line []byte) bool { return isAuditLine(line) }

// DecodeLine decodes a line of a recorded stream: a riposte event or an audit
// log line, told apart by its shape. A line that fits neither form fails with
// an error saying which form it was taken for and why.
func DecodeLine(line []byte) (Event, error) { return decodeLine(line) }

// LineError is a line of a stream that could not be decoded.
type LineError struct {
	Line int
	Err  error
}

func (e *LineError) Error() string { return fmt.Sprintf("line %d: %v", e.Line, e.Err) }
func (e *LineError) Unwrap() error { return e.Err }

// maxLine bounds one line of a recorded stream.
const maxLine = 16 << 20

// ReadStream reads JSON lines (riposte events or audit log lines, mixed
// freely; blank lines and lines starting with # are skipped) and calls fn for
// each. A line that does not decode is passed to fn as a *LineError and
// reading goes on, so one bad line loses nothing else. The returned error is
// only for the reader itself failing.
func ReadStream(r io.Reader, fn func(ev *Event, err error)) error {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), maxLine)
	n := 0
	for sc.Scan() {
		n++
		line := bytes.TrimSpace(sc.Bytes())
		if len(line) == 0 || line[0] == '#' {
			continue
		}
		ev, err := DecodeLine(line)
		if err != nil {
			fn(nil, &LineError{Line: n, Err: err})
			continue
		}
		fn(&ev, nil)
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("read line %d: %w", n+1, err)
	}
	return nil
}

// bound enforces the sizes the cost estimator assumes.
func bound(ev *Event) {
	if len(ev.Process.Args) > MaxArgs {
		ev.Process.Args = ev.Process.Args[:MaxArgs]
	}
	if len(ev.Process.Ancestors) > MaxAncestors {
		ev.Process.Ancestors = ev.Process.Ancestors[:MaxAncestors]
	}
	for i := range ev.Process.Ancestors {
		if a := &ev.Process.Ancestors[i]; len(a.Args) > MaxArgs {
			a.Args = a.Args[:MaxArgs]
		}
	}
	if len(ev.Process.Parent.Args) > MaxArgs {
		ev.Process.Parent.Args = ev.Process.Parent.Args[:MaxArgs]
	}
}

// jsonErr makes encoding/json errors say where: the field of a type error and
// the byte offset of a syntax error.
func jsonErr(err error) error {
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) {
		return fmt.Errorf("field %q: cannot use a JSON %s as %s", te.Field, te.Value, te.Type)
	}
	var se *json.SyntaxError
	if errors.As(err, &se) {
		return fmt.Errorf("syntax error at byte %d: %v", se.Offset, se)
	}
	return err
}
