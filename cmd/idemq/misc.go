package main

import (
	"fmt"
	"strconv"
	"time"

	"github.com/spf13/cobra"

	"github.com/idemq/idemq/admin"
)

func (a *app) migrateCmd() *cobra.Command {
	var dry, status bool
	cmd := &cobra.Command{
		Use:   "migrate [COMPONENT...]",
		Short: "Create or upgrade idemq's tables (components: dedup, outbox, producer, admin; all by default)",
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx, err := a.open(cmd, false)
			if err != nil {
				return err
			}
			if status {
				st, err := a.adm.MigrationStatus(ctx, args...)
				if err != nil {
					return err
				}
				if a.json {
					return a.printJSON(map[string]any{"steps": st})
				}
				rows := make([][]string, len(st))
				for i, s := range st {
					state := "pending"
					switch {
					case s.Unknown:
						state = "applied (unknown to this version)"
					case s.Modified:
						state = "applied (file changed since)"
					case s.AppliedAt != nil:
						state = "applied"
					}
					rows[i] = []string{s.Component, fmt.Sprintf("%04d", s.Version), s.Name, state, a.whenPtr(s.AppliedAt)}
				}
				return a.table([]string{"COMPONENT", "VERSION", "NAME", "STATE", "APPLIED AT"}, rows)
			}
			steps, err := a.adm.Migrate(ctx, dry, args...)
			if err != nil {
				return err
			}
			if a.json {
				if steps == nil {
					steps = []admin.MigrationStep{}
				}
				return a.printJSON(map[string]any{"dry_run": dry, "applied": steps})
			}
			verb := "applied"
			if dry {
				verb = "would apply"
			}
			if len(steps) == 0 {
				fmt.Fprintln(a.out, "Up to date: nothing to apply.")
				return nil
			}
			for _, s := range steps {
				fmt.Fprintf(a.out, "%s %s %04d_%s\n", verb, s.Component, s.Version, s.Name)
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&dry, "dry-run", false, "list the steps that would run")
	cmd.Flags().BoolVar(&status, "status", false, "list every step and whether it is applied")
	return cmd
}

func (a *app) statsCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "stats",
		Short: "Everything at a glance: per group keys, retries, stale attempts, dead letters; the outbox",
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx, err := a.open(cmd, false)
			if err != nil {
				return err
			}
			ov, err := a.adm.Overview(ctx)
			if err != nil {
				return err
			}
			if a.json {
				return a.printJSON(ov)
			}
			rows := make([][]string, len(ov.Groups))
			for i, g := range ov.Groups {
				rows[i] = []string{g.Group, n(g.Done), n(g.Processing), n(g.Retrying), n(g.Stale), n(g.DeadLetters), n(g.Dead)}
			}
			fmt.Fprintf(a.out, "At %s (stale after %s)\n", a.when(ov.At), ov.StaleAfter)
			if err := a.table([]string{"GROUP", "DONE", "PROCESSING", "RETRYING", "STALE", "DEAD LETTERS", "DEAD KEYS"}, rows); err != nil {
				return err
			}
			if ov.Outbox != nil {
				s := ov.Outbox
				fmt.Fprintf(a.out, "Outbox: %d pending (%d claimed), %d failed, %d sent; oldest pending %s\n",
					s.Pending, s.Claimed, s.Failed, s.Sent, age(s.OldestPendingAge))
			}
			return nil
		},
	}
}

func n(v int64) string { return strconv.FormatInt(v, 10) }

func (a *app) attemptsCmd() *cobra.Command {
	var group string
	var stale bool
	var staleAfter time.Duration
	var limit, offset int
	run := func(cmd *cobra.Command, staleOnly bool) error {
		ctx, err := a.open(cmd, false)
		if err != nil {
			return err
		}
		at, err := a.adm.Attempts(ctx, admin.AttemptFilter{Group: group, StaleOnly: staleOnly, StaleAfter: staleAfter, Limit: limit, Offset: offset})
		if err != nil {
			return err
		}
		if a.json {
			if at == nil {
				at = []admin.Attempt{}
			}
			return a.printJSON(map[string]any{"attempts": at})
		}
		rows := make([][]string, len(at))
		for i, x := range at {
			st := "retrying"
			if x.Stale {
				st = "stale"
			}
			rows[i] = []string{x.Group, cut(x.Key, 40), strconv.Itoa(x.Count), st, a.when(x.FirstAt), a.when(x.LastAt), cut(x.LastError, 60)}
		}
		return a.table([]string{"GROUP", "KEY", "ATTEMPTS", "STATE", "FIRST FAILURE", "LAST FAILURE", "LAST ERROR"}, rows)
	}
	cmd := &cobra.Command{
		Use:   "attempts",
		Short: "Keys that failed and wait for a retry (attempts in progress)",
		RunE:  func(cmd *cobra.Command, args []string) error { return run(cmd, stale) },
	}
	staleCmd := &cobra.Command{
		Use:   "stale",
		Short: "Failed keys the broker stopped redelivering: neither done nor dead-lettered",
		RunE:  func(cmd *cobra.Command, args []string) error { return run(cmd, true) },
	}
	for _, c := range []*cobra.Command{cmd, staleCmd} {
		c.Flags().StringVar(&group, "group", "", "consumer group")
		c.Flags().DurationVar(&staleAfter, "stale-after", 0, "stale threshold (default 3h)")
		c.Flags().IntVar(&limit, "limit", 100, "most keys to list")
		c.Flags().IntVar(&offset, "offset", 0, "skip this many")
	}
	cmd.Flags().BoolVar(&stale, "stale", false, "only stale attempts")
	cmd.AddCommand(staleCmd)
	return cmd
}

func (a *app) keyCmd() *cobra.Command {
	show := &cobra.Command{
		Use:   "show GROUP KEY",
		Short: "Show a dedup key: new, processing (owner, lease), done or dead; its failures and dead letters",
		Args:  cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx, err := a.open(cmd, false)
			if err != nil {
				return err
			}
			st, err := a.adm.Key(ctx, args[0], args[1])
			if err != nil {
				return err
			}
			if a.json {
				return a.printJSON(st)
			}
			w := a.out
			fmt.Fprintf(w, "Key %q in group %q: %s\n", st.Key, st.Group, st.Status)
			if st.Status == admin.KeyProcessing {
				exp := "live"
				if st.LeaseExpired {
					exp = "expired: the next delivery takes it over"
				}
				fmt.Fprintf(w, "  owner:       %s\n  lease until: %s (%s)\n", st.Owner, a.whenPtr(st.LeaseUntil), exp)
			}
			if st.MessageID != "" {
				fmt.Fprintf(w, "  message ID:  %s\n", st.MessageID)
			}
			if st.CreatedAt != nil {
				fmt.Fprintf(w, "  created:     %s\n  updated:     %s\n", a.whenPtr(st.CreatedAt), a.whenPtr(st.UpdatedAt))
			}
			if at := st.Attempts; at != nil {
				fmt.Fprintf(w, "Failures: %d (first %s, last %s), last error: %s\n", at.Count, a.when(at.FirstAt), a.when(at.LastAt), at.LastError)
			}
			for _, d := range st.DeadLetters {
				state := "waiting"
				if d.RedrivenAt != nil {
					state = "redriven " + a.when(*d.RedrivenAt)
				}
				fmt.Fprintf(w, "Dead letter %d: dead %s, %s: %s\n", d.ID, a.when(d.DeadAt), state, cut(d.Reason, 80))
			}
			return nil
		},
	}
	cmd := &cobra.Command{Use: "key", Short: "Dedup keys"}
	cmd.AddCommand(show)
	return cmd
}

func (a *app) leasesCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "leases",
		Short: "Snowflake node leases of the SQL lease table (redrive never needs one)",
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx, err := a.open(cmd, false)
			if err != nil {
				return err
			}
			ls, err := a.adm.NodeLeases(ctx)
			if err != nil {
				return err
			}
			if a.json {
				if ls == nil {
					ls = []admin.NodeLease{}
				}
				return a.printJSON(map[string]any{"leases": ls})
			}
			rows := make([][]string, len(ls))
			for i, l := range ls {
				st := "released"
				if l.Live {
					st = "live"
				} else if l.ExpiresAt != nil {
					st = "expired"
				}
				rows[i] = []string{strconv.FormatInt(l.NodeID, 10), st, l.Owner, a.whenPtr(l.ExpiresAt), a.whenPtr(l.LastIssued)}
			}
			return a.table([]string{"NODE", "STATE", "OWNER", "EXPIRES", "LAST ISSUED"}, rows)
		},
	}
}

func (a *app) auditCmd() *cobra.Command {
	var action, actor, since string
	var limit int
	var cursor int64
	cmd := &cobra.Command{
		Use:   "audit",
		Short: "The audit log of operator actions, newest first",
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx, err := a.open(cmd, false)
			if err != nil {
				return err
			}
			t, err := parseTime(since, a.loc)
			if err != nil {
				return fmt.Errorf("--since %w", err)
			}
			recs, next, err := a.adm.Audit(ctx, admin.AuditFilter{Action: action, Actor: actor, Since: t}, admin.Page{Cursor: cursor, Limit: limit, Newest: true})
			if err != nil {
				return err
			}
			if a.json {
				if recs == nil {
					recs = []admin.AuditRecord{}
				}
				return a.printJSON(map[string]any{"records": recs, "next": next})
			}
			rows := make([][]string, len(recs))
			for i, r := range recs {
				rows[i] = []string{strconv.FormatInt(r.ID, 10), a.when(r.At), r.Actor, r.Action, strconv.FormatInt(r.Count, 10), cut(r.Target, 70)}
			}
			if err := a.table([]string{"ID", "AT", "ACTOR", "ACTION", "COUNT", "TARGET"}, rows); err != nil {
				return err
			}
			if next != 0 {
				fmt.Fprintf(a.out, "(more: --cursor %d)\n", next)
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&action, "action", "", "dead.redrive, dead.discard, outbox.redrive, outbox.discard")
	cmd.Flags().StringVar(&actor, "actor-is", "", "only this actor")
	cmd.Flags().StringVar(&since, "since", "", "at or after: RFC 3339 time or a duration ago")
	cmd.Flags().IntVar(&limit, "limit", 50, "most records")
	cmd.Flags().Int64Var(&cursor, "cursor", 0, "continue before this ID")
	return cmd
}
