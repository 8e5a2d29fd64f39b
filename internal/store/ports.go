package store

import (
	"context"
	"slices"

	"github.com/jackc/pgx/v5"
)

// CapsuleByID returns capsule id (a UUID) whatever its team: the port proxy
// reads it before it knows who calls (a public port needs no caller). The
// caller decides what of it may be shown.
func (s *Store) CapsuleByID(ctx context.Context, id string) (Capsule, error) {
	c, err := scanCapsule(s.pool.QueryRow(ctx, `SELECT `+capsuleColumns+` FROM capsules WHERE id = $1`, id))
	if err != nil {
		return Capsule{}, notFound("getting capsule", err)
	}
	return c, nil
}

// SetPortPublic makes port of capsule id of team teamID public or not and
// returns the capsule as it is afterwards, with ev (resource filled in)
// written in the same transaction. An unknown capsule, or another team's,
// is ErrNotFound.
func (s *Store) SetPortPublic(ctx context.Context, teamID, id string, port int, public bool, ev Event) (Capsule, error) {
	var c Capsule
	err := s.inTx(ctx, func(tx pgx.Tx) error {
		var err error
		c, err = scanCapsule(tx.QueryRow(ctx, `
			UPDATE capsules SET updated_at = now(), public_ports = CASE
			    WHEN $4 THEN (SELECT array_agg(DISTINCT p ORDER BY p) FROM unnest(array_append(public_ports, $3::int)) AS p)
			    ELSE array_remove(public_ports, $3::int) END
			WHERE id = $1 AND team_id = $2
			RETURNING `+capsuleColumns, id, teamID, port, public))
		if err != nil {
			return err
		}
		ev.ResourceID = c.ID
		return writeEvent(ctx, tx, ev)
	})
	if err != nil {
		return Capsule{}, notFound("changing a port's visibility", err)
	}
	return c, nil
}

// nonNilPorts returns ports sorted without duplicates, never nil (the
// column is NOT NULL).
func nonNilPorts(ports []int) []int {
	out := slices.Clone(ports)
	slices.Sort(out)
	out = slices.Compact(out)
	if out == nil {
		out = []int{}
	}
	return out
}
