package engine

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"
	"unsafe"

	jsoniter "github.com/json-iterator/go"
	"github.com/modern-go/reflect2"
)

// A line of a recorded stream is in one of two JSON forms: riposte's own
// event form, or an audit.k8s.io Event as kube-apiserver writes it to its log.
// Audit lines are recognised by their shape, not only by their header:
// kube-apiserver versions before audit.k8s.io/v1 and several log shippers
// write events without apiVersion (and sometimes without kind).

// auditFields are the fields only an audit event has at its top level; a
// riposte event has none of them (it would be an unknown field).
var auditFields = []string{"auditID", "stage", "verb", "requestURI", "user"}

// lineForm is what a line was taken for and why, so a decode error can say it.
type lineForm struct {
	audit bool
	why   string
}

func (f lineForm) String() string {
	if f.audit {
		return "an audit event (" + f.why + ")"
	}
	return "a riposte event (" + f.why + ")"
}

// formOf tells the two forms apart from a line already decoded as an audit
// event (which ignores unknown fields, so a riposte event decodes too):
//   - apiVersion audit.k8s.io/* is an audit event;
//   - a riposte kind (exec, open, audit, ...) is a riposte event;
//   - otherwise, with no kind or kind "Event", any of auditID, stage, verb,
//     requestURI, user makes it an audit event.
func formOf(a *Audit) lineForm {
	if strings.HasPrefix(a.APIVersion, "audit.k8s.io/") {
		return lineForm{audit: true, why: fmt.Sprintf("apiVersion %q", a.APIVersion)}
	}
	if k := Kind(a.Kind); k == KindEnforce || k.Source() != "" {
		return lineForm{why: fmt.Sprintf("kind %q", a.Kind)}
	}
	if a.Kind != "" && a.Kind != "Event" {
		return lineForm{why: fmt.Sprintf("kind %q is neither a riposte kind nor an audit Event", a.Kind)}
	}
	var has []string
	for i, v := range []bool{a.AuditID != "", a.Stage != "", a.Verb != "", a.RequestURI != "", !a.User.isZero()} {
		if v {
			has = append(has, auditFields[i])
		}
	}
	if len(has) > 0 {
		return lineForm{audit: true, why: "it has " + strings.Join(has, ", ")}
	}
	if a.Kind == "Event" {
		return lineForm{why: "kind \"Event\" without apiVersion audit.k8s.io/* or any of " + strings.Join(auditFields, ", ")}
	}
	return lineForm{why: "it has no apiVersion audit.k8s.io/* and none of " + strings.Join(auditFields, ", ")}
}

func (u *UserInfo) isZero() bool {
	return u.Username == "" && u.UID == "" && len(u.Groups) == 0 && len(u.Extra) == 0
}

// decodeLine decodes a line in either form. An audit line is decoded once;
// a riposte line is looked at loosely first, then decoded strictly.
func decodeLine(line []byte) (Event, error) {
	var a Audit
	var err error
	if !fastAudit(line, &a) {
		a = Audit{}
		err = json.Unmarshal(line, &a)
	}
	var te *json.UnmarshalTypeError
	if err != nil && !errors.As(err, &te) {
		return Event{}, fmt.Errorf("decode line: %w", jsonErr(err))
	}
	if te != nil && te.Field == "" {
		return Event{}, fmt.Errorf("decode line: a line must be a JSON object, not a JSON %s", te.Value)
	}
	form := formOf(&a)
	if !form.audit {
		ev, err := decodeStrict(line)
		if err != nil {
			return Event{}, fmt.Errorf("decode line as %s: %w", form, err)
		}
		return ev, nil
	}
	if err != nil {
		return Event{}, fmt.Errorf("decode line as %s: %w", form, jsonErr(err))
	}
	ev, err := auditEvent(&a)
	if err != nil {
		return Event{}, fmt.Errorf("decode line as %s: %w", form, err)
	}
	return ev, nil
}

// auditEvent wraps a decoded audit.k8s.io Event into an audit event.
func auditEvent(a *Audit) (Event, error) {
	if a.AuditID == "" && a.Verb == "" {
		return Event{}, errors.New("neither auditID nor verb is set")
	}
	ev := Event{Kind: KindAudit, Audit: *a}
	Normalize(&ev)
	return ev, nil
}

// isAuditLine reports whether a line is taken for an audit event.
func isAuditLine(line []byte) bool {
	var a Audit
	err := json.Unmarshal(line, &a)
	var te *json.UnmarshalTypeError
	if err != nil && (!errors.As(err, &te) || te.Field == "") {
		return false
	}
	return formOf(&a).audit
}

// fastJSON decodes audit events, the bulk of a replay and of the audit
// source, at about twice the speed of encoding/json. It is configured as
// jsoniter.ConfigCompatibleWithStandardLibrary, plus a decoder that reads a
// Body straight from the line (through Body.UnmarshalJSON it would be
// skipped, copied, checked and parsed again).
var fastJSON = func() jsoniter.API {
	api := jsoniter.Config{EscapeHTML: true, SortMapKeys: true, ValidateJsonRawMessage: true}.Froze()
	api.RegisterExtension(&bodyExtension{})
	return api
}()

var bodyType = reflect2.TypeOf(Body(nil))

type bodyExtension struct{ jsoniter.DummyExtension }

func (*bodyExtension) CreateDecoder(typ reflect2.Type) jsoniter.ValDecoder {
	if typ == bodyType {
		return bodyDecoder{}
	}
	return nil
}

// bodyDecoder does what Body.UnmarshalJSON does: an object is decoded, any
// other value reads as absent. fastAudit has checked the whole line is
// valid UTF-8.
type bodyDecoder struct{}

func (bodyDecoder) Decode(ptr unsafe.Pointer, iter *jsoniter.Iterator) {
	b := (*Body)(ptr)
	if iter.WhatIsNext() != jsoniter.ObjectValue {
		iter.Skip()
		*b = nil
		return
	}
	var m map[string]any
	iter.ReadVal(&m)
	*b = m
}

// fastAudit decodes a line with fastJSON when that cannot differ from
// encoding/json: valid UTF-8 (encoding/json replaces invalid bytes, the fast
// decoder keeps them) and no error (an error, or a type mismatch
// encoding/json reports after decoding the rest, takes the encoding/json
// path, whose messages and partial results the callers rely on).
// FuzzFastAuditDecodeAgreesWithEncodingJSON holds the two to the same result.
func fastAudit(line []byte, a *Audit) bool {
	return utf8.Valid(line) && fastJSON.Unmarshal(line, a) == nil
}
