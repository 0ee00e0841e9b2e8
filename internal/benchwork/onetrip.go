package benchwork

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"fmt"
	"math/rand/v2"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/stdlib"
	"gorm.io/gorm"

	"github.com/idemq/idemq/internal/sqlscript"
)

// BareOneTrip runs the business transaction with no dedup, its BEGIN sent
// to the server together with the wallet update in one round trip on a
// pinned connection: the same saving sqldedup's fast begin makes for the
// dedup insert. It is the honest baseline (a') for transactional dedup,
// whose BEGIN costs no round trip of its own; Bare (a) pays gorm's separate
// BEGIN round trip. PostgreSQL sends BEGIN and the update as one pgx
// pipeline, MySQL as one multi-statement query (the DSN needs
// multiStatements=true and interpolateParams=true), SQLite as one driver
// call beginning with BEGIN IMMEDIATE, as sqldedup does.
func (w *Workload) BareOneTrip(ctx context.Context, key string) error {
	return w.bareOneTrip(ctx, key, false)
}

// BareOneTripPlusTrip is BareOneTrip with one more round trip inside the
// transaction, a SELECT 1: as many round trips as transactional dedup
// makes (BEGIN with the dedup insert, the update, the payout, COMMIT), so
// that dedup measured against it pays for its insert's own work alone.
// It is the floor of transactional dedup on this workload: a statement
// that must be answered before the handler runs costs at least a round
// trip.
func (w *Workload) BareOneTripPlusTrip(ctx context.Context, key string) error {
	return w.bareOneTrip(ctx, key, true)
}

func (w *Workload) bareOneTrip(ctx context.Context, key string, extraTrip bool) (err error) {
	wallet := rand.Int64N(Wallets)
	sqlDB, err := w.DB.DB()
	if err != nil {
		return err
	}
	conn, err := sqlDB.Conn(ctx)
	if err != nil {
		return err
	}
	open, bad := false, false
	defer func() {
		if open {
			if _, rerr := conn.ExecContext(context.WithoutCancel(ctx), "ROLLBACK"); rerr != nil {
				bad = true
			}
		}
		if bad {
			_ = conn.Raw(func(any) error { return driver.ErrBadConn })
		}
		conn.Close()
	}()
	update := "UPDATE " + w.wallets + " SET balance = balance + 1 WHERE id = ?"
	switch w.DB.Dialector.Name() {
	case "postgres":
		err = conn.Raw(func(dc any) error {
			c, ok := dc.(*stdlib.Conn)
			if !ok {
				return fmt.Errorf("benchwork: unexpected PostgreSQL driver connection %T", dc)
			}
			b := &pgx.Batch{}
			b.Queue("BEGIN")
			b.Queue(sqlscript.Numbered(update), wallet)
			return c.Conn().SendBatch(ctx, b).Close()
		})
	case "mysql":
		_, err = conn.ExecContext(ctx, "BEGIN; "+update, wallet)
	case "sqlite":
		_, err = conn.ExecContext(ctx, "BEGIN IMMEDIATE; "+update, wallet)
	default:
		return fmt.Errorf("benchwork: no one-round-trip BEGIN on %s", w.DB.Dialector.Name())
	}
	open = true // the state is unknown until ROLLBACK or COMMIT succeeds
	if err != nil {
		return err
	}
	tx := w.DB.Session(&gorm.Session{NewDB: true, Context: ctx})
	tx.Statement.ConnPool = conn
	if extraTrip {
		var one int
		if err = tx.Raw("SELECT 1").Scan(&one).Error; err != nil {
			return err
		}
	}
	if err = tx.Exec("INSERT INTO "+w.payouts+" (msg_key, wallet_id, amount) VALUES (?, ?, ?)", key, wallet, 1).Error; err != nil {
		return err
	}
	if _, err = conn.ExecContext(ctx, "COMMIT"); err != nil {
		bad = true
		open = false
		return err
	}
	open = false
	return nil
}

var _ gorm.ConnPool = (*sql.Conn)(nil)
