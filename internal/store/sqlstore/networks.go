package sqlstore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"

	"github.com/sbxdev/sbx/internal/errdefs"
	"github.com/sbxdev/sbx/internal/store/sqldb"
)

// Networks keeps sandboxes' network settings (table sandbox_networks).
type Networks struct{ db *sqldb.DB }

// NewNetworks returns the repository over db.
func NewNetworks(db *sqldb.DB) *Networks { return &Networks{db: db} }

// PutNetwork stores a sandbox's settings (config is JSON) and its traffic
// token ("" for none), replacing earlier ones.
func (n *Networks) PutNetwork(ctx context.Context, sandboxID, config, trafficToken string) error {
	_, err := n.db.ExecContext(ctx, `INSERT INTO sandbox_networks(sandbox_id, config, traffic_token) VALUES(?,?,?)
		ON CONFLICT (sandbox_id) DO UPDATE SET config = excluded.config, traffic_token = excluded.traffic_token`,
		sandboxID, config, trafficToken)
	if err != nil {
		return fmt.Errorf("store network of sandbox %s: %w", sandboxID, err)
	}
	return nil
}

// Network returns a sandbox's settings; errdefs.ErrNotFound when it has
// none stored (it was created without any).
func (n *Networks) Network(ctx context.Context, sandboxID string) (config, trafficToken string, err error) {
	err = n.db.QueryRowContext(ctx, `SELECT config, traffic_token FROM sandbox_networks WHERE sandbox_id = ?`,
		sandboxID).Scan(&config, &trafficToken)
	if errors.Is(err, sql.ErrNoRows) {
		return "", "", errdefs.NotFound("no network settings for sandbox %s", sandboxID)
	}
	if err != nil {
		return "", "", fmt.Errorf("read network of sandbox %s: %w", sandboxID, err)
	}
	return config, trafficToken, nil
}
