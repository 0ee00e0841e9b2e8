// Command idemq is the operator's tool for idemq: it migrates idemq's
// tables and shows and fixes what went wrong (dead letters, the outbox,
// attempts, dedup keys) without writing code, through the admin package.
//
//	idemq --db sqlite:/var/lib/app/app.db dead list
//	idemq --db postgres://u:p@db/app dead groups
//	idemq --db ... dead show 42
//	idemq --db ... --namesrv 10.0.0.5:9876 dead redrive --error "timeout" --dry-run
//	idemq --db ... outbox stats
//	idemq --db ... audit
//	idemq --db ... console --addr 127.0.0.1:8080
//
// The database comes from --db or IDEMQ_DB: sqlite:PATH (or a plain path
// to a file), postgres://... or postgres:<key=value DSN>, mysql://... or
// mysql:<go-sql-driver DSN>. --json prints machine-readable JSON for every
// listing; otherwise output is a table with times in RFC 3339 in the zone
// of --tz and states as words. Redrive and discard say what they will
// touch and ask for confirmation unless --yes; --dry-run only counts.
// Every action is written to the audit log as --actor (defaults to
// user@host). Redrive publishes through the name servers of --namesrv (or
// IDEMQ_NAMESRV) with each message's own ID, so it needs no node lease;
// with --via-outbox it writes the messages into the service's outbox
// instead, in the transaction that marks them redriven, and the service's
// relays send them.
// `idemq console` serves the web console (package admin/console); it
// refuses a non-loopback --addr unless --token or --basic-user is set.
//
// The command is built on spf13/cobra rather than urfave/cli: its
// noun-then-verb command tree (dead list, outbox redrive), POSIX flags
// with persistent global flags, and generated help and shell completion
// are what River's and asynq's operator CLIs use, so operators meet the
// conventions they know.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/url"
	"os"
	"os/signal"
	"os/user"
	"strings"
	"syscall"
	"time"
	_ "time/tzdata" // --tz works on hosts without a zone database

	"github.com/spf13/cobra"
	"gorm.io/gorm"

	"github.com/idemq/idemq/admin"
	"github.com/idemq/idemq/internal/dbopen"
	"github.com/idemq/idemq/producer"
	"github.com/idemq/idemq/producer/outbox"
)

// app holds the global flags and what they open.
type app struct {
	dbURL   string
	prefix  string
	json    bool
	yes     bool
	tz      string
	actor   string
	namesrv []string
	// viaOutbox makes redrives write into the outbox (dead redrive --via-outbox).
	viaOutbox bool

	loc *time.Location
	// out receives text for people (control characters replaced), raw
	// JSON for scripts (encoding/json escapes what must be escaped).
	out     io.Writer
	raw     io.Writer
	in      io.Reader
	db      *gorm.DB
	closeDB func()
	adm     *admin.Admin
	prod    *producer.Producer
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	a := &app{out: terminalSafe{os.Stdout}, raw: os.Stdout, in: os.Stdin}
	root := a.root()
	root.SetContext(ctx)
	err := root.Execute()
	a.close()
	if err != nil {
		fmt.Fprintln(os.Stderr, "idemq:", err)
		os.Exit(1)
	}
}

func defaultActor() string {
	name := "unknown"
	if u, err := user.Current(); err == nil && u.Username != "" {
		name = u.Username
	}
	if h, err := os.Hostname(); err == nil {
		name += "@" + h
	}
	return name
}

func (a *app) root() *cobra.Command {
	root := &cobra.Command{
		Use:           "idemq",
		Short:         "Operate idemq: migrations, dead letters, outbox, attempts, keys, audit log",
		SilenceUsage:  true,
		SilenceErrors: true,
		PersistentPreRunE: func(cmd *cobra.Command, args []string) error {
			loc, err := loadZone(a.tz)
			if err != nil {
				return err
			}
			a.loc = loc
			return nil
		},
	}
	pf := root.PersistentFlags()
	pf.StringVar(&a.dbURL, "db", os.Getenv("IDEMQ_DB"), "database: sqlite:PATH, postgres://..., mysql://... (env IDEMQ_DB)")
	pf.StringVar(&a.prefix, "prefix", envOr("IDEMQ_TABLE_PREFIX", "idemq_"), "table prefix (env IDEMQ_TABLE_PREFIX)")
	pf.BoolVar(&a.json, "json", false, "print JSON instead of a table")
	pf.BoolVarP(&a.yes, "yes", "y", false, "do not ask for confirmation")
	pf.StringVar(&a.tz, "tz", envOr("IDEMQ_TZ", "Local"), "time zone of printed times: Local, UTC or an IANA name (env IDEMQ_TZ)")
	pf.StringVar(&a.actor, "actor", envOr("IDEMQ_ACTOR", defaultActor()), "operator name for the audit log (env IDEMQ_ACTOR)")
	ns := os.Getenv("IDEMQ_NAMESRV")
	var nsDefault []string
	if ns != "" {
		nsDefault = strings.Split(ns, ",")
	}
	pf.StringSliceVar(&a.namesrv, "namesrv", nsDefault, "RocketMQ name servers host:port for redrive (env IDEMQ_NAMESRV)")
	root.AddCommand(a.migrateCmd(), a.statsCmd(), a.deadCmd(), a.outboxCmd(), a.attemptsCmd(), a.keyCmd(), a.leasesCmd(), a.auditCmd(), a.metricsCmd(), a.consoleCmd())
	return root
}

func envOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}

func loadZone(name string) (*time.Location, error) {
	switch name {
	case "", "Local", "local":
		return time.Local, nil
	case "UTC", "utc":
		return time.UTC, nil
	}
	loc, err := time.LoadLocation(name)
	if err != nil {
		return nil, fmt.Errorf("--tz: %w", err)
	}
	return loc, nil
}

// parseDB turns a --db value into a dialect and a driver DSN.
func parseDB(s string) (dialect, dsn string, err error) {
	switch {
	case s == "":
		return "", "", errors.New("no database: set --db or IDEMQ_DB (sqlite:PATH, postgres://..., mysql://...)")
	case strings.HasPrefix(s, "sqlite://"):
		return "sqlite", strings.TrimPrefix(s, "sqlite://"), nil
	case strings.HasPrefix(s, "sqlite:"):
		return "sqlite", strings.TrimPrefix(s, "sqlite:"), nil
	case strings.HasPrefix(s, "postgres://"), strings.HasPrefix(s, "postgresql://"):
		return "postgres", s, nil
	case strings.HasPrefix(s, "postgres:"):
		return "postgres", strings.TrimPrefix(s, "postgres:"), nil
	case strings.HasPrefix(s, "mysql://"):
		rest := strings.TrimPrefix(s, "mysql://")
		if strings.Contains(rest, "@tcp(") || strings.Contains(rest, "@unix(") {
			return "mysql", mysqlParams(rest), nil
		}
		u, err := url.Parse(s)
		if err != nil {
			return "", "", fmt.Errorf("--db: %w", err)
		}
		cred := ""
		if u.User != nil {
			cred = u.User.String() + "@"
			if p, ok := u.User.Password(); ok {
				cred = u.User.Username() + ":" + p + "@"
			}
		}
		host := u.Host
		if u.Port() == "" {
			host += ":3306"
		}
		dsn := cred + "tcp(" + host + ")" + u.Path
		if u.RawQuery != "" {
			dsn += "?" + u.RawQuery
		}
		return "mysql", mysqlParams(dsn), nil
	case strings.HasPrefix(s, "mysql:"):
		return "mysql", mysqlParams(strings.TrimPrefix(s, "mysql:")), nil
	case strings.Contains(s, "@tcp("):
		return "mysql", mysqlParams(s), nil
	case !strings.Contains(s, "://"):
		return "sqlite", s, nil
	}
	return "", "", fmt.Errorf("--db %q: want sqlite:PATH, a postgres:// URL or a mysql:// URL", s)
}

// mysqlParams adds the settings idemq needs (parseTime) to a MySQL DSN.
func mysqlParams(dsn string) string {
	if !strings.Contains(dsn, "parseTime") {
		sep := "?"
		if strings.Contains(dsn, "?") {
			sep = "&"
		}
		dsn += sep + "parseTime=true"
	}
	return dsn
}

// open connects to the database and builds the Admin.
func (a *app) open(cmd *cobra.Command, withSender bool) (context.Context, error) {
	ctx := admin.WithActor(cmd.Context(), a.actor)
	if a.adm != nil {
		return ctx, nil
	}
	dialect, dsn, err := parseDB(a.dbURL)
	if err != nil {
		return nil, err
	}
	if dialect == "sqlite" {
		if dsn == "" {
			return nil, errors.New("--db sqlite: needs a path")
		}
		if _, err := os.Stat(dsn); err != nil && cmd.Name() != "migrate" {
			return nil, fmt.Errorf("sqlite database %s: %w", dsn, err)
		}
	}
	db, closeDB, err := dbopen.Open(dialect, dsn)
	if err != nil {
		return nil, fmt.Errorf("open %s database: %w", dialect, err)
	}
	a.db, a.closeDB = db, closeDB
	cfg := admin.Config{TablePrefix: a.prefix}
	if withSender && a.viaOutbox {
		if !db.Migrator().HasTable(a.prefix + "outbox") {
			return nil, fmt.Errorf("--via-outbox: no table %soutbox (run idemq migrate, or redrive with --namesrv)", a.prefix)
		}
		ob, err := outbox.New(db, outbox.Config{IDSource: admin.NoIDs{}, TablePrefix: a.prefix})
		if err != nil {
			return nil, err
		}
		cfg.Outbox = ob
	} else if withSender {
		if len(a.namesrv) == 0 {
			return nil, errors.New("redrive needs --namesrv (or IDEMQ_NAMESRV): the name servers to publish through")
		}
		// The client library's logs (connections, routes) are noise here:
		// warnings and errors go to stderr.
		warn := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
		producer.SetClientLogger(warn)
		p, err := producer.New(producer.Config{NameServers: a.namesrv, IDSource: admin.NoIDs{}, Group: "idemq_admin_redrive", Logger: warn})
		if err != nil {
			return nil, fmt.Errorf("redrive producer: %w", err)
		}
		if err := p.Start(ctx); err != nil {
			return nil, fmt.Errorf("redrive producer: %w", err)
		}
		a.prod = p
		cfg.Sender = admin.ProducerSender(p)
	}
	adm, err := admin.New(db, cfg)
	if err != nil {
		return nil, err
	}
	a.adm = adm
	return ctx, nil
}

func (a *app) close() {
	if a.prod != nil {
		_ = a.prod.Shutdown(context.Background())
	}
	if a.closeDB != nil {
		a.closeDB()
	}
}
