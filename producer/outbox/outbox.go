package outbox

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"unicode/utf8"

	"gorm.io/gorm"

	"github.com/idemq/idemq"
	"github.com/idemq/idemq/internal/migrate"
	"github.com/idemq/idemq/internal/rmqprops"
	"github.com/idemq/idemq/msgid"
)

// Status is the state of an outbox row.
type Status int

const (
	// StatusPending is a row waiting to be sent, or being sent by a relay
	// that holds its claim.
	StatusPending Status = 0
	// StatusSent is a row the broker confirmed.
	StatusSent Status = 1
	// StatusFailed is a row that failed permanently or exhausted its
	// attempts. It stays until an operator redrives it.
	StatusFailed Status = 2
)

// String returns the status name.
func (s Status) String() string {
	switch s {
	case StatusPending:
		return "pending"
	case StatusSent:
		return "sent"
	case StatusFailed:
		return "failed"
	}
	return "status(" + strconv.Itoa(int(s)) + ")"
}

// Message properties the outbox reads when a message is enqueued. They use
// RocketMQ's own property names, so a producer that copies properties onto
// the RocketMQ message gets the queue selection and delay it expects.
const (
	// PropertyShardingKey selects the message queue; with Config.Ordered,
	// rows of one sharding key are sent in enqueue order.
	PropertyShardingKey = "SHARDING_KEY"
	// PropertyDelayLevel is RocketMQ's delay level (0 none,
	// 1..producer.MaxDelayLevel).
	PropertyDelayLevel = "DELAY"
)

// Limits enforced by Enqueue; they match the column sizes of the schema.
const (
	// DefaultMaxBodySize is RocketMQ's default maximum message size.
	DefaultMaxBodySize = 4 * 1024 * 1024
	maxIDLen           = 128
	maxTopicLen        = 255
	maxTagsLen         = 255
	maxShardingKeyLen  = 191
)

// Errors returned by the outbox. Enqueue's validation errors wrap
// ErrInvalidMessage.
var (
	// ErrInvalidMessage is wrapped by every validation error of Enqueue.
	ErrInvalidMessage = errors.New("outbox: invalid message")
	// ErrBodyTooLarge is returned (wrapping ErrInvalidMessage) for a body
	// larger than Config.MaxBodySize.
	ErrBodyTooLarge = fmt.Errorf("%w: body too large", ErrInvalidMessage)
	// ErrInvalidPrefix is returned for a table prefix that does not match
	// ^[a-z][a-z0-9_]{0,30}$.
	ErrInvalidPrefix = errors.New("outbox: invalid table prefix")
	// ErrUnsupportedDialect is returned for a database other than SQLite,
	// PostgreSQL or MySQL/MariaDB.
	ErrUnsupportedDialect = errors.New("outbox: unsupported database dialect")
	// ErrNoIDSource is returned by New when Config.IDSource is nil.
	ErrNoIDSource = errors.New("outbox: Config.IDSource is required")
	// ErrNilTx is returned by Enqueue without a transaction.
	ErrNilTx = errors.New("outbox: nil transaction")
	// ErrEmptyFilter is returned by Redrive when no selector is set.
	ErrEmptyFilter = errors.New("outbox: redrive filter selects nothing; set MessageIDs, Topic or All")
	// ErrClosed is returned by a Relay's Start, RunOnce and SendNow after
	// Shutdown.
	ErrClosed = errors.New("outbox: relay shut down")
	// ErrNotFound is returned by Get for a message ID not in the outbox.
	ErrNotFound = errors.New("outbox: message not found")
)

// Config configures an Outbox.
type Config struct {
	// IDSource stamps a message ID on messages enqueued without one: a
	// *msgid.Generator on a leased or explicitly configured node.
	// Required.
	IDSource msgid.Source
	// TablePrefix is prepended to the table name ("<prefix>outbox"). It
	// must match ^[a-z][a-z0-9_]{0,30}$. Defaults to "idemq_".
	TablePrefix string
	// MaxBodySize is the largest body Enqueue accepts and a relay sends, in
	// bytes. Defaults to DefaultMaxBodySize (4 MiB).
	MaxBodySize int
	// Ordered makes relays send the rows of one sharding key strictly in
	// enqueue (id) order: a row is not claimed while an earlier row with
	// the same sharding key is pending. Every relay and SendNow of this
	// outbox follow it. Defaults to false.
	Ordered bool
	// Logger receives the relay's logs. Defaults to slog.Default().
	Logger *slog.Logger
}

// Outbox writes messages into an outbox table inside the caller's
// transactions and administers the table. It is safe for concurrent use.
type Outbox struct {
	db      *gorm.DB
	d       dialect
	table   string
	maxBody int
	ordered bool
	ids     msgid.Source
	log     *slog.Logger
}

// New returns an Outbox over db, which must be a SQLite, PostgreSQL or
// MySQL/MariaDB connection (MySQL DSNs need parseTime=true). It does not
// create the table; call Migrate or run the SQL from Schema.
func New(db *gorm.DB, cfg Config) (*Outbox, error) {
	if db == nil {
		return nil, errors.New("outbox: nil database")
	}
	if cfg.IDSource == nil {
		return nil, ErrNoIDSource
	}
	if cfg.TablePrefix == "" {
		cfg.TablePrefix = "idemq_"
	}
	if err := ValidatePrefix(cfg.TablePrefix); err != nil {
		return nil, err
	}
	if cfg.MaxBodySize == 0 {
		cfg.MaxBodySize = DefaultMaxBodySize
	}
	if cfg.MaxBodySize < 0 {
		return nil, fmt.Errorf("outbox: negative MaxBodySize %d", cfg.MaxBodySize)
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	name := db.Dialector.Name()
	switch name {
	case DialectSQLite, DialectPostgres, DialectMySQL:
	default:
		return nil, fmt.Errorf("%w: %q", ErrUnsupportedDialect, name)
	}
	return &Outbox{
		db:      db,
		d:       dialect{name: name},
		table:   cfg.TablePrefix + "outbox",
		maxBody: cfg.MaxBodySize,
		ordered: cfg.Ordered,
		ids:     cfg.IDSource,
		log:     cfg.Logger,
	}, nil
}

// Table returns the outbox table name.
func (o *Outbox) Table() string { return o.table }

// Dialect returns the database dialect name.
func (o *Outbox) Dialect() string { return o.d.name }

// Migrate brings the outbox table and its indexes up to date: it applies
// the numbered steps of the "outbox" component (the SQL Schema returns)
// that <prefix>schema_migrations does not list yet, under a lock, so that
// processes starting together migrate once. A table created before
// migrations were versioned is adopted by step 0001.
func (o *Outbox) Migrate(ctx context.Context) error {
	if _, err := migrate.Run(ctx, o.db, o.table[:len(o.table)-len("outbox")], migrate.Config{}, "outbox"); err != nil {
		return fmt.Errorf("outbox: migrate: %w", err)
	}
	return nil
}

// Enqueue writes msg into the outbox inside tx, the caller's own business
// transaction: the message is sent only if tx commits, and it is sent at
// least once after that (until it fails permanently or exhausts its
// attempts).
//
// If msg.ID is empty, Enqueue takes the ID from the PropertyMessageID
// property or, failing that, stamps a new one from Config.IDSource; it sets both
// msg.ID and the property, so the caller learns the ID (for SendNow). The
// ID is unique in the outbox and survives every re-send and redrive.
//
// Enqueue validates the message (topic set, body no larger than
// MaxBodySize, sharding key and delay level well formed) and returns an
// error wrapping ErrInvalidMessage otherwise, writing nothing.
func (o *Outbox) Enqueue(tx *gorm.DB, msg *idemq.Message) error {
	if tx == nil {
		return ErrNilTx
	}
	r, err := o.prepare(msg)
	if err != nil {
		return err
	}
	now := o.d.now()
	q := "INSERT INTO " + o.table + ` (message_id, topic, tags, msg_keys, body, properties, sharding_key, delay_level,
		status, attempts, next_attempt_at, claimed_by, last_error, broker_msg_id, created_at, updated_at)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, 0, 0, ` + now + `, '', '', '', ` + now + `, ` + now + `)`
	if err := tx.Exec(q, r.MessageID, r.Topic, r.Tags, r.Keys, r.Body, r.Properties, r.ShardingKey, r.DelayLevel).Error; err != nil {
		return fmt.Errorf("outbox: enqueue %s: %w", r.MessageID, err)
	}
	return nil
}

// sendRow is the part of a row a relay needs to send it.
type sendRow struct {
	ID          int64  `gorm:"column:id"`
	MessageID   string `gorm:"column:message_id"`
	Topic       string `gorm:"column:topic"`
	Tags        string `gorm:"column:tags"`
	Keys        string `gorm:"column:msg_keys"`
	Body        []byte `gorm:"column:body"`
	Properties  string `gorm:"column:properties"`
	ShardingKey string `gorm:"column:sharding_key"`
	DelayLevel  int    `gorm:"column:delay_level"`
	Attempts    int    `gorm:"column:attempts"`
}

const sendColumns = "id, message_id, topic, tags, msg_keys, body, properties, sharding_key, delay_level, attempts"

// prepare validates msg, stamps its ID and turns it into a row.
func (o *Outbox) prepare(msg *idemq.Message) (*sendRow, error) {
	if msg == nil {
		return nil, fmt.Errorf("%w: nil message", ErrInvalidMessage)
	}
	if msg.Topic == "" {
		return nil, fmt.Errorf("%w: empty topic", ErrInvalidMessage)
	}
	if len(msg.Topic) > maxTopicLen {
		return nil, fmt.Errorf("%w: topic longer than %d bytes", ErrInvalidMessage, maxTopicLen)
	}
	if len(msg.Tags) > maxTagsLen {
		return nil, fmt.Errorf("%w: tags longer than %d bytes", ErrInvalidMessage, maxTagsLen)
	}
	if len(msg.Body) > o.maxBody {
		return nil, fmt.Errorf("%w: %d bytes, limit %d", ErrBodyTooLarge, len(msg.Body), o.maxBody)
	}
	shard := msg.Property(PropertyShardingKey)
	if len(shard) > maxShardingKeyLen {
		return nil, fmt.Errorf("%w: sharding key longer than %d bytes", ErrInvalidMessage, maxShardingKeyLen)
	}
	delay := 0
	if s := msg.Property(PropertyDelayLevel); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 0 || n > rmqprops.MaxDelayLevel {
			return nil, fmt.Errorf("%w: delay level %q is not an integer in 0..%d", ErrInvalidMessage, s, rmqprops.MaxDelayLevel)
		}
		delay = n
	}
	for _, s := range []string{msg.Topic, msg.Tags, shard} {
		if !utf8.ValidString(s) {
			return nil, fmt.Errorf("%w: topic, tags and sharding key must be valid UTF-8", ErrInvalidMessage)
		}
	}
	id := msg.ID
	if id == "" {
		id = msg.Property(idemq.PropertyMessageID)
	}
	if id == "" {
		var err error
		if id, err = o.ids.NextID(); err != nil {
			return nil, fmt.Errorf("outbox: stamp message ID: %w", err)
		}
		if id == "" {
			return nil, fmt.Errorf("outbox: stamp message ID: generator returned an empty ID")
		}
	}
	if len(id) > maxIDLen || !utf8.ValidString(id) {
		return nil, fmt.Errorf("%w: message ID must be valid UTF-8 of at most %d bytes", ErrInvalidMessage, maxIDLen)
	}
	if msg.Properties == nil {
		msg.Properties = make(map[string]string, 1)
	}
	msg.ID = id
	msg.Properties[idemq.PropertyMessageID] = id
	props, err := json.Marshal(msg.Properties)
	if err != nil {
		return nil, fmt.Errorf("%w: properties: %v", ErrInvalidMessage, err)
	}
	keys := msg.Keys
	if keys == nil {
		keys = []string{}
	}
	keysJSON, err := json.Marshal(keys)
	if err != nil {
		return nil, fmt.Errorf("%w: keys: %v", ErrInvalidMessage, err)
	}
	body := msg.Body
	if body == nil {
		body = []byte{}
	}
	return &sendRow{
		MessageID:   id,
		Topic:       msg.Topic,
		Tags:        msg.Tags,
		Keys:        string(keysJSON),
		Body:        body,
		Properties:  string(props),
		ShardingKey: shard,
		DelayLevel:  delay,
	}, nil
}

// message rebuilds the idemq message a row holds, with its message ID.
func (r *sendRow) message() (*idemq.Message, error) {
	msg := &idemq.Message{
		ID:    r.MessageID,
		Topic: r.Topic,
		Tags:  r.Tags,
		Body:  r.Body,
	}
	if r.Keys != "" {
		if err := json.Unmarshal([]byte(r.Keys), &msg.Keys); err != nil {
			return nil, fmt.Errorf("keys column is not a JSON array: %w", err)
		}
	}
	if r.Properties != "" {
		if err := json.Unmarshal([]byte(r.Properties), &msg.Properties); err != nil {
			return nil, fmt.Errorf("properties column is not a JSON object: %w", err)
		}
	}
	if msg.Properties == nil {
		msg.Properties = make(map[string]string, 1)
	}
	msg.Properties[idemq.PropertyMessageID] = r.MessageID
	if r.ShardingKey != "" {
		msg.Properties[PropertyShardingKey] = r.ShardingKey
	}
	if r.DelayLevel > 0 {
		msg.Properties[PropertyDelayLevel] = strconv.Itoa(r.DelayLevel)
	}
	return msg, nil
}
