package engine

import "testing"

func TestConstraintsFromConditions(t *testing.T) {
	cases := []struct {
		source, cond string
		want         string
	}{
		{"process", `event.kind == "exec" && process.binary.endsWith("/sh") && container.id != ""`, "kind in [exec] && basename in [sh] && in a container"},
		{"process", `process.binary in ["/bin/sh", "/bin/bash"]`, "kind in [exec,exit,fork,setuid,capset,ptrace,unshare,setns,mount,module,bpf] && binary in [/bin/bash,/bin/sh]"},
		{"process", `event.kind == "exec" && (process.name == "nc" || process.name == "ncat")`, "kind in [exec] && basename in [nc,ncat]"},
		{"process", `event.kind == "exec" && (process.name == "nc" || process.uid == 0)`, "kind in [exec]"},
		{"process", `event.kind == "exec" && !(process.name == "nc")`, "kind in [exec]"},
		{"file", `file.path.startsWith("/etc/") || file.path == "/root/.ssh/authorized_keys"`, "kind in [open] && path prefix in [/etc/,/root/.ssh/authorized_keys]"},
		{"network", `event.kind == "connect" && net.peer.port in [4444, 1337] && net.peer.ip.inCIDR("10.0.0.0/8")`, "kind in [connect] && peer port in [1337 4444] && peer ip in [10.0.0.0/8]"},
		{"audit", `audit.verb == "create" && audit.objectRef.subresource == "exec"`, "kind in [audit] && audit verb in [create] && audit subresource in [exec]"},
		{"audit", `event.kind == "exec"`, "kind in []"},
		{"process", `process.binary == "/a" && process.binary == "/b"`, "kind in [exec,exit,fork,setuid,capset,ptrace,unshare,setns,mount,module,bpf] && binary in []"},
		{"process", `process.ancestors.exists(process, process.binary == "/bin/sh")`, "kind in [exec,exit,fork,setuid,capset,ptrace,unshare,setns,mount,module,bpf]"},
	}
	for _, c := range cases {
		r := mustCompile(t, "c", spec(c.source, c.cond))
		if got := r.Constraints().Explain(); got != c.want {
			t.Errorf("%s\n got  %s\n want %s", c.cond, got, c.want)
		}
	}
}

func TestLeadingDirs(t *testing.T) {
	for p, want := range map[string][2]string{
		"/etc/passwd": {"/etc/", ""}, "/var/run/secrets/x": {"/var/", "/var/run/"}, "/": {"", ""},
		"/etc/": {"/etc/", ""}, "etc/x": {"", ""}, "": {"", ""}, "/a/b/": {"/a/", "/a/b/"},
	} {
		d1, d2 := leadingDirs(p)
		if d1 != want[0] || d2 != want[1] {
			t.Errorf("%q: got %q %q, want %q %q", p, d1, d2, want[0], want[1])
		}
	}
}
