package outbox

import (
	"strings"
	"testing"

	"gorm.io/gorm"

	"github.com/idemq/idemq/internal/testenv"
)

// TestPostgresClaimFindsRowsByPrimaryKey: the claiming UPDATE finds the
// rows its CTE picked through the primary key; a plan that scans the whole
// table (sent rows included) makes every claim cost the table's size.
func TestPostgresClaimFindsRowsByPrimaryKey(t *testing.T) {
	forEachDB(t, func(t *testing.T, d testenv.DB) {
		if d.Dialect != DialectPostgres {
			t.Skip("the statement is PostgreSQL's own")
		}
		b := setup(t, d, Config{})
		// Enough rows, most of them sent, for the planner to weigh a scan.
		b.enqueueN(t, "orders", 3000)
		b.exec(t, "UPDATE "+b.ob.Table()+" SET status = 1, sent_at = now() WHERE id % 10 <> 0")
		b.exec(t, "ANALYZE "+b.ob.Table())
		r := newRelay(t, b.ob, &recSender{}, RelayConfig{})
		stmt, args := r.claimQuery("plan#1", nil).postgresStmt()
		var plan []string
		err := b.db.Transaction(func(tx *gorm.DB) error {
			return tx.Raw("EXPLAIN "+stmt, args...).Scan(&plan).Error
		})
		if err != nil {
			t.Fatal(err)
		}
		text := strings.Join(plan, "\n")
		if strings.Contains(text, "Seq Scan") {
			t.Fatalf("the claim scans the table:\n%s", text)
		}
		if !strings.Contains(text, b.ob.Table()+"_pkey") {
			t.Fatalf("the claim does not use the primary key:\n%s", text)
		}
	})
}

// TestPostgresClaimsAreHOTUpdates: a claim changes no indexed column, and
// the table leaves room on its pages (step 0002), so PostgreSQL writes the
// claimed rows' new versions without touching an index.
func TestPostgresClaimsAreHOTUpdates(t *testing.T) {
	forEachDB(t, func(t *testing.T, d testenv.DB) {
		if d.Dialect != DialectPostgres {
			t.Skip("HOT updates are PostgreSQL's own")
		}
		const rows = 400
		b := setup(t, d, Config{})
		b.enqueueN(t, "orders", rows)
		r := newRelay(t, b.ob, &recSender{}, RelayConfig{BatchSize: rows})
		var upd, hot int64
		err := b.db.Transaction(func(tx *gorm.DB) error {
			got, err := r.claimQuery("hot#1", nil).postgres(tx)
			if err != nil {
				return err
			}
			if len(got) != rows {
				t.Fatalf("claimed %d rows, want %d", len(got), rows)
			}
			// This transaction's own counts, before it commits.
			return tx.Raw("SELECT n_tup_upd, n_tup_hot_upd FROM pg_stat_xact_user_tables WHERE relname = ?", b.ob.Table()).
				Row().Scan(&upd, &hot)
		})
		if err != nil {
			t.Fatal(err)
		}
		if upd != rows || hot < rows*9/10 {
			t.Fatalf("claim: %d rows updated, %d of them HOT; want %d, at least 90%% HOT", upd, hot, rows)
		}
	})
}
