package main

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/idemq/idemq/admin"
)

// deadFlags are the dead-letter filter flags.
type deadFlags struct {
	group, topic, messageID, key, errText, signature, since, until, state string
	all                                                                   bool
}

func (f *deadFlags) add(cmd *cobra.Command, bulk bool) {
	fl := cmd.Flags()
	fl.StringVar(&f.group, "group", "", "consumer group")
	fl.StringVar(&f.topic, "topic", "", "topic")
	fl.StringVar(&f.messageID, "message-id", "", "message ID")
	fl.StringVar(&f.key, "key", "", "dedup key")
	fl.StringVar(&f.errText, "error", "", "text the error contains (case-insensitive)")
	fl.StringVar(&f.signature, "signature", "", "error signature, as `dead groups` prints it")
	fl.StringVar(&f.since, "since", "", "dead at or after: RFC 3339 time or a duration ago (2h)")
	fl.StringVar(&f.until, "until", "", "dead before: RFC 3339 time or a duration ago")
	if !bulk {
		fl.StringVar(&f.state, "state", "waiting", "waiting (not redriven), redriven or any")
	} else {
		fl.BoolVar(&f.all, "all", false, "select every waiting dead letter (required when no other selector is given)")
	}
}

// parseTime reads an RFC 3339 time, a date, or a duration ago.
func parseTime(s string, loc *time.Location) (time.Time, error) {
	if s == "" {
		return time.Time{}, nil
	}
	if d, err := time.ParseDuration(s); err == nil {
		return time.Now().Add(-d), nil
	}
	for _, layout := range []string{time.RFC3339Nano, "2006-01-02T15:04:05", "2006-01-02 15:04:05", "2006-01-02"} {
		if t, err := time.ParseInLocation(layout, s, loc); err == nil {
			return t, nil
		}
	}
	return time.Time{}, fmt.Errorf("%q: want an RFC 3339 time, a date or a duration such as 2h", s)
}

func (f *deadFlags) filter(args []string, loc *time.Location) (admin.DeadFilter, error) {
	df := admin.DeadFilter{Group: f.group, Topic: f.topic, MessageID: f.messageID, Key: f.key, Error: f.errText,
		Signature: f.signature, All: f.all}
	for _, a := range args {
		id, err := strconv.ParseInt(a, 10, 64)
		if err != nil {
			return df, fmt.Errorf("dead letter ID %q: not a number", a)
		}
		df.IDs = append(df.IDs, id)
	}
	var err error
	if df.Since, err = parseTime(f.since, loc); err != nil {
		return df, fmt.Errorf("--since %w", err)
	}
	if df.Until, err = parseTime(f.until, loc); err != nil {
		return df, fmt.Errorf("--until %w", err)
	}
	switch f.state {
	case "", "waiting":
	case "redriven":
		df.State = admin.DeadRedriven
	case "any", "all":
		df.State = admin.DeadAny
	default:
		return df, fmt.Errorf("--state %q: want waiting, redriven or any", f.state)
	}
	return df, nil
}

func (a *app) deadCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "dead", Short: "Dead letters: list, groups, show, redrive, discard"}
	cmd.AddCommand(a.deadListCmd(), a.deadGroupsCmd(), a.deadShowCmd(), a.deadActionCmd("redrive"), a.deadActionCmd("discard"))
	return cmd
}

func (a *app) deadListCmd() *cobra.Command {
	var f deadFlags
	var limit int
	var cursor int64
	var newest bool
	cmd := &cobra.Command{
		Use:   "list [ID...]",
		Short: "List dead letters (waiting ones by default), oldest first",
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx, err := a.open(cmd, false)
			if err != nil {
				return err
			}
			df, err := f.filter(args, a.loc)
			if err != nil {
				return err
			}
			items, next, err := a.adm.ListDead(ctx, df, admin.Page{Cursor: cursor, Limit: limit, Newest: newest})
			if err != nil {
				return err
			}
			if a.json {
				if items == nil {
					items = []admin.DeadLetter{}
				}
				return a.printJSON(map[string]any{"dead_letters": items, "next": next})
			}
			rows := make([][]string, len(items))
			for i, d := range items {
				state := "waiting"
				if d.RedrivenAt != nil {
					state = "redriven " + a.when(*d.RedrivenAt)
				} else if d.Truncated {
					state = "waiting (truncated: discard only)"
				}
				rows[i] = []string{strconv.FormatInt(d.ID, 10), a.when(d.DeadAt), d.Group, d.Topic, d.MessageID, cut(d.Key, 32),
					strconv.Itoa(d.Attempts), state, cut(d.Reason, 60)}
			}
			if err := a.table([]string{"ID", "DEAD AT", "GROUP", "TOPIC", "MESSAGE ID", "KEY", "ATTEMPTS", "STATE", "REASON"}, rows); err != nil {
				return err
			}
			if next != 0 {
				fmt.Fprintf(a.out, "(more: --cursor %d)\n", next)
			}
			return nil
		},
	}
	f.add(cmd, false)
	cmd.Flags().IntVar(&limit, "limit", 50, "most dead letters to list")
	cmd.Flags().Int64Var(&cursor, "cursor", 0, "continue after this ID (printed at the end of a page)")
	cmd.Flags().BoolVar(&newest, "newest", false, "newest first")
	return cmd
}

func (a *app) deadGroupsCmd() *cobra.Command {
	var f deadFlags
	cmd := &cobra.Command{
		Use:   "groups",
		Short: "Group dead letters by error signature, largest group first",
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx, err := a.open(cmd, false)
			if err != nil {
				return err
			}
			df, err := f.filter(nil, a.loc)
			if err != nil {
				return err
			}
			gs, err := a.adm.DeadGroups(ctx, df)
			if err != nil {
				return err
			}
			if a.json {
				if gs == nil {
					gs = []admin.ErrorGroup{}
				}
				return a.printJSON(map[string]any{"groups": gs})
			}
			rows := make([][]string, len(gs))
			for i, g := range gs {
				rows[i] = []string{strconv.FormatInt(g.Count, 10), a.when(g.FirstAt), a.when(g.LastAt), strings.Join(g.Groups, ","),
					strings.Join(g.Topics, ","), strconv.FormatInt(g.ExampleID, 10), cut(g.Signature, 80)}
			}
			if err := a.table([]string{"COUNT", "FIRST", "LAST", "GROUPS", "TOPICS", "EXAMPLE", "SIGNATURE"}, rows); err != nil {
				return err
			}
			if len(gs) > 0 {
				fmt.Fprintln(a.out, "(act on a group with --signature '<SIGNATURE>')")
			}
			return nil
		},
	}
	f.add(cmd, false)
	return cmd
}

func (a *app) deadShowCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "show ID",
		Short: "Show one dead letter in full: message, properties, error history",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx, err := a.open(cmd, false)
			if err != nil {
				return err
			}
			id, err := strconv.ParseInt(args[0], 10, 64)
			if err != nil {
				return fmt.Errorf("dead letter ID %q: not a number", args[0])
			}
			d, err := a.adm.DeadLetter(ctx, id)
			if err != nil {
				return err
			}
			if a.json {
				return a.printJSON(d)
			}
			w := a.out
			state := "waiting for an operator"
			if d.RedrivenAt != nil {
				state = "redriven at " + a.when(*d.RedrivenAt)
			}
			fmt.Fprintf(w, "Dead letter %d (%s)\n", d.ID, state)
			fmt.Fprintf(w, "  group:        %s\n  key:          %s\n  message ID:   %s\n  topic:        %s\n  tags:         %s\n  keys:         %s\n",
				d.Group, d.Key, d.MessageID, d.Topic, d.Tags, strings.Join(d.Keys, ", "))
			fmt.Fprintf(w, "  attempts:     %d\n  first failed: %s\n  dead at:      %s\n  reason:       %s\n  signature:    %s\n",
				d.Attempts, a.when(d.FirstFailedAt), a.when(d.DeadAt), d.Reason, d.Signature)
			if len(d.Properties) > 0 {
				fmt.Fprintln(w, "Properties:")
				keys := make([]string, 0, len(d.Properties))
				for k := range d.Properties {
					keys = append(keys, k)
				}
				sortStrings(keys)
				for _, k := range keys {
					fmt.Fprintf(w, "  %s = %s\n", k, cut(d.Properties[k], 200))
				}
			}
			if len(d.History) > 0 {
				fmt.Fprintln(w, "Error history:")
				for _, h := range d.History {
					fmt.Fprintf(w, "  #%d %s  %s\n", h.Attempt, a.when(h.At), h.Error)
				}
			}
			if d.Truncated {
				fmt.Fprintf(w, "Body: only the first %d of %d bytes are kept (sha256 %s of the whole); this letter cannot be redriven\n",
					len(d.Body), d.BodySize, d.BodySHA256)
			}
			fmt.Fprintf(w, "Body (%d bytes):\n%s\n", len(d.Body), showBody(d.Body))
			return nil
		},
	}
}

func (a *app) deadActionCmd(verb string) *cobra.Command {
	var f deadFlags
	var dry bool
	short := "Publish dead letters again with their own message IDs (through --namesrv)"
	if verb == "discard" {
		short = "Delete dead letters, keeping their keys dead and an audit record"
	}
	cmd := &cobra.Command{
		Use:   verb + " [ID...]",
		Short: short,
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx, err := a.open(cmd, verb == "redrive" && !dry)
			if err != nil {
				return err
			}
			df, err := f.filter(args, a.loc)
			if err != nil {
				return err
			}
			act := a.adm.RedriveDead
			if verb == "discard" {
				act = a.adm.DiscardDead
			}
			preview, err := act(ctx, df, admin.ActionConfig{DryRun: true})
			if err != nil {
				return err
			}
			if dry || preview.Matched == 0 {
				return a.report(verb, preview)
			}
			if err := a.confirm(fmt.Sprintf("This will %s %s (filter: %s).", verb, plural(preview.Matched, "dead letter", "dead letters"), df)); err != nil {
				return err
			}
			res, err := act(ctx, df, admin.ActionConfig{})
			if err != nil {
				return err
			}
			if err := a.report(verb, res); err != nil {
				return err
			}
			if len(res.Failed) > 0 {
				return fmt.Errorf("%s failed for %d dead letters (left waiting)", verb, len(res.Failed))
			}
			return nil
		},
	}
	f.add(cmd, true)
	cmd.Flags().BoolVar(&dry, "dry-run", false, "only count and list what would be touched")
	if verb == "redrive" {
		cmd.Flags().BoolVar(&a.viaOutbox, "via-outbox", false, "write the messages into the outbox (same transaction as the redrive) for the relays to send, instead of publishing through --namesrv")
	}
	return cmd
}

// report prints an action's result.
func (a *app) report(verb string, r admin.ActionResult) error {
	if a.json {
		return a.printJSON(r)
	}
	if r.Matched == 0 {
		fmt.Fprintf(a.out, "Nothing matches: nothing to %s.\n", verb)
		return nil
	}
	if r.DryRun {
		fmt.Fprintf(a.out, "Dry run: %s would %s:\n", plural(r.Matched, "item", "items"), verb)
		rows := make([][]string, len(r.IDs))
		for i := range r.IDs {
			rows[i] = []string{strconv.FormatInt(r.IDs[i], 10), r.MessageIDs[i]}
		}
		return a.table([]string{"ID", "MESSAGE ID"}, rows)
	}
	fmt.Fprintf(a.out, "%s: %d of %d done", verb, r.Done, r.Matched)
	if r.Skipped > 0 {
		fmt.Fprintf(a.out, ", %d skipped (already handled)", r.Skipped)
	}
	if len(r.Failed) > 0 {
		fmt.Fprintf(a.out, ", %d failed", len(r.Failed))
	}
	if r.AuditID != 0 {
		fmt.Fprintf(a.out, " (audit record %d)", r.AuditID)
	}
	fmt.Fprintln(a.out)
	for _, f := range r.Failed {
		fmt.Fprintf(a.out, "  failed %d %s: %s\n", f.ID, f.MessageID, f.Error)
	}
	return nil
}
