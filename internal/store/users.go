package store

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
)

// Roles a user can have in a team.
const (
	RoleOwner  = "owner"
	RoleAdmin  = "admin"
	RoleMember = "member"
)

// User is an account.
type User struct {
	ID              string
	Email           string
	Name            string
	PasswordHash    string
	IsPlatformAdmin bool
	CreatedAt       time.Time
}

// Membership is a user's role in one team.
type Membership struct {
	TeamID   string
	TeamName string
	Role     string
}

// NewUser is what signup stores.
type NewUser struct {
	Email        string // already lower-cased
	Name         string
	PasswordHash string
	TeamName     string
	// PlatformAdmin makes the user platform admin by spending the
	// bootstrap; the caller has checked the bootstrap token. When the
	// bootstrap is spent already, CreateUser returns ErrBootstrapSpent.
	PlatformAdmin bool
}

// signupLock serialises signups that spend the bootstrap, so that exactly
// one user becomes the first platform admin even when several try at once.
const signupLock = 0x5772656e6e01 // "Wrenn" 1

const userColumns = `id::text, email, name, password_hash, is_platform_admin, created_at`

// scanUser scans userColumns, then extra.
func scanUser(row pgx.Row, extra ...any) (User, error) {
	var u User
	err := row.Scan(append([]any{&u.ID, &u.Email, &u.Name, &u.PasswordHash, &u.IsPlatformAdmin, &u.CreatedAt}, extra...)...)
	return u, err
}

// CreateUser stores a new user with a team of its own (as owner) and writes
// ev (its ActorID, TeamID and ResourceID are filled in). A taken email
// returns ErrConflict.
func (s *Store) CreateUser(ctx context.Context, nu NewUser, ev Event) (User, Membership, error) {
	var (
		u User
		m Membership
	)
	err := s.inTx(ctx, func(tx pgx.Tx) error {
		if nu.PlatformAdmin {
			if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1)`, signupLock); err != nil {
				return err
			}
			open, err := bootstrapOpen(ctx, tx)
			if err != nil {
				return err
			}
			if !open {
				return ErrBootstrapSpent
			}
		}
		var err error
		u, err = scanUser(tx.QueryRow(ctx, `
			INSERT INTO users (email, name, password_hash, is_platform_admin)
			VALUES ($1, $2, $3, $4)
			RETURNING `+userColumns, nu.Email, nu.Name, nu.PasswordHash, nu.PlatformAdmin))
		if err != nil {
			return err
		}
		if nu.PlatformAdmin {
			if _, err := tx.Exec(ctx, `INSERT INTO bootstrap (user_id) VALUES ($1)`, u.ID); err != nil {
				return err
			}
		}
		m = Membership{TeamName: nu.TeamName, Role: RoleOwner}
		if err := tx.QueryRow(ctx, `INSERT INTO teams (name) VALUES ($1) RETURNING id::text`, nu.TeamName).Scan(&m.TeamID); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `INSERT INTO team_members (team_id, user_id, role) VALUES ($1, $2, $3)`, m.TeamID, u.ID, m.Role); err != nil {
			return err
		}
		ev.TeamID, ev.ActorType, ev.ActorID, ev.ResourceID = m.TeamID, ActorUser, u.ID, u.ID
		return writeEvent(ctx, tx, ev)
	})
	if isUniqueViolation(err) {
		return User{}, Membership{}, fmt.Errorf("creating user: email taken: %w", ErrConflict)
	}
	if err != nil {
		return User{}, Membership{}, fmt.Errorf("creating user: %w", err)
	}
	return u, m, nil
}

// UserByEmail returns the user with that (lower-case) email, or ErrNotFound.
func (s *Store) UserByEmail(ctx context.Context, email string) (User, error) {
	u, err := scanUser(s.pool.QueryRow(ctx, `SELECT `+userColumns+` FROM users WHERE email = $1`, email))
	if err != nil {
		return User{}, notFound("looking up user by email", err)
	}
	return u, nil
}

// UserByID returns the user, or ErrNotFound.
func (s *Store) UserByID(ctx context.Context, id string) (User, error) {
	u, err := scanUser(s.pool.QueryRow(ctx, `SELECT `+userColumns+` FROM users WHERE id = $1`, id))
	if err != nil {
		return User{}, notFound("looking up user", err)
	}
	return u, nil
}

// membershipOrder puts the team a user owns first, then the others oldest
// first, so that the first is the user's default team.
const membershipOrder = `ORDER BY m.role <> 'owner', m.created_at, m.team_id`

// Memberships returns the teams of a user in membershipOrder.
func (s *Store) Memberships(ctx context.Context, userID string) ([]Membership, error) {
	rows, err := s.pool.Query(ctx, `
		SELECT t.id::text, t.name, m.role
		FROM team_members m JOIN teams t ON t.id = m.team_id
		WHERE m.user_id = $1
		`+membershipOrder, userID)
	if err != nil {
		return nil, fmt.Errorf("listing memberships: %w", err)
	}
	ms, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (Membership, error) {
		var m Membership
		err := row.Scan(&m.TeamID, &m.TeamName, &m.Role)
		return m, err
	})
	if err != nil {
		return nil, fmt.Errorf("listing memberships: %w", err)
	}
	return ms, nil
}

// UserInTeam returns a user and their role in teamID, or, when teamID is "",
// in their default team (see Memberships), in one query: it is what
// authenticating a session needs. An unknown user returns ErrNotFound, and
// a session whose id (jti, may be "") was revoked ErrRevoked; a user who is
// not in the team gets a Membership with an empty TeamID.
func (s *Store) UserInTeam(ctx context.Context, userID, teamID, sessionID string) (User, Membership, error) {
	var (
		m       Membership
		revoked bool
	)
	u, err := scanUser(s.pool.QueryRow(ctx, `
		SELECT `+userColumns+`, coalesce(m.team_id::text, ''), coalesce(m.role, ''),
		       EXISTS (SELECT 1 FROM revoked_sessions WHERE jti = $3)
		FROM users LEFT JOIN LATERAL (
			SELECT m.team_id, m.role FROM team_members m
			WHERE m.user_id = users.id AND ($2::uuid IS NULL OR m.team_id = $2)
			`+membershipOrder+` LIMIT 1
		) m ON true
		WHERE users.id = $1`, userID, nullable(teamID), sessionID), &m.TeamID, &m.Role, &revoked)
	if err != nil {
		return User{}, Membership{}, notFound("looking up user", err)
	}
	if revoked {
		return User{}, Membership{}, fmt.Errorf("looking up user: %w", ErrRevoked)
	}
	return u, m, nil
}

// RevokeSession refuses the session with id (a jti) from now on, until
// expiresAt, when the token is refused anyway, and writes ev unless it has
// no Action or the session was revoked already. Revoking twice is not an
// error. Rows of sessions that have
// expired are deleted on the way.
func (s *Store) RevokeSession(ctx context.Context, id string, expiresAt time.Time, ev Event) error {
	err := s.inTx(ctx, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `DELETE FROM revoked_sessions WHERE expires_at < now() - interval '1 minute'`); err != nil {
			return err
		}
		tag, err := tx.Exec(ctx, `INSERT INTO revoked_sessions (jti, expires_at) VALUES ($1, $2) ON CONFLICT (jti) DO NOTHING`, id, expiresAt)
		if err != nil {
			return err
		}
		if ev.Action == "" || tag.RowsAffected() == 0 {
			return nil
		}
		return writeEvent(ctx, tx, ev)
	})
	if err != nil {
		return fmt.Errorf("revoking session: %w", err)
	}
	return nil
}

// TeamName returns the name of a team, or ErrNotFound.
func (s *Store) TeamName(ctx context.Context, id string) (string, error) {
	var name string
	if err := s.pool.QueryRow(ctx, `SELECT name FROM teams WHERE id = $1`, id).Scan(&name); err != nil {
		return "", notFound("looking up team", err)
	}
	return name, nil
}

// TeamExists reports whether a team with that id exists.
func (s *Store) TeamExists(ctx context.Context, id string) (bool, error) {
	var ok bool
	if err := s.pool.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM teams WHERE id = $1)`, id).Scan(&ok); err != nil {
		return false, fmt.Errorf("looking up team: %w", err)
	}
	return ok, nil
}
