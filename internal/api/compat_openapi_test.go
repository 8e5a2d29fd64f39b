package api_test

import (
	"fmt"
	"slices"
	"strings"
	"testing"
)

// compatExcluded are the SDK's operations on capsules that the compatible
// API does not serve, and why. The SDK (v0.1.2) calls none of them.
var compatExcluded = map[string]string{
	"GET /v1/capsules/stats":        "team usage charts of the SDK's hosted service; Wrenn has /metrics",
	"GET /v1/capsules/usage":        "daily billing figures of the SDK's hosted service",
	"GET /v1/capsules/{id}/metrics": "time series kept by the SDK's hosted service; Wrenn answers the current figures at /v1/capsules/{id}/metrics",
}

// TestCompatOpenAPI checks that every operation of the published Python
// SDK's API description on capsules, files, processes, snapshots and API
// keys is in openapi.yaml under /api, and that our description there
// accepts what the SDK may send and answers what it can parse: the same
// path and query parameters, request fields of the same types that we do
// not require more of, the SDK's success statuses, and in their bodies
// every field the SDK reads, of its type, with values of its enums only.
func TestCompatOpenAPI(t *testing.T) {
	sdk := sdkSpec(t)
	ours := loadSpec(t, "openapi.yaml")
	notSent = nil
	paths, _ := sdk.doc["paths"].(map[string]any)
	checked := 0
	for path, item := range paths {
		for method, op := range item.(map[string]any) {
			if !slices.Contains([]string{"get", "post", "put", "patch", "delete"}, method) {
				continue
			}
			tags := strs(dig(op, "tags"))
			if !slices.ContainsFunc(tags, func(t string) bool {
				return t == "capsules" || t == "snapshots" || t == "api-keys"
			}) {
				continue
			}
			name := strings.ToUpper(method) + " " + path
			if _, ok := compatExcluded[name]; ok {
				continue
			}
			checked++
			ourOp := dig(ours.doc, "paths", "/api"+path, method)
			if ourOp == nil {
				t.Errorf("%s: not in openapi.yaml as /api%s", name, path)
				continue
			}
			for _, e := range compareOp(sdk, ours, item, op, dig(ours.doc, "paths", "/api"+path), ourOp) {
				t.Errorf("%s: %s", name, e)
			}
		}
	}
	if checked < 25 {
		t.Errorf("checked %d operations; the SDK's description has more: is testdata complete?", checked)
	}
	slices.Sort(notSent)
	t.Logf("%d operations of the SDK compared, %d excluded; optional answer fields we do not send: %s",
		checked, len(compatExcluded), strings.Join(slices.Compact(notSent), ", "))
}

// params returns the names of an operation's parameters in where (path,
// query), with those of its path item.
func params(sp apiSpec, item, op any) map[string][]string {
	out := map[string][]string{}
	for _, src := range []any{dig(item, "parameters"), dig(op, "parameters")} {
		l, _ := src.([]any)
		for _, p := range l {
			pm := sp.resolve(p)
			in, name := fmt.Sprint(pm["in"]), fmt.Sprint(pm["name"])
			out[in] = append(out[in], name)
		}
	}
	return out
}

func compareOp(sdk, ours apiSpec, sdkItem, sdkOp, ourItem, ourOp any) []string {
	var bad []string
	sp, op := params(sdk, sdkItem, sdkOp), params(ours, ourItem, ourOp)
	for _, in := range []string{"path", "query"} {
		for _, name := range sp[in] {
			if !slices.Contains(op[in], name) {
				bad = append(bad, fmt.Sprintf("%s parameter %s is not ours", in, name))
			}
		}
	}
	// The request: whatever the SDK may send, we accept.
	if content, ok := dig(sdkOp, "requestBody", "content").(map[string]any); ok {
		for media, mt := range content {
			ourMT := dig(ourOp, "requestBody", "content", media)
			if ourMT == nil {
				bad = append(bad, "request body "+media+" is not accepted")
				continue
			}
			bad = append(bad, accepts(sdk, ours, dig(mt, "schema"), dig(ourMT, "schema"), "request")...)
		}
	}
	// The answers: every success status of the SDK, in a shape it parses.
	responses, _ := dig(sdkOp, "responses").(map[string]any)
	for status, resp := range responses {
		if !strings.HasPrefix(status, "2") && status != "101" {
			continue
		}
		ourResp := dig(ourOp, "responses", status)
		if ourResp == nil {
			bad = append(bad, "answer "+status+" is not ours")
			continue
		}
		content, _ := dig(resp, "content").(map[string]any)
		for media, mt := range content {
			ourMT := dig(ourResp, "content", media)
			if ourMT == nil {
				bad = append(bad, fmt.Sprintf("answer %s is not %s", status, media))
				continue
			}
			bad = append(bad, parses(sdk, ours, dig(mt, "schema"), dig(ourMT, "schema"), "answer "+status)...)
		}
	}
	return bad
}

// accepts compares a request schema: ours takes every field of the SDK's,
// of the same type and with at least its enum values, and requires nothing
// the SDK may leave out.
func accepts(sdk, ours apiSpec, sdkSchema, ourSchema any, where string) []string {
	s, o := sdk.resolve(sdkSchema), ours.resolve(ourSchema)
	if s == nil {
		return nil
	}
	if o == nil {
		return []string{where + ": we describe no schema"}
	}
	var bad []string
	if st, ot := types(s), types(o); len(st) > 0 && !slices.Equal(st, ot) {
		return []string{fmt.Sprintf("%s: type %v, ours %v", where, st, ot)}
	}
	if enum := strs(s["enum"]); len(enum) > 0 && o["enum"] != nil {
		for _, v := range enum {
			if !slices.Contains(strs(o["enum"]), v) {
				bad = append(bad, fmt.Sprintf("%s: we refuse %q", where, v))
			}
		}
	}
	for _, req := range strs(o["required"]) {
		if !slices.Contains(strs(s["required"]), req) {
			bad = append(bad, fmt.Sprintf("%s: we require %s, which the SDK may leave out", where, req))
		}
	}
	sprops, _ := s["properties"].(map[string]any)
	oprops, _ := o["properties"].(map[string]any)
	for name, ps := range sprops {
		op, ok := oprops[name]
		if !ok {
			bad = append(bad, fmt.Sprintf("%s: field %s is unknown to us", where, name))
			continue
		}
		bad = append(bad, accepts(sdk, ours, ps, op, where+"."+name)...)
	}
	if ts := types(s); len(ts) == 1 && ts[0] == "array" {
		bad = append(bad, accepts(sdk, ours, s["items"], o["items"], where+"[]")...)
	}
	return bad
}

// notSent collects the optional answer fields of the SDK that we do not
// send, for the log.
var notSent []string

// parses compares an answer schema: the fields of the SDK's that ours has
// are of the same type and format, with enum values among the SDK's, and
// ours always sends what the SDK requires.
func parses(sdk, ours apiSpec, sdkSchema, ourSchema any, where string) []string {
	s, o := sdk.resolve(sdkSchema), ours.resolve(ourSchema)
	if s == nil {
		return nil
	}
	if o == nil {
		return []string{where + ": we describe no schema"}
	}
	var bad []string
	if st, ot := types(s), types(o); len(st) > 0 && !slices.Equal(st, ot) {
		return []string{fmt.Sprintf("%s: type %v, ours %v", where, st, ot)}
	}
	if s["format"] == "date-time" && o["format"] != "date-time" {
		bad = append(bad, where+": the SDK reads a date-time")
	}
	if enum := strs(s["enum"]); len(enum) > 0 {
		if o["enum"] == nil {
			bad = append(bad, fmt.Sprintf("%s: the SDK reads only %v; we do not say which values we send", where, enum))
		}
		for _, v := range strs(o["enum"]) {
			if !slices.Contains(enum, v) {
				bad = append(bad, fmt.Sprintf("%s: we may send %q, which the SDK does not parse", where, v))
			}
		}
	}
	for _, req := range strs(s["required"]) {
		if !slices.Contains(strs(o["required"]), req) {
			bad = append(bad, fmt.Sprintf("%s: the SDK requires %s; we do not say we always send it", where, req))
		}
	}
	sprops, _ := s["properties"].(map[string]any)
	oprops, _ := o["properties"].(map[string]any)
	for name, ps := range sprops {
		op, ok := oprops[name]
		if !ok {
			// Optional: the model reads it as None. Said in the log.
			notSent = append(notSent, where+"."+name)
			continue
		}
		bad = append(bad, parses(sdk, ours, ps, op, where+"."+name)...)
	}
	if ts := types(s); len(ts) == 1 && ts[0] == "array" {
		bad = append(bad, parses(sdk, ours, s["items"], o["items"], where+"[]")...)
	}
	return bad
}
