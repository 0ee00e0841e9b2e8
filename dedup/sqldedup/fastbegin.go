package sqldedup

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"fmt"
	"time"

	mysqldriver "github.com/go-sql-driver/mysql"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
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
// was sent by hand on a pinned connection. It is the storeTx of the fast
// begin; the handler reaches it through a txGuard.
type pinnedTx struct {
	*sql.Conn
	ctx  context.Context
	pg   bool // PostgreSQL: COMMIT's command tag is checked
	done bool
	bad  bool
}

var _ storeTx = (*pinnedTx)(nil)

// commit commits the transaction. On PostgreSQL it reads the command tag
// of the answer: a transaction that a failed statement aborted answers
// COMMIT with ROLLBACK and no error, which commit returns as
// ErrNotCommitted.
func (p *pinnedTx) commit() error {
	if p.done {
		return sql.ErrTxDone
	}
	p.done = true
	if err := p.ctx.Err(); err != nil {
		// Like database/sql: a transaction whose context ended rolls back.
		p.sendRollback()
		return err
	}
	if p.pg {
		var tag pgconn.CommandTag
		err := p.Conn.Raw(func(dc any) error {
			c, ok := dc.(*stdlib.Conn)
			if !ok {
				return fmt.Errorf("sqldedup: unexpected PostgreSQL driver connection %T", dc)
			}
			var err error
			tag, err = c.Conn().Exec(p.ctx, "COMMIT")
			return err
		})
		if err != nil {
			p.bad = true
			return err
		}
		if tag.String() != "COMMIT" {
			return fmt.Errorf("%w: COMMIT answered %q", ErrNotCommitted, tag.String())
		}
		return nil
	}
	if _, err := p.Conn.ExecContext(p.ctx, "COMMIT"); err != nil {
		p.bad = true
		return err
	}
	return nil
}

func (p *pinnedTx) rollback() {
	if !p.done {
		p.done = true
		p.sendRollback()
	}
}

func (p *pinnedTx) sendRollback() error {
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
	p.rollback()
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
		if cfg := mysqlConfig(db); cfg != nil && cfg.MultiStatements && cfg.InterpolateParams {
			return "mysql"
		}
	}
	return ""
}

// mysqlConfig returns the driver settings of a MySQL database opened with
// gorm.io/driver/mysql from a DSN or a parsed config, or nil when they are
// not known (a database opened from an existing *sql.DB).
func mysqlConfig(db *gorm.DB) *mysqldriver.Config {
	d, ok := db.Dialector.(*gormmysql.Dialector)
	if !ok || d.Config == nil {
		return nil
	}
	if d.Config.DSNConfig != nil {
		return d.Config.DSNConfig
	}
	if d.Config.DSN == "" {
		return nil
	}
	cfg, err := mysqldriver.ParseDSN(d.Config.DSN)
	if err != nil {
		return nil
	}
	return cfg
}

// beginInsert pins a connection and sends BEGIN together with the dedup
// insert. It returns the pinned transaction and whether the row is new.
func (s *Store) beginInsert(ctx context.Context, req dedup.Request) (*pinnedTx, bool, error) {
	sqlDB, err := s.db.DB()
	if err != nil {
		return nil, false, err
	}
	conn, err := sqlDB.Conn(ctx)
	if err != nil {
		return nil, false, fmt.Errorf("begin: %w", err)
	}
	p := &pinnedTx{Conn: conn, ctx: ctx, pg: s.fastBegin == "postgres"}
	var first bool
	if s.fastBegin == "postgres" {
		var n int64
		n, err = pipelineBeginInsert(ctx, conn, s.sql.insertDonePG, req)
		first = n == 1
	} else {
		q, args := s.sql.beginInsertMySQL, []any{req.Group, req.Key, req.MessageID, req.Fingerprint}
		if s.fastBegin == "sqlite" {
			q, args = "BEGIN IMMEDIATE; "+s.sql.insertDone, s.insertDoneArgs(req)
		}
		var res sql.Result
		if res, err = conn.ExecContext(ctx, q, args...); err == nil {
			first, err = s.inserted(res)
		}
	}
	if err != nil {
		p.bad = true
		p.done = true
		p.close()
		return nil, false, fmt.Errorf("begin and insert dedup row: %w", err)
	}
	return p, first, nil
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
