package msgid

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"

	"gorm.io/gorm"

	"github.com/idemq/idemq/internal/sqlclock"
)

// dialect holds the SQL that differs between databases.
type dialect struct {
	name     string
	nowMs    string // expression: database clock in Unix ms
	greatest string // function: larger of two values
	insert   string // "INSERT ... <cols> VALUES" prefix and suffix that ignore a duplicate key
	onConfl  string
}

func dialectOf(db *gorm.DB) (dialect, error) {
	if db == nil || db.Dialector == nil {
		return dialect{}, errors.New("msgid: nil *gorm.DB")
	}
	switch n := db.Dialector.Name(); n {
	case "postgres":
		return dialect{
			name:     n,
			nowMs:    "CAST(FLOOR(EXTRACT(EPOCH FROM clock_timestamp()) * 1000) AS BIGINT)",
			greatest: "GREATEST",
			insert:   "INSERT INTO",
			onConfl:  "ON CONFLICT DO NOTHING",
		}, nil
	case "mysql":
		return dialect{
			name:     n,
			nowMs:    sqlclock.MySQLMillis, // UTC, whatever the session's time zone
			greatest: "GREATEST",
			// INSERT IGNORE reports 0 rows for a duplicate key whether
			// or not the DSN sets clientFoundRows.
			insert: "INSERT IGNORE INTO",
		}, nil
	case "sqlite":
		return dialect{
			name: n,
			// strftime('%s') is whole seconds; '%f' is SS.SSS.
			nowMs:    "(CAST(strftime('%s','now') AS INTEGER) * 1000 + CAST(substr(strftime('%f','now'), 4) AS INTEGER))",
			greatest: "MAX",
			insert:   "INSERT INTO",
			onConfl:  "ON CONFLICT DO NOTHING",
		}, nil
	default:
		return dialect{}, fmt.Errorf("msgid: unsupported database dialect %q (want postgres, mysql or sqlite)", n)
	}
}

type sqlLease struct {
	db    *gorm.DB
	d     dialect
	table string
	ttlMs int64
}

// NewSQLNodeLease returns a lease of a snowflake node ID from the table
// <cfg.TablePrefix>node_leases. It checks cfg and touches no database:
// Start acquires the node and keeps it with heartbeats every TTL/3.
//
// Acquisition claims a node whose row is missing (INSERT that ignores a
// duplicate key) or expired (UPDATE ... WHERE expires_at < now), so two
// processes racing for a node cannot both win; all expiry comparisons use
// the database clock. The holder reserves timestamps up to its own clock
// plus TTL in last_ms at acquisition and on every heartbeat, and issues
// none above its reservation; the new holder's IDs start strictly after the
// previous holder's mark (and, after a takeover of an expired lease, after
// that lease's deadline). Start returns ErrNoFreeNode when
// every node in the configured range is held.
func NewSQLNodeLease(db *gorm.DB, cfg NodeLeaseConfig) (*NodeLease, error) {
	if err := cfg.defaults(); err != nil {
		return nil, err
	}
	d, err := dialectOf(db)
	if err != nil {
		return nil, err
	}
	b := &sqlLease{db: db, d: d, table: cfg.TablePrefix + "node_leases", ttlMs: cfg.TTL.Milliseconds()}
	var prepare func(context.Context) error
	if cfg.Migrate {
		prepare = func(ctx context.Context) error { return migrateTables(ctx, db, cfg.TablePrefix) }
	}
	return newLease(b, cfg, prepare), nil
}

func (b *sqlLease) kind() string { return "sql" }

func (b *sqlLease) acquire(ctx context.Context, owner string, lo, hi int64) (int64, int64, error) {
	db := b.db.WithContext(ctx)
	for round := 0; round < 3; round++ {
		type state struct {
			NodeID int64
			Free   int
		}
		var rows []state
		err := db.Raw(fmt.Sprintf(
			"SELECT node_id, CASE WHEN expires_at < %s THEN 1 ELSE 0 END AS free FROM %s WHERE node_id BETWEEN ? AND ?",
			b.d.nowMs, b.table), lo, hi).Scan(&rows).Error
		if err != nil {
			return 0, 0, fmt.Errorf("msgid: read %s: %w", b.table, err)
		}
		present := make(map[int64]bool, len(rows))
		var expired []int64
		for _, r := range rows {
			present[r.NodeID] = true
			if r.Free == 1 {
				expired = append(expired, r.NodeID)
			}
		}
		// Candidates in random order, so racing processes spread out.
		var cands []int64
		n := hi - lo + 1
		off := rand.Int64N(n)
		for i := int64(0); i < n; i++ {
			id := lo + (off+i)%n
			if !present[id] {
				cands = append(cands, id)
			}
			if len(cands) >= 32 {
				break
			}
		}
		rand.Shuffle(len(expired), func(i, j int) { expired[i], expired[j] = expired[j], expired[i] })
		cands = append(cands, expired...)
		if len(cands) == 0 {
			return 0, 0, fmt.Errorf("%w in %d..%d (%s)", ErrNoFreeNode, lo, hi, b.table)
		}
		for _, id := range cands {
			var res *gorm.DB
			if present[id] {
				// Taking over an expired lease: its holder may have
				// issued IDs up to its deadline without recording them.
				res = db.Exec(fmt.Sprintf(
					"UPDATE %s SET owner = ?, last_ms = %s(last_ms, expires_at), expires_at = %s + ? WHERE node_id = ? AND expires_at < %s",
					b.table, b.d.greatest, b.d.nowMs, b.d.nowMs), owner, b.ttlMs, id)
			} else {
				res = db.Exec(fmt.Sprintf(
					"%s %s (node_id, owner, expires_at, last_ms) VALUES (?, ?, %s + ?, 0) %s",
					b.d.insert, b.table, b.d.nowMs, b.d.onConfl), id, owner, b.ttlMs)
			}
			if res.Error != nil {
				return 0, 0, fmt.Errorf("msgid: claim node %d in %s: %w", id, b.table, res.Error)
			}
			if res.RowsAffected != 1 {
				continue // someone else got it first
			}
			var last []int64
			if err := db.Raw(fmt.Sprintf("SELECT last_ms FROM %s WHERE node_id = ? AND owner = ?", b.table), id, owner).
				Scan(&last).Error; err != nil {
				return 0, 0, fmt.Errorf("msgid: read node %d in %s: %w", id, b.table, err)
			}
			if len(last) != 1 {
				continue
			}
			return id, last[0], nil
		}
	}
	return 0, 0, fmt.Errorf("%w in %d..%d (%s): lost every race", ErrNoFreeNode, lo, hi, b.table)
}

func (b *sqlLease) renew(ctx context.Context, owner string, node, markMs int64) (bool, error) {
	db := b.db.WithContext(ctx)
	res := db.Exec(fmt.Sprintf(
		"UPDATE %s SET expires_at = %s + ?, last_ms = %s(last_ms, ?) WHERE node_id = ? AND owner = ?",
		b.table, b.d.nowMs, b.d.greatest), b.ttlMs, markMs, node, owner)
	if res.Error != nil {
		return false, res.Error
	}
	if res.RowsAffected == 1 {
		return true, nil
	}
	// MySQL counts changed rows, not matched ones: an update to the same
	// values reports 0. Check ownership directly.
	var n int64
	if err := db.Raw(fmt.Sprintf("SELECT COUNT(*) FROM %s WHERE node_id = ? AND owner = ?", b.table), node, owner).
		Scan(&n).Error; err != nil {
		return false, err
	}
	return n == 1, nil
}

func (b *sqlLease) release(ctx context.Context, owner string, node, lastMs int64) error {
	// The holder knows exactly what it issued (never below the mark it
	// started above), so the mark drops from the reservation to that and
	// the next holder needs to wait only past it; expires_at 0 frees the
	// node at once.
	return b.db.WithContext(ctx).Exec(fmt.Sprintf(
		"UPDATE %s SET expires_at = 0, last_ms = ? WHERE node_id = ? AND owner = ?",
		b.table), lastMs, node, owner).Error
}
