package engine

import (
	"fmt"
	"net/netip"
	"reflect"
	"strings"
	"sync"

	"github.com/google/cel-go/cel"
	"github.com/google/cel-go/common/types"
	"github.com/google/cel-go/common/types/ref"
	"github.com/google/cel-go/ext"
)

// Variables are the CEL variables every rule expression can use, in the order
// docs/events.md documents them. Each is an object of the event of the same
// name; node is the node name.
var Variables = []string{"event", "process", "container", "pod", "workload", "node", "file", "net", "syscall", "audit", "object", "profile"}

// celTypeName is the CEL type name of a Go type exposed through native types.
func celTypeName(t reflect.Type) string { return "engine." + t.Name() }

var (
	baseEnvOnce sync.Once
	baseEnv     *cel.Env
	baseEnvErr  error
)

// Env returns the CEL environment rules compile in. It is built once and
// shared: building it costs milliseconds, compiling against it microseconds.
func Env() (*cel.Env, error) {
	baseEnvOnce.Do(func() { baseEnv, baseEnvErr = newEnv() })
	return baseEnv, baseEnvErr
}

func newEnv() (*cel.Env, error) {
	objType := func(v any) *cel.Type { return cel.ObjectType(celTypeName(reflect.TypeOf(v))) }
	return cel.NewEnv(
		ext.NativeTypes(
			ext.ParseStructTag("json"),
			reflect.TypeFor[Event](),
			reflect.TypeFor[Process](),
			reflect.TypeFor[Exe](),
			reflect.TypeFor[Ancestor](),
			reflect.TypeFor[Container](),
			reflect.TypeFor[Pod](),
			reflect.TypeFor[OwnerReference](),
			reflect.TypeFor[Workload](),
			reflect.TypeFor[File](),
			reflect.TypeFor[Net](),
			reflect.TypeFor[Endpoint](),
			reflect.TypeFor[Peer](),
			reflect.TypeFor[Syscall](),
			reflect.TypeFor[Enforcement](),
			reflect.TypeFor[Audit](),
			reflect.TypeFor[UserInfo](),
			reflect.TypeFor[AuditObjectRef](),
			reflect.TypeFor[Status](),
			reflect.TypeFor[Profile](),
		),
		cel.Variable("event", objType(Event{})),
		cel.Variable("process", objType(Process{})),
		cel.Variable("container", objType(Container{})),
		cel.Variable("pod", objType(Pod{})),
		cel.Variable("workload", objType(Workload{})),
		cel.Variable("node", cel.StringType),
		cel.Variable("file", objType(File{})),
		cel.Variable("net", objType(Net{})),
		cel.Variable("syscall", objType(Syscall{})),
		cel.Variable("audit", objType(Audit{})),
		cel.Variable("object", cel.MapType(cel.StringType, cel.DynType)),
		cel.Variable("profile", objType(Profile{})),
		ext.Strings(),
		ext.Sets(),
		cel.OptionalTypes(),
		cel.Function("inCIDR",
			cel.MemberOverload("string_in_cidr_string", []*cel.Type{cel.StringType, cel.StringType}, cel.BoolType,
				cel.BinaryBinding(inCIDR))),
		cel.Function("basename",
			cel.MemberOverload("string_basename", []*cel.Type{cel.StringType}, cel.StringType,
				cel.UnaryBinding(func(v ref.Val) ref.Val { return types.String(basename(string(v.(types.String)))) }))),
		cel.Function("allows",
			cel.MemberOverload("profile_allows_event", []*cel.Type{objType(Profile{}), objType(Event{})}, cel.BoolType,
				cel.BinaryBinding(profileAllows))),
		cel.Function("missing",
			cel.MemberOverload("profile_missing_event", []*cel.Type{objType(Profile{}), objType(Event{})}, cel.StringType,
				cel.BinaryBinding(profileMissing))),
		// Last: options after it may not register types.
		withDynFields(),
	)
}

// inCIDR reports whether an address string lies in a CIDR: net.peer.ip.inCIDR("10.0.0.0/8").
func inCIDR(ip, cidr ref.Val) ref.Val {
	addr, err := netip.ParseAddr(string(ip.(types.String)))
	if err != nil {
		return types.False // an empty or malformed address is in no network
	}
	prefix, err := parseCIDR(string(cidr.(types.String)))
	if err != nil {
		return types.NewErr("inCIDR: %v", err)
	}
	return types.Bool(prefix.Contains(addr.Unmap()))
}

// parseCIDR parses a CIDR or a single address (a /32 or /128).
func parseCIDR(s string) (netip.Prefix, error) {
	if strings.Contains(s, "/") {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return netip.Prefix{}, fmt.Errorf("invalid CIDR %q", s)
		}
		return p.Masked(), nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("invalid CIDR %q", s)
	}
	return netip.PrefixFrom(a, a.BitLen()), nil
}

// basename returns the last element of a slash-separated path.
func basename(p string) string {
	if i := strings.LastIndexByte(p, '/'); i >= 0 {
		return p[i+1:]
	}
	return p
}
