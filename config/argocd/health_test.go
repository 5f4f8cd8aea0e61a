package argocd

import (
	"os"
	"path/filepath"
	"testing"

	lua "github.com/yuin/gopher-lua"
	"sigs.k8s.io/yaml"
)

type healthTests struct {
	Tests []struct {
		HealthStatus struct {
			Status  string `json:"status"`
			Message string `json:"message"`
		} `json:"healthStatus"`
		InputPath string `json:"inputPath"`
	} `json:"tests"`
}

// TestHealthChecks runs every health/<group>/<Kind>/health.lua on the cases
// of its health_test.yaml: the object is the global obj and the script
// returns {status, message}, as in Argo CD's resource customizations.
func TestHealthChecks(t *testing.T) {
	dirs, err := filepath.Glob("health/riposte.dev/*")
	if err != nil || len(dirs) != 5 {
		t.Fatalf("want a health check per riposte kind (5), found %v (%v)", dirs, err)
	}
	for _, dir := range dirs {
		script, err := os.ReadFile(filepath.Join(dir, "health.lua"))
		if err != nil {
			t.Fatal(err)
		}
		b, err := os.ReadFile(filepath.Join(dir, "health_test.yaml"))
		if err != nil {
			t.Fatal(err)
		}
		var cases healthTests
		if err := yaml.Unmarshal(b, &cases); err != nil {
			t.Fatalf("%s/health_test.yaml: %v", dir, err)
		}
		for _, tc := range cases.Tests {
			t.Run(filepath.Base(dir)+"/"+tc.InputPath, func(t *testing.T) {
				in, err := os.ReadFile(filepath.Join(dir, tc.InputPath))
				if err != nil {
					t.Fatal(err)
				}
				var obj map[string]any
				if err := yaml.Unmarshal(in, &obj); err != nil {
					t.Fatal(err)
				}
				status, msg := run(t, string(script), obj)
				if status != tc.HealthStatus.Status || msg != tc.HealthStatus.Message {
					t.Errorf("got %s %q, want %s %q", status, msg, tc.HealthStatus.Status, tc.HealthStatus.Message)
				}
			})
		}
	}
}

func run(t *testing.T, script string, obj map[string]any) (status, message string) {
	t.Helper()
	L := lua.NewState(lua.Options{SkipOpenLibs: true})
	defer L.Close()
	for _, lib := range []struct {
		name string
		fn   lua.LGFunction
	}{{lua.BaseLibName, lua.OpenBase}, {lua.TabLibName, lua.OpenTable}, {lua.StringLibName, lua.OpenString}, {lua.MathLibName, lua.OpenMath}} {
		L.Push(L.NewFunction(lib.fn))
		L.Push(lua.LString(lib.name))
		L.Call(1, 0)
	}
	L.SetGlobal("obj", toLua(L, obj))
	if err := L.DoString(script); err != nil {
		t.Fatalf("run health.lua: %v", err)
	}
	hs, ok := L.Get(-1).(*lua.LTable)
	if !ok {
		t.Fatalf("health.lua returned %s, want a table", L.Get(-1).Type())
	}
	return hs.RawGetString("status").String(), hs.RawGetString("message").String()
}

// toLua converts decoded JSON into Lua values, lists as 1-based tables.
func toLua(L *lua.LState, v any) lua.LValue {
	switch x := v.(type) {
	case nil:
		return lua.LNil
	case bool:
		return lua.LBool(x)
	case float64:
		return lua.LNumber(x)
	case int64:
		return lua.LNumber(x)
	case string:
		return lua.LString(x)
	case []any:
		tb := L.NewTable()
		for _, e := range x {
			tb.Append(toLua(L, e))
		}
		return tb
	case map[string]any:
		tb := L.NewTable()
		for k, e := range x {
			tb.RawSetString(k, toLua(L, e))
		}
		return tb
	}
	return lua.LNil
}
