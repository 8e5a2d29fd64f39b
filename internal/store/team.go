package store

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
)

// Member is a user's membership of a team, as the team sees it.
type Member struct {
	UserID   string
	Email    string
	Name     string
	Role     string
	JoinedAt time.Time
}

const memberColumns = `u.id::text, u.email, u.name, m.role, m.created_at`

func scanMember(row pgx.Row) (Member, error) {
	var m Member
	err := row.Scan(&m.UserID, &m.Email, &m.Name, &m.Role, &m.JoinedAt)
	return m, err
}

// TeamMembers returns the members of a team, owners first, then by the
// time they joined.
func (s *Store) TeamMembers(ctx context.Context, teamID string) ([]Member, error) {
	rows, err := s.pool.Query(ctx, `
		SELECT `+memberColumns+`
		FROM team_members m JOIN users u ON u.id = m.user_id
		WHERE m.team_id = $1
		ORDER BY m.role <> 'owner', m.role <> 'admin', m.created_at, u.email`, teamID)
	if err != nil {
		return nil, fmt.Errorf("listing team members: %w", err)
	}
	ms, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (Member, error) { return scanMember(row) })
	if err != nil {
		return nil, fmt.Errorf("listing team members: %w", err)
	}
	return ms, nil
}

// AddTeamMember adds the user with that (lower-case) email to a team with
// role if check allows it (given the membership of callerID, the user
// making the change, as it is under the team's lock; zero if they are no
// longer in the team), and writes ev (its ResourceID is set to the user).
// An unknown email returns ErrNotFound, a user already in the team
// ErrConflict; an error of check is returned as is.
func (s *Store) AddTeamMember(ctx context.Context, teamID, callerID, email, role string, check func(caller Member) error, ev Event) (Member, error) {
	var m Member
	err := s.inTx(ctx, func(tx pgx.Tx) error {
		// The caller's standing as it is now, with the membership locked
		// as the other changes lock it: a caller demoted meanwhile no
		// longer adds.
		_, caller, _, err := lockedMember(ctx, tx, teamID, callerID, callerID)
		if err != nil && !errors.Is(err, ErrNotFound) {
			return err
		}
		if err := check(caller); err != nil {
			return err
		}
		m, err = scanMember(tx.QueryRow(ctx, `
			WITH u AS (SELECT id FROM users WHERE email = $2),
			     m AS (INSERT INTO team_members (team_id, user_id, role) SELECT $1, id, $3 FROM u RETURNING *)
			SELECT `+memberColumns+` FROM m JOIN users u ON u.id = m.user_id`, teamID, email, role))
		if err != nil {
			return err
		}
		ev.ResourceID = m.UserID
		return writeEvent(ctx, tx, ev)
	})
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		return Member{}, fmt.Errorf("adding team member: no user with that email: %w", ErrNotFound)
	case isUniqueViolation(err):
		return Member{}, fmt.Errorf("adding team member: already a member: %w", ErrConflict)
	case err != nil:
		return Member{}, fmt.Errorf("adding team member: %w", err)
	}
	return m, nil
}

// MemberCheck decides, with the team's membership locked, whether a change
// to target may go ahead; caller is the membership of the user making the
// change as it is now (zero, with an empty Role, if they are no longer in
// the team), and owners is how many owners the team has. An error it
// returns is returned as is and nothing changes.
type MemberCheck func(target, caller Member, owners int) error

// lockedMember locks the team's membership (the team row, then every
// member row FOR UPDATE), so that concurrent changes see each other's
// result, and returns the member userID, the member callerID (zero if not
// in the team) and the number of owners. A user not in the team returns
// ErrNotFound.
func lockedMember(ctx context.Context, tx pgx.Tx, teamID, userID, callerID string) (Member, Member, int, error) {
	if _, err := tx.Exec(ctx, `SELECT 1 FROM teams WHERE id = $1 FOR UPDATE`, teamID); err != nil {
		return Member{}, Member{}, 0, err
	}
	rows, err := tx.Query(ctx, `
		SELECT `+memberColumns+`
		FROM team_members m JOIN users u ON u.id = m.user_id
		WHERE m.team_id = $1
		FOR UPDATE OF m`, teamID)
	if err != nil {
		return Member{}, Member{}, 0, err
	}
	ms, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (Member, error) { return scanMember(row) })
	if err != nil {
		return Member{}, Member{}, 0, err
	}
	var (
		target, caller Member
		found          bool
		owners         int
	)
	for _, m := range ms {
		if m.Role == RoleOwner {
			owners++
		}
		if m.UserID == userID {
			target, found = m, true
		}
		if m.UserID == callerID {
			caller = m
		}
	}
	if !found {
		return Member{}, Member{}, 0, ErrNotFound
	}
	return target, caller, owners, nil
}

// SetMemberRole gives a member of a team a new role if check allows it
// (callerID is the user making the change), and writes ev (ResourceID and
// the old and new roles are filled in). A user not in the team returns
// ErrNotFound.
func (s *Store) SetMemberRole(ctx context.Context, teamID, userID, callerID, role string, check MemberCheck, ev Event) (Member, error) {
	var m Member
	err := s.inTx(ctx, func(tx pgx.Tx) error {
		target, caller, owners, err := lockedMember(ctx, tx, teamID, userID, callerID)
		if err != nil {
			return err
		}
		if err := check(target, caller, owners); err != nil {
			return err
		}
		m = target
		if target.Role == role {
			return nil
		}
		if _, err := tx.Exec(ctx, `UPDATE team_members SET role = $3 WHERE team_id = $1 AND user_id = $2`, teamID, userID, role); err != nil {
			return err
		}
		m.Role = role
		ev.ResourceID = userID
		ev.Metadata = map[string]any{"email": target.Email, "old_role": target.Role, "role": role}
		return writeEvent(ctx, tx, ev)
	})
	if err != nil {
		return Member{}, fmt.Errorf("changing team member role: %w", err)
	}
	return m, nil
}

// RemoveTeamMember removes a member from a team, with the API keys they
// created for it, if check allows it
// (callerID is the user making the change), and writes ev (ResourceID and
// the member's email and role are filled in). A user not in the team
// returns ErrNotFound.
func (s *Store) RemoveTeamMember(ctx context.Context, teamID, userID, callerID string, check MemberCheck, ev Event) error {
	err := s.inTx(ctx, func(tx pgx.Tx) error {
		target, caller, owners, err := lockedMember(ctx, tx, teamID, userID, callerID)
		if err != nil {
			return err
		}
		if err := check(target, caller, owners); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `DELETE FROM team_members WHERE team_id = $1 AND user_id = $2`, teamID, userID); err != nil {
			return err
		}
		// Keys act with their creator's standing in the team: someone
		// who left it keeps none of its access through them.
		tag, err := tx.Exec(ctx, `
			UPDATE api_keys SET deleted_at = now()
			WHERE team_id = $1 AND created_by = $2 AND deleted_at IS NULL`, teamID, userID)
		if err != nil {
			return err
		}
		ev.ResourceID = userID
		ev.Metadata = map[string]any{"email": target.Email, "role": target.Role, "revoked_api_keys": tag.RowsAffected()}
		return writeEvent(ctx, tx, ev)
	})
	if err != nil {
		return fmt.Errorf("removing team member: %w", err)
	}
	return nil
}
