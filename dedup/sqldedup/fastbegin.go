package sqldedup

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"fmt"
	"time"

	mysqldriver "github.com/go-sql-driver/mysql"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/stdlib"
	gormmysql "gorm.io/driver/mysql"
	"gorm.io/gorm"

	"github.com/idemq/idemq/dedup"
)

// The fast begin sends BEGIN and the dedup insert to the server in one
// round trip, on a connection pinned for the whole transaction, instead of
// one round trip for BEGIN and one for the insert. At the concurrency where
// a message consumer runs, the round trip costs more than the insert
// itself. It is used on PostgreSQL (a pgx pipeline: BEGIN and a cached
// prepared insert, one network round trip), on MySQL when the DSN has
// multiStatements=true and interpolateParams=true, and on SQLite (BEGIN
// IMMEDIATE and the insert in one driver call).

// pinnedTx is a transaction that database/sql does not know about: BEGIN
// was sent by hand on a pinned connection. It satisfies gorm.ConnPool and
// gorm.TxCommitter, so that gorm runs the handler's statements on it and
// nests the handler's own Transaction calls as savepoints.
type pinnedTx struct {
	*sql.Conn
	ctx  context.Context
	done bool
	bad  bool
}

var _ gorm.TxCommitter = (*pinnedTx)(nil)

// Commit commits the transaction.
func (p *pinnedTx) Commit() error {
	if p.done {
		return sql.ErrTxDone
	}
	p.done = true
	if err := p.ctx.Err(); err != nil {
		// Like database/sql: a transaction whose context ended rolls back.
		p.rollback()
		return err
	}
	if _, err := p.Conn.ExecContext(p.ctx, "COMMIT"); err != nil {
		p.bad = true
		return err
	}
	return nil
}

// Rollback rolls the transaction back.
func (p *pinnedTx) Rollback() error {
	if p.done {
		return sql.ErrTxDone
	}
	p.done = true
	return p.rollback()
}

func (p *pinnedTx) rollback() error {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(p.ctx), 5*time.Second)
	defer cancel()
	if _, err := p.Conn.ExecContext(ctx, "ROLLBACK"); err != nil {
		p.bad = true
		return err
	}
	return nil
}

// close returns the connection to the pool, or discards it if its state is
// unknown (a failed COMMIT or ROLLBACK, or a transaction left open), so that
// no later user of the pool inherits an open transaction.
func (p *pinnedTx) close() {
	if !p.done {
		p.done = true
		p.rollback()
	}
	if p.bad {
		_ = p.Conn.Raw(func(any) error { return driver.ErrBadConn })
	}
	_ = p.Conn.Close()
}

// fastBeginKind reports how the store may start transactions: "" when only
// the ordinary way works.
func fastBeginKind(db *gorm.DB, dialect string) string {
	switch dialect {
	case "postgres":
		sqlDB, err := db.DB()
		if err != nil {
			return ""
		}
		if _, ok := sqlDB.Driver().(*stdlib.Driver); !ok {
			return "" // not pgx's database/sql driver
		}
		return "postgres"
	case "sqlite":
		return "sqlite"
	case "mysql":
		d, ok := db.Dialector.(*gormmysql.Dialector)
		if !ok || d.Config == nil {
			return ""
		}
		cfg := d.Config.DSNConfig
		if cfg == nil && d.Config.DSN != "" {
			var err error
			if cfg, err = mysqldriver.ParseDSN(d.Config.DSN); err != nil {
				return ""
			}
		}
		if cfg != nil && cfg.MultiStatements && cfg.InterpolateParams {
			return "mysql"
		}
	}
	return ""
}

// beginInsert pins a connection and sends BEGIN together with the dedup
// insert. It returns the pinned transaction and the insert's rows affected.
func (s *Store) beginInsert(ctx context.Context, req dedup.Request) (*pinnedTx, int64, error) {
	sqlDB, err := s.db.DB()
	if err != nil {
		return nil, 0, err
	}
	conn, err := sqlDB.Conn(ctx)
	if err != nil {
		return nil, 0, err
	}
	p := &pinnedTx{Conn: conn, ctx: ctx}
	var n int64
	if s.fastBegin == "postgres" {
		n, err = pipelineBeginInsert(ctx, conn, s.sql.insertDonePG, req)
	} else if s.fastBegin == "sqlite" {
		var res sql.Result
		if res, err = conn.ExecContext(ctx, "BEGIN IMMEDIATE; "+s.sql.insertDone, s.insertDoneArgs(req)...); err == nil {
			n, err = res.RowsAffected()
		}
	} else {
		var res sql.Result
		if res, err = conn.ExecContext(ctx, s.sql.beginInsertMySQL, req.Group, req.Key, req.MessageID, req.Fingerprint); err == nil {
			n, err = res.RowsAffected()
		}
	}
	if err != nil {
		p.bad = true
		p.done = true
		p.close()
		return nil, 0, err
	}
	return p, n, nil
}

// processTxFast is processTx with the fast begin.
func (s *Store) processTxFast(ctx context.Context, req dedup.Request, fn dedup.Func) (dedup.Result, error) {
	p, n, err := s.beginInsert(ctx, req)
	if err != nil {
		return dedup.Result{}, fmt.Errorf("sqldedup: begin and insert dedup row: %w", err)
	}
	defer p.close()
	tx := s.db.Session(&gorm.Session{NewDB: true, Context: ctx})
	tx.Statement.ConnPool = p
	if n == 0 {
		res, err := s.duplicate(ctx, tx, req)
		p.Rollback()
		return res, err
	}
	if ferr := fn(dedup.WithTx(ctx, tx)); ferr != nil {
		p.Rollback()
		return dedup.Result{}, ferr
	}
	if err := p.Commit(); err != nil {
		return dedup.Result{}, fmt.Errorf("sqldedup: commit: %w", err)
	}
	return dedup.Result{Outcome: dedup.Processed}, nil
}

// pipelineBeginInsert sends BEGIN and the dedup insert to PostgreSQL as one
// pipeline (one round trip), the insert as a statement pgx prepares once
// per connection and caches.
func pipelineBeginInsert(ctx context.Context, conn *sql.Conn, insert string, req dedup.Request) (int64, error) {
	var n int64
	err := conn.Raw(func(dc any) error {
		c, ok := dc.(*stdlib.Conn)
		if !ok {
			return fmt.Errorf("sqldedup: unexpected PostgreSQL driver connection %T", dc)
		}
		b := &pgx.Batch{}
		b.Queue("BEGIN")
		b.Queue(insert, req.Group, req.Key, req.MessageID, req.Fingerprint)
		br := c.Conn().SendBatch(ctx, b)
		if _, err := br.Exec(); err != nil {
			br.Close()
			return err
		}
		tag, err := br.Exec()
		if cerr := br.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return err
		}
		n = tag.RowsAffected()
		return nil
	})
	return n, err
}
