package admin

import (
	"context"
	"fmt"
	"sort"
	"time"
)

// GroupStats counts one consumer group's keys, failures and dead letters.
type GroupStats struct {
	Group string `json:"group"`
	// Done and Processing count dedup rows by state; Dead counts keys
	// marked dead.
	Done       int64 `json:"done"`
	Processing int64 `json:"processing"`
	Dead       int64 `json:"dead"`
	// Retrying counts keys with recorded failures waiting for a retry, and
	// Stale those of them whose last failure is older than the stale
	// threshold.
	Retrying int64 `json:"retrying"`
	Stale    int64 `json:"stale"`
	// DeadLetters counts dead letters waiting for an operator (not
	// redriven).
	DeadLetters int64 `json:"dead_letters"`
}

// Overview is the state of everything at a glance.
type Overview struct {
	// At is the database clock when the overview was taken.
	At time.Time `json:"at"`
	// Groups are per consumer group, by name.
	Groups []GroupStats `json:"groups"`
	// Outbox is nil when the outbox table does not exist.
	Outbox *OutboxStats `json:"outbox,omitempty"`
	// StaleAfter is the stale threshold in use.
	StaleAfter time.Duration `json:"stale_after_ns"`
}

// Overview counts, per consumer group, dedup rows by state, retrying and
// stale attempts and waiting dead letters, and summarises the outbox. It
// scans the dedup table's index; on very large tables call it sparingly.
func (a *Admin) Overview(ctx context.Context) (*Overview, error) {
	now, err := a.Now(ctx)
	if err != nil {
		return nil, err
	}
	ov := &Overview{At: now, StaleAfter: a.cfg.StaleAfter}
	groups := map[string]*GroupStats{}
	get := func(g string) *GroupStats {
		if groups[g] == nil {
			groups[g] = &GroupStats{Group: g}
		}
		return groups[g]
	}
	type count struct {
		Grp    string
		Status int
		N      int64
	}
	if a.hasTable(ctx, "dedup") {
		var cs []count
		if err := a.db.WithContext(ctx).Raw("SELECT consumer_group AS grp, status, COUNT(*) AS n FROM " + a.table("dedup") +
			" GROUP BY consumer_group, status").Scan(&cs).Error; err != nil {
			return nil, fmt.Errorf("admin: overview: %w", err)
		}
		for _, c := range cs {
			g := get(c.Grp)
			switch c.Status {
			case 1:
				g.Processing = c.N
			case 2:
				g.Done = c.N
			case 3:
				g.Dead = c.N
			}
		}
		var as []struct {
			Grp   string
			N     int64
			Stale int64
		}
		if err := a.db.WithContext(ctx).Raw("SELECT consumer_group AS grp, COUNT(*) AS n, SUM(CASE WHEN last_at < ? THEN 1 ELSE 0 END) AS stale FROM "+
			a.table("attempts")+" GROUP BY consumer_group", toMs(now)-a.cfg.StaleAfter.Milliseconds()).Scan(&as).Error; err != nil {
			return nil, fmt.Errorf("admin: overview: %w", err)
		}
		for _, c := range as {
			g := get(c.Grp)
			g.Retrying, g.Stale = c.N, c.Stale
		}
		var ds []struct {
			Grp string
			N   int64
		}
		if err := a.db.WithContext(ctx).Raw("SELECT consumer_group AS grp, COUNT(*) AS n FROM " + a.table("dead_letters") +
			" WHERE redriven_at IS NULL GROUP BY consumer_group").Scan(&ds).Error; err != nil {
			return nil, fmt.Errorf("admin: overview: %w", err)
		}
		for _, c := range ds {
			get(c.Grp).DeadLetters = c.N
		}
	}
	for _, g := range groups {
		ov.Groups = append(ov.Groups, *g)
	}
	sort.Slice(ov.Groups, func(i, j int) bool { return ov.Groups[i].Group < ov.Groups[j].Group })
	if a.hasTable(ctx, "outbox") {
		s, err := a.OutboxStats(ctx)
		if err != nil {
			return nil, err
		}
		ov.Outbox = &s
	}
	return ov, nil
}
