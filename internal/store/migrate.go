package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io/fs"

	_ "github.com/jackc/pgx/v5/stdlib" // registers the "pgx" database/sql driver goose needs
	"github.com/pressly/goose/v3"
	"github.com/pressly/goose/v3/lock"

	"github.com/wrenn-dev/wrenn/db"
)

// Migrator applies the embedded migrations. Close it when done: that closes
// its database connection.
type Migrator struct {
	*goose.Provider
}

// NewMigrator returns a Migrator for the database at url. A PostgreSQL
// session lock serialises migrations, so replicas starting together do not
// race.
func NewMigrator(url string) (*Migrator, error) {
	sqlDB, err := sql.Open("pgx", url)
	if err != nil {
		return nil, errors.New("opening database for migrations: invalid URL")
	}
	fsys, err := fs.Sub(db.Migrations, "migrations")
	if err != nil {
		_ = sqlDB.Close()
		return nil, fmt.Errorf("opening embedded migrations: %w", err)
	}
	locker, err := lock.NewPostgresSessionLocker()
	if err != nil {
		_ = sqlDB.Close()
		return nil, fmt.Errorf("creating migration lock: %w", err)
	}
	p, err := goose.NewProvider(goose.DialectPostgres, sqlDB, fsys, goose.WithSessionLocker(locker))
	if err != nil {
		_ = sqlDB.Close()
		return nil, fmt.Errorf("loading migrations: %w", err)
	}
	return &Migrator{Provider: p}, nil
}

// MigrateUp applies every pending migration to the database at url.
func MigrateUp(ctx context.Context, url string) error {
	m, err := NewMigrator(url)
	if err != nil {
		return err
	}
	if _, err := m.Up(ctx); err != nil {
		_ = m.Close()
		return fmt.Errorf("applying migrations: %w", err)
	}
	return m.Close()
}
