package engine

import (
	"errors"
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
		`{"kind":"exec"} {"kind":"exec"}`:                 `trailing data`,
		`{"kind":"exec",`:                                 `decode event`,
		`{"kind":"Event","apiVersion":"audit.k8s.io/v1"}`: `neither auditID nor verb`,
	} {
		_, err := DecodeLine([]byte(in))
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: got %v, want an error containing %q", in, err, want)
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
	f.Fuzz(func(t *testing.T, data []byte) {
		ev, err := DecodeLine(data)
		if err != nil {
			return
		}
		if ev.Kind == "" {
			t.Fatalf("decoded an event without a kind from %q", data)
		}
		_ = ev.Namespace()
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
