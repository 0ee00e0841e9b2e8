package outbox

import (
	"fmt"
	"time"

	"github.com/idemq/idemq/internal/migrate"
	"github.com/idemq/idemq/internal/tableprefix"
)

// Dialect names, as gorm's Dialector.Name reports them.
const (
	DialectSQLite   = "sqlite"
	DialectPostgres = "postgres"
	DialectMySQL    = "mysql"
)

// ValidatePrefix reports whether prefix can be used as a table prefix: a
// lower-case letter followed by at most 30 lower-case letters, digits or
// underscores.
func ValidatePrefix(prefix string) error {
	if !tableprefix.Valid(prefix) {
		return fmt.Errorf("%w: %q does not match %s", ErrInvalidPrefix, prefix, tableprefix.Pattern)
	}
	return nil
}

// Schema returns the SQL that creates the outbox table and its indexes for
// dialect ("sqlite", "postgres" or "mysql") with the given table prefix:
// every numbered step of the "outbox" component in order (the files
// internal/migrate/steps/outbox/NNNN_<name>.<dialect>.sql that
// [Outbox.Migrate] applies), for migration tools.
func Schema(dialect, prefix string) (string, error) {
	if err := ValidatePrefix(prefix); err != nil {
		return "", err
	}
	switch dialect {
	case DialectSQLite, DialectPostgres, DialectMySQL:
	default:
		return "", fmt.Errorf("%w: %q", ErrUnsupportedDialect, dialect)
	}
	s, err := migrate.Schema("outbox", dialect, prefix)
	if err != nil {
		return "", fmt.Errorf("outbox: read schema: %w", err)
	}
	return s, nil
}

// dialect holds the SQL that differs between databases. Every time
// comparison uses the database clock so that relays on hosts with skewed
// clocks agree.
type dialect struct {
	name string
}

// now is the database's current time, in the column's representation.
func (d dialect) now() string {
	switch d.name {
	case DialectPostgres:
		return "now()"
	case DialectMySQL:
		return "UTC_TIMESTAMP(6)"
	default:
		return "strftime('%Y-%m-%d %H:%M:%f', 'now')"
	}
}

// plus returns an expression for now + dur, and the argument it binds.
func (d dialect) plus(dur time.Duration) (string, any) {
	switch d.name {
	case DialectPostgres:
		return "now() + CAST(? AS double precision) * interval '1 microsecond'", dur.Microseconds()
	case DialectMySQL:
		return "UTC_TIMESTAMP(6) + INTERVAL ? MICROSECOND", dur.Microseconds()
	default:
		return "strftime('%Y-%m-%d %H:%M:%f', 'now', ?)", fmt.Sprintf("%+.3f seconds", dur.Seconds())
	}
}

// dbTime scans a timestamp from any supported driver: time.Time, or text
// when the driver does not parse it (SQLite expressions, MySQL without
// parseTime). A MySQL DATETIME holds UTC wall-clock time whatever the
// connection's loc setting, so its wall clock is read as UTC.
type dbTime struct {
	mysql bool
	Time  time.Time
	Valid bool
}

var timeLayouts = []string{
	"2006-01-02 15:04:05.999999999",
	"2006-01-02T15:04:05.999999999",
	"2006-01-02 15:04:05.999999999Z07:00",
	time.RFC3339Nano,
	"2006-01-02 15:04:05.999999999-07:00",
}

// Scan implements sql.Scanner.
func (t *dbTime) Scan(v any) error {
	t.Valid = false
	switch x := v.(type) {
	case nil:
		return nil
	case time.Time:
		if t.mysql {
			x = time.Date(x.Year(), x.Month(), x.Day(), x.Hour(), x.Minute(), x.Second(), x.Nanosecond(), time.UTC)
		}
		t.Time, t.Valid = x.UTC(), true
		return nil
	case []byte:
		return t.parse(string(x))
	case string:
		return t.parse(x)
	}
	return fmt.Errorf("outbox: cannot scan %T into a timestamp", v)
}

func (t *dbTime) parse(s string) error {
	for _, layout := range timeLayouts {
		if p, err := time.ParseInLocation(layout, s, time.UTC); err == nil {
			t.Time, t.Valid = p.UTC(), true
			return nil
		}
	}
	return fmt.Errorf("outbox: cannot parse timestamp %q", s)
}
