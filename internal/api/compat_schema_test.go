package api_test

import (
	"fmt"
	"maps"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"
)

// This file reads OpenAPI descriptions for the compatibility tests: the
// published Wrenn Python SDK's (testdata) and ours, and checks JSON values
// against the SDK's schemas as its generated models read them (pydantic:
// fields not required may be null or absent, unknown fields are ignored,
// enums and date-times with a time zone are enforced).

// apiSpec is a parsed OpenAPI document.
type apiSpec struct {
	doc map[string]any
}

func loadSpec(t testing.TB, file string) apiSpec {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	var doc map[string]any
	if err := yaml.Unmarshal(b, &doc); err != nil {
		t.Fatalf("parsing %s: %v", file, err)
	}
	return apiSpec{doc: doc}
}

// sdkSpec is the SDK's description.
func sdkSpec(t testing.TB) apiSpec { return loadSpec(t, "testdata/wrenn-python-sdk-openapi.yaml") }

// dig follows keys through nested maps.
func dig(v any, keys ...string) any {
	for _, k := range keys {
		m, ok := v.(map[string]any)
		if !ok {
			return nil
		}
		v = m[k]
	}
	return v
}

// resolve follows a $ref and merges allOf into one object schema.
func (sp apiSpec) resolve(schema any) map[string]any {
	m, _ := schema.(map[string]any)
	if m == nil {
		return nil
	}
	if ref, ok := m["$ref"].(string); ok {
		parts := strings.Split(strings.TrimPrefix(ref, "#/"), "/")
		return sp.resolve(dig(sp.doc, parts...))
	}
	all, ok := m["allOf"].([]any)
	if !ok {
		return m
	}
	out := map[string]any{"type": "object"}
	props := map[string]any{}
	var required []any
	for _, part := range all {
		p := sp.resolve(part)
		if pp, ok := p["properties"].(map[string]any); ok {
			maps.Copy(props, pp)
		}
		if r, ok := p["required"].([]any); ok {
			required = append(required, r...)
		}
	}
	for k, v := range m {
		if k != "allOf" {
			out[k] = v
		}
	}
	out["properties"], out["required"] = props, required
	return out
}

// types returns a schema's JSON types other than null.
func types(s map[string]any) []string {
	var out []string
	switch t := s["type"].(type) {
	case string:
		out = []string{t}
	case []any:
		for _, v := range t {
			if v != "null" {
				out = append(out, fmt.Sprint(v))
			}
		}
	}
	slices.Sort(out)
	return out
}

func strs(v any) []string {
	l, _ := v.([]any)
	out := make([]string, 0, len(l))
	for _, x := range l {
		out = append(out, fmt.Sprint(x))
	}
	return out
}

// validate checks value (decoded JSON) against schema as the SDK's model
// would parse it and returns what does not fit.
func (sp apiSpec) validate(schema any, value any, where string) []string {
	s := sp.resolve(schema)
	if s == nil {
		return nil
	}
	var bad []string
	add := func(format string, args ...any) { bad = append(bad, where+": "+fmt.Sprintf(format, args...)) }
	if value == nil {
		return nil // optional fields may be null; required ones are checked by the parent
	}
	ts := types(s)
	if len(ts) == 1 {
		ok := true
		switch ts[0] {
		case "string":
			str, isStr := value.(string)
			ok = isStr
			if isStr && s["format"] == "date-time" {
				tm, err := time.Parse(time.RFC3339Nano, str)
				if err != nil {
					add("%q is not a date-time with a time zone", str)
				}
				_ = tm
			}
		case "integer":
			f, isNum := value.(float64)
			ok = isNum && f == float64(int64(f))
		case "number":
			_, ok = value.(float64)
		case "boolean":
			_, ok = value.(bool)
		case "array":
			l, isList := value.([]any)
			ok = isList
			for i, item := range l {
				bad = append(bad, sp.validate(s["items"], item, fmt.Sprintf("%s[%d]", where, i))...)
			}
		case "object":
			obj, isObj := value.(map[string]any)
			ok = isObj
			for _, req := range strs(s["required"]) {
				if obj != nil && obj[req] == nil {
					add("required field %s is missing", req)
				}
			}
			props, _ := s["properties"].(map[string]any)
			for name, ps := range props {
				if obj != nil {
					bad = append(bad, sp.validate(ps, obj[name], where+"."+name)...)
				}
			}
		}
		if !ok {
			add("%v is not of type %s", value, ts[0])
		}
	}
	if enum := strs(s["enum"]); len(enum) > 0 && !slices.Contains(enum, fmt.Sprint(value)) {
		add("%v is not one of %v", value, enum)
	}
	return bad
}

// schema returns components.schemas.name.
func (sp apiSpec) schema(name string) any {
	return map[string]any{"$ref": "#/components/schemas/" + name}
}

// wantModel fails the test unless value parses as the SDK's model name.
func wantModel(t testing.TB, sdk apiSpec, name string, value any) {
	t.Helper()
	if value == nil {
		t.Errorf("%s: no value", name)
		return
	}
	for _, e := range sdk.validate(sdk.schema(name), value, name) {
		t.Error(e)
	}
}
