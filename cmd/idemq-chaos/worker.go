package main

import (
	"bufio"
	"context"
	"encoding/gob"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strconv"
	"sync"
	"time"

	"github.com/go-sql-driver/mysql"
	"github.com/redis/go-redis/v9"
	"gorm.io/gorm"

	"github.com/idemq/idemq"
	"github.com/idemq/idemq/dedup"
	"github.com/idemq/idemq/dedup/redisdedup"
	"github.com/idemq/idemq/dedup/sqldedup"
	"github.com/idemq/idemq/internal/dbopen"
	"github.com/idemq/idemq/internal/token"
	"github.com/idemq/idemq/middleware"
)

// workerEnv carries a worker's configuration (JSON) from the coordinator.
const workerEnv = "IDEMQ_CHAOS_WORKER"

// exitCrash is a worker's exit code at a crash point.
const exitCrash = 3

// WorkerConfig is what a worker process needs to consume.
type WorkerConfig struct {
	Index       int
	Broker      string
	Dialect     string // sqlite, postgres or mysql
	DSN         string // through the fault proxy; a file path for SQLite
	Prefix      string
	Mode        string
	Redis       string // through the fault proxy; "" without Redis
	RedisPrefix string
	Goroutines  int
	Lease       time.Duration
	MaxAttempts int
}

// Mode names.
const (
	ModeTx         = "tx"          // transactional dedup, effects through dedup.Tx
	ModeTxRedis    = "tx-redis"    // the same behind the Redis fast path
	ModeLease      = "lease"       // lease mode, effects through the external API
	ModeLeaseRedis = "lease-redis" // the same behind the Redis fast path
)

func modeIsLease(m string) bool  { return m == ModeLease || m == ModeLeaseRedis }
func modeHasRedis(m string) bool { return m == ModeTxRedis || m == ModeLeaseRedis }

// runWorker is the body of a worker process.
func runWorker(raw string) error {
	var cfg WorkerConfig
	if err := json.Unmarshal([]byte(raw), &cfg); err != nil {
		return fmt.Errorf("worker config: %w", err)
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	_ = mysql.SetLogger(slog.NewLogLogger(log.Handler(), slog.LevelWarn))
	db, closeDB, err := dbopen.Open(cfg.Dialect, cfg.DSN)
	if err != nil {
		return err
	}
	defer closeDB()
	if cfg.Dialect != "sqlite" {
		if sqlDB, err := db.DB(); err == nil {
			sqlDB.SetMaxOpenConns(cfg.Goroutines + 4)
			sqlDB.SetMaxIdleConns(cfg.Goroutines + 4)
		}
	}
	scfg := sqldedup.Config{TablePrefix: cfg.Prefix, Logger: log}
	if modeIsLease(cfg.Mode) {
		scfg.Mode = sqldedup.Lease
		scfg.LeaseDuration = cfg.Lease
	}
	store, err := sqldedup.New(db, scfg)
	if err != nil {
		return err
	}
	var ds dedup.Store = store
	if modeHasRedis(cfg.Mode) {
		rdb := redis.NewClient(&redis.Options{
			Addr: cfg.Redis, ContextTimeoutEnabled: true,
			DialTimeout: 500 * time.Millisecond, ReadTimeout: 500 * time.Millisecond, WriteTimeout: 500 * time.Millisecond,
			MaxRetries: -1,
		})
		defer rdb.Close()
		fp, err := redisdedup.NewFastPath(store, rdb, redisdedup.FastPathConfig{
			KeyPrefix: cfg.RedisPrefix, Logger: log, RetryInterval: 200 * time.Millisecond,
		})
		if err != nil {
			return err
		}
		ds = fp
	}
	policy := middleware.RetryPolicy{Initial: 20 * time.Millisecond, Max: 400 * time.Millisecond}
	chain, err := middleware.Standard(middleware.StandardConfig{
		Store: ds, Ledger: store, Logger: log, RetryPolicy: policy,
		DeadLetter: middleware.DeadLetterConfig{MaxAttempts: cfg.MaxAttempts},
		Dedup:      middleware.DedupConfig{MinBusyDelay: 50 * time.Millisecond},
	})
	if err != nil {
		return err
	}
	w := &worker{cfg: cfg, log: log, tables: harnessTables(cfg.Prefix)}
	h, err := idemq.Chain(idemq.HandlerFunc(w.handle), chain...)
	if err != nil {
		return err
	}
	var wg sync.WaitGroup
	errs := make(chan error, cfg.Goroutines)
	for g := 0; g < cfg.Goroutines; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := w.consume(h, policy); err != nil {
				errs <- err
			}
		}()
	}
	wg.Wait()
	close(errs)
	return <-errs
}

type worker struct {
	cfg    WorkerConfig
	log    *slog.Logger
	tables tables
	outage outage
}

// session is one consumer goroutine's connection to the broker.
type session struct {
	enc *gob.Encoder
	dec *gob.Decoder
	w   *bufio.Writer
}

func (s *session) call(req wireReq) (wireResp, error) {
	var resp wireResp
	if err := s.enc.Encode(&req); err != nil {
		return resp, err
	}
	if err := s.w.Flush(); err != nil {
		return resp, err
	}
	err := s.dec.Decode(&resp)
	return resp, err
}

type deliveryKey struct{}

type deliveryInfo struct {
	d    *Delivery
	sess *session
}

// consume is one consumer goroutine: take a delivery, run the chain,
// acknowledge or ask for a redelivery.
func (w *worker) consume(h idemq.Handler, policy middleware.RetryPolicy) error {
	c, err := net.Dial("tcp", w.cfg.Broker)
	if err != nil {
		return err
	}
	defer c.Close()
	bw := bufio.NewWriter(c)
	s := &session{enc: gob.NewEncoder(bw), dec: gob.NewDecoder(bufio.NewReader(c)), w: bw}
	for {
		resp, err := s.call(wireReq{Op: "next", Worker: w.cfg.Index})
		if err != nil {
			return fmt.Errorf("broker: %w", err)
		}
		if resp.Stop || resp.D == nil {
			return nil
		}
		d := resp.D
		if wait := time.Until(time.Unix(0, d.StartAt)); wait > 0 {
			time.Sleep(wait)
		}
		ctx := context.WithValue(context.Background(), deliveryKey{}, &deliveryInfo{d: d, sess: s})
		herr := w.deliver(ctx, h, d)
		if herr == nil {
			if d.Crash == CrashBeforeAck {
				os.Exit(exitCrash)
			}
			if _, err := s.call(wireReq{Op: "ack", Copy: d.Copy, Seq: d.Seq}); err != nil {
				return fmt.Errorf("broker: %w", err)
			}
			continue
		}
		delay := policy.Next(d.Attempt, herr)
		if _, err := s.call(wireReq{Op: "nack", Copy: d.Copy, Seq: d.Seq, DelayNS: int64(delay), Err: herr.Error()}); err != nil {
			return fmt.Errorf("broker: %w", err)
		}
	}
}

// deliver runs the chain on d as idemq's consumer does: a failure that is
// not the handler's (dedup.IsInfrastructure: the store is unreachable, or a
// deadlock it gave up on) is retried in place after a pause shared by every
// consumer goroutine of the process (100 ms doubling up to a cap, reset by
// the first success), so that an outage pauses consumption instead of
// handing deliveries back to the broker as failed attempts.
func (w *worker) deliver(ctx context.Context, h idemq.Handler, d *Delivery) error {
	for {
		msg := &idemq.Message{
			ID: d.ID, Key: d.Key, Group: d.Group, Topic: "chaos", Tags: d.Class,
			Keys: []string{d.ID}, Body: d.Body, Attempt: d.Attempt, BornAt: time.Now(),
			Properties: map[string]string{"chaos_msg": strconv.Itoa(d.N), "chaos_class": d.Class},
		}
		err := h.Handle(ctx, msg)
		if err == nil {
			w.outage.reset()
		}
		if err == nil || !dedup.IsInfrastructure(err) {
			return err
		}
		time.Sleep(w.outage.fail())
	}
}

// outage is a worker's shared pause while the store cannot decide.
type outage struct {
	mu    sync.Mutex
	pause time.Duration
}

const (
	outageFirst = 100 * time.Millisecond
	outageMax   = time.Second
)

func (o *outage) fail() time.Duration {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.pause = min(max(2*o.pause, outageFirst), outageMax)
	return o.pause
}

func (o *outage) reset() {
	o.mu.Lock()
	o.pause = 0
	o.mu.Unlock()
}

var errInjected = errors.New("chaos: injected handler failure")

// errFenced is the external API's refusal of a stale fencing token: a
// successor owns the key, so this run stops without its effect.
var errFenced = errors.New("chaos: external API refused a stale fencing token")

// handle is the user's handler: in transactional modes it credits an
// account and writes an effect row through dedup.Tx; in lease modes it
// calls the external API with the message ID as idempotency key.
func (w *worker) handle(ctx context.Context, msg *idemq.Message) error {
	info, _ := ctx.Value(deliveryKey{}).(*deliveryInfo)
	if info == nil {
		return idemq.Permanent(errors.New("chaos: delivery without its record"))
	}
	d := info.d
	n, account, amount, ok := ParseBody(msg.Body)
	if !ok || n != d.N {
		return idemq.Permanent(fmt.Errorf("chaos: body of message %d unreadable", d.N))
	}
	if modeIsLease(w.cfg.Mode) {
		return w.handleLease(ctx, msg, info, account, amount)
	}
	tx := dedup.Tx(ctx)
	if tx == nil {
		return errors.New("chaos: transactional handler called without a transaction")
	}
	if err := w.credit(tx, n, account, amount); err != nil {
		return err
	}
	if d.Class == ClassSwallow {
		// In the message's first handler run (whichever copy and process
		// it is in), a statement fails and the handler swallows the error,
		// as real code does. On PostgreSQL the transaction is now aborted.
		resp, err := info.sess.call(wireReq{Op: "fail", N: -d.N, Fails: 1})
		if err != nil {
			return err
		}
		if resp.Fail {
			_ = tx.Exec("INSERT INTO " + w.tables.missing + " (x) VALUES (1)").Error
		}
	}
	if d.Crash == CrashInHandler {
		os.Exit(exitCrash) // effects written, not committed
	}
	return outcome(info)
}

func (w *worker) credit(tx *gorm.DB, n, account int, amount int64) error {
	res := tx.Exec("UPDATE "+w.tables.accounts+" SET balance = balance + ? WHERE id = ?", amount, account)
	if res.Error != nil {
		return res.Error
	}
	if res.RowsAffected != 1 {
		return fmt.Errorf("chaos: account %d: %d rows updated", account, res.RowsAffected)
	}
	return tx.Exec("INSERT INTO "+w.tables.effects+" (msg, account, amount, worker) VALUES (?, ?, ?, ?)",
		n, account, amount, w.cfg.Index).Error
}

// outcome is what a handler run of a message of d's class returns. A
// transiently failing message fails its first Fails handler runs, counted
// by the broker across copies and processes.
func outcome(info *deliveryInfo) error {
	d := info.d
	switch d.Class {
	case ClassTransient:
		resp, err := info.sess.call(wireReq{Op: "fail", N: d.N, Fails: d.Fails})
		if err != nil {
			return err
		}
		if resp.Fail {
			return fmt.Errorf("%w (one of the first %d runs)", errInjected, d.Fails)
		}
	case ClassPoison, ClassBigBody, ClassBadKey, ClassNoGroup:
		return idemq.Permanent(fmt.Errorf("%w: permanent", errInjected))
	case ClassExhaust:
		return fmt.Errorf("%w: always", errInjected)
	}
	return nil
}

func (w *worker) handleLease(ctx context.Context, msg *idemq.Message, info *deliveryInfo, account int, amount int64) error {
	d := info.d
	run := newRunID()
	token, hasToken := dedup.Fence(ctx)
	resp, err := info.sess.call(wireReq{Op: "begin", N: d.N, Run: run, Token: token, HasToken: hasToken})
	if err != nil {
		return err
	}
	if resp.Fenced {
		return errFenced
	}
	// The work before the effect: long enough for a pause to land in it.
	select {
	case <-time.After(time.Duration(5+d.Seq*7%30) * time.Millisecond):
	case <-ctx.Done():
		return context.Cause(ctx)
	}
	if err := outcome(info); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return context.Cause(ctx) // the lease is gone: do not touch the API
	}
	resp, err = info.sess.call(wireReq{Op: "effect", N: d.N, Run: run, IdemKey: msg.ID, Token: token, HasToken: hasToken, Account: account, Amount: amount})
	if err != nil {
		return err
	}
	if resp.Fenced {
		return errFenced
	}
	if d.Crash == CrashInHandler {
		os.Exit(exitCrash) // effect done, key not marked done
	}
	return nil
}

func newRunID() string { return token.Short(8) }
