package msgid

import (
	"errors"
	"math"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/bwmarrin/snowflake"
)

// fakeClock is a wall clock that moves only when told to, or when the
// generator sleeps on it.
type fakeClock struct {
	mu     sync.Mutex
	now    time.Time
	slept  []time.Duration
	frozen bool // sleeping does not advance the clock
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Set(t time.Time) {
	c.mu.Lock()
	c.now = t
	c.mu.Unlock()
}

func (c *fakeClock) Sleep(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.slept = append(c.slept, d)
	if !c.frozen {
		c.now = c.now.Add(d)
	}
}

func (c *fakeClock) Slept() []time.Duration {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]time.Duration(nil), c.slept...)
}

func newFakeGen(t *testing.T, src NodeSource, start time.Time, maxBack time.Duration) (*Generator, *fakeClock) {
	t.Helper()
	c := &fakeClock{now: start}
	g, err := NewGenerator(src, GeneratorConfig{Clock: c.Now, MaxClockBackwards: maxBack})
	if err != nil {
		t.Fatal(err)
	}
	g.sleep = c.Sleep
	return g, c
}

// stubSource is a NodeSource whose state the test sets.
type stubSource struct {
	node     int64
	high     int64
	mu       sync.Mutex
	err      error
	issued   int64
	reserved int64 // 0: no limit
}

func (s *stubSource) NodeID() int64    { return s.node }
func (s *stubSource) HighWater() int64 { return s.high }
func (s *stubSource) Valid() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.err
}
func (s *stubSource) Reserved() int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.reserved == 0 {
		return math.MaxInt64
	}
	return s.reserved
}
func (s *stubSource) Issued(ms int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.issued = max(s.issued, ms)
}

func TestIDLayoutMatchesSnowflake(t *testing.T) {
	start := time.UnixMilli(1_700_000_000_123)
	g, _ := newFakeGen(t, FixedNode(517), start, 0)
	id1, err := g.NextID()
	if err != nil {
		t.Fatal(err)
	}
	id2, err := g.NextID()
	if err != nil {
		t.Fatal(err)
	}
	for i, id := range []string{id1, id2} {
		sf, err := snowflake.ParseString(id)
		if err != nil {
			t.Fatal(err)
		}
		if got := sf.Time(); got != start.UnixMilli() {
			t.Errorf("snowflake time = %d, want %d", got, start.UnixMilli())
		}
		if sf.Node() != 517 || sf.Step() != int64(i) {
			t.Errorf("snowflake node/step = %d/%d, want 517/%d", sf.Node(), sf.Step(), i)
		}
		at, node, step, err := Parse(id)
		if err != nil || !at.Equal(start) || node != 517 || step != int64(i) {
			t.Errorf("Parse(%s) = %v %d %d %v", id, at, node, step, err)
		}
	}
	if Epoch != snowflake.Epoch || NodeBits != int(snowflake.NodeBits) || StepBits != int(snowflake.StepBits) {
		t.Errorf("layout differs from bwmarrin/snowflake defaults")
	}
}

func TestFixedNodeRange(t *testing.T) {
	for _, n := range []int64{-1, 1024, 1 << 40} {
		if _, err := NewGenerator(FixedNode(n), GeneratorConfig{}); !errors.Is(err, ErrInvalidNode) {
			t.Errorf("FixedNode(%d): err = %v, want ErrInvalidNode", n, err)
		}
	}
	for _, n := range []int64{0, 1023} {
		g, err := NewGenerator(FixedNode(n), GeneratorConfig{})
		if err != nil {
			t.Fatalf("FixedNode(%d): %v", n, err)
		}
		id, err := g.Next()
		if err != nil {
			t.Fatal(err)
		}
		if _, node, _, _ := Parse(strconv.FormatInt(id, 10)); node != n {
			t.Errorf("node = %d, want %d", node, n)
		}
	}
	if _, err := NewGenerator(FixedNode(1), GeneratorConfig{MaxClockBackwards: -time.Second}); err == nil {
		t.Error("negative MaxClockBackwards accepted")
	}
	if _, err := NewGenerator(nil, GeneratorConfig{}); err == nil {
		t.Error("nil NodeSource accepted")
	}
}

func TestParseRejectsGarbage(t *testing.T) {
	for _, s := range []string{"", "abc", "-5", "99999999999999999999"} {
		if _, _, _, err := Parse(s); err == nil {
			t.Errorf("Parse(%q) succeeded", s)
		}
	}
}

// A full millisecond (4096 IDs) forces a wait for the next one; IDs keep
// increasing and the sequence restarts.
func TestStepOverflowWaitsForNextMillisecond(t *testing.T) {
	start := time.UnixMilli(1_700_000_000_000)
	g, c := newFakeGen(t, FixedNode(3), start, 0)
	var prev int64
	for i := 0; i < 3*4096; i++ {
		id, err := g.Next()
		if err != nil {
			t.Fatal(err)
		}
		if id <= prev {
			t.Fatalf("id %d not above %d at %d", id, prev, i)
		}
		prev = id
	}
	if got := len(c.Slept()); got != 2 {
		t.Errorf("waited %d times, want 2 (once per exhausted millisecond)", got)
	}
	at, _, step, _ := Parse(strconv.FormatInt(prev, 10))
	if at.UnixMilli() != start.UnixMilli()+2 || step != 4095 {
		t.Errorf("last id at %d step %d, want %d step 4095", at.UnixMilli(), step, start.UnixMilli()+2)
	}
}

func TestClockBackwardsIsWaitedOut(t *testing.T) {
	start := time.UnixMilli(1_700_000_000_000)
	g, c := newFakeGen(t, FixedNode(9), start, 5*time.Second)
	first, err := g.Next()
	if err != nil {
		t.Fatal(err)
	}
	c.Set(start.Add(-2 * time.Second))
	second, err := g.Next()
	if err != nil {
		t.Fatal(err)
	}
	if second <= first {
		t.Fatalf("id after clock step back %d is not above %d", second, first)
	}
	slept := c.Slept()
	var total time.Duration
	for _, d := range slept {
		total += d
	}
	if total < 2*time.Second {
		t.Errorf("waited %s, want at least the 2s step", total)
	}
	at, _, _, _ := Parse(strconv.FormatInt(second, 10))
	if at.Before(start) {
		t.Errorf("timestamp %v is before the last issued %v", at, start)
	}
}

func TestClockBackwardsBeyondLimitFails(t *testing.T) {
	start := time.UnixMilli(1_700_000_000_000)
	g, c := newFakeGen(t, FixedNode(9), start, 5*time.Second)
	if _, err := g.Next(); err != nil {
		t.Fatal(err)
	}
	c.Set(start.Add(-6 * time.Second))
	if _, err := g.Next(); !errors.Is(err, ErrClockBackwards) {
		t.Fatalf("err = %v, want ErrClockBackwards", err)
	}
	if len(c.Slept()) != 0 {
		t.Errorf("slept %v before refusing", c.Slept())
	}
	// Once the clock is back, generation resumes above the old IDs.
	c.Set(start.Add(time.Millisecond))
	if _, err := g.Next(); err != nil {
		t.Fatalf("after recovery: %v", err)
	}
}

func TestFrozenClockDoesNotHang(t *testing.T) {
	start := time.UnixMilli(1_700_000_000_000)
	g, c := newFakeGen(t, FixedNode(9), start, 100*time.Millisecond)
	if _, err := g.Next(); err != nil {
		t.Fatal(err)
	}
	c.Set(start.Add(-50 * time.Millisecond))
	c.frozen = true
	if _, err := g.Next(); !errors.Is(err, ErrClockBackwards) {
		t.Fatalf("err = %v, want ErrClockBackwards from a clock that never advances", err)
	}
}

// A new holder of a node starts strictly after the previous holder's mark.
func TestHighWaterIsRespected(t *testing.T) {
	start := time.UnixMilli(1_700_000_000_000)
	src := &stubSource{node: 4, high: start.UnixMilli() + 1500}
	g, c := newFakeGen(t, src, start, 0)
	id, err := g.Next()
	if err != nil {
		t.Fatal(err)
	}
	at, _, _, _ := Parse(strconv.FormatInt(id, 10))
	if at.UnixMilli() <= src.high {
		t.Errorf("first timestamp %d not above high water %d", at.UnixMilli(), src.high)
	}
	if len(c.Slept()) == 0 {
		t.Error("did not wait for the high-water mark")
	}
	if src.issued != at.UnixMilli() {
		t.Errorf("issued reported %d, want %d", src.issued, at.UnixMilli())
	}

	// Equal to the mark is not enough either.
	src2 := &stubSource{node: 4, high: start.UnixMilli()}
	g2, _ := newFakeGen(t, src2, start, 0)
	id2, err := g2.Next()
	if err != nil {
		t.Fatal(err)
	}
	if at2, _, _, _ := Parse(strconv.FormatInt(id2, 10)); at2.UnixMilli() <= src2.high {
		t.Errorf("timestamp %d equals the high-water mark", at2.UnixMilli())
	}

	// Too far ahead: refuse.
	src3 := &stubSource{node: 4, high: start.UnixMilli() + 10_000}
	g3, _ := newFakeGen(t, src3, start, 0)
	if _, err := g3.Next(); !errors.Is(err, ErrClockBackwards) {
		t.Errorf("err = %v, want ErrClockBackwards for a mark 10s ahead", err)
	}
}

// The generator issues up to its source's reservation and refuses beyond
// it, until the reservation is raised.
func TestReservationIsNeverExceeded(t *testing.T) {
	start := time.UnixMilli(1_700_000_000_000)
	src := &stubSource{node: 2, reserved: start.UnixMilli() + 10}
	g, c := newFakeGen(t, src, start, 0)
	if _, err := g.Next(); err != nil {
		t.Fatal(err)
	}
	c.Set(start.Add(10 * time.Millisecond)) // at the reservation: allowed
	id, err := g.Next()
	if err != nil {
		t.Fatal(err)
	}
	if at, _, _, _ := Parse(strconv.FormatInt(id, 10)); at.UnixMilli() != src.reserved {
		t.Fatalf("timestamp %d, want the reservation %d", at.UnixMilli(), src.reserved)
	}
	c.Set(start.Add(11 * time.Millisecond)) // past it: refused, nothing recorded
	if _, err := g.Next(); !errors.Is(err, ErrBeyondReservation) {
		t.Fatalf("err = %v, want ErrBeyondReservation", err)
	}
	if src.issued > src.reserved {
		t.Fatalf("issued %d reported beyond the reservation %d", src.issued, src.reserved)
	}
	src.mu.Lock()
	src.reserved = start.UnixMilli() + 1000 // a heartbeat reserved further
	src.mu.Unlock()
	if _, err := g.Next(); err != nil {
		t.Fatalf("after the reservation was raised: %v", err)
	}
}

func TestInvalidSourceStopsGeneration(t *testing.T) {
	src := &stubSource{node: 1}
	g, _ := newFakeGen(t, src, time.UnixMilli(1_700_000_000_000), 0)
	if _, err := g.Next(); err != nil {
		t.Fatal(err)
	}
	src.mu.Lock()
	src.err = ErrNodeLeaseLost
	src.mu.Unlock()
	if _, err := g.NextID(); !errors.Is(err, ErrNodeLeaseLost) {
		t.Fatalf("err = %v, want ErrNodeLeaseLost", err)
	}
}

func TestIDsUniqueUnderConcurrency(t *testing.T) {
	g, err := NewGenerator(FixedNode(12), GeneratorConfig{})
	if err != nil {
		t.Fatal(err)
	}
	const workers, each = 8, 5000
	out := make(chan int64, workers*each)
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < each; i++ {
				id, err := g.Next()
				if err != nil {
					t.Error(err)
					return
				}
				out <- id
			}
		}()
	}
	wg.Wait()
	close(out)
	seen := make(map[int64]bool, workers*each)
	for id := range out {
		if seen[id] {
			t.Fatalf("duplicate id %d", id)
		}
		seen[id] = true
	}
	if len(seen) != workers*each {
		t.Fatalf("got %d ids, want %d", len(seen), workers*each)
	}
}

func BenchmarkNextID(b *testing.B) {
	g, err := NewGenerator(FixedNode(1), GeneratorConfig{})
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := g.NextID(); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkNextParallel(b *testing.B) {
	g, err := NewGenerator(FixedNode(1), GeneratorConfig{})
	if err != nil {
		b.Fatal(err)
	}
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := g.Next(); err != nil {
				b.Error(err)
				return
			}
		}
	})
}
