// Package db holds the control plane's PostgreSQL migrations (goose SQL
// files), embedded so that the wrenn-cp binary can migrate a database by
// itself.
package db

import "embed"

// Migrations holds migrations/*.sql.
//
//go:embed migrations/*.sql
var Migrations embed.FS
