package nameserver

import (
	"context"
	"slices"
	"testing"
)

func TestResolve(t *testing.T) {
	got, err := Resolve(context.Background(), []string{"localhost:9876", "10.1.2.3:9877", "[::1]:9878"})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"127.0.0.1:9876", "10.1.2.3:9877", "[::1]:9878"}
	if !slices.Equal([]string(got), want) {
		t.Fatalf("Resolve = %v, want %v", got, want)
	}
	for _, bad := range []string{"no-port", ":9876", "host:0", "host:70000", "host:x", "no-such-host.invalid:9876"} {
		if _, err := Resolve(context.Background(), []string{bad}); err == nil {
			t.Errorf("Resolve(%q) succeeded", bad)
		}
	}
}
