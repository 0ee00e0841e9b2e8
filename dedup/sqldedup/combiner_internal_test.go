package sqldedup

import (
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestCombinerAnswersEveryCallOnce runs 400 concurrent calls over 5 keys
// (so batches meet repeated keys, and leaders whose own call is left
// queued) and checks that every call gets its own answer, that no batch
// holds a key twice or more than maxBatch calls, and that calls shared
// batches.
func TestCombinerAnswersEveryCallOnce(t *testing.T) {
	var c combiner[int, int]
	var batches, bad atomic.Int64
	run := func(batch []*call[int, int]) {
		batches.Add(1)
		seen := map[[2]string]bool{}
		for _, m := range batch {
			if seen[m.key] {
				bad.Add(1)
			}
			seen[m.key] = true
		}
		if len(batch) > maxBatch {
			bad.Add(1)
		}
		time.Sleep(time.Millisecond)
		for _, m := range batch {
			m.reply <- answer[int]{a: m.q * 10}
		}
	}
	const n = 400
	var wg sync.WaitGroup
	got := make([]int, n)
	for i := 1; i <= n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			got[i-1] = c.do([2]string{"g", fmt.Sprint(i % 5)}, i, run)
		}()
	}
	wg.Wait()
	for i, a := range got {
		if a != (i+1)*10 {
			t.Fatalf("call %d answered %d, want %d", i+1, a, (i+1)*10)
		}
	}
	if bad.Load() != 0 {
		t.Errorf("%d batches held a key twice or too many calls", bad.Load())
	}
	if b := batches.Load(); b >= n {
		t.Errorf("%d calls took %d batches; want them to share", n, b)
	} else {
		t.Logf("%d calls in %d batches", n, b)
	}
	if c.running || len(c.queue) != 0 {
		t.Errorf("combiner left running=%v with %d queued", c.running, len(c.queue))
	}
}
