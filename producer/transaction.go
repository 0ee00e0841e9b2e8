package producer

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	rocketmq "github.com/apache/rocketmq-client-go/v2"
	"github.com/apache/rocketmq-client-go/v2/primitive"
	"gorm.io/gorm"

	"github.com/idemq/idemq"
	"github.com/idemq/idemq/internal/gate"
	"github.com/idemq/idemq/msgid"
)

// DefaultCheckGrace is how old a half message must be before a check-back
// that finds no local-transaction record rolls it back.
const DefaultCheckGrace = time.Minute

// maxTxMessageID is the width of tx_records.message_id.
const maxTxMessageID = 64

// ErrLocalTxTooSlow is returned by SendInTx when the local transaction did
// not finish within CheckGrace/2 of the send. It is rolled back, so that a
// check-back after CheckGrace can never see a record appear late.
var ErrLocalTxTooSlow = errors.New("producer: local transaction took longer than CheckGrace/2")

// txRecordRow is the gorm model of <prefix>tx_records. The shipped SQL in
// versioned steps (see Schema) create the same table.
type txRecordRow struct {
	// MessageID is the idemq message ID of the half message.
	MessageID string `gorm:"column:message_id;primaryKey;type:varchar(64)"`
	// Topic is the message's topic, for operators.
	Topic string `gorm:"column:topic;type:varchar(255);not null"`
	// CreatedAt is when the local transaction ran (producer clock, UTC).
	CreatedAt time.Time `gorm:"column:created_at;not null;index"`
}

// TxConfig configures a TransactionProducer.
type TxConfig struct {
	// Config is the producer configuration. InstanceName defaults to a
	// name unique to this TransactionProducer: a transaction producer must
	// not share its instance name with any other client of the process,
	// or check-backs reach the wrong callback.
	Config
	// DB holds the local-transaction records and runs the local
	// transactions. Required.
	DB *gorm.DB
	// TablePrefix starts the record table's name, <prefix>tx_records.
	// Defaults to DefaultTablePrefix.
	TablePrefix string
	// Migrate brings the producer's tables up to date with the versioned
	// steps of Schema (see [Schema]). Without it the table must exist.
	// Defaults to false.
	Migrate bool
	// CheckGrace is how old (by its born timestamp) a half message must be
	// before a check-back that finds no record rolls it back; younger ones
	// are answered "unknown" so the broker asks again. Local transactions
	// must finish within CheckGrace/2 or are rolled back. It must exceed
	// the clock skew between producer hosts. Defaults to
	// DefaultCheckGrace.
	CheckGrace time.Duration
}

// TransactionProducer sends RocketMQ transactional (half) messages whose
// commit is decided by a local database transaction, and answers the
// broker's check-backs from the database without user code.
//
// SendInTx sends the half message, then runs fn in a gorm transaction that
// also inserts the message ID into <prefix>tx_records; a commit of that
// transaction commits the message, an error or panic rolls both back. If
// the commit/rollback notice to the broker is lost (it is one-way) or the
// process dies after the local commit, the broker asks a producer of the
// group, which answers: record present -> commit; absent and the message
// older than CheckGrace -> rollback; otherwise unknown (ask again later).
//
// Guarantee: the message is delivered if and only if the local transaction
// committed, provided the broker keeps checking until one of them settles
// it (RocketMQ gives up after 15 checks by default) and records outlive
// that horizon (see PurgeTxRecords).
type TransactionProducer struct {
	cfg    TxConfig
	client rocketmq.TransactionProducer
	db     *gorm.DB
	table  string
	log    *slog.Logger
	now    func() time.Time

	pending sync.Map // *primitive.Message -> *localTx

	gate *gate.Gate // Start, SendInTx calls in flight, and Shutdown

	// Tests only. loseEnd, when true for a message ID, makes the outcome
	// "unknown" after the local commit, as if the END_TRANSACTION notice
	// were lost. crashBefore, when true, skips the local transaction and
	// answers "unknown", as a process dying right after the half send.
	loseEnd, crashBefore func(id string) bool
}

// localTx is one SendInTx call waiting for its local transaction.
type localTx struct {
	ctx   context.Context
	fn    func(tx *gorm.DB) error
	id    string
	topic string
	start time.Time
	ran   bool
	err   error
}

// NewTransactionProducer returns a TransactionProducer for cfg, with
// defaults applied. It checks cfg and touches neither the database nor the
// network: Start migrates (with TxConfig.Migrate) and connects.
func NewTransactionProducer(cfg TxConfig) (*TransactionProducer, error) {
	if err := cfg.Config.defaults("txproducer"); err != nil {
		return nil, err
	}
	if cfg.DB == nil {
		return nil, errors.New("producer: TxConfig.DB is required")
	}
	if cfg.TablePrefix == "" {
		cfg.TablePrefix = DefaultTablePrefix
	}
	if err := ValidateTablePrefix(cfg.TablePrefix); err != nil {
		return nil, err
	}
	if cfg.CheckGrace < 0 {
		return nil, fmt.Errorf("producer: negative CheckGrace %s", cfg.CheckGrace)
	}
	if cfg.CheckGrace == 0 {
		cfg.CheckGrace = DefaultCheckGrace
	}
	return &TransactionProducer{
		cfg:   cfg,
		db:    cfg.DB,
		table: cfg.TablePrefix + "tx_records",
		log:   cfg.Logger.With("producer_group", cfg.Group, "transactional", true),
		now:   time.Now,
		gate:  gate.New(ErrClosed, ErrNotStarted),
	}, nil
}

// Start brings the tables up to date (with TxConfig.Migrate), resolves
// the name servers, checks that one answers, and starts the client, which
// from then on also answers the broker's check-backs. ctx bounds these
// steps, not the producer's life. Start is idempotent; after Shutdown it
// returns ErrClosed. A Start that failed may be tried again.
func (p *TransactionProducer) Start(ctx context.Context) error {
	return p.gate.Start(ctx, func(ctx context.Context) error {
		if p.cfg.Migrate {
			if err := migrateTables(ctx, p.cfg.DB, p.cfg.TablePrefix); err != nil {
				return err
			}
		}
		ns, err := p.cfg.connect(ctx)
		if err != nil {
			return err
		}
		client, err := rocketmq.NewTransactionProducer((*txListener)(p), clientOptions(&p.cfg.Config, ns, newShardingSelector())...)
		if err != nil {
			return fmt.Errorf("producer: new transaction client: %w", err)
		}
		p.cfg.NameServers = ns // resolved, for the checks after a failed send
		p.client = client
		if err := client.Start(); err != nil {
			_ = client.Shutdown()
			return fmt.Errorf("producer: start transaction client (group %q, instance %q): %w", p.cfg.Group, p.cfg.InstanceName, err)
		}
		return nil
	})
}

// Shutdown stops accepting sends, waits for SendInTx calls in flight and
// stops the client. Half messages it leaves unsettled are settled by
// check-backs to another producer of the group. Further sends and Start
// return ErrClosed. Shutdown is idempotent and safe to call concurrently;
// every call returns the first call's result once it is done (or its own
// ctx's error if that comes first). It may be called without Start.
func (p *TransactionProducer) Shutdown(ctx context.Context) error {
	return p.gate.Shutdown(ctx, func() error {
		if err := p.client.Shutdown(); err != nil {
			return fmt.Errorf("producer: shutdown transaction client: %w", err)
		}
		return nil
	})
}

// Stamp gives msg its idemq message ID, as Producer.Stamp does.
func (p *TransactionProducer) Stamp(msg *idemq.Message) error {
	return stamp(p.cfg.IDSource, msg)
}

// SendInTx stamps msg, sends it as a half message and, once the broker has
// stored it, runs fn inside a database transaction that also records the
// message ID. If fn returns nil and the transaction commits, the message is
// committed and delivered; otherwise both are rolled back and SendInTx
// returns the error (fn's error is wrapped, so errors.Is works). A panic in
// fn rolls back and comes back as an error.
//
// If the half message cannot be sent, fn does not run and the error is
// returned. A message ID can be used by one successful SendInTx only: a
// second one fails on the record's primary key.
func (p *TransactionProducer) SendInTx(ctx context.Context, msg *idemq.Message, fn func(tx *gorm.DB) error) (SendResult, error) {
	if fn == nil {
		return SendResult{}, errors.New("producer: SendInTx with a nil function")
	}
	if err := p.gate.Enter(); err != nil {
		return SendResult{}, err
	}
	defer p.gate.Leave()

	if err := p.Stamp(msg); err != nil {
		return SendResult{}, err
	}
	if len(msg.ID) > maxTxMessageID {
		return SendResult{}, invalid("message ID longer than %d bytes cannot be recorded", maxTxMessageID)
	}
	pm, err := toPrimitive(msg, sendOptions{})
	if err != nil {
		return SendResult{MessageID: msg.ID}, err
	}
	lt := &localTx{ctx: ctx, fn: fn, id: msg.ID, topic: msg.Topic, start: p.now()}
	p.pending.Store(pm, lt)
	defer p.pending.Delete(pm)

	sendCtx, cancel := context.WithTimeout(ctx, p.cfg.SendTimeout)
	defer cancel()
	r, err := p.client.SendMessageInTransaction(sendCtx, pm)
	if err != nil {
		return SendResult{MessageID: msg.ID}, explain(p.cfg.NameServers, msg.Topic, err)
	}
	res, err := fromPrimitive(msg.ID, r.SendResult)
	if err != nil {
		return res, err // the client rolled back without running fn
	}
	if !lt.ran {
		return res, fmt.Errorf("producer: local transaction of %s did not run", msg.ID)
	}
	if lt.err != nil {
		return res, lt.err
	}
	return res, nil
}

// txListener is the client's TransactionListener for a
// TransactionProducer.
type txListener TransactionProducer

// ExecuteLocalTransaction runs the local transaction of the SendInTx call
// that sent m. The client calls it on that call's goroutine.
//
// rocketmq-client-go swallows panics in its goroutines, so a panic here
// (outside fn, which runLocal already contains) is recovered, logged and
// answered "unknown": the broker asks again and the check settles it.
func (l *txListener) ExecuteLocalTransaction(m *primitive.Message) (state primitive.LocalTransactionState) {
	p := (*TransactionProducer)(l)
	defer func() {
		if r := recover(); r != nil {
			p.log.Error("panic in ExecuteLocalTransaction; answering unknown", "panic", r)
			state = primitive.UnkonwnState
		}
	}()
	v, ok := p.pending.Load(m)
	if !ok {
		p.log.Error("local transaction for an unknown message", "message_id", m.GetProperty(idemq.PropertyMessageID))
		return primitive.UnkonwnState
	}
	lt := v.(*localTx)
	if p.crashBefore != nil && p.crashBefore(lt.id) {
		return primitive.UnkonwnState
	}
	lt.ran = true
	lt.err = p.runLocal(lt)
	if lt.err != nil {
		return primitive.RollbackMessageState
	}
	if p.loseEnd != nil && p.loseEnd(lt.id) {
		return primitive.UnkonwnState
	}
	return primitive.CommitMessageState
}

func (p *TransactionProducer) runLocal(lt *localTx) (err error) {
	limit := p.cfg.CheckGrace / 2
	ctx, cancel := context.WithDeadline(lt.ctx, lt.start.Add(limit))
	defer cancel()
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("producer: local transaction of %s panicked: %v", lt.id, r)
		}
	}()
	return p.db.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		rec := txRecordRow{MessageID: lt.id, Topic: lt.topic, CreatedAt: p.now().UTC()}
		if err := tx.Table(p.table).Create(&rec).Error; err != nil {
			return fmt.Errorf("producer: record local transaction of %s in %s: %w", lt.id, p.table, err)
		}
		if err := lt.fn(tx); err != nil {
			return fmt.Errorf("producer: local transaction of %s: %w", lt.id, err)
		}
		if p.now().Sub(lt.start) > limit {
			return fmt.Errorf("%w (%s)", ErrLocalTxTooSlow, limit)
		}
		return nil
	})
}

// CheckLocalTransaction answers the broker's check-back from the record
// table. A panic is recovered, logged and answered "unknown" (the broker
// asks again): the client would swallow it silently.
func (l *txListener) CheckLocalTransaction(m *primitive.MessageExt) (state primitive.LocalTransactionState) {
	p := (*TransactionProducer)(l)
	defer func() {
		if r := recover(); r != nil {
			p.log.Error("panic in the transaction check; answering unknown", "panic", r)
			state = primitive.UnkonwnState
		}
	}()
	return p.check(m)
}

func (p *TransactionProducer) check(m *primitive.MessageExt) primitive.LocalTransactionState {
	id := m.GetProperty(idemq.PropertyMessageID)
	log := p.log.With("message_id", id, "topic", m.Topic)
	if id == "" {
		log.Warn("transaction check for a message without an idemq ID: leaving it to the broker")
		return primitive.UnkonwnState
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var n int64
	if err := p.db.WithContext(ctx).Table(p.table).Where("message_id = ?", id).Count(&n).Error; err != nil {
		log.Error("transaction check: reading the record failed; answering unknown", "err", err)
		return primitive.UnkonwnState
	}
	if n > 0 {
		log.Info("transaction check: record found, committing")
		return primitive.CommitMessageState
	}
	born := time.UnixMilli(m.BornTimestamp)
	if m.BornTimestamp <= 0 {
		if at, _, _, err := msgid.Parse(id); err == nil {
			born = at
		} else {
			born = p.now()
		}
	}
	if age := p.now().Sub(born); age > p.cfg.CheckGrace {
		log.Info("transaction check: no record and older than the grace period, rolling back", "age", age)
		return primitive.RollbackMessageState
	}
	return primitive.UnkonwnState
}

// PurgeTxRecords deletes records older than olderThan, in batches of 1,000,
// and returns how many it deleted. olderThan must exceed CheckGrace by far
// and should outlast the broker's check horizon (RocketMQ: 15 checks a
// minute apart by default), since a check-back that finds no record for an
// old message rolls it back.
func (p *TransactionProducer) PurgeTxRecords(ctx context.Context, olderThan time.Duration) (int64, error) {
	if olderThan < 2*p.cfg.CheckGrace || olderThan < time.Hour {
		return 0, fmt.Errorf("producer: purge horizon %s is below max(1h, 2*CheckGrace)", olderThan)
	}
	cutoff := p.now().UTC().Add(-olderThan)
	var total int64
	for {
		var ids []string
		if err := p.db.WithContext(ctx).Table(p.table).Where("created_at < ?", cutoff).
			Order("created_at").Limit(1000).Pluck("message_id", &ids).Error; err != nil {
			return total, fmt.Errorf("producer: purge %s: %w", p.table, err)
		}
		if len(ids) == 0 {
			return total, nil
		}
		res := p.db.WithContext(ctx).Table(p.table).Where("message_id IN ?", ids).Delete(&txRecordRow{})
		if res.Error != nil {
			return total, fmt.Errorf("producer: purge %s: %w", p.table, res.Error)
		}
		total += res.RowsAffected
	}
}
