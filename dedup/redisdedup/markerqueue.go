package redisdedup

import (
	"context"
	"errors"
	"log/slog"
	"sync"

	"github.com/redis/go-redis/v9"

	"github.com/idemq/idemq/dedup"
)

// Background marker writes (FastPathConfig.MarkerQueue > 0).
//
// The marker of a delivery whose own commit returned Processed is handed to
// a queue instead of being written before Process returns; one writer
// goroutine takes what the queue holds, up to MarkerBatch markers, and sets
// them in one pipelined round trip. A full queue drops the marker and
// counts it (FastPathStats.MarkersDropped). A marker is still written only
// for a Processed answer: the queue changes when, never whether.
//
// What a crash leaves behind, by the point it strikes:
//
//   - before the inner store's commit returned: no row, no marker; the
//     redelivery is processed (the inner store decides, as always).
//   - after the commit, with the marker still queued (or dropped, or its
//     write failed): a committed row and no marker; the next duplicate
//     misses Redis, goes to the inner store and is answered Duplicate
//     there, and that answer writes no marker. Nothing is lost or done
//     twice; the duplicate only costs a database lookup.
//   - after the marker was written: as with synchronous writes.
//
// Close (or Flush) writes what is queued, so an orderly shutdown loses no
// markers.

// markerWrite is one queued marker, or a barrier (done != nil) that the
// writer closes once every marker queued before it has been attempted.
type markerWrite struct {
	key, fingerprint string
	done             chan struct{}
}

// markerQueue is the background writer of a FastPath.
type markerQueue struct {
	ch     chan markerWrite
	batch  int
	mu     sync.RWMutex // held for reading while sending to ch
	closed bool
	exited chan struct{}
}

func (f *FastPath) startMarkerQueue(size, batch int) {
	q := &markerQueue{ch: make(chan markerWrite, size), batch: batch, exited: make(chan struct{})}
	f.queue = q
	go f.writeMarkers(q)
}

// enqueueMarker hands a marker to the background writer. It reports false
// if the queue is closed (the caller writes the marker itself).
func (f *FastPath) enqueueMarker(key string, req dedup.Request) bool {
	q := f.queue
	q.mu.RLock()
	defer q.mu.RUnlock()
	if q.closed {
		return false
	}
	select {
	case q.ch <- markerWrite{key: key, fingerprint: req.Fingerprint}:
	default:
		f.markersDropped.Add(1)
		f.markerLog.log(context.Background(), slog.LevelWarn, "redisdedup: done marker queue full, marker dropped; duplicates of this key will be checked by the inner store",
			slog.String("group", req.Group), slog.String("key", req.Key))
	}
	return true
}

// writeMarkers is the writer goroutine: it sets queued markers in
// pipelined batches until the queue is closed and drained.
func (f *FastPath) writeMarkers(q *markerQueue) {
	defer close(q.exited)
	var (
		batch    []markerWrite
		barriers []chan struct{}
	)
	for w := range q.ch {
		// A fresh slice: a write that timed out may still be reading the last.
		batch, barriers = nil, nil
		add := func(w markerWrite) {
			if w.done != nil {
				barriers = append(barriers, w.done)
			} else {
				batch = append(batch, w)
			}
		}
		add(w)
	drain:
		for len(batch) < q.batch {
			select {
			case w, ok := <-q.ch:
				if !ok {
					break drain
				}
				add(w)
			default:
				break drain
			}
		}
		if len(batch) > 0 {
			f.setMarkers(batch)
		}
		for _, d := range barriers {
			close(d)
		}
	}
}

// setMarkers writes a batch of markers in one pipeline, counting each.
func (f *FastPath) setMarkers(batch []markerWrite) {
	err := f.call.do(context.Background(), func(ctx context.Context) error {
		cmds, err := f.client.Pipelined(ctx, func(p redis.Pipeliner) error {
			for _, w := range batch {
				p.Set(ctx, w.key, w.fingerprint, f.ttl)
			}
			return nil
		})
		if err == nil && len(cmds) == len(batch) {
			return nil
		}
		failed := 0
		for _, c := range cmds {
			if c.Err() != nil {
				failed++
			}
		}
		if len(cmds) != len(batch) || failed == 0 {
			failed = len(batch)
		}
		if err == nil {
			err = errors.New("pipelined SET failed")
		}
		return &pipelineError{failed: failed, err: err}
	})
	failed := 0
	if err != nil {
		failed = len(batch)
		var pe *pipelineError
		if errors.As(err, &pe) {
			failed = pe.failed
		}
	}
	f.markerWrites.Add(uint64(len(batch) - failed))
	if failed > 0 {
		f.markerWriteErrors.Add(uint64(failed))
		f.markerLog.log(context.Background(), slog.LevelWarn, "redisdedup: could not write done markers; duplicates of these keys will be checked by the inner store",
			slog.Int("markers", failed), slog.Any("error", err))
	}
}

// pipelineError reports how many markers of a pipelined write failed.
type pipelineError struct {
	failed int
	err    error
}

func (e *pipelineError) Error() string { return e.err.Error() }
func (e *pipelineError) Unwrap() error { return e.err }

// Flush waits until every marker queued before the call has been written
// (or its write has failed). It returns ctx's error if ctx ends first, and
// nil at once when markers are written synchronously or after Close.
func (f *FastPath) Flush(ctx context.Context) error {
	q := f.queue
	if q == nil {
		return nil
	}
	done := make(chan struct{})
	q.mu.RLock()
	if q.closed {
		q.mu.RUnlock()
		return nil
	}
	select {
	case q.ch <- markerWrite{done: done}:
	case <-ctx.Done():
		q.mu.RUnlock()
		return ctx.Err()
	}
	q.mu.RUnlock()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Close writes the markers still queued and stops the background writer;
// deliveries processed after Close write their markers before Process
// returns. It returns ctx's error if ctx ends before the queue is written
// (the writer goes on in the background). Close is a no-op when markers
// are written synchronously, and safe to call more than once.
func (f *FastPath) Close(ctx context.Context) error {
	q := f.queue
	if q == nil {
		return nil
	}
	q.mu.Lock()
	if !q.closed {
		q.closed = true
		close(q.ch)
	}
	q.mu.Unlock()
	select {
	case <-q.exited:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
