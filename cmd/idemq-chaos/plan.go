package main

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"strconv"
	"strings"
)

// Message classes: how a message's handler behaves.
const (
	ClassNormal    = "normal"    // succeeds
	ClassTransient = "transient" // its first 1 or 2 handler runs fail, then it succeeds
	ClassPoison    = "poison"    // fails with idemq.Permanent: straight to the dead letters
	ClassExhaust   = "exhaust"   // always fails with a retryable error: buried at MaxAttempts
	ClassSwallow   = "swallow"   // its first handler run runs a failing statement and swallows the error
	ClassBadKey    = "bad-key"   // a dedup key no store accepts (empty, 10 KB, NUL, invalid UTF-8)
	ClassBadID     = "bad-id"    // a valid key, but a message ID with NUL or invalid UTF-8
	ClassNoGroup   = "no-group"  // delivered to an empty consumer group
	ClassBigBody   = "big-body"  // a permanently failing message with a very large body
)

// PlannedMessage is one message the broker publishes, with its copies.
type PlannedMessage struct {
	N       int
	Class   string
	Expect  Expect
	ID      string
	Key     string // dedup key set by a "key extractor"; "" means the ID
	Group   string
	Account int
	Amount  int64
	Copies  int
	// Together asks the broker to hand the copies out at the same instant
	// to different workers.
	Together bool
	// Fails is, for ClassTransient, how many first handler runs fail.
	Fails   int
	BodyPad int // extra body bytes
}

// PlanConfig shapes a run's messages.
type PlanConfig struct {
	Messages  int
	DupRate   float64 // share of messages published more than once
	Accounts  int
	FailRate  float64 // share of messages that fail transiently
	Poison    float64 // share that fail permanently
	Exhaust   float64 // share that always fail with a retryable error
	Swallow   float64 // share that swallow a failed statement at attempt 1
	BadInput  bool    // add the bad-input messages
	BigBody   int     // body size of the big-body message; 0 leaves it out
	Group     string
	IDBase    int64
	BusinessK float64 // share deduplicated by a business key instead of the ID
}

// Plan draws a run's messages from rng.
func Plan(cfg PlanConfig, rng *rand.Rand) []PlannedMessage {
	var out []PlannedMessage
	for i := 1; i <= cfg.Messages; i++ {
		m := PlannedMessage{
			N:       i,
			Class:   ClassNormal,
			Expect:  ExpectProcessed,
			ID:      strconv.FormatInt(cfg.IDBase+int64(i), 10),
			Group:   cfg.Group,
			Account: i % cfg.Accounts,
			Amount:  1 + rng.Int64N(100),
			Copies:  1,
		}
		if rng.Float64() < cfg.BusinessK {
			m.Key = fmt.Sprintf("order:%d:pay", cfg.IDBase+int64(i))
		}
		switch x := rng.Float64(); {
		case x < cfg.Poison:
			m.Class, m.Expect = ClassPoison, ExpectBuried
		case x < cfg.Poison+cfg.Exhaust:
			m.Class, m.Expect = ClassExhaust, ExpectBuried
		case x < cfg.Poison+cfg.Exhaust+cfg.FailRate:
			m.Class, m.Fails = ClassTransient, 1+rng.IntN(2)
		case x < cfg.Poison+cfg.Exhaust+cfg.FailRate+cfg.Swallow:
			m.Class = ClassSwallow
		}
		if rng.Float64() < cfg.DupRate {
			m.Copies = 2 + rng.IntN(3)
			m.Together = rng.IntN(2) == 0
		}
		out = append(out, m)
	}
	if cfg.BadInput {
		n := cfg.Messages
		next := func(class string, e Expect) PlannedMessage {
			n++
			return PlannedMessage{
				N: n, Class: class, Expect: e, Group: cfg.Group,
				ID:      strconv.FormatInt(cfg.IDBase+int64(n), 10),
				Account: n % cfg.Accounts, Amount: 1 + rng.Int64N(100),
				Copies: 2, Together: true,
			}
		}
		m := next(ClassBadKey, ExpectBuried)
		m.ID = "" // empty key and empty ID
		out = append(out, m)
		m = next(ClassBadKey, ExpectBuried)
		m.Key = "k" + strings.Repeat("x", 10<<10)
		out = append(out, m)
		m = next(ClassBadKey, ExpectBuried)
		m.Key = "nul\x00key"
		out = append(out, m)
		m = next(ClassBadKey, ExpectBuried)
		m.Key = "bad\xff\xfeutf8"
		out = append(out, m)
		m = next(ClassBadID, ExpectProcessed)
		m.Key, m.ID = fmt.Sprintf("order:%d:nulid", cfg.IDBase+int64(m.N)), "id\x00with-nul"
		out = append(out, m)
		m = next(ClassBadID, ExpectProcessed)
		m.Key, m.ID = fmt.Sprintf("order:%d:badid", cfg.IDBase+int64(m.N)), "id\xc3\x28bad-utf8"
		out = append(out, m)
		m = next(ClassNoGroup, ExpectBuried)
		m.Group = ""
		out = append(out, m)
		if cfg.BigBody > 0 {
			m = next(ClassBigBody, ExpectBuried)
			m.BodyPad = cfg.BigBody
			out = append(out, m)
		}
	}
	return out
}

// Body is the message's payload: a header the handler and the checker parse
// ("chaos:<n>:<account>:<amount>;"), then padding.
func (m *PlannedMessage) Body() []byte {
	h := fmt.Sprintf("chaos:%d:%d:%d;", m.N, m.Account, m.Amount)
	if m.BodyPad <= 0 {
		return []byte(h)
	}
	b := make([]byte, 0, len(h)+m.BodyPad)
	b = append(b, h...)
	return append(b, bytes.Repeat([]byte{'.'}, m.BodyPad)...)
}

// ParseBody reads the header Body wrote. ok is false if body does not start
// with one.
func ParseBody(body []byte) (n, account int, amount int64, ok bool) {
	if !bytes.HasPrefix(body, []byte("chaos:")) {
		return 0, 0, 0, false
	}
	end := bytes.IndexByte(body, ';')
	if end < 0 || end > 64 {
		return 0, 0, 0, false
	}
	parts := strings.Split(string(body[len("chaos:"):end]), ":")
	if len(parts) != 3 {
		return 0, 0, 0, false
	}
	var err1, err2, err3 error
	n, err1 = strconv.Atoi(parts[0])
	account, err2 = strconv.Atoi(parts[1])
	amount, err3 = strconv.ParseInt(parts[2], 10, 64)
	if err1 != nil || err2 != nil || err3 != nil {
		return 0, 0, 0, false
	}
	return n, account, amount, true
}
