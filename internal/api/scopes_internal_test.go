package api

import (
	"slices"
	"testing"

	"github.com/wrenn-dev/wrenn/internal/auth"
)

// TestEveryMemberRouteHasAScope keeps routeScope complete: a member route
// missing from it refuses every API key, which a new route must decide on
// purpose.
func TestEveryMemberRouteHasAScope(t *testing.T) {
	members := map[string]bool{}
	for _, rt := range routeTable() {
		if rt.access != member {
			continue
		}
		key := rt.method + " " + rt.pattern
		members[key] = true
		if _, ok := routeScope[key]; !ok {
			t.Errorf("%s has no entry in routeScope", key)
		}
	}
	for key, sc := range routeScope {
		if !members[key] {
			t.Errorf("routeScope lists %s, which is no member route", key)
		}
		if sc != "" && !slices.Contains(auth.AllScopes, sc) {
			t.Errorf("%s needs unknown scope %q", key, sc)
		}
	}
}
