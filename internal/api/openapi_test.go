package api

import (
	"slices"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
)

// TestOpenAPIMatchesRoutes keeps openapi.yaml true: every route in
// routeTable must be in the spec and every operation in the spec must be a
// route.
func TestOpenAPIMatchesRoutes(t *testing.T) {
	var spec struct {
		OpenAPI string                               `yaml:"openapi"`
		Paths   map[string]map[string]map[string]any `yaml:"paths"`
	}
	if err := yaml.Unmarshal(openapiSpec, &spec); err != nil {
		t.Fatalf("parsing openapi.yaml: %v", err)
	}
	if !strings.HasPrefix(spec.OpenAPI, "3.") {
		t.Errorf("got openapi %q, want 3.x", spec.OpenAPI)
	}
	methods := []string{"get", "put", "post", "delete", "patch", "head", "options", "trace"}
	var inSpec []string
	for path, item := range spec.Paths {
		for method := range item {
			if slices.Contains(methods, method) {
				inSpec = append(inSpec, strings.ToUpper(method)+" "+path)
			}
		}
	}
	var inCode []string
	for _, rt := range routeTable() {
		// A trailing wildcard ({path...}) is a plain parameter in the
		// spec.
		inCode = append(inCode, rt.method+" "+strings.ReplaceAll(rt.pattern, "...}", "}"))
	}
	for _, op := range inCode {
		if !slices.Contains(inSpec, op) {
			t.Errorf("route %s is missing from openapi.yaml", op)
		}
	}
	for _, op := range inSpec {
		if !slices.Contains(inCode, op) {
			t.Errorf("openapi.yaml lists %s, which is not a route", op)
		}
	}
}
