package auth

import (
	"fmt"
	"slices"
	"strings"
)

// Scope names one kind of power an API key may carry. A user session holds
// every scope its user may hold; an API key holds only those stored with it.
type Scope = string

// The scopes of API keys.
const (
	// ScopeCapsules: create, list, inspect, pause, resume and delete
	// capsules, and read their metrics.
	ScopeCapsules Scope = "capsules"
	// ScopeExec: run commands in capsules, open terminals, list and kill
	// their processes.
	ScopeExec Scope = "exec"
	// ScopeFiles: read and write files in capsules.
	ScopeFiles Scope = "files"
	// ScopeSnapshots: create, list and delete snapshots.
	ScopeSnapshots Scope = "snapshots"
	// ScopeTemplates: list templates.
	ScopeTemplates Scope = "templates"
	// ScopeHosts: list and inspect the hosts the team can see (adding
	// and removing hosts needs platform:admin as well).
	ScopeHosts Scope = "hosts"
	// ScopeTeam: read the team's members and audit log.
	ScopeTeam Scope = "team"
	// ScopeKeysManage: list, create and delete the team's API keys.
	ScopeKeysManage Scope = "keys:manage"
	// ScopePlatformAdmin: act as platform admin, when the key's creator is
	// one.
	ScopePlatformAdmin Scope = "platform:admin"
)

// AllScopes lists every scope, in the order they are shown.
var AllScopes = []Scope{
	ScopeCapsules, ScopeExec, ScopeFiles, ScopeSnapshots, ScopeTemplates,
	ScopeHosts, ScopeTeam, ScopeKeysManage, ScopePlatformAdmin,
}

// DefaultScopes are the scopes of a key created without naming any: using
// capsules, not administering anything.
var DefaultScopes = []Scope{ScopeCapsules, ScopeExec, ScopeFiles, ScopeSnapshots, ScopeTemplates}

// ParseScopes returns scopes without duplicates, in AllScopes order, or an
// error naming the first unknown one.
func ParseScopes(scopes []string) ([]Scope, error) {
	seen := map[Scope]bool{}
	for _, s := range scopes {
		if !slices.Contains(AllScopes, s) {
			return nil, fmt.Errorf("unknown scope %q (known: %s)", s, strings.Join(AllScopes, ", "))
		}
		seen[s] = true
	}
	out := make([]Scope, 0, len(seen))
	for _, s := range AllScopes {
		if seen[s] {
			out = append(out, s)
		}
	}
	return out, nil
}
