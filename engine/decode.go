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
// The event is normalised and bounded (see Normalize and Bound).
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

// ErrLineTooLong is the error of a line over the 16 MiB bound: it is
// skipped, and reading goes on with the next line.
var ErrLineTooLong = fmt.Errorf("line longer than %d bytes, skipped", maxLine)

// ReadStream reads JSON lines (riposte events or audit log lines, mixed
// freely; blank lines and lines starting with # are skipped) and calls fn for
// each. A line that does not decode, or is longer than 16 MiB
// (ErrLineTooLong), is passed to fn as a *LineError and reading goes on, so
// one bad line loses nothing else. The returned error is only for the
// reader itself failing.
func ReadStream(r io.Reader, fn func(ev *Event, err error)) error {
	br := bufio.NewReaderSize(r, 64<<10)
	var buf []byte
	n := 0
	for {
		line, tooLong, err := readLine(br, &buf)
		if len(line) == 0 && !tooLong && err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			return fmt.Errorf("read line %d: %w", n+1, err)
		}
		n++
		if tooLong {
			fn(nil, &LineError{Line: n, Err: ErrLineTooLong})
		} else if line = bytes.TrimSpace(line); len(line) > 0 && line[0] != '#' {
			if ev, derr := DecodeLine(line); derr != nil {
				fn(nil, &LineError{Line: n, Err: derr})
			} else {
				fn(&ev, nil)
			}
		}
		if err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			return fmt.Errorf("read line %d: %w", n+1, err)
		}
	}
}

// readLine reads up to the next newline into *buf, keeping at most maxLine
// bytes: the rest of a longer line is read and dropped, and tooLong says so.
func readLine(br *bufio.Reader, buf *[]byte) (line []byte, tooLong bool, err error) {
	*buf = (*buf)[:0]
	for {
		chunk, err := br.ReadSlice('\n')
		if !tooLong {
			if len(*buf)+len(chunk) > maxLine+1 { // +1: the newline
				tooLong, *buf = true, (*buf)[:0]
			} else {
				*buf = append(*buf, chunk...)
			}
		}
		if errors.Is(err, bufio.ErrBufferFull) {
			continue
		}
		return *buf, tooLong, err
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
