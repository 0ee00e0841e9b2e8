// Package migrate keeps idemq's tables at the schema the code expects, with
// numbered steps per component and dialect.
//
// A component (dedup, outbox, producer, admin) owns the files
// steps/<component>/NNNN_<name>.<dialect>.sql, one per dialect ("sqlite",
// "postgres", "mysql") for every version NNNN. {{prefix}} in a file is
// replaced by the validated table prefix. Adding a step means dropping in
// the three files of the next number; nothing else changes.
//
// Run applies, under a lock, the steps of the named components that the
// table <prefix>schema_migrations does not list yet, in version order, and
// records each one there. Step 0001 of every component is the schema as it
// was first shipped, written with CREATE ... IF NOT EXISTS, so a database
// whose tables were created before versioning is adopted: the step finds
// the tables, creates nothing, and is recorded.
//
// The lock makes two processes that migrate at once safe: PostgreSQL takes
// a session advisory lock and runs each step and its record in one
// transaction; MySQL and MariaDB take a named lock (GET_LOCK) and run each
// step before its record (their DDL commits implicitly, so a step that
// failed half-way is not recorded and its statements must be safe to run
// again); SQLite runs the whole migration in one BEGIN IMMEDIATE
// transaction, which excludes other writers.
package migrate

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"embed"
	"encoding/hex"
	"errors"
	"fmt"
	"hash/fnv"
	"io/fs"
	"path"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	"gorm.io/gorm"

	"github.com/idemq/idemq/internal/sqlscript"
	"github.com/idemq/idemq/internal/tableprefix"
)

//go:embed steps
var stepsFS embed.FS

// Components are the components with steps, in the order Run applies them
// when asked for all.
var Components = []string{"dedup", "outbox", "producer", "admin"}

// Dialects are the supported dialect names, as gorm's Dialector.Name
// reports them.
var Dialects = []string{"sqlite", "postgres", "mysql"}

// Errors returned by the package.
var (
	// ErrUnknownComponent is returned for a component without steps.
	ErrUnknownComponent = errors.New("migrate: unknown component")
	// ErrUnsupportedDialect is returned for a dialect other than sqlite,
	// postgres or mysql.
	ErrUnsupportedDialect = errors.New("migrate: unsupported database dialect")
	// ErrBadPrefix is returned for a table prefix that is not
	// ^[a-z][a-z0-9_]{0,30}$.
	ErrBadPrefix = errors.New("migrate: invalid table prefix")
)

var (
	fileName = regexp.MustCompile(`^([0-9]{4})_([a-z0-9_]+)\.(sqlite|postgres|mysql)\.sql$`)
)

// Step is one numbered step of a component in one dialect.
type Step struct {
	// Component names the component ("dedup", ...).
	Component string
	// Version is the step's number, from 1.
	Version int
	// Name is the part of the file name after the number.
	Name string
	// SQL is the file's text, with {{prefix}} not yet replaced.
	SQL string
}

// Checksum is the hex SHA-256 of the step's SQL, recorded when it is
// applied so that a step edited after it was applied can be reported.
func (s Step) Checksum() string {
	sum := sha256.Sum256([]byte(s.SQL))
	return hex.EncodeToString(sum[:])
}

// Statements returns the step's statements with prefix in place.
func (s Step) Statements(prefix string) []string {
	return sqlscript.Split(strings.ReplaceAll(s.SQL, "{{prefix}}", prefix))
}

func check(dialect, prefix string) error {
	if !tableprefix.Valid(prefix) {
		return fmt.Errorf("%w: %q (want ^[a-z][a-z0-9_]{0,30}$)", ErrBadPrefix, prefix)
	}
	for _, d := range Dialects {
		if d == dialect {
			return nil
		}
	}
	return fmt.Errorf("%w: %q", ErrUnsupportedDialect, dialect)
}

// Steps returns the steps of component for dialect, in version order. It
// fails if a version lacks the file of some dialect or is not numbered
// consecutively from 1.
func Steps(component, dialect string) ([]Step, error) {
	return embedded.steps(component, dialect)
}

// source is a tree of step files: root/<component>/NNNN_<name>.<dialect>.sql.
type source struct {
	fsys fs.FS
	root string
}

var embedded = source{stepsFS, "steps"}

func (src source) steps(component, dialect string) ([]Step, error) {
	return stepsFrom(src.fsys, src.root, component, dialect)
}

func stepsFrom(fsys fs.FS, root, component, dialect string) ([]Step, error) {
	if err := check(dialect, "idemq_"); err != nil {
		return nil, err
	}
	entries, err := fs.ReadDir(fsys, path.Join(root, component))
	if err != nil || component == "" {
		return nil, fmt.Errorf("%w: %q", ErrUnknownComponent, component)
	}
	seen := map[int]map[string]string{} // version -> dialect -> file
	names := map[int]string{}
	for _, e := range entries {
		m := fileName.FindStringSubmatch(e.Name())
		if m == nil {
			return nil, fmt.Errorf("migrate: %s/%s: want NNNN_name.<sqlite|postgres|mysql>.sql", component, e.Name())
		}
		v, _ := strconv.Atoi(m[1])
		if n, ok := names[v]; ok && n != m[2] {
			return nil, fmt.Errorf("migrate: %s: version %04d has two names, %q and %q", component, v, n, m[2])
		}
		names[v] = m[2]
		if seen[v] == nil {
			seen[v] = map[string]string{}
		}
		seen[v][m[3]] = e.Name()
	}
	versions := make([]int, 0, len(seen))
	for v := range seen {
		versions = append(versions, v)
	}
	sort.Ints(versions)
	out := make([]Step, 0, len(versions))
	for i, v := range versions {
		if v != i+1 {
			return nil, fmt.Errorf("migrate: %s: steps must be numbered 0001, 0002, ... without gaps; found %04d after %d steps", component, v, i)
		}
		for _, d := range Dialects {
			if seen[v][d] == "" {
				return nil, fmt.Errorf("migrate: %s: step %04d_%s has no %s file", component, v, names[v], d)
			}
		}
		b, err := fs.ReadFile(fsys, path.Join(root, component, seen[v][dialect]))
		if err != nil {
			return nil, fmt.Errorf("migrate: %w", err)
		}
		out = append(out, Step{Component: component, Version: v, Name: names[v], SQL: string(b)})
	}
	return out, nil
}

// Schema returns the SQL of every step of component for dialect, in order,
// with prefix in place: the script that builds the component's current
// schema on an empty database.
func Schema(component, dialect, prefix string) (string, error) {
	if err := check(dialect, prefix); err != nil {
		return "", err
	}
	steps, err := embedded.steps(component, dialect)
	if err != nil {
		return "", err
	}
	var b strings.Builder
	for i, s := range steps {
		if i > 0 {
			b.WriteString("\n")
		}
		b.WriteString(strings.ReplaceAll(s.SQL, "{{prefix}}", prefix))
	}
	return b.String(), nil
}

// Applied is one row of <prefix>schema_migrations.
type Applied struct {
	Component string    `json:"component"`
	Version   int       `json:"version"`
	Name      string    `json:"name"`
	Checksum  string    `json:"checksum"`
	AppliedAt time.Time `json:"applied_at"`
}

// State is the migration state of one step, for status listings.
type State struct {
	Component string `json:"component"`
	Version   int    `json:"version"`
	Name      string `json:"name"`
	// Applied is set for a step recorded as applied.
	Applied *time.Time `json:"applied_at,omitempty"`
	// Modified is set for an applied step whose file changed since.
	Modified bool `json:"modified,omitempty"`
	// Unknown is set for a recorded step this program has no file for (the
	// database was migrated by a newer version).
	Unknown bool `json:"unknown,omitempty"`
}

// Table returns the name of the migrations table for prefix.
func Table(prefix string) string { return prefix + "schema_migrations" }

func tableSQL(dialect, prefix string) string {
	t := Table(prefix)
	switch dialect {
	case "mysql":
		return "CREATE TABLE IF NOT EXISTS " + t + ` (
  component  VARCHAR(64)  NOT NULL,
  version    INT          NOT NULL,
  name       VARCHAR(191) NOT NULL,
  checksum   VARCHAR(64)  NOT NULL,
  applied_at BIGINT       NOT NULL,
  PRIMARY KEY (component, version)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4`
	default:
		return "CREATE TABLE IF NOT EXISTS " + t + ` (
  component  VARCHAR(64)  NOT NULL,
  version    INTEGER      NOT NULL,
  name       VARCHAR(191) NOT NULL,
  checksum   VARCHAR(64)  NOT NULL,
  applied_at BIGINT       NOT NULL,
  PRIMARY KEY (component, version)
)`
	}
}

// Config tunes Run.
type Config struct {
	// LockTimeout bounds the wait for another process's migration.
	// Defaults to 2 minutes.
	LockTimeout time.Duration
	// DryRun reports the steps that would run without running them.
	DryRun bool
}

// Run brings the tables of components (all of [Components] when none is
// named) with the given prefix up to date on db, and returns the steps it
// applied (or, with DryRun, would apply). It is safe to call from several
// processes at once: they serialise on a lock, and a step is applied once.
func Run(ctx context.Context, db *gorm.DB, prefix string, opts Config, components ...string) ([]Step, error) {
	return embedded.run(ctx, db, prefix, opts, components...)
}

func (src source) run(ctx context.Context, db *gorm.DB, prefix string, opts Config, components ...string) ([]Step, error) {
	if db == nil {
		return nil, errors.New("migrate: nil database")
	}
	dialect := db.Dialector.Name()
	if err := check(dialect, prefix); err != nil {
		return nil, err
	}
	if len(components) == 0 {
		components = Components
	}
	plan := map[string][]Step{}
	for _, c := range components {
		steps, err := src.steps(c, dialect)
		if err != nil {
			return nil, err
		}
		plan[c] = steps
	}
	if opts.LockTimeout <= 0 {
		opts.LockTimeout = 2 * time.Minute
	}
	sqlDB, err := db.DB()
	if err != nil {
		return nil, fmt.Errorf("migrate: %w", err)
	}
	conn, err := sqlDB.Conn(ctx)
	if err != nil {
		return nil, fmt.Errorf("migrate: connect: %w", err)
	}
	defer conn.Close()
	r := &runner{conn: conn, dialect: dialect, prefix: prefix}
	unlock, err := r.lock(ctx, opts.LockTimeout)
	if err != nil {
		return nil, err
	}
	defer unlock()
	if err := r.exec(ctx, r.conn, tableSQL(dialect, prefix)); err != nil {
		return nil, fmt.Errorf("migrate: create %s: %w", Table(prefix), err)
	}
	var ran []Step
	for _, c := range components {
		done, err := r.applied(ctx, c)
		if err != nil {
			return ran, err
		}
		for _, s := range plan[c] {
			if _, ok := done[s.Version]; ok {
				continue
			}
			if !opts.DryRun {
				if err := r.apply(ctx, s); err != nil {
					return ran, err
				}
			}
			ran = append(ran, s)
		}
	}
	if err := r.commit(); err != nil {
		return nil, err
	}
	return ran, nil
}

// Status lists every step of components (all when none is named) and
// whether it is applied on db, plus recorded steps this program does not
// know. A database without the migrations table has nothing applied.
func Status(ctx context.Context, db *gorm.DB, prefix string, components ...string) ([]State, error) {
	return embedded.status(ctx, db, prefix, components...)
}

func (src source) status(ctx context.Context, db *gorm.DB, prefix string, components ...string) ([]State, error) {
	dialect := db.Dialector.Name()
	if err := check(dialect, prefix); err != nil {
		return nil, err
	}
	if len(components) == 0 {
		components = Components
	}
	var rows []Applied
	if db.WithContext(ctx).Migrator().HasTable(Table(prefix)) {
		var raw []struct {
			Component string
			Version   int
			Name      string
			Checksum  string
			AppliedAt int64
		}
		if err := db.WithContext(ctx).Raw("SELECT component, version, name, checksum, applied_at FROM " + Table(prefix) +
			" ORDER BY component, version").Scan(&raw).Error; err != nil {
			return nil, fmt.Errorf("migrate: status: %w", err)
		}
		for _, x := range raw {
			rows = append(rows, Applied{x.Component, x.Version, x.Name, x.Checksum, time.UnixMilli(x.AppliedAt).UTC()})
		}
	}
	var out []State
	for _, c := range components {
		steps, err := src.steps(c, dialect)
		if err != nil {
			return nil, err
		}
		known := map[int]Step{}
		for _, s := range steps {
			known[s.Version] = s
			st := State{Component: c, Version: s.Version, Name: s.Name}
			for _, a := range rows {
				if a.Component == c && a.Version == s.Version {
					t := a.AppliedAt
					st.Applied = &t
					st.Modified = a.Checksum != s.Checksum()
				}
			}
			out = append(out, st)
		}
		for _, a := range rows {
			if _, ok := known[a.Version]; a.Component == c && !ok {
				t := a.AppliedAt
				out = append(out, State{Component: c, Version: a.Version, Name: a.Name, Applied: &t, Unknown: true})
			}
		}
	}
	return out, nil
}

// runner runs one migration on one connection.
type runner struct {
	conn    *sql.Conn
	dialect string
	prefix  string
	// sqliteTx is set while SQLite's whole-migration transaction is open.
	sqliteTx bool
}

type execer interface {
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
}

func (r *runner) exec(ctx context.Context, e execer, q string, args ...any) error {
	_, err := e.ExecContext(ctx, r.bind(q), args...)
	return err
}

// bind rewrites ? placeholders for PostgreSQL. The package's own queries
// have no '?' inside literals.
func (r *runner) bind(q string) string {
	if r.dialect != "postgres" || !strings.Contains(q, "?") {
		return q
	}
	var b strings.Builder
	n := 0
	for _, c := range q {
		if c == '?' {
			n++
			b.WriteString("$" + strconv.Itoa(n))
			continue
		}
		b.WriteRune(c)
	}
	return b.String()
}

func (r *runner) lockName() string { return "idemq_migrate:" + r.prefix }

func (r *runner) lockKey() int64 {
	h := fnv.New64a()
	h.Write([]byte(r.lockName()))
	return int64(h.Sum64())
}

// lock takes the migration lock and returns its release.
func (r *runner) lock(ctx context.Context, timeout time.Duration) (func(), error) {
	lctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	switch r.dialect {
	case "postgres":
		if _, err := r.conn.ExecContext(lctx, sqlscript.Numbered("SELECT pg_advisory_lock(?)"), r.lockKey()); err != nil {
			return nil, fmt.Errorf("migrate: lock: %w", err)
		}
		return func() {
			uctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
			defer cancel()
			_, _ = r.conn.ExecContext(uctx, sqlscript.Numbered("SELECT pg_advisory_unlock(?)"), r.lockKey())
		}, nil
	case "mysql":
		secs := max(int(timeout/time.Second), 1)
		var got sql.NullInt64
		if err := r.conn.QueryRowContext(lctx, "SELECT GET_LOCK(?, ?)", r.lockName(), secs).Scan(&got); err != nil {
			return nil, fmt.Errorf("migrate: lock: %w", err)
		}
		if got.Int64 != 1 {
			return nil, fmt.Errorf("migrate: lock %q: another migration held it for %s", r.lockName(), timeout)
		}
		return func() {
			uctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
			defer cancel()
			_, _ = r.conn.ExecContext(uctx, "SELECT RELEASE_LOCK(?)", r.lockName())
		}, nil
	default: // sqlite
		deadline := time.Now().Add(timeout)
		for {
			_, err := r.conn.ExecContext(lctx, "BEGIN IMMEDIATE")
			if err == nil {
				break
			}
			if !strings.Contains(strings.ToLower(err.Error()), "busy") && !strings.Contains(strings.ToLower(err.Error()), "locked") || time.Now().After(deadline) {
				return nil, fmt.Errorf("migrate: lock: %w", err)
			}
			select {
			case <-lctx.Done():
				return nil, fmt.Errorf("migrate: lock: %w", lctx.Err())
			case <-time.After(50 * time.Millisecond):
			}
		}
		r.sqliteTx = true
		return func() {
			if r.sqliteTx {
				uctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
				defer cancel()
				_, _ = r.conn.ExecContext(uctx, "ROLLBACK")
				r.sqliteTx = false
			}
		}, nil
	}
}

// commit ends SQLite's whole-migration transaction.
func (r *runner) commit() error {
	if !r.sqliteTx {
		return nil
	}
	if _, err := r.conn.ExecContext(context.Background(), "COMMIT"); err != nil {
		return fmt.Errorf("migrate: commit: %w", err)
	}
	r.sqliteTx = false
	return nil
}

func (r *runner) applied(ctx context.Context, component string) (map[int]bool, error) {
	rows, err := r.conn.QueryContext(ctx, r.bind("SELECT version FROM "+Table(r.prefix)+" WHERE component = ?"), component)
	if err != nil {
		return nil, fmt.Errorf("migrate: read %s: %w", Table(r.prefix), err)
	}
	defer rows.Close()
	out := map[int]bool{}
	for rows.Next() {
		var v int
		if err := rows.Scan(&v); err != nil {
			return nil, fmt.Errorf("migrate: read %s: %w", Table(r.prefix), err)
		}
		out[v] = true
	}
	return out, rows.Err()
}

func (r *runner) apply(ctx context.Context, s Step) error {
	record := "INSERT INTO " + Table(r.prefix) + " (component, version, name, checksum, applied_at) VALUES (?, ?, ?, ?, ?)"
	args := []any{s.Component, s.Version, s.Name, s.Checksum(), time.Now().UnixMilli()}
	fail := func(err error) error {
		return fmt.Errorf("migrate: %s step %04d_%s: %w", s.Component, s.Version, s.Name, err)
	}
	switch r.dialect {
	case "postgres":
		tx, err := r.conn.BeginTx(ctx, nil)
		if err != nil {
			return fail(err)
		}
		for _, stmt := range s.Statements(r.prefix) {
			if _, err := tx.ExecContext(ctx, stmt); err != nil {
				_ = tx.Rollback()
				return fail(err)
			}
		}
		if err := r.exec(ctx, tx, record, args...); err != nil {
			_ = tx.Rollback()
			return fail(err)
		}
		if err := tx.Commit(); err != nil {
			return fail(err)
		}
		return nil
	default: // mysql: DDL commits implicitly; sqlite: inside the migration's transaction
		for _, stmt := range s.Statements(r.prefix) {
			if _, err := r.conn.ExecContext(ctx, stmt); err != nil {
				return fail(err)
			}
		}
		if err := r.exec(ctx, r.conn, record, args...); err != nil {
			return fail(err)
		}
		return nil
	}
}
