// Package benchwork is the business workload the idemq benchmarks measure:
// a red-packet payout that credits a wallet and writes a payout row, run
// either bare (the baseline) or behind transactional dedup. Both variants
// run the very same statements, so their ratio is the cost of dedup.
package benchwork

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"gorm.io/gorm"

	"github.com/idemq/idemq/dedup"
	"github.com/idemq/idemq/dedup/sqldedup"
)

// Wallets is the number of wallets payouts are spread over.
const Wallets = 1000

// Workload owns the business tables of one benchmark run.
type Workload struct {
	DB      *gorm.DB
	Prefix  string
	wallets string
	payouts string
	claims  string // HandLease's claim rows
}

// Setup creates fresh business tables with the given prefix.
func Setup(ctx context.Context, db *gorm.DB, prefix string) (*Workload, error) {
	w := &Workload{DB: db, Prefix: prefix, wallets: prefix + "wallets", payouts: prefix + "payouts", claims: prefix + "claims"}
	auto := "BIGSERIAL PRIMARY KEY"
	switch db.Dialector.Name() {
	case "sqlite":
		auto = "INTEGER PRIMARY KEY"
	case "mysql":
		auto = "BIGINT AUTO_INCREMENT PRIMARY KEY"
	}
	stmts := []string{
		"DROP TABLE IF EXISTS " + w.payouts,
		"DROP TABLE IF EXISTS " + w.wallets,
		"DROP TABLE IF EXISTS " + w.claims,
		"CREATE TABLE " + w.claims + " (k VARCHAR(191) PRIMARY KEY, owner VARCHAR(64) NOT NULL, status INT NOT NULL)",
		"CREATE TABLE " + w.wallets + " (id BIGINT PRIMARY KEY, balance BIGINT NOT NULL)",
		"CREATE TABLE " + w.payouts + " (id " + auto + ", msg_key VARCHAR(191) NOT NULL, wallet_id BIGINT NOT NULL, amount BIGINT NOT NULL)",
	}
	for _, s := range stmts {
		if err := db.WithContext(ctx).Exec(s).Error; err != nil {
			return nil, fmt.Errorf("benchwork: %w", err)
		}
	}
	rows := make([]string, 0, Wallets)
	for i := 0; i < Wallets; i++ {
		rows = append(rows, fmt.Sprintf("(%d, 0)", i))
	}
	for i := 0; i < len(rows); i += 250 {
		end := min(i+250, len(rows))
		q := "INSERT INTO " + w.wallets + " (id, balance) VALUES " + join(rows[i:end])
		if err := db.WithContext(ctx).Exec(q).Error; err != nil {
			return nil, fmt.Errorf("benchwork: %w", err)
		}
	}
	return w, nil
}

// Drop drops the business tables Setup created, best effort.
func (w *Workload) Drop(ctx context.Context) {
	for _, t := range []string{w.payouts, w.wallets, w.claims} {
		_ = w.DB.WithContext(ctx).Exec("DROP TABLE IF EXISTS " + t).Error
	}
}

func join(s []string) string {
	out := ""
	for i, v := range s {
		if i > 0 {
			out += ","
		}
		out += v
	}
	return out
}

// Pay is the business work of one message, in tx.
func (w *Workload) Pay(tx *gorm.DB, key string, wallet int64, amount int64) error {
	if err := tx.Exec("UPDATE "+w.wallets+" SET balance = balance + ? WHERE id = ?", amount, wallet).Error; err != nil {
		return err
	}
	return tx.Exec("INSERT INTO "+w.payouts+" (msg_key, wallet_id, amount) VALUES (?, ?, ?)", key, wallet, amount).Error
}

// Bare runs the business transaction with no dedup: the baseline.
func (w *Workload) Bare(ctx context.Context, key string) error {
	wallet := rand.Int64N(Wallets)
	return w.DB.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		return w.Pay(tx, key, wallet, 1)
	})
}

// Dedup runs the business transaction behind a transactional store.
func (w *Workload) Dedup(ctx context.Context, s dedup.Store, group, key string) (dedup.Outcome, error) {
	wallet := rand.Int64N(Wallets)
	res, err := s.Process(ctx, dedup.Request{Group: group, Key: key, MessageID: key}, func(ctx context.Context) error {
		return w.Pay(dedup.Tx(ctx), key, wallet, 1)
	})
	return res.Outcome, err
}

// Batch runs one transaction for a batch of keys behind ProcessBatch. The
// handler writes the same effects as Pay does per message, set-based as a
// batch handler would: one wallet update and one multi-row payout insert.
func (w *Workload) Batch(ctx context.Context, s *sqldedup.Store, group string, keys []string) error {
	reqs := make([]dedup.Request, len(keys))
	for i, k := range keys {
		reqs[i] = dedup.Request{Group: group, Key: k, MessageID: k}
	}
	_, err := s.ProcessBatch(ctx, reqs, func(ctx context.Context, fresh []int) error {
		credit := map[int64]int64{}
		var ins strings.Builder
		args := make([]any, 0, 3*len(fresh))
		ins.WriteString("INSERT INTO " + w.payouts + " (msg_key, wallet_id, amount) VALUES ")
		for n, i := range fresh {
			wallet := rand.Int64N(Wallets)
			credit[wallet]++
			if n > 0 {
				ins.WriteByte(',')
			}
			ins.WriteString("(?, ?, 1)")
			args = append(args, keys[i], wallet)
		}
		// Wallets in ascending order, so that concurrent batches cannot
		// deadlock on wallet rows.
		wallets := make([]int64, 0, len(credit))
		for id := range credit {
			wallets = append(wallets, id)
		}
		slices.Sort(wallets)
		var upd strings.Builder
		upd.WriteString("UPDATE " + w.wallets + " SET balance = balance + CASE id")
		for _, id := range wallets {
			// Integers of our own making: written inline, so that every
			// database types the CASE as an integer.
			fmt.Fprintf(&upd, " WHEN %d THEN %d", id, credit[id])
		}
		upd.WriteString(" END WHERE id IN ?")
		uargs := []any{wallets}
		tx := dedup.Tx(ctx)
		if tx.Dialector.Name() != "sqlite" {
			// Lock the wallets in id order first: a multi-row UPDATE locks
			// in whatever order its plan visits rows.
			var locked []int64
			if err := tx.Raw("SELECT id FROM "+w.wallets+" WHERE id IN ? ORDER BY id FOR UPDATE", wallets).Scan(&locked).Error; err != nil {
				return err
			}
		}
		if err := tx.Exec(upd.String(), uargs...).Error; err != nil {
			return err
		}
		return tx.Exec(ins.String(), args...).Error
	})
	return err
}

// Payouts counts payout rows.
func (w *Workload) Payouts(ctx context.Context) (int64, error) {
	var n int64
	err := w.DB.WithContext(ctx).Raw("SELECT COUNT(*) FROM " + w.payouts).Scan(&n).Error
	return n, err
}

// HandLease is a hand-written lease around the business transaction: a
// plain INSERT of a claim row, the transaction (Bare), a plain UPDATE
// marking the row done where its owner still holds it. It has none of
// sqldedup's lease mode around it (no fencing token, no renewal, no
// takeover, no expiry, a narrower row with no index but the key): it is
// the floor of any lease design that claims and marks with one statement
// each, so lease mode measured against it pays for what it adds.
func (w *Workload) HandLease(ctx context.Context, key, owner string) error {
	db := w.DB.WithContext(ctx)
	r := db.Exec("INSERT INTO "+w.claims+" (k, owner, status) VALUES (?, ?, 1)", key, owner)
	if r.Error != nil {
		return r.Error
	}
	if err := w.Bare(ctx, key); err != nil {
		return err
	}
	r = db.Exec("UPDATE "+w.claims+" SET status = 2, owner = '' WHERE k = ? AND status = 1 AND owner = ?", key, owner)
	if r.Error == nil && r.RowsAffected != 1 {
		return fmt.Errorf("benchwork: mark of %s changed %d rows", key, r.RowsAffected)
	}
	return r.Error
}

// Measure runs op from c goroutines for d and returns operations per
// second. Each op handles perOp messages. op gets a unique sequence number.
// The first tenth of d (at most one second) is a warm-up whose operations
// are not counted, so that connection set-up and first-use statement
// preparation do not weigh on the figure. The first error stops the run.
func Measure(ctx context.Context, c int, d time.Duration, perOp int, op func(ctx context.Context, seq int64) error) (float64, error) {
	var (
		seq   atomic.Int64
		done  atomic.Int64
		wg    sync.WaitGroup
		first error
		once  sync.Once
	)
	start := time.Now()
	warmEnd := start.Add(min(d/10, time.Second))
	stopAt := start.Add(d)
	for g := 0; g < c; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for time.Now().Before(stopAt) && ctx.Err() == nil {
				if err := op(ctx, seq.Add(1)); err != nil {
					once.Do(func() { first = err })
					return
				}
				if time.Now().After(warmEnd) {
					done.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	if first != nil {
		return 0, first
	}
	elapsed := time.Since(warmEnd).Seconds()
	if elapsed <= 0 {
		return 0, fmt.Errorf("benchwork: run of %s too short to measure", d)
	}
	return float64(done.Load()*int64(perOp)) / elapsed, nil
}
