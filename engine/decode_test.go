package engine

import (
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"
)

// A real line of a kube-apiserver --audit-log-path file.
const auditLine = `{"kind":"Event","apiVersion":"audit.k8s.io/v1","level":"Metadata","auditID":"d7a1f1c2-7d8e-4a64-9f0b-2f1e3c4d5a6b","stage":"ResponseComplete","requestURI":"/api/v1/namespaces/shop/pods/web-1/exec?command=sh\u0026container=nginx\u0026stdin=true\u0026tty=true","verb":"create","user":{"username":"alice@example.com","groups":["system:authenticated"]},"sourceIPs":["192.0.2.10"],"userAgent":"kubectl/v1.37.2 (linux/amd64) kubernetes/0000000","objectRef":{"resource":"pods","namespace":"shop","name":"web-1","apiVersion":"v1","subresource":"exec"},"responseStatus":{"metadata":{},"code":101},"requestReceivedTimestamp":"2026-11-20T10:00:00.000000Z","stageTimestamp":"2026-11-20T10:00:03.500000Z","annotations":{"authorization.k8s.io/decision":"allow","authorization.k8s.io/reason":"RBAC: allowed by ClusterRoleBinding \"ops\""},"someFutureField":1}`

func TestDecodeAuditLine(t *testing.T) {
	ev, err := DecodeLine([]byte(auditLine))
	if err != nil {
		t.Fatal(err)
	}
	a := ev.Audit
	if ev.Kind != KindAudit || a.AuditID != "d7a1f1c2-7d8e-4a64-9f0b-2f1e3c4d5a6b" || a.Verb != "create" ||
		a.User.Username != "alice@example.com" || a.ObjectRef.Subresource != "exec" || a.ObjectRef.Namespace != "shop" ||
		a.SourceIPs[0] != "192.0.2.10" || a.ResponseStatus.Code != 101 {
		t.Fatalf("decoded %+v", a)
	}
	if want := time.Date(2026, 11, 20, 10, 0, 3, 500_000_000, time.UTC); !ev.Time.Equal(want) {
		t.Fatalf("event time %v, want the stage timestamp %v", ev.Time, want)
	}
	if ev.Namespace() != "shop" {
		t.Fatalf("namespace %q", ev.Namespace())
	}
}

func TestDecodeEventIsStrictAndNormalises(t *testing.T) {
	ev, err := DecodeEvent([]byte(`{"kind":"open","process":{"binary":"/usr/bin/tee","args":["tee","-a","/etc/x"]},"file":{"path":"/etc/x","flags":1089}}`))
	if err != nil {
		t.Fatal(err)
	}
	if ev.Process.Name != "tee" || ev.Process.Cmdline != "tee -a /etc/x" || !ev.File.Write {
		t.Fatalf("not normalised: %+v %+v", ev.Process, ev.File)
	}
	for in, want := range map[string]string{
		`{"kind":"exec","proces":{}}`:                     `unknown field "proces"`,
		`{"kind":"exec","process":{"pid":"12"}}`:          `field "process.pid"`,
		`{"kind":"exce"}`:                                 `unknown kind "exce"`,
		`{"process":{}}`:                                  `missing "kind"`,
		`{"kind":"exec"} {"kind":"exec"}`:                 `after top-level value`,
		`{"kind":"exec",`:                                 `decode line: syntax error at byte 15`,
		`{"kind":"Event","apiVersion":"audit.k8s.io/v1"}`: `neither auditID nor verb`,
	} {
		_, err := DecodeLine([]byte(in))
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: got %v, want an error containing %q", in, err, want)
		}
	}
}

// Audit log lines of older kube-apiserver versions and of log shippers: no
// apiVersion (sometimes no kind either), audit.k8s.io/v1beta1 fields.
var olderAuditLines = []string{
	`{"annotations":{"authorization.k8s.io/decision":"allow","authorization.k8s.io/reason":""},"auditID":"2b8e8f1a-1c7e-4f38-8d77-7a5c1c6f2a11","kind":"Event","level":"Request","objectRef":{"apiVersion":"v1","name":"nginx","namespace":"default","resource":"pods","subresource":"exec"},"requestReceivedTimestamp":"2019-05-02T19:04:06.382345Z","requestURI":"/api/v1/namespaces/default/pods/nginx/exec?command=bash\u0026container=nginx\u0026stdin=true\u0026stdout=true\u0026tty=true","responseStatus":{"code":101,"metadata":{}},"sourceIPs":["172.17.0.1"],"stage":"ResponseStarted","stageTimestamp":"2019-05-02T19:04:06.405785Z","timestamp":"2019-05-02T19:04:06Z","user":{"groups":["system:masters","system:authenticated"],"username":"minikube-user"},"userAgent":"kubectl/v1.14.1 (linux/amd64) kubernetes/b739410","verb":"create"}`,
	`{"annotations":{"authorization.k8s.io/decision":"allow"},"auditID":"5f1d","level":"Metadata","objectRef":{"resource":"clusterrolebindings","name":"pwn","apiGroup":"rbac.authorization.k8s.io"},"requestURI":"/apis/rbac.authorization.k8s.io/v1/clusterrolebindings","responseStatus":{"code":201},"stage":"ResponseComplete","user":{"username":"alice"},"verb":"create"}`,
	`{"kind":"Event","apiVersion":"audit.k8s.io/v1beta1","metadata":{"creationTimestamp":"2018-10-25T13:58:49Z"},"level":"Request","timestamp":"2018-10-25T13:58:49Z","auditID":"9c3a","stage":"ResponseComplete","requestURI":"/api/v1/namespaces/default/services","verb":"create","user":{"username":"bob","groups":["system:authenticated"]},"sourceIPs":["::1"],"objectRef":{"resource":"services","namespace":"default","name":"np","apiVersion":"v1"},"responseStatus":{"metadata":{},"code":201},"requestObject":{"kind":"Service","apiVersion":"v1","metadata":{"name":"np"},"spec":{"type":"NodePort","ports":[{"port":80}]}},"requestReceivedTimestamp":"2018-10-25T13:58:49.730588Z","stageTimestamp":"2018-10-25T13:58:49.736141Z"}`,
}

func TestAuditLinesAreRecognisedByTheirShape(t *testing.T) {
	for i, line := range olderAuditLines {
		if !IsAuditLine([]byte(line)) {
			t.Errorf("line %d is not taken for an audit event", i)
		}
		ev, err := DecodeLine([]byte(line))
		if err != nil {
			t.Fatalf("line %d: %v", i, err)
		}
		if ev.Kind != KindAudit || ev.Audit.Verb != "create" || ev.Audit.User.Username == "" || ev.Time.IsZero() && i != 1 {
			t.Errorf("line %d decoded as %q %+v", i, ev.Kind, ev.Audit)
		}
	}
	// riposte's own form with an audit object stays riposte's form.
	ev, err := DecodeLine([]byte(`{"kind":"audit","audit":{"verb":"get","objectRef":{"resource":"secrets"}}}`))
	if err != nil || ev.Kind != KindAudit || ev.Audit.ObjectRef.Resource != "secrets" {
		t.Errorf("riposte audit event: %+v %v", ev.Audit, err)
	}
	if IsAuditLine([]byte(`{"kind":"audit","audit":{"verb":"get"}}`)) || IsAuditLine([]byte(`not json`)) {
		t.Error("a riposte event or garbage taken for an audit line")
	}
}

// A line that fits neither form says which form it was taken for and why
// it failed.
func TestDecodeLineSaysWhichFormItTriedAndWhy(t *testing.T) {
	for in, want := range map[string][]string{
		`{"auditID":"x","verb":5}`:                   {`as an audit event (it has auditID)`, `field "verb"`},
		`{"kind":"Event","stage":"ResponseStarted"}`: {`as an audit event (it has stage)`, `neither auditID nor verb`},
		`{"kind":"exec","auditID":"x"}`:              {`as a riposte event (kind "exec")`, `unknown field "auditID"`},
		`{"kind":"Event","level":"Metadata"}`:        {`as a riposte event (kind "Event" without apiVersion`, `unknown field "level"`},
		`{"kind":"Pod","verb":"get"}`:                {`as a riposte event (kind "Pod" is neither`, `unknown field "verb"`},
		`{"process":{"binary":"/bin/sh"}}`:           {`as a riposte event (it has no apiVersion`, `missing "kind"`},
		`[1,2]`:                                      {`must be a JSON object, not a JSON array`},
		`{"kind":"Event","apiVersion":"audit.k8s.io/v1","verb":"get","user":"alice"}`: {`as an audit event (apiVersion "audit.k8s.io/v1")`, `field "user"`},
	} {
		_, err := DecodeLine([]byte(in))
		for _, w := range want {
			if err == nil || !strings.Contains(err.Error(), w) {
				t.Errorf("%s: got %v, want an error containing %q", in, err, w)
			}
		}
	}
}

func TestDecodeBoundsArgs(t *testing.T) {
	args := make([]string, 200)
	for i := range args {
		args[i] = `"a"`
	}
	ev, err := DecodeEvent([]byte(`{"kind":"exec","process":{"args":[` + strings.Join(args, ",") + `]}}`))
	if err != nil {
		t.Fatal(err)
	}
	if len(ev.Process.Args) != MaxArgs {
		t.Fatalf("args %d, want bounded to %d", len(ev.Process.Args), MaxArgs)
	}
}

func TestReadStreamReportsBadLinesAndKeepsTheRest(t *testing.T) {
	in := strings.Join([]string{
		`{"kind":"exec","process":{"binary":"/bin/sh"}}`,
		``,
		`# a comment`,
		`{"kind":"exec","process":{"binary":`,
		auditLine,
		`not json`,
		`{"kind":"connect","net":{"peer":{"ip":"10.0.0.7","port":4444}}}`,
	}, "\n")
	var kinds []Kind
	var bad []int
	err := ReadStream(strings.NewReader(in), func(ev *Event, err error) {
		if err != nil {
			var le *LineError
			if !errors.As(err, &le) {
				t.Fatalf("want a *LineError, got %v", err)
			}
			bad = append(bad, le.Line)
			return
		}
		kinds = append(kinds, ev.Kind)
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(kinds) != 3 || kinds[0] != KindExec || kinds[1] != KindAudit || kinds[2] != KindConnect {
		t.Fatalf("good events %v", kinds)
	}
	if len(bad) != 2 || bad[0] != 4 || bad[1] != 6 {
		t.Fatalf("bad lines %v, want [4 6]", bad)
	}
}

// FuzzDecodeLine: no input panics the decoders, and what decodes has a kind.
func FuzzDecodeLine(f *testing.F) {
	f.Add([]byte(auditLine))
	f.Add([]byte(`{"kind":"exec","process":{"binary":"/bin/sh","args":["sh"],"ancestors":[{"binary":"/a"}]}}`))
	f.Add([]byte(`{"kind":"object","op":"create","object":{"kind":"Pod","metadata":{"namespace":"x"}}}`))
	f.Add([]byte(`{"kind":"open","file":{"path":"/etc/x","flags":65}}`))
	f.Add([]byte(`{"kind":"Event","apiVersion":"audit.k8s.io/v1","verb":"get","requestObject":{"a":[1,2,{"b":null}]}}`))
	f.Add([]byte(`{`))
	for _, l := range olderAuditLines {
		f.Add([]byte(l))
	}
	f.Add([]byte(`{"auditID":"x","stage":"ResponseComplete","verb":"create","objectRef":{"resource":"pods","namespace":"a"},"responseObject":{"kind":"Pod","metadata":{"ownerReferences":[1,{"controller":true}]},"spec":{"volumes":[{"hostPath":{}}],"containers":[null,{"securityContext":{"privileged":true}}]}}}`))
	f.Add([]byte(`{"verb":"delete","stage":"ResponseComplete","responseObject":{"kind":"Status","metadata":{}}}`))
	f.Add([]byte(`{"kind":"exec","auditID":"x"}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		ev, err := DecodeLine(data)
		if err != nil {
			return
		}
		if ev.Kind == "" {
			t.Fatalf("decoded an event without a kind from %q", data)
		}
		if IsAuditLine(data) && ev.Kind != KindAudit {
			t.Fatalf("%q is taken for an audit line but decoded as %q", data, ev.Kind)
		}
		_ = ev.Namespace()
		if o, ok := ObjectFromAudit(&ev); ok {
			if o.Kind != KindObject || o.Op == "" || o.Object == nil {
				t.Fatalf("derived %+v from %q", o, data)
			}
			_ = o.Namespace()
		}
	})
}

// TestReadStreamGoesOnPastAnOversizedLine: a line over the 16 MiB bound is
// reported (with its number) and skipped; the lines after it are read.
func TestReadStreamGoesOnPastAnOversizedLine(t *testing.T) {
	ok := `{"kind":"exec","process":{"binary":"/bin/sh"}}`
	huge := `{"kind":"exec","process":{"binary":"/bin/` + strings.Repeat("a", maxLine+10) + `"}}`
	in := ok + "\n" + huge + "\n" + ok + "\n" + ok // the last line has no newline
	var events, lines []int
	n := 0
	err := ReadStream(strings.NewReader(in), func(ev *Event, err error) {
		n++
		if err != nil {
			var le *LineError
			if !errors.As(err, &le) || !errors.Is(err, ErrLineTooLong) {
				t.Errorf("error %v, want a LineError for the long line", err)
			}
			lines = append(lines, le.Line)
			return
		}
		events = append(events, n)
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(lines) != 1 || lines[0] != 2 || len(events) != 3 {
		t.Fatalf("errors at lines %v, %d events; want one error at line 2 and 3 events", lines, len(events))
	}
}

// A JSON patch's body is an array and some subresources take a string: the
// event still decodes (its user, verb and response count), the body reads
// as absent, and the object the response carries is still derived.
func TestAuditBodiesThatAreNotObjectsDoNotLoseTheEvent(t *testing.T) {
	line := `{"kind":"Event","apiVersion":"audit.k8s.io/v1","level":"RequestResponse","auditID":"p1","stage":"ResponseComplete","verb":"patch","user":{"username":"mallory"},` +
		`"objectRef":{"resource":"clusterroles","name":"system:node","apiGroup":"rbac.authorization.k8s.io"},"responseStatus":{"code":200},` +
		`"requestObject":[{"op":"add","path":"/rules/-","value":{"verbs":["*"]}}],` +
		`"responseObject":{"kind":"ClusterRole","apiVersion":"rbac.authorization.k8s.io/v1","metadata":{"name":"system:node"}}}`
	ev, err := DecodeLine([]byte(line))
	if err != nil {
		t.Fatal(err)
	}
	if ev.Audit.User.Username != "mallory" || ev.Audit.RequestObject != nil || ev.Audit.ResponseObject["kind"] != "ClusterRole" {
		t.Fatalf("decoded %+v", ev.Audit)
	}
	if obj, ok := ObjectFromAudit(&ev); !ok || obj.Op != "update" {
		t.Fatalf("no update derived from the patch's response: %v %+v", ok, obj)
	}
	for _, body := range []string{`"a string"`, `null`, `42`, ` [1]`} {
		if _, err := DecodeAuditEvent([]byte(`{"auditID":"x","verb":"create","requestObject":` + body + `}`)); err != nil {
			t.Errorf("body %s: %v", body, err)
		}
	}
}

// FuzzFastAuditDecodeAgreesWithEncodingJSON: audit lines are decoded with a
// faster JSON decoder, falling back to encoding/json when it fails. Whatever
// the fast decoder accepts, encoding/json accepts too and decodes to the same
// event: the fast path changes speed, never meaning.
func FuzzFastAuditDecodeAgreesWithEncodingJSON(f *testing.F) {
	f.Add([]byte(auditLine))
	for _, l := range olderAuditLines {
		f.Add([]byte(l))
	}
	f.Add([]byte(`{"auditID":"x","verb":"get","requestObject":[1,2],"responseObject":{"a":"\u00e9\ud800","b":1e400}}`))
	f.Add([]byte(`{"auditID":"\xff\xfe","verb":"get"}`))
	f.Add([]byte(`{"AUDITID":"x","Verb":"get","user":{"USERNAME":"a"}}`))
	f.Add([]byte(`{"auditID":"x","verb":"get"} trailing`))
	f.Add([]byte(`{"auditID":"x","verb":"get","annotations":{"a":1}}`))
	f.Add([]byte(`{"auditID":"x","verb":"get","responseStatus":{"code":1.5}}`))
	f.Add([]byte(`{"auditID":"x","verb":"create","requestObject":null,"responseObject":"s"}`))
	f.Add([]byte(`{"auditID":"x","verb":"create","requestObject":{"a":{"b":[1,"c",null,true]}},"requestObject":{"z":1}}`))
	f.Add([]byte(`{"auditID":"x","verb":"create","requestObject":{"a":1,"a":{"b":2}},"responseObject":{"a"}}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		var fast, std Audit
		if !fastAudit(data, &fast) {
			return
		}
		if err := json.Unmarshal(data, &std); err != nil {
			t.Fatalf("the fast decoder accepted %q, encoding/json rejects it: %v", data, err)
		}
		if !reflect.DeepEqual(fast, std) {
			t.Fatalf("%q decodes differently:\nfast %+v\nstd  %+v", data, fast, std)
		}
	})
}

// A body with invalid UTF-8 decodes as encoding/json decodes it (invalid
// bytes replaced), whichever decoder reads the line around it.
func TestBodyWithInvalidUTF8DecodesAsEncodingJSON(t *testing.T) {
	data := []byte("{\"a\":\"\xb9\"}")
	var b Body
	if err := b.UnmarshalJSON(data); err != nil {
		t.Fatal(err)
	}
	var want map[string]any
	if err := json.Unmarshal(data, &want); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(map[string]any(b), want) {
		t.Errorf("body %q, want %q", b["a"], want["a"])
	}
}
