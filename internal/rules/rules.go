// Package rules is the one statement of what names and sizes Wrenn accepts,
// shared by every layer that checks them — the REST API, the host agent and
// the host protocol — so that they cannot disagree. Each rule comes with
// the words the API reports it in.
package rules

import (
	"regexp"

	"github.com/google/uuid"
)

// Capsule sizes. The host-dependent upper bounds (most vCPUs, memory and
// disk) come from the hosts, not from here.
const (
	// MinMemoryMB and MinDiskMB are the smallest capsule: envd and a shell
	// need about this much.
	MinMemoryMB = 128
	MinDiskMB   = 128
	// MaxEnvs bounds a capsule's (or a command's) environment variables,
	// MaxEnvValueBytes each value.
	MaxEnvs          = 100
	MaxEnvValueBytes = 32 << 10
)

// TemplateNameRule says in words what ValidTemplateName accepts.
const TemplateNameRule = "1-63 characters: lower-case letters, digits, '.', '_' and '-', starting with a letter or digit"

var templateName = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]{0,62}$`)

// ValidTemplateName reports whether name can name a template. It is also
// the name of a directory on every host, so it must stay a safe file name.
func ValidTemplateName(name string) bool { return templateName.MatchString(name) }

// EnvNameRule says in words what ValidEnvName accepts.
const EnvNameRule = "[A-Za-z_][A-Za-z0-9_]*"

var envName = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

// ValidEnvName reports whether name can name an environment variable.
func ValidEnvName(name string) bool { return envName.MatchString(name) }

// CapsuleIDRule says in words what ValidCapsuleID accepts.
const CapsuleIDRule = "a UUID in canonical lower-case form"

// ValidCapsuleID reports whether id is a capsule id: a UUID in canonical,
// lower-case form. Ids name directories, runsc containers and network
// namespaces on hosts, so no other spelling of the same UUID is accepted.
func ValidCapsuleID(id string) bool {
	u, err := uuid.Parse(id)
	return err == nil && u.String() == id
}
