package admin

import (
	"context"
	"fmt"
	"time"
)

// NodeLease is one snowflake node ID of the SQL node-lease table (the
// table of msgid.NewSQLNodeLease).
type NodeLease struct {
	NodeID int64  `json:"node_id"`
	Owner  string `json:"owner"`
	// ExpiresAt is the lease deadline; nil for a released node.
	ExpiresAt *time.Time `json:"expires_at,omitempty"`
	// Live says the lease is held now, by the database clock.
	Live bool `json:"live"`
	// LastIssued is the highest ID timestamp its holders recorded.
	LastIssued *time.Time `json:"last_issued,omitempty"`
}

// NodeLeases lists the node IDs of the SQL node-lease table
// (<prefix>node_leases), or ErrNoTable when producers lease their nodes
// elsewhere (Redis) or not at all. Redrive never needs one.
func (a *Admin) NodeLeases(ctx context.Context) ([]NodeLease, error) {
	if !a.hasTable(ctx, "node_leases") {
		return nil, fmt.Errorf("%w: %s", ErrNoTable, a.table("node_leases"))
	}
	rows, err := a.db.WithContext(ctx).Raw("SELECT node_id, owner, expires_at, last_ms, " + a.nowMs() +
		" FROM " + a.table("node_leases") + " ORDER BY node_id").Rows()
	if err != nil {
		return nil, fmt.Errorf("admin: list node leases: %w", err)
	}
	defer rows.Close()
	var out []NodeLease
	for rows.Next() {
		var (
			l                   NodeLease
			expires, last, nowM int64
		)
		if err := rows.Scan(&l.NodeID, &l.Owner, &expires, &last, &nowM); err != nil {
			return nil, fmt.Errorf("admin: list node leases: %w", err)
		}
		if expires > 0 {
			t := fromMs(expires)
			l.ExpiresAt = &t
		}
		if last > 0 {
			t := fromMs(last)
			l.LastIssued = &t
		}
		l.Live = expires > nowM
		out = append(out, l)
	}
	return out, rows.Err()
}
