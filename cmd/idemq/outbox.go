package main

import (
	"fmt"
	"sort"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/spf13/cobra"

	"github.com/idemq/idemq/admin"
)

func sortStrings(s []string) { sort.Strings(s) }

// showBody prints a body as text when it is valid UTF-8 without control
// characters, and as hex otherwise; long bodies are cut.
func showBody(b []byte) string {
	const maxShown = 4096
	more := ""
	if len(b) > maxShown {
		more = fmt.Sprintf("\n… (%d more bytes; --json prints it all)", len(b)-maxShown)
		b = b[:maxShown]
	}
	printable := utf8.Valid(b)
	for _, r := range string(b) {
		if r < 0x20 && r != '\n' && r != '\t' && r != '\r' || r == 0x7f {
			printable = false
			break
		}
	}
	if printable {
		return string(b) + more
	}
	var sb strings.Builder
	for i := 0; i < len(b); i += 16 {
		end := min(i+16, len(b))
		fmt.Fprintf(&sb, "%08x  % x\n", i, b[i:end])
	}
	return strings.TrimRight(sb.String(), "\n") + more
}

func (a *app) outboxCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "outbox", Short: "The outbox: list, show, stats, redrive, discard"}
	cmd.AddCommand(a.outboxListCmd(), a.outboxShowCmd(), a.outboxStatsCmd(), a.outboxActionCmd("redrive"), a.outboxActionCmd("discard"))
	return cmd
}

func (a *app) outboxListCmd() *cobra.Command {
	var statuses []string
	var topic string
	var limit int
	var cursor int64
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List outbox rows (pending and failed by default), oldest first",
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx, err := a.open(cmd, false)
			if err != nil {
				return err
			}
			items, next, err := a.adm.ListOutbox(ctx, admin.OutboxFilter{Statuses: statuses, Topic: topic}, admin.Page{Cursor: cursor, Limit: limit})
			if err != nil {
				return err
			}
			if a.json {
				if items == nil {
					items = []admin.OutboxEntry{}
				}
				return a.printJSON(map[string]any{"entries": items, "next": next})
			}
			rows := make([][]string, len(items))
			for i, e := range items {
				st := e.Status
				if e.Claimed {
					st = "pending (claimed)"
				}
				rows[i] = []string{strconv.FormatInt(e.ID, 10), e.MessageID, e.Topic, st, strconv.Itoa(e.Attempts), a.when(e.CreatedAt),
					age(e.Age), a.when(e.NextAttemptAt), cut(e.LastError, 60)}
			}
			if err := a.table([]string{"ID", "MESSAGE ID", "TOPIC", "STATUS", "ATTEMPTS", "CREATED", "AGE", "NEXT ATTEMPT", "LAST ERROR"}, rows); err != nil {
				return err
			}
			if next != 0 {
				fmt.Fprintf(a.out, "(more: --cursor %d)\n", next)
			}
			return nil
		},
	}
	cmd.Flags().StringSliceVar(&statuses, "status", []string{"pending", "failed"}, "statuses: pending, sent, failed")
	cmd.Flags().StringVar(&topic, "topic", "", "topic")
	cmd.Flags().IntVar(&limit, "limit", 50, "most rows to list")
	cmd.Flags().Int64Var(&cursor, "cursor", 0, "continue after this ID")
	return cmd
}

func (a *app) outboxShowCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "show MESSAGE_ID",
		Short: "Show one outbox row in full",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx, err := a.open(cmd, false)
			if err != nil {
				return err
			}
			e, err := a.adm.OutboxEntry(ctx, args[0])
			if err != nil {
				return err
			}
			if a.json {
				return a.printJSON(e)
			}
			w := a.out
			fmt.Fprintf(w, "Outbox row %d: %s\n", e.ID, e.Status)
			fmt.Fprintf(w, "  message ID:   %s\n  topic:        %s\n  tags:         %s\n  keys:         %s\n  attempts:     %d\n",
				e.MessageID, e.Topic, e.Tags, strings.Join(e.Keys, ", "), e.Attempts)
			fmt.Fprintf(w, "  created:      %s (%s ago)\n  next attempt: %s\n  sent:         %s\n  last error:   %s\n",
				a.when(e.CreatedAt), age(e.Age), a.when(e.NextAttemptAt), a.whenPtr(e.SentAt), e.LastError)
			if e.ClaimedBy != "" {
				fmt.Fprintf(w, "  claimed by:   %s until %s\n", e.ClaimedBy, a.whenPtr(e.ClaimUntil))
			}
			keys := make([]string, 0, len(e.Properties))
			for k := range e.Properties {
				keys = append(keys, k)
			}
			sortStrings(keys)
			if len(keys) > 0 {
				fmt.Fprintln(w, "Properties:")
				for _, k := range keys {
					fmt.Fprintf(w, "  %s = %s\n", k, cut(e.Properties[k], 200))
				}
			}
			fmt.Fprintf(w, "Body (%d bytes):\n%s\n", len(e.Body), showBody(e.Body))
			return nil
		},
	}
}

func (a *app) outboxStatsCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "stats",
		Short: "Count outbox rows by state and show the backlog's age",
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx, err := a.open(cmd, false)
			if err != nil {
				return err
			}
			s, err := a.adm.OutboxStats(ctx)
			if err != nil {
				return err
			}
			if a.json {
				return a.printJSON(s)
			}
			return a.table([]string{"PENDING", "CLAIMED", "FAILED", "SENT", "OLDEST PENDING"}, [][]string{{
				strconv.FormatInt(s.Pending, 10), strconv.FormatInt(s.Claimed, 10), strconv.FormatInt(s.Failed, 10),
				strconv.FormatInt(s.Sent, 10), age(s.OldestPendingAge)}})
		},
	}
}

func (a *app) outboxActionCmd(verb string) *cobra.Command {
	var topic string
	var all, dry bool
	short := "Make failed outbox rows pending again (same message IDs); the relays send them"
	if verb == "discard" {
		short = "Delete failed outbox rows, keeping an audit record"
	}
	cmd := &cobra.Command{
		Use:   verb + " [MESSAGE_ID...]",
		Short: short,
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx, err := a.open(cmd, false)
			if err != nil {
				return err
			}
			sel := admin.OutboxSelector{MessageIDs: args, Topic: topic, All: all}
			act := a.adm.RedriveOutbox
			if verb == "discard" {
				act = a.adm.DiscardOutbox
			}
			preview, err := act(ctx, sel, admin.ActionConfig{DryRun: true})
			if err != nil {
				return err
			}
			if dry || preview.Matched == 0 {
				return a.report(verb, preview)
			}
			if err := a.confirm(fmt.Sprintf("This will %s %s (%s).", verb, plural(preview.Matched, "failed outbox row", "failed outbox rows"), sel)); err != nil {
				return err
			}
			res, err := act(ctx, sel, admin.ActionConfig{})
			if err != nil {
				return err
			}
			return a.report(verb, res)
		},
	}
	cmd.Flags().StringVar(&topic, "topic", "", "every failed row of this topic")
	cmd.Flags().BoolVar(&all, "all", false, "every failed row")
	cmd.Flags().BoolVar(&dry, "dry-run", false, "only count and list what would be touched")
	return cmd
}
