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
