package middleware

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/idemq/idemq"
	"github.com/idemq/idemq/dedup"
)

// MismatchPolicy says what Dedup does with a duplicate whose payload
// fingerprint differs from the one stored with its key. Such a duplicate is
// not a plain redelivery: two different messages map to one key (a key
// collision or a bug in a key extractor), and the second one's effects
// would be silently lost if it were acknowledged.
type MismatchPolicy int

const (
	// MismatchReject fails the delivery with a permanent error wrapping
	// dedup.ErrPayloadMismatch, so that it reaches the dead letters (when
	// the DeadLetter middleware is in the chain) where an operator sees it.
	// This is the default.
	MismatchReject MismatchPolicy = iota
	// MismatchLog logs the mismatch at Warn level and acknowledges the
	// delivery as a duplicate.
	MismatchLog
	// MismatchIgnore acknowledges the delivery as a plain duplicate.
	MismatchIgnore
)

// String returns the policy's name.
func (p MismatchPolicy) String() string {
	switch p {
	case MismatchReject:
		return "reject"
	case MismatchLog:
		return "log"
	case MismatchIgnore:
		return "ignore"
	}
	return fmt.Sprintf("MismatchPolicy(%d)", int(p))
}

// DefaultMinBusyDelay is the shortest redelivery delay Dedup asks for when a
// key is busy.
const DefaultMinBusyDelay = time.Second

// DedupConfig configures Dedup.
type DedupConfig struct {
	// KeyFunc maps a message to its dedup key, for messages deduplicated by
	// a business key such as "order:123:redpacket" rather than by message
	// ID. Choose a business key when the same effect may be requested by
	// two different messages (a producer that is not idemq's and re-sends
	// under a new RocketMQ MsgId, a retry upstream that builds a new
	// message): the message ID would let both run. An error from KeyFunc is
	// permanent: the same message can never yield a key, so it goes to the
	// dead letters. Dedup stores the key in msg.Key either way, so that the
	// handler and the middlewares outside see it. Defaults to
	// msg.DedupKey() (the Key field if set, otherwise the message ID).
	KeyFunc func(msg *idemq.Message) (string, error)
	// DisableFingerprint leaves Request.Fingerprint empty, so that payload
	// mismatches are not detected and the body is not hashed. Defaults to
	// false.
	DisableFingerprint bool
	// OnMismatch says what to do with a duplicate whose payload differs.
	// Defaults to MismatchReject.
	OnMismatch MismatchPolicy
	// MinBusyDelay is the shortest redelivery delay requested when another
	// owner holds the key's lease. Defaults to DefaultMinBusyDelay.
	MinBusyDelay time.Duration
	// Logger receives the MismatchLog warnings. Defaults to slog.Default().
	Logger *slog.Logger
}

// Errors returned by middleware constructors for bad configuration.
var (
	// ErrNilStore is returned by Dedup and Standard without a dedup.Store.
	ErrNilStore = errors.New("middleware: nil dedup store")
	// ErrNilLedger is returned by Attempts, DeadLetter and Standard without
	// a dedup.Ledger.
	ErrNilLedger = errors.New("middleware: nil dedup ledger")
	// ErrInvalidOption is wrapped by constructors for an option out of
	// range.
	ErrInvalidOption = errors.New("middleware: invalid option")
)

// ErrNoDedupKey is wrapped, inside an idemq.Permanent error, by Dedup for a
// message whose group or key cannot be used: such a message can never
// succeed, so it goes to the dead letters.
var ErrNoDedupKey = errors.New("middleware: message has no usable dedup key")

// Dedup returns a middleware that runs the handlers it wraps through store,
// at most once per (msg.Group, key) as the store's mode defines.
//
// The request is built from the message: Group is msg.Group, Key is
// KeyFunc(msg) or msg.DedupKey(), MessageID is msg.ID (with NUL bytes and
// invalid UTF-8 replaced by U+FFFD and cut to idemq.MaxKeyLen bytes, so
// that a hostile ID never keeps a message with a usable key from being
// processed) and Fingerprint is dedup.Fingerprint(msg.Body) unless
// disabled. The store's decision maps to
// the delivery's result:
//
//   - Processed: nil (acknowledge).
//   - Duplicate: nil (acknowledge); the handler was not called. A duplicate
//     whose payload differs is handled by OnMismatch.
//   - Busy: idemq.RetryAfter(at least MinBusyDelay, dedup.ErrBusy). Attempts
//     does not count it as a failure and DeadLetter never buries it.
//   - An invalid group or key: idemq.Permanent(ErrNoDedupKey ...).
//   - A handler or store error: returned unchanged; nothing was recorded
//     as done.
func Dedup(store dedup.Store, opts DedupConfig) (idemq.Middleware, error) {
	if store == nil {
		return nil, ErrNilStore
	}
	switch opts.OnMismatch {
	case MismatchReject, MismatchLog, MismatchIgnore:
	default:
		return nil, fmt.Errorf("%w: unknown OnMismatch %d", ErrInvalidOption, int(opts.OnMismatch))
	}
	if opts.MinBusyDelay < 0 {
		return nil, fmt.Errorf("%w: negative MinBusyDelay %s", ErrInvalidOption, opts.MinBusyDelay)
	}
	if opts.MinBusyDelay == 0 {
		opts.MinBusyDelay = DefaultMinBusyDelay
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	return func(next idemq.Handler) idemq.Handler {
		return idemq.HandlerFunc(func(ctx context.Context, msg *idemq.Message) error {
			return opts.handle(ctx, store, next, msg)
		})
	}, nil
}

func (o *DedupConfig) handle(ctx context.Context, store dedup.Store, next idemq.Handler, msg *idemq.Message) error {
	key := msg.DedupKey()
	if o.KeyFunc != nil {
		k, err := o.KeyFunc(msg)
		if err != nil {
			return idemq.Permanent(fmt.Errorf("%w: key extractor failed for message %q: %w", ErrNoDedupKey, msg.ID, err))
		}
		key = k
	}
	// The handler and the middlewares outside see the key the message is
	// deduplicated by, whether it came from KeyFunc or is the ID.
	msg.Key = key
	req := dedup.Request{Group: msg.Group, Key: key, MessageID: storableID(msg.ID)}
	if err := req.Validate(); err != nil {
		return idemq.Permanent(fmt.Errorf("%w: message %q of group %q: %w", ErrNoDedupKey, msg.ID, msg.Group, err))
	}
	if !o.DisableFingerprint {
		req.Fingerprint = dedup.Fingerprint(msg.Body)
	}
	res, err := store.Process(ctx, req, func(ctx context.Context) error {
		start := time.Now()
		err := next.Handle(ctx, msg)
		deliveryFrom(ctx).setHandlerTime(time.Since(start))
		return err
	})
	if err != nil {
		return err
	}
	deliveryFrom(ctx).setResult(res)
	switch res.Outcome {
	case dedup.Processed:
		return nil
	case dedup.Duplicate:
		if res.Mismatch {
			return o.mismatch(ctx, req, msg)
		}
		return nil
	case dedup.Busy:
		return idemq.RetryAfter(max(res.RetryAfter, o.MinBusyDelay), dedup.ErrBusy)
	}
	// A store that answers with no known outcome is broken; retry rather
	// than acknowledge a delivery that may not have been processed.
	return fmt.Errorf("middleware: dedup store returned unknown outcome %d for key %q", int(res.Outcome), req.Key)
}

// maxMessageIDLen is the longest message ID a store keeps with a dedup row.
const maxMessageIDLen = idemq.MaxKeyLen

// storableID returns id as every store can keep it in a text column beside
// the dedup row (the row is for operators; the key is what dedups): NUL
// bytes and invalid UTF-8, which PostgreSQL and MySQL refuse, become U+FFFD,
// and an ID longer than maxMessageIDLen bytes is cut at a rune boundary. A
// usable ID is returned unchanged.
func storableID(id string) string {
	if len(id) <= maxMessageIDLen && utf8.ValidString(id) && strings.IndexByte(id, 0) < 0 {
		return id
	}
	id = strings.ReplaceAll(strings.ToValidUTF8(id, "\uFFFD"), "\x00", "\uFFFD")
	if len(id) > maxMessageIDLen {
		cut := maxMessageIDLen
		for cut > 0 && !utf8.RuneStart(id[cut]) {
			cut--
		}
		id = id[:cut]
	}
	return id
}

func (o *DedupConfig) mismatch(ctx context.Context, req dedup.Request, msg *idemq.Message) error {
	switch o.OnMismatch {
	case MismatchLog:
		o.Logger.WarnContext(ctx, "duplicate key with a different payload acknowledged",
			slog.String("group", req.Group),
			slog.String("key", req.Key),
			slog.String("message_id", msg.ID),
			slog.String("topic", msg.Topic),
			slog.String("fingerprint", req.Fingerprint))
		return nil
	case MismatchIgnore:
		return nil
	}
	return idemq.Permanent(fmt.Errorf("%w: group %q key %q message %q (fingerprint %s)",
		dedup.ErrPayloadMismatch, req.Group, req.Key, msg.ID, req.Fingerprint))
}
