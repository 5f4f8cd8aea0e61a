package argocd

import (
	"fmt"
	"os"
	"path/filepath"

	lua "github.com/yuin/gopher-lua"
)

// Health is what an Argo CD health check returns.
type Health struct {
	Status  string
	Message string
}

// Script reads the health check of a kind: health/<group>/<kind>/health.lua
// under dir (this folder).
func Script(dir, group, kind string) (string, error) {
	b, err := os.ReadFile(filepath.Join(dir, "health", group, kind, "health.lua"))
	if err != nil {
		return "", fmt.Errorf("health check of %s/%s: %w", group, kind, err)
	}
	return string(b), nil
}

// Run evaluates a health.lua on obj as Argo CD's resource customizations
// do: the object (decoded JSON) is the global obj, with lists as 1-based
// tables, only the base, table, string and math libraries are open, and the
// script returns {status, message}.
func Run(script string, obj map[string]any) (Health, error) {
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
		return Health{}, fmt.Errorf("run health.lua: %w", err)
	}
	hs, ok := L.Get(-1).(*lua.LTable)
	if !ok {
		return Health{}, fmt.Errorf("health.lua returned %s, want a table", L.Get(-1).Type())
	}
	return Health{Status: hs.RawGetString("status").String(), Message: hs.RawGetString("message").String()}, nil
}

// toLua converts decoded JSON (or unstructured Kubernetes objects, whose
// numbers are int64) into Lua values, lists as 1-based tables.
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
