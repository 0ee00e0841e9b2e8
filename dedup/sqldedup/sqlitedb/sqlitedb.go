// Package sqlitedb opens SQLite, idemq's embedded default database, the way
// idemq recommends: the pure-Go driver github.com/glebarez/sqlite with the
// settings of [sqldedup.SQLiteDSN] (WAL, synchronous=FULL, busy timeout,
// BEGIN IMMEDIATE), a pool of one connection, and the driver's memory
// allocator kept warm.
//
// It is a package of its own so that programs using sqldedup on PostgreSQL
// or MySQL only do not link the SQLite driver.
package sqlitedb

import (
	"fmt"
	"strings"
	"sync"

	"github.com/glebarez/sqlite"
	"gorm.io/gorm"
	"modernc.org/libc"
	"modernc.org/libc/sys/types"

	"github.com/idemq/idemq/dedup/sqldedup"
)

// DSN is [sqldedup.SQLiteDSN]: the driver DSN for the database file at path.
func DSN(path string) string { return sqldedup.SQLiteDSN(path) }

// Open opens the SQLite database file at path (creating it if needed) with
// the settings of [DSN], limits the pool to one connection (SQLite has one
// writer; writers then queue in Go rather than in SQLite's sleeping busy
// handler) and calls [KeepAllocatorWarm]. With one connection, a
// transactional handler must write through dedup.Tx(ctx) only: its
// transaction holds the connection, so a statement on the *gorm.DB itself
// would wait for it until the statement's context ends. cfg is passed to gorm; nil means gorm's
// defaults. path is a plain file name, not a file: URI, and must not
// contain '?'.
func Open(path string, cfg *gorm.Config) (*gorm.DB, error) {
	if path == "" {
		return nil, fmt.Errorf("sqlitedb: empty path")
	}
	if strings.ContainsRune(path, '?') || strings.HasPrefix(path, "file:") {
		return nil, fmt.Errorf("sqlitedb: path %q must be a plain file name (no '?', no file: URI)", path)
	}
	if cfg == nil {
		cfg = &gorm.Config{}
	}
	KeepAllocatorWarm()
	db, err := gorm.Open(sqlite.Open(DSN(path)), cfg)
	if err != nil {
		return nil, fmt.Errorf("sqlitedb: open %s: %w", path, err)
	}
	sqlDB, err := db.DB()
	if err != nil {
		return nil, fmt.Errorf("sqlitedb: %w", err)
	}
	sqlDB.SetMaxOpenConns(1)
	return db, nil
}

// Size classes of the driver's allocator (modernc.org/memory) that share
// pages: blocks of 2^4 up to 2^18 bytes. Larger blocks get pages of their
// own, which no warm-up can keep.
const (
	minClassLog = 4
	maxClassLog = 18
)

var warm sync.Once

// KeepAllocatorWarm allocates, once per process and for its lifetime, one
// small block in each size class of the allocator behind the pure-Go SQLite
// (the C library's malloc as modernc.org/libc runs it). That allocator maps
// a 1 MiB page per size class and unmaps it as soon as its last block is
// freed; the driver compiles every statement anew on each Exec and frees it
// after, so without a block that outlives the statement a busy connection
// maps, faults in and unmaps memory several times per transaction. Holding
// one block per class costs a few kilobytes of resident memory (about 15
// MiB of address space). On the red-packet workload of cmd/idemq-bench
// (8 goroutines, one connection) it measured 1.2x the transactions per
// second of the bare business transaction without it, and 1.3x behind
// transactional dedup, whose statements allocate more. It changes no
// behaviour and is safe to call from several goroutines.
func KeepAllocatorWarm() {
	warm.Do(func() {
		tls := libc.NewTLS()
		defer tls.Close()
		for log := minClassLog; log <= maxClassLog; log++ {
			libc.Xmalloc(tls, types.Size_t(1)<<log)
		}
	})
}
