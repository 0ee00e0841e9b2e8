package sqldedup

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"io"
	"math/rand/v2"
	"net"
	"strings"
	"syscall"
	"time"

	mysqldriver "github.com/go-sql-driver/mysql"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/idemq/idemq/dedup"
)

// maxConflictRetries bounds how many times a transaction that lost a
// conflict (a deadlock, a serialization failure, a lock wait timeout, a
// busy SQLite database) is run again in place before the conflict is
// returned, wrapped in dedup.ErrConflict.
const maxConflictRetries = 8

// isConflict reports whether err is a transient conflict between
// concurrent transactions, which rolled the transaction back (or, for a
// lock wait timeout, the statement) and which a new run may win: MySQL
// 1213 (deadlock) and 1205 (lock wait timeout), PostgreSQL 40001
// (serialization failure) and 40P01 (deadlock), SQLite BUSY and LOCKED.
func isConflict(err error) bool {
	if err == nil {
		return false
	}
	var pg *pgconn.PgError
	if errors.As(err, &pg) {
		return pg.Code == "40001" || pg.Code == "40P01"
	}
	var my *mysqldriver.MySQLError
	if errors.As(err, &my) {
		return my.Number == 1213 || my.Number == 1205
	}
	var lite interface{ Code() int } // github.com/glebarez/go-sqlite's *Error
	if errors.As(err, &lite) {
		c := lite.Code() & 0xff // primary result code
		return c == 5 || c == 6 // SQLITE_BUSY, SQLITE_LOCKED
	}
	return false
}

// isUnavailable reports whether err says that the database could not be
// reached, went away or cannot take writes: a refused, reset or closed
// connection, a network timeout, a server shutting down or refusing
// connections, a database that is read-only (a standby after a failover, a
// server or session set read-only, a file system remounted read-only) or
// out of disk or memory. None of these is the message's fault.
func isUnavailable(err error) bool {
	if err == nil {
		return false
	}
	var pg *pgconn.PgError
	if errors.As(err, &pg) {
		// Class 08: connection exception; 57P01-57P03: admin or crash
		// shutdown, cannot connect now; class 53: insufficient resources
		// (disk full, out of memory, too many connections); 25006:
		// read-only transaction (a standby, default_transaction_read_only).
		return strings.HasPrefix(pg.Code, "08") || pg.Code == "57P01" || pg.Code == "57P02" ||
			pg.Code == "57P03" || strings.HasPrefix(pg.Code, "53") || pg.Code == "25006"
	}
	var my *mysqldriver.MySQLError
	if errors.As(err, &my) {
		switch my.Number {
		case 1040, // too many connections
			1053,                   // server shutdown in progress
			1927,                   // MariaDB: connection was killed
			2002, 2003, 2006, 2013, // cannot connect, gone away, lost
			1021,             // disk full
			1290, 1792, 1836: // read-only server, transaction or mode
			return true
		}
		return false
	}
	var lite interface{ Code() int } // github.com/glebarez/go-sqlite's *Error
	if errors.As(err, &lite) {
		switch lite.Code() & 0xff { // primary result code
		case 8, 10, 13: // SQLITE_READONLY, SQLITE_IOERR, SQLITE_FULL
			return true
		}
	}
	var connect *pgconn.ConnectError
	var netErr net.Error
	switch {
	case errors.Is(err, driver.ErrBadConn),
		errors.Is(err, sql.ErrConnDone),
		errors.Is(err, mysqldriver.ErrInvalidConn),
		errors.Is(err, pgconn.ErrConnClosed),
		errors.Is(err, io.ErrUnexpectedEOF),
		errors.Is(err, io.EOF),
		errors.Is(err, syscall.ECONNREFUSED),
		errors.Is(err, syscall.ECONNRESET),
		errors.Is(err, syscall.ECONNABORTED),
		errors.Is(err, syscall.EPIPE),
		errors.As(err, &connect),
		errors.As(err, &netErr):
		return true
	}
	return false
}

// storeError wraps an error of the store's own database work in the kind of
// infrastructure failure it is: dedup.ErrConflict, dedup.ErrUnavailable,
// or unchanged. A context that ended is the caller's, not the store's.
func storeError(ctx context.Context, err error) error {
	switch {
	case err == nil:
		return nil
	case ctx.Err() != nil && (errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded)):
		return err
	case isConflict(err):
		return dedup.Conflict(err)
	case isUnavailable(err):
		return dedup.Unavailable(err)
	}
	return err
}

// conflictBackoff waits before run number try+1 (try counts from 0) of a
// transaction that lost a conflict: a jittered wait that grows from about
// 2 ms to at most about 250 ms, so that the twins that deadlocked do not
// collide again in lockstep. It returns the context's error if ctx ends
// first.
func conflictBackoff(ctx context.Context, try int) error {
	d := 2 * time.Millisecond << min(try, 7)
	d = d/2 + rand.N(d)
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
