package store

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/wrenn-dev/wrenn/internal/egress"
)

// TeamNetworkPolicy returns the egress policy new capsules of team teamID
// get when their create names none (nil: the open policy). An unknown team
// is ErrNotFound.
func (s *Store) TeamNetworkPolicy(ctx context.Context, teamID string) (*egress.Policy, error) {
	var p *egress.Policy
	err := s.pool.QueryRow(ctx, `SELECT default_network_policy FROM teams WHERE id = $1`, teamID).Scan(&p)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("reading team network policy: %w", err)
	}
	return p, nil
}

// SetTeamNetworkPolicy makes p (nil: the open policy) the default egress
// policy of team teamID's new capsules, and writes ev. Capsules that exist
// keep theirs.
func (s *Store) SetTeamNetworkPolicy(ctx context.Context, teamID string, p *egress.Policy, ev Event) error {
	err := s.inTx(ctx, func(tx pgx.Tx) error {
		tag, err := tx.Exec(ctx, `UPDATE teams SET default_network_policy = $2 WHERE id = $1`, teamID, p)
		if err != nil {
			return err
		}
		if tag.RowsAffected() == 0 {
			return ErrNotFound
		}
		ev.ResourceID = teamID
		return writeEvent(ctx, tx, ev)
	})
	if err != nil {
		return fmt.Errorf("setting team network policy: %w", err)
	}
	return nil
}
