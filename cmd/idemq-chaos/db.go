package main

import (
	"context"
	"fmt"
	"net"
	"net/url"
	"regexp"
	"strconv"
	"strings"

	"github.com/go-sql-driver/mysql"
	"github.com/jackc/pgx/v5/pgconn"
	"gorm.io/gorm"

	"github.com/idemq/idemq/dedup"
	"github.com/idemq/idemq/dedup/sqldedup"
)

// tables are the harness's own tables, next to the store's, under the same
// prefix: the accounts the handler credits, the effect rows it writes, and a
// table that never exists (for the swallowed failing statement).
type tables struct {
	accounts, effects, missing string
}

func harnessTables(prefix string) tables {
	return tables{accounts: prefix + "chaos_accounts", effects: prefix + "chaos_effects", missing: prefix + "chaos_missing"}
}

// createHarnessTables creates the accounts (all at balance 0) and effects
// tables.
func createHarnessTables(ctx context.Context, db *gorm.DB, dialect string, t tables, accounts int) error {
	id := map[string]string{
		"sqlite":   "INTEGER PRIMARY KEY AUTOINCREMENT",
		"postgres": "BIGSERIAL PRIMARY KEY",
		"mysql":    "BIGINT AUTO_INCREMENT PRIMARY KEY",
	}[dialect]
	stmts := []string{
		"CREATE TABLE " + t.accounts + " (id INT PRIMARY KEY, balance BIGINT NOT NULL)",
		"CREATE TABLE " + t.effects + " (id " + id + ", msg BIGINT NOT NULL, account INT NOT NULL, amount BIGINT NOT NULL, worker INT NOT NULL)",
	}
	for _, s := range stmts {
		if err := db.WithContext(ctx).Exec(s).Error; err != nil {
			return fmt.Errorf("%s: %w", s, err)
		}
	}
	for a := 0; a < accounts; a++ {
		if err := db.WithContext(ctx).Exec("INSERT INTO "+t.accounts+" (id, balance) VALUES (?, 0)", a).Error; err != nil {
			return err
		}
	}
	return nil
}

// dropTables drops every table whose name starts with prefix.
func dropTables(ctx context.Context, db *gorm.DB, dialect, prefix string) error {
	var q string
	switch dialect {
	case "postgres":
		q = "SELECT tablename FROM pg_tables WHERE schemaname = current_schema() AND tablename LIKE ?"
	case "mysql":
		q = "SELECT table_name FROM information_schema.tables WHERE table_schema = DATABASE() AND table_name LIKE ?"
	default:
		return nil // SQLite: the file goes with its directory
	}
	var names []string
	if err := db.WithContext(ctx).Raw(q, prefix+"%").Scan(&names).Error; err != nil {
		return err
	}
	for _, n := range names {
		if !strings.HasPrefix(n, prefix) {
			continue
		}
		if err := db.WithContext(ctx).Exec("DROP TABLE IF EXISTS " + n).Error; err != nil {
			return err
		}
	}
	return nil
}

// observeEffects reads the effect rows per message and the balances.
func observeEffects(ctx context.Context, db *gorm.DB, t tables) (map[int]int, map[int]int64, error) {
	var rows []struct {
		Msg int
		N   int
	}
	if err := db.WithContext(ctx).Raw("SELECT msg, COUNT(*) AS n FROM " + t.effects + " GROUP BY msg").Scan(&rows).Error; err != nil {
		return nil, nil, err
	}
	effects := map[int]int{}
	for _, r := range rows {
		effects[r.Msg] = r.N
	}
	var accts []struct {
		ID      int
		Balance int64
	}
	if err := db.WithContext(ctx).Raw("SELECT id, balance FROM " + t.accounts).Scan(&accts).Error; err != nil {
		return nil, nil, err
	}
	balances := map[int]int64{}
	for _, a := range accts {
		balances[a.ID] = a.Balance
	}
	return effects, balances, nil
}

// observeDeadLetters counts dead letters per message, matching each by the
// chaos_msg property, else by the body's header, else by message ID.
func observeDeadLetters(ctx context.Context, store *sqldedup.Store, msgs []PlannedMessage) (map[int]int, map[int]string, int, error) {
	byID := map[string]int{}
	for _, m := range msgs {
		if m.ID != "" {
			byID[m.ID] = m.N
		}
	}
	counts := map[int]int{}
	reasons := map[int]string{}
	unmatched := 0
	var after int64
	for {
		dls, err := store.DeadLetters(ctx, dedup.DeadLetterFilter{IncludeRedriven: true, AfterID: after, Limit: 500})
		if err != nil {
			return nil, nil, 0, err
		}
		if len(dls) == 0 {
			return counts, reasons, unmatched, nil
		}
		for _, dl := range dls {
			after = max(after, dl.ID)
			n, err := strconv.Atoi(dl.Properties["chaos_msg"])
			if err != nil {
				var ok bool
				if n, _, _, ok = ParseBody(dl.Body); !ok {
					if n, ok = byID[dl.MessageID]; !ok {
						unmatched++
						continue
					}
				}
			}
			counts[n]++
			reasons[n] = dl.Reason
		}
	}
}

// target returns the server address a DSN points at.
func target(dialect, dsn string) (string, error) {
	switch dialect {
	case "postgres":
		cfg, err := pgconn.ParseConfig(dsn)
		if err != nil {
			return "", err
		}
		return net.JoinHostPort(cfg.Host, strconv.Itoa(int(cfg.Port))), nil
	case "mysql":
		cfg, err := mysql.ParseDSN(dsn)
		if err != nil {
			return "", err
		}
		if cfg.Net != "tcp" {
			return "", fmt.Errorf("mysql DSN must use tcp, not %q", cfg.Net)
		}
		return cfg.Addr, nil
	}
	return "", fmt.Errorf("no server for %s", dialect)
}

var pgKeyword = regexp.MustCompile(`(^|\s)(host|port|hostaddr)=\S*`)

// redirect returns dsn pointed at addr (host:port) instead of its server.
func redirect(dialect, dsn, addr string) (string, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return "", err
	}
	switch dialect {
	case "postgres":
		if strings.HasPrefix(dsn, "postgres://") || strings.HasPrefix(dsn, "postgresql://") {
			u, err := url.Parse(dsn)
			if err != nil {
				return "", err
			}
			u.Host = addr
			return u.String(), nil
		}
		out := strings.TrimSpace(pgKeyword.ReplaceAllString(dsn, ""))
		return out + " host=" + host + " port=" + port, nil
	case "mysql":
		cfg, err := mysql.ParseDSN(dsn)
		if err != nil {
			return "", err
		}
		cfg.Addr = addr
		return cfg.FormatDSN(), nil
	}
	return dsn, nil
}

// killSessions ends the server sessions whose client ports are ports (the
// proxy's side of its connections), and only those: pg_terminate_backend
// on PostgreSQL, KILL on MySQL/MariaDB. It returns how many it ended.
func killSessions(ctx context.Context, db *gorm.DB, dialect string, ports []int) (int, error) {
	if len(ports) == 0 {
		return 0, nil
	}
	switch dialect {
	case "postgres":
		var pids []int
		q := "SELECT pid FROM pg_stat_activity WHERE client_addr = '127.0.0.1' AND client_port IN ?"
		if err := db.WithContext(ctx).Raw(q, ports).Scan(&pids).Error; err != nil {
			return 0, err
		}
		n := 0
		for _, pid := range pids {
			var ok bool
			if err := db.WithContext(ctx).Raw("SELECT pg_terminate_backend(?)", pid).Scan(&ok).Error; err == nil && ok {
				n++
			}
		}
		return n, nil
	case "mysql":
		var rows []struct {
			ID   int64
			Host string
		}
		if err := db.WithContext(ctx).Raw("SELECT id, host FROM information_schema.processlist WHERE user = SUBSTRING_INDEX(CURRENT_USER(), '@', 1)").Scan(&rows).Error; err != nil {
			return 0, err
		}
		want := map[string]bool{}
		for _, p := range ports {
			want[strconv.Itoa(p)] = true
		}
		n := 0
		for _, r := range rows {
			_, port, err := net.SplitHostPort(r.Host)
			if err != nil || !want[port] {
				continue
			}
			if err := db.WithContext(ctx).Exec("KILL " + strconv.FormatInt(r.ID, 10)).Error; err == nil {
				n++
			}
		}
		return n, nil
	}
	return 0, nil
}
