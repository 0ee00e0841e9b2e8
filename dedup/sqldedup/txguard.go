package sqldedup

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"sync"

	"gorm.io/gorm"
)

// The handler of a transactional-mode delivery gets its transaction through
// a txGuard: the connection pool of the *gorm.DB that dedup.Tx returns. The
// guard records the first statement that fails, so that a handler that
// swallows the error and returns nil does not get its delivery acknowledged:
//
//   - On PostgreSQL a failed statement aborts the transaction; COMMIT then
//     answers ROLLBACK, and nothing (not even the dedup row) is stored.
//   - On MySQL/MariaDB and SQLite the transaction goes on without the failed
//     statement's effect, and a deadlock (MySQL 1213) or some SQLite errors
//     roll the whole transaction back, after which further statements would
//     run outside any transaction, each committed on its own.
//
// The guard makes every database behave like PostgreSQL: after a failed
// statement nothing reaches the server until the handler rolls back to a
// savepoint set before it (gorm's nested Transaction does that when its
// function returns an error), and a transaction with an unrecovered failure
// is rolled back by the store and reported as an error, never committed.
// The handler cannot end the transaction itself: COMMIT, ROLLBACK and BEGIN
// statements (behind leading comments too), and gorm's Commit and
// Rollback, are refused. On MySQL/MariaDB so are the statements that
// commit the transaction implicitly (see implicitCommit).
type txGuard struct {
	pool gorm.ConnPool // *sql.Tx, *gorm.PreparedStmtTX or *pinnedTx
	// mysql refuses the statements that MySQL/MariaDB run only after
	// committing the open transaction (stmtImplicitCommit).
	mysql bool
	// dialect is the store's, for reading a list of statements
	// (splitStatements).
	dialect string

	mu         sync.Mutex
	failed     error    // first statement failure not undone by ROLLBACK TO
	savepoints []string // names set and not yet released, oldest first
}

var (
	_ gorm.ConnPool    = (*txGuard)(nil)
	_ gorm.TxCommitter = (*txGuard)(nil)
)

// errHandlerEndedTx is recorded when the handler tries to end or restart
// the store's transaction.
var errHandlerEndedTx = errors.New("sqldedup: the handler may not commit, roll back or begin the store's transaction (use a savepoint)")

// errControlInList is recorded when the handler sends a list of statements
// that holds a transaction or savepoint statement.
var errControlInList = errors.New("sqldedup: a list of statements sent as one query may not hold COMMIT, ROLLBACK, BEGIN or savepoint statements " +
	"(nor, on MySQL/MariaDB, one that commits implicitly); the handler may not end the store's transaction, and savepoints go on their own")

// errImplicitCommit is recorded when the handler sends, on MySQL/MariaDB, a
// statement that would commit the store's transaction before running.
var errImplicitCommit = errors.New("sqldedup: on MySQL/MariaDB this statement commits the store's transaction implicitly " +
	"(DDL, LOCK/UNLOCK TABLES, SET autocommit, administrative statements); run it outside the handler")

// newTxGuard returns a guard over pool; dialect is the store's.
func newTxGuard(pool gorm.ConnPool, dialect string) *txGuard {
	return &txGuard{pool: pool, mysql: dialect == "mysql", dialect: dialect}
}

// failure returns the first statement failure the handler did not undo.
func (g *txGuard) failure() error {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.failed
}

// owns reports whether err is (or wraps) the failure recorded on this
// transaction.
func (g *txGuard) owns(err error) bool {
	f := g.failure()
	return f != nil && err != nil && errors.Is(err, f)
}

// Commit refuses: the store commits the handler's transaction. It is
// here so that gorm sees a transaction and turns the handler's own
// Transaction calls into savepoints.
func (g *txGuard) Commit() error { return g.refuse() }

// Rollback refuses, like Commit; return an error from the handler to roll
// the transaction back.
func (g *txGuard) Rollback() error { return g.refuse() }

func (g *txGuard) refuse() error {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.failed == nil {
		g.failed = errHandlerEndedTx
	}
	return errHandlerEndedTx
}

// stmtKind classifies a statement by its leading keywords.
type stmtKind int

const (
	stmtOther stmtKind = iota
	stmtSavepoint
	stmtRollbackTo
	stmtRelease
	stmtEndTx // COMMIT, ROLLBACK, BEGIN, START TRANSACTION, END
	// stmtImplicitCommit is a statement that MySQL/MariaDB run only after
	// committing the open transaction (DDL, LOCK TABLES, ...); elsewhere
	// it is an ordinary statement.
	stmtImplicitCommit
	// stmtControlInList is a list of statements that holds one that is not
	// an ordinary statement (see txGuard.controlsTxInList).
	stmtControlInList
)

// skipComments returns q without the whitespace and comments (/* */, --
// and #) that lead it. A MySQL executable comment (/*! ... */) is not a
// comment: its text runs, so it is kept with its opening cut off.
func skipComments(q string) string {
	for {
		q = strings.TrimLeft(q, " \t\r\n(")
		switch {
		case strings.HasPrefix(q, "/*!"):
			q = strings.TrimLeft(q[3:], "0123456789")
		case strings.HasPrefix(q, "/*"):
			i := strings.Index(q[2:], "*/")
			if i < 0 {
				return ""
			}
			q = q[2+i+2:]
		case strings.HasPrefix(q, "--"), strings.HasPrefix(q, "#"):
			i := strings.IndexByte(q, '\n')
			if i < 0 {
				return ""
			}
			q = q[i+1:]
		default:
			return q
		}
	}
}

// implicitCommit reports whether the statement whose upper-case words are
// words is one that MySQL/MariaDB run only after committing the open
// transaction ("Statements That Cause an Implicit Commit" in their
// manuals): DDL other than CREATE/DROP TEMPORARY TABLE, account and
// privilege statements, LOCK and UNLOCK TABLES, SET autocommit, and the
// administrative and replication statements.
func implicitCommit(words []string) bool {
	word := func(i int) string {
		if i < len(words) {
			return words[i]
		}
		return ""
	}
	switch word(0) {
	case "CREATE":
		if word(1) == "OR" && word(2) == "REPLACE" {
			return word(3) != "TEMPORARY"
		}
		return word(1) != "TEMPORARY"
	case "DROP":
		return word(1) != "TEMPORARY"
	case "ALTER", "RENAME", "TRUNCATE", "LOCK", "UNLOCK", "GRANT", "REVOKE",
		"ANALYZE", "CACHE", "CHECK", "FLUSH", "OPTIMIZE", "REPAIR", "RESET",
		"INSTALL", "UNINSTALL", "CHANGE", "STOP", "START":
		return true
	case "LOAD":
		return word(1) == "INDEX"
	case "SET":
		if word(1) == "PASSWORD" {
			return true
		}
		for _, w := range words[1:] {
			if strings.Contains(w, "AUTOCOMMIT") {
				return true
			}
		}
	}
	return false
}

// classify returns the kind of query and, for savepoint statements, the
// savepoint's name.
func classify(query string) (stmtKind, string) {
	q := strings.TrimSpace(query)
	if q != "" && (q[0] == '/' || q[0] == '-' || q[0] == '#' || q[0] == '(') {
		q = skipComments(q)
	}
	// The hot path: most statements start with none of the keywords below,
	// and are told apart without allocating.
	word := q
	if i := strings.IndexAny(q, " \t\r\n;"); i >= 0 {
		word = q[:i]
	}
	switch {
	case strings.EqualFold(word, "SAVEPOINT"), strings.EqualFold(word, "RELEASE"),
		strings.EqualFold(word, "ROLLBACK"), strings.EqualFold(word, "COMMIT"),
		strings.EqualFold(word, "BEGIN"), strings.EqualFold(word, "END"),
		strings.EqualFold(word, "ABORT"), strings.EqualFold(word, "START"),
		strings.EqualFold(word, "PREPARE"), strings.EqualFold(word, "XA"):
	case mayCommitImplicitly(word):
	default:
		return stmtOther, ""
	}
	if len(q) > 240 {
		q = q[:240]
	}
	words := strings.Fields(strings.ToUpper(strings.TrimRight(q, "; \t\r\n")))
	if len(words) == 0 {
		return stmtOther, ""
	}
	name := func(i int) string {
		if i < len(words) {
			return strings.Trim(words[i], "\"`;")
		}
		return ""
	}
	switch words[0] {
	case "SAVEPOINT":
		return stmtSavepoint, name(1)
	case "RELEASE":
		if name(1) == "SAVEPOINT" {
			return stmtRelease, name(2)
		}
		return stmtRelease, name(1)
	case "ROLLBACK":
		if len(words) >= 3 && words[1] == "TO" {
			if words[2] == "SAVEPOINT" {
				return stmtRollbackTo, name(3)
			}
			return stmtRollbackTo, name(2)
		}
		if len(words) >= 4 && words[1] == "TRANSACTION" && words[2] == "TO" { // SQLite
			if words[3] == "SAVEPOINT" {
				return stmtRollbackTo, name(4)
			}
			return stmtRollbackTo, name(3)
		}
		return stmtEndTx, ""
	case "COMMIT", "BEGIN", "END", "ABORT":
		return stmtEndTx, ""
	case "START":
		if name(1) == "TRANSACTION" {
			return stmtEndTx, ""
		}
	case "PREPARE":
		// PostgreSQL's two-phase commit: PREPARE TRANSACTION ends the
		// session's transaction (with max_prepared_transactions set), and
		// the store's COMMIT after it would answer success for nothing.
		if name(1) == "TRANSACTION" {
			return stmtEndTx, ""
		}
	case "XA":
		// MySQL/MariaDB's two-phase commit statements.
		return stmtEndTx, ""
	}
	if implicitCommit(words) {
		return stmtImplicitCommit, ""
	}
	return stmtOther, ""
}

// mayCommitImplicitly reports whether a statement whose first word is word
// may be one implicitCommit accepts, without allocating.
func mayCommitImplicitly(word string) bool {
	for _, w := range [...]string{"CREATE", "DROP", "ALTER", "RENAME", "TRUNCATE", "LOCK", "UNLOCK",
		"GRANT", "REVOKE", "ANALYZE", "CACHE", "CHECK", "FLUSH", "OPTIMIZE", "REPAIR", "RESET",
		"INSTALL", "UNINSTALL", "CHANGE", "STOP", "LOAD", "SET"} {
		if strings.EqualFold(word, w) {
			return true
		}
	}
	return false
}

// controlsTxInList reports whether query is a list of statements (which
// PostgreSQL's simple protocol, SQLite and MySQL/MariaDB with
// multiStatements=true run one after another) that holds a statement
// other than an ordinary one: a COMMIT there would commit the store's
// transaction behind the guard's back, and a savepoint statement would go
// unseen by it.
func (g *txGuard) controlsTxInList(query string) bool {
	stmts := splitStatements(query, g.dialect)
	if len(stmts) < 2 {
		return false
	}
	for _, st := range stmts {
		switch k, _ := classify(st); {
		case k == stmtOther, k == stmtImplicitCommit && !g.mysql:
		default:
			return true
		}
	}
	return false
}

// admit decides whether query may run: it returns an error for a statement
// refused because an earlier one failed, or for one that would end the
// transaction.
func (g *txGuard) admit(query string) (stmtKind, string, error) {
	kind, name := classify(query)
	if strings.IndexByte(query, ';') >= 0 && g.controlsTxInList(query) {
		kind = stmtControlInList
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if kind == stmtControlInList {
		if g.failed == nil {
			g.failed = errControlInList
		}
		return kind, name, errControlInList
	}
	if kind == stmtEndTx {
		if g.failed == nil {
			g.failed = errHandlerEndedTx
		}
		return kind, name, errHandlerEndedTx
	}
	if kind == stmtImplicitCommit && g.mysql {
		if g.failed == nil {
			g.failed = errImplicitCommit
		}
		return kind, name, errImplicitCommit
	}
	if g.failed != nil && kind != stmtRollbackTo {
		return kind, name, fmt.Errorf("%w: an earlier statement failed (%v); only ROLLBACK TO SAVEPOINT may run now",
			ErrStatementFailed, g.failed)
	}
	return kind, name, nil
}

// done records the result of a statement that ran.
func (g *txGuard) done(kind stmtKind, name string, err error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if err != nil {
		if g.failed == nil {
			g.failed = err
		}
		return
	}
	switch kind {
	case stmtSavepoint:
		g.savepoints = append(g.savepoints, name)
	case stmtRollbackTo:
		// The savepoint stays; the ones set after it are gone, and so is
		// every failure since (none was admitted before it).
		for i := len(g.savepoints) - 1; i >= 0; i-- {
			if g.savepoints[i] == name {
				g.savepoints = g.savepoints[:i+1]
				g.failed = nil
				return
			}
		}
		// A savepoint the guard did not see set (it cannot undo a failure
		// it cannot place): keep the failure.
	case stmtRelease:
		for i := len(g.savepoints) - 1; i >= 0; i-- {
			if g.savepoints[i] == name {
				g.savepoints = g.savepoints[:i]
				return
			}
		}
	}
}

// PrepareContext prepares a statement in the transaction. Statements run
// through the returned *sql.Stmt bypass the guard; gorm does not use it
// that way.
func (g *txGuard) PrepareContext(ctx context.Context, query string) (*sql.Stmt, error) {
	if _, _, err := g.admit(query); err != nil {
		return nil, err
	}
	return g.pool.PrepareContext(ctx, query)
}

// ExecContext runs a statement unless an earlier one failed.
func (g *txGuard) ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error) {
	kind, name, err := g.admit(query)
	if err != nil {
		return nil, err
	}
	res, err := g.pool.ExecContext(ctx, query, args...)
	g.done(kind, name, err)
	return res, err
}

// QueryContext runs a query unless an earlier statement failed. An error
// met while reading the rows is not seen by the guard; on PostgreSQL it
// aborts the transaction and the commit check catches it.
func (g *txGuard) QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error) {
	kind, name, err := g.admit(query)
	if err != nil {
		return nil, err
	}
	rows, err := g.pool.QueryContext(ctx, query, args...)
	g.done(kind, name, err)
	return rows, err
}

// QueryRowContext runs a query unless an earlier statement failed; a
// refused query's row reports context.Canceled from Scan.
func (g *txGuard) QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row {
	kind, name, err := g.admit(query)
	if err != nil {
		// *sql.Row cannot be built with an error: ask the pool with a
		// context that has already ended, so nothing reaches the server.
		cctx, cancel := context.WithCancel(ctx)
		cancel()
		return g.pool.QueryRowContext(cctx, query, args...)
	}
	row := g.pool.QueryRowContext(ctx, query, args...)
	g.done(kind, name, row.Err())
	return row
}
