package idemq_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/idemq/idemq"
)

func TestChainOrder(t *testing.T) {
	var trace []string
	mw := func(name string) idemq.Middleware {
		return func(next idemq.Handler) idemq.Handler {
			return idemq.HandlerFunc(func(ctx context.Context, m *idemq.Message) error {
				trace = append(trace, name+">")
				err := next.Handle(ctx, m)
				trace = append(trace, "<"+name)
				return err
			})
		}
	}
	h, err := idemq.Chain(idemq.HandlerFunc(func(context.Context, *idemq.Message) error {
		trace = append(trace, "handler")
		return nil
	}), mw("a"), mw("b"))
	if err != nil {
		t.Fatal(err)
	}
	if err := h.Handle(context.Background(), &idemq.Message{}); err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(trace, " "); got != "a> b> handler <b <a" {
		t.Fatalf("trace %q", got)
	}
}

func TestChainRejectsNil(t *testing.T) {
	ok := idemq.HandlerFunc(func(context.Context, *idemq.Message) error { return nil })
	var nilFunc idemq.HandlerFunc
	cases := []struct {
		name string
		h    idemq.Handler
		mws  []idemq.Middleware
		want error
	}{
		{"nil handler", nil, nil, idemq.ErrNilHandler},
		{"nil HandlerFunc", nilFunc, nil, idemq.ErrNilHandler},
		{"nil middleware", ok, []idemq.Middleware{nil}, idemq.ErrNilMiddleware},
		{"middleware returning nil", ok, []idemq.Middleware{func(idemq.Handler) idemq.Handler { return nil }}, idemq.ErrNilHandler},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := idemq.Chain(tc.h, tc.mws...); !errors.Is(err, tc.want) {
				t.Fatalf("Chain error = %v, want %v", err, tc.want)
			}
		})
	}
}

func TestPermanent(t *testing.T) {
	cause := errors.New("card declined")
	err := fmt.Errorf("handler: %w", idemq.Permanent(cause))
	if !idemq.IsPermanent(err) || !errors.Is(err, cause) {
		t.Fatalf("wrapped Permanent lost its mark or its cause: %v", err)
	}
	if idemq.IsPermanent(cause) || idemq.IsPermanent(nil) {
		t.Fatal("plain error reported permanent")
	}
	if idemq.Permanent(nil).Error() != "permanent failure" {
		t.Fatalf("Permanent(nil) = %q", idemq.Permanent(nil))
	}
}

func TestRetryAfter(t *testing.T) {
	cause := errors.New("rate limited")
	err := fmt.Errorf("wrapped: %w", idemq.RetryAfter(3*time.Second, cause))
	d, ok := idemq.RetryDelay(err)
	if !ok || d != 3*time.Second || !errors.Is(err, cause) {
		t.Fatalf("RetryDelay = %s %v, cause kept %v", d, ok, errors.Is(err, cause))
	}
	if d, _ := idemq.RetryDelay(idemq.RetryAfter(-time.Second, nil)); d != 0 {
		t.Fatalf("negative delay kept as %s", d)
	}
	if _, ok := idemq.RetryDelay(cause); ok {
		t.Fatal("plain error has a retry delay")
	}
}

func TestValidateKey(t *testing.T) {
	cases := []struct {
		key  string
		want error
	}{
		{"order:123:redpacket", nil},
		{strings.Repeat("k", idemq.MaxKeyLen), nil},
		{"", idemq.ErrEmptyKey},
		{strings.Repeat("k", idemq.MaxKeyLen+1), idemq.ErrKeyTooLong},
		{"a\x00b", idemq.ErrInvalidKey},
		{"\xff", idemq.ErrInvalidKey},
	}
	for _, tc := range cases {
		if err := idemq.ValidateKey(tc.key); !errors.Is(err, tc.want) {
			t.Errorf("ValidateKey(%q) = %v, want %v", tc.key, err, tc.want)
		}
	}
}

func TestMessageDedupKeyAndClone(t *testing.T) {
	m := &idemq.Message{ID: "42", Keys: []string{"42"}, Body: []byte("b"), Properties: map[string]string{"p": "v"}}
	if m.DedupKey() != "42" {
		t.Fatalf("DedupKey without Key = %q", m.DedupKey())
	}
	m.Key = "order:1"
	if m.DedupKey() != "order:1" {
		t.Fatalf("DedupKey with Key = %q", m.DedupKey())
	}
	c := m.Clone()
	c.Keys[0], c.Body[0], c.Properties["p"] = "x", 'x', "x"
	if m.Keys[0] != "42" || m.Body[0] != 'b' || m.Property("p") != "v" {
		t.Fatal("Clone shares memory with the original")
	}
	if (&idemq.Message{}).Property("missing") != "" {
		t.Fatal("Property on nil map")
	}
}

// Example shows the vocabulary: a handler, a middleware, and the
// control-flow errors.
func Example() {
	logging := func(next idemq.Handler) idemq.Handler {
		return idemq.HandlerFunc(func(ctx context.Context, m *idemq.Message) error {
			err := next.Handle(ctx, m)
			fmt.Printf("%s attempt %d: permanent=%v err=%v\n", m.ID, m.Attempt, idemq.IsPermanent(err), err)
			return err
		})
	}
	h, _ := idemq.Chain(idemq.HandlerFunc(func(ctx context.Context, m *idemq.Message) error {
		if string(m.Body) == "cancelled" {
			return idemq.Permanent(errors.New("order cancelled"))
		}
		return nil
	}), logging)
	h.Handle(context.Background(), &idemq.Message{ID: "1001", Attempt: 1, Body: []byte("paid")})
	h.Handle(context.Background(), &idemq.Message{ID: "1002", Attempt: 1, Body: []byte("cancelled")})
	// Output:
	// 1001 attempt 1: permanent=false err=<nil>
	// 1002 attempt 1: permanent=true err=permanent: order cancelled
}
