package deduptest

import (
	"context"
	"errors"
	"testing"

	"gorm.io/gorm"

	"github.com/idemq/idemq/dedup"
)

// Cases about what a transactional store acknowledges: only a transaction
// that committed, whatever the handler swallowed and whatever happened to
// the connection at COMMIT.

// badStatement returns a statement that fails on every database: an insert
// into a table that does not exist.
func badStatement(s Subject) string {
	return "INSERT INTO " + s.Prefix + "no_such_table (k) VALUES ('x')"
}

// testSwallowedStatementError: a handler whose statement fails and that
// returns nil anyway is not acknowledged, and nothing of its transaction
// is stored (PostgreSQL aborts the transaction; MySQL and SQLite would
// commit the rest without the failed statement's effect).
func testSwallowedStatementError(t *testing.T, s Subject) {
	if s.Mode != dedup.Transactional {
		t.Skip("applies to transactional stores")
	}
	e := newEffects(t, s)
	key := uniqueKey("swallowed")
	var stmtErr error
	res, err := s.Store.Process(ctxT(t), req(group, key), func(ctx context.Context) error {
		if err := e.write(ctx, key); err != nil {
			return err
		}
		stmtErr = dedup.Tx(ctx).Exec(badStatement(s)).Error
		// Swallowed, as real code too often does; then more work.
		_ = e.write(ctx, key+":after")
		return nil
	})
	if stmtErr == nil {
		t.Fatal("the failing statement succeeded: the case proves nothing")
	}
	if err == nil {
		t.Fatalf("Process acknowledged (%s) a transaction whose statement failed: %v", res.Outcome, stmtErr)
	}
	if dedup.IsInfrastructure(err) {
		t.Fatalf("a handler's failed statement reported as infrastructure: %v", err)
	}
	e.expect(t, key, 0)
	e.expect(t, key+":after", 0)
	res, err = settle(t, s.Store, req(group, key), e.fn(key))
	mustOutcome(t, res, err, dedup.Processed)
	e.expect(t, key, 1)
}

// testSavepointRecovered: a failure the handler undid by rolling back to a
// savepoint (gorm's nested Transaction, or SAVEPOINT and ROLLBACK TO by
// hand) is the handler's business: the delivery is acknowledged, with
// exactly the effects that were not rolled back.
func testSavepointRecovered(t *testing.T, s Subject) {
	if s.Mode != dedup.Transactional {
		t.Skip("applies to transactional stores")
	}
	e := newEffects(t, s)
	key := uniqueKey("savepoint")
	res, err := s.Store.Process(ctxT(t), req(group, key), func(ctx context.Context) error {
		tx := dedup.Tx(ctx)
		nerr := tx.Transaction(func(tx *gorm.DB) error {
			if err := e.writeTx(tx, key+":undone"); err != nil {
				return err
			}
			return tx.Exec(badStatement(s)).Error
		})
		if nerr == nil {
			return errors.New("the failing statement in the nested transaction succeeded")
		}
		if err := tx.Exec("SAVEPOINT idemq_case").Error; err != nil {
			return err
		}
		if err := e.writeTx(tx, key+":undone"); err != nil {
			return err
		}
		if tx.Exec(badStatement(s)).Error == nil {
			return errors.New("the failing statement succeeded")
		}
		if err := tx.Exec("ROLLBACK TO SAVEPOINT idemq_case").Error; err != nil {
			return err
		}
		return e.write(ctx, key)
	})
	mustOutcome(t, res, err, dedup.Processed)
	e.expect(t, key, 1)
	e.expect(t, key+":undone", 0)
	res, err = s.Store.Process(ctxT(t), req(group, key), e.fn(key))
	mustOutcome(t, res, err, dedup.Duplicate)
	e.expect(t, key, 1)
}

// testCommitOnKilledConnection: the handler succeeds but its connection is
// killed before COMMIT: the outcome is an infrastructure error, never an
// acknowledgement, and the redelivery runs the handler once.
func testCommitOnKilledConnection(t *testing.T, s Subject) {
	if s.Mode != dedup.Transactional {
		t.Skip("applies to transactional stores")
	}
	s.need(t, "KillConn", s.KillConn != nil)
	e := newEffects(t, s)
	key := uniqueKey("killedcommit")
	res, err := s.Store.Process(ctxT(t), req(group, key), func(ctx context.Context) error {
		if err := e.write(ctx, key); err != nil {
			return err
		}
		s.KillConn(t, dedup.Tx(ctx))
		return nil
	})
	if err == nil {
		t.Fatalf("Process acknowledged (%s) a commit on a killed connection", res.Outcome)
	}
	if !errors.Is(err, dedup.ErrUnavailable) {
		t.Fatalf("commit on a killed connection: %v, want an error wrapping dedup.ErrUnavailable", err)
	}
	e.expect(t, key, 0)
	res, err = settle(t, s.Store, req(group, key), e.fn(key))
	mustOutcome(t, res, err, dedup.Processed)
	e.expect(t, key, 1)
}

// testHandlerCannotEndTransaction: the handler may not commit the store's
// transaction early (which would make the dedup row durable before the
// handler's outcome is known) nor roll it back and report success.
func testHandlerCannotEndTransaction(t *testing.T, s Subject) {
	if s.Mode != dedup.Transactional {
		t.Skip("applies to transactional stores")
	}
	e := newEffects(t, s)
	for _, stmt := range []string{"COMMIT", "ROLLBACK"} {
		t.Run(stmt, func(t *testing.T) {
			key := uniqueKey("end-" + stmt)
			var stmtErr error
			res, err := s.Store.Process(ctxT(t), req(group, key), func(ctx context.Context) error {
				if err := e.write(ctx, key); err != nil {
					return err
				}
				stmtErr = dedup.Tx(ctx).Exec(stmt).Error
				return nil
			})
			if stmtErr == nil {
				t.Errorf("the handler's %s was accepted", stmt)
			}
			if err == nil {
				t.Fatalf("Process acknowledged (%s) after the handler's %s", res.Outcome, stmt)
			}
			e.expect(t, key, 0)
			res, err = settle(t, s.Store, req(group, key), e.fn(key))
			mustOutcome(t, res, err, dedup.Processed)
			e.expect(t, key, 1)
		})
	}
}

// testHandlerCannotCommitImplicitly: a statement that ends the store's
// transaction in disguise (COMMIT or ROLLBACK behind a comment, or on
// MySQL/MariaDB a statement that commits implicitly: DDL, LOCK TABLES,
// SET autocommit), or a COMMIT in a list of statements sent as one query,
// never makes part of a failed handler's work durable. The
// handler fails after it; nothing it wrote before or after is stored, and
// the redelivery runs it.
func testHandlerCannotCommitImplicitly(t *testing.T, s Subject) {
	if s.Mode != dedup.Transactional {
		t.Skip("applies to transactional stores")
	}
	e := newEffects(t, s)
	stmts := []struct{ name, sql string }{
		{"CommentedCommit", "/* app */ COMMIT"},
		{"LineCommentedRollback", "-- app\nROLLBACK"},
		{"CreateTable", "CREATE TABLE " + s.Prefix + "ddl_in_handler (k INT)"},
		{"CommentedCreateTable", "/* app */ CREATE TABLE " + s.Prefix + "ddl_in_handler2 (k INT)"},
		{"AlterTable", "ALTER TABLE " + e.table + " ADD COLUMN extra INT"},
		{"Truncate", "TRUNCATE TABLE " + s.Prefix + "no_such_table"},
		// A list of statements in one query: PostgreSQL's simple protocol
		// (pgx uses it for a query without arguments), SQLite and MySQL
		// with multiStatements=true run them all, COMMIT included.
		{"ListWithCommit", "SELECT 1; COMMIT"},
		{"ListWithCommentedCommit", "SELECT 1 /* ; */; -- app\n COMMIT"},
		{"ListWithCommitAfterLiteral", "SELECT 'a;b'; COMMIT"},
	}
	for _, st := range stmts {
		t.Run(st.name, func(t *testing.T) {
			key := uniqueKey("implicit-" + st.name)
			failure := errors.New("the handler failed after its statement")
			res, err := s.Store.Process(ctxT(t), req(group, key), func(ctx context.Context) error {
				if err := e.write(ctx, key); err != nil {
					return err
				}
				// Whatever the statement answers, the handler goes on and
				// then fails: its writes must all roll back.
				_ = dedup.Tx(ctx).Exec(st.sql).Error
				_ = e.write(ctx, key+":after")
				return failure
			})
			if err == nil {
				t.Fatalf("Process acknowledged (%s) a handler that failed", res.Outcome)
			}
			e.expect(t, key, 0)
			e.expect(t, key+":after", 0)
			res, err = settle(t, s.Store, req(group, key), e.fn(key))
			mustOutcome(t, res, err, dedup.Processed)
			e.expect(t, key, 1)
		})
	}
}
