package engine

import (
	"reflect"

	"github.com/google/cel-go/cel"
	"github.com/google/cel-go/common/types"
)

// dynField is a struct field holding arbitrary JSON (a Kubernetes object in an
// audit event). CEL's native types cannot express interface-typed fields, so
// they are declared as map(string, dyn) through a provider wrapped around the
// native one.
type dynField struct {
	get func(v any) map[string]any
}

// dynFields lists the JSON-valued fields by CEL type name and field name.
var dynFields = map[string]map[string]dynField{
	celTypeName(reflect.TypeFor[Audit]()): {
		"requestObject":  {get: func(v any) map[string]any { return asAudit(v).RequestObject }},
		"responseObject": {get: func(v any) map[string]any { return asAudit(v).ResponseObject }},
	},
	celTypeName(reflect.TypeFor[Status]()): {
		"metadata": {get: func(v any) map[string]any { return asStatus(v).Metadata }},
		"details":  {get: func(v any) map[string]any { return asStatus(v).Details }},
	},
}

// stringFields are the string fields rules read most (every audit rule
// tests a few of them), read directly rather than through reflection: the
// per-event cost of an audit rule is mostly these reads.
var stringFields = map[string]map[string]func(v any) string{
	celTypeName(reflect.TypeFor[Event]()): {
		"kind": func(v any) string { return string(asEvent(v).Kind) },
		"op":   func(v any) string { return asEvent(v).Op },
	},
	celTypeName(reflect.TypeFor[Audit]()): {
		"stage":      func(v any) string { return asAudit(v).Stage },
		"verb":       func(v any) string { return asAudit(v).Verb },
		"userAgent":  func(v any) string { return asAudit(v).UserAgent },
		"requestURI": func(v any) string { return asAudit(v).RequestURI },
	},
	celTypeName(reflect.TypeFor[UserInfo]()): {
		"username": func(v any) string { return asUserInfo(v).Username },
	},
	celTypeName(reflect.TypeFor[AuditObjectRef]()): {
		"resource":    func(v any) string { return asObjectRef(v).Resource },
		"subresource": func(v any) string { return asObjectRef(v).Subresource },
		"namespace":   func(v any) string { return asObjectRef(v).Namespace },
		"name":        func(v any) string { return asObjectRef(v).Name },
		"apiGroup":    func(v any) string { return asObjectRef(v).APIGroup },
	},
}

func asEvent(v any) *Event {
	switch e := v.(type) {
	case *Event:
		return e
	case Event:
		return &e
	}
	return &Event{}
}

func asUserInfo(v any) *UserInfo {
	switch u := v.(type) {
	case *UserInfo:
		return u
	case UserInfo:
		return &u
	}
	return &UserInfo{}
}

func asObjectRef(v any) *AuditObjectRef {
	switch r := v.(type) {
	case *AuditObjectRef:
		return r
	case AuditObjectRef:
		return &r
	}
	return &AuditObjectRef{}
}

func asAudit(v any) *Audit {
	switch a := v.(type) {
	case *Audit:
		return a
	case Audit:
		return &a
	}
	return &Audit{}
}

func asStatus(v any) *Status {
	switch s := v.(type) {
	case *Status:
		return s
	case Status:
		return &s
	}
	return &Status{}
}

var dynMapType = cel.MapType(cel.StringType, cel.DynType)

// dynProvider adds dynFields to a provider.
type dynProvider struct{ types.Provider }

func (p dynProvider) FindStructFieldNames(structType string) ([]string, bool) {
	names, ok := p.Provider.FindStructFieldNames(structType)
	for n := range dynFields[structType] {
		names = append(names, n)
	}
	return names, ok
}

func (p dynProvider) FindStructFieldType(structType, fieldName string) (*types.FieldType, bool) {
	if get, ok := stringFields[structType][fieldName]; ok {
		return &types.FieldType{
			Type:    cel.StringType,
			IsSet:   func(v any) bool { return get(v) != "" },
			GetFrom: func(v any) (any, error) { return get(v), nil },
		}, true
	}
	if f, ok := dynFields[structType][fieldName]; ok {
		return &types.FieldType{
			Type:  dynMapType,
			IsSet: func(v any) bool { return len(f.get(v)) > 0 },
			GetFrom: func(v any) (any, error) {
				if m := f.get(v); m != nil {
					return m, nil
				}
				return emptyObject, nil
			},
		}, true
	}
	return p.Provider.FindStructFieldType(structType, fieldName)
}

// withDynFields wraps the environment's provider; it must follow NativeTypes.
func withDynFields() cel.EnvOption {
	return func(env *cel.Env) (*cel.Env, error) {
		return cel.CustomTypeProvider(dynProvider{env.CELTypeProvider()})(env)
	}
}
