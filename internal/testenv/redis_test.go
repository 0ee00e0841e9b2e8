package testenv

import (
	"context"
	"strconv"
	"strings"
	"testing"
)

func TestNewRedisAndKeyPrefix(t *testing.T) {
	ctx := context.Background()
	c := NewRedis(t)

	var prefix string
	t.Run("keys", func(t *testing.T) {
		prefix = KeyPrefix(t)
		if !strings.HasPrefix(prefix, "idemq:test:") || !strings.HasSuffix(prefix, ":") {
			t.Fatalf("KeyPrefix = %q", prefix)
		}
		if other := KeyPrefix(t); other == prefix {
			t.Fatalf("KeyPrefix returned %q twice", prefix)
		}
		// More keys than one SCAN/UNLINK batch.
		pipe := c.Pipeline()
		for i := range 1200 {
			pipe.Set(ctx, prefix+strings.Repeat("k", 1+i%7)+string(rune('a'+i%26))+strconv.Itoa(i), i, 0)
		}
		if _, err := pipe.Exec(ctx); err != nil {
			t.Fatal(err)
		}
		n, err := countKeys(ctx, t, prefix)
		if err != nil || n != 1200 {
			t.Fatalf("keys under prefix: %d, %v; want 1200", n, err)
		}
	})
	n, err := countKeys(ctx, t, prefix)
	if err != nil {
		t.Fatal(err)
	}
	if n != 0 {
		t.Errorf("%d keys under %s left after the subtest ended; KeyPrefix should delete them", n, prefix)
	}
}

func countKeys(ctx context.Context, t *testing.T, prefix string) (int, error) {
	c := NewRedis(t)
	keys, err := c.Keys(ctx, prefix+"*").Result()
	return len(keys), err
}
