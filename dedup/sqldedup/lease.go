package sqldedup

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/idemq/idemq/dedup"
)

// processLease claims the key, runs fn under a renewed lease and marks the
// key done (or releases it) with compare-and-set on the owner token.
func (s *Store) processLease(ctx context.Context, req dedup.Request, fn dedup.Func) (dedup.Result, error) {
	owner := newOwnerToken()
	leaseMS := s.cfg.LeaseDuration.Milliseconds()

	claimed, res, err := s.claim(ctx, req, owner, leaseMS)
	if err != nil || !claimed {
		return res, err
	}

	runCtx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		s.renewLoop(runCtx, cancel, stop, req, owner, leaseMS)
	}()
	stopRenewal := func() {
		close(stop)
		wg.Wait()
	}

	completed := false
	defer func() {
		if !completed {
			// fn panicked: release the claim so a redelivery may try
			// again, then let the panic continue.
			stopRenewal()
			s.release(req, owner)
		}
	}()
	ferr := fn(runCtx)
	completed = true
	stopRenewal()

	if ferr != nil {
		s.release(req, owner)
		return dedup.Result{}, ferr
	}
	if cause := context.Cause(runCtx); errors.Is(cause, dedup.ErrLeaseLost) {
		// The handler finished but may have raced a takeover; the mark
		// below is fenced anyway and decides.
		s.cfg.Logger.Warn("sqldedup: lease renewal failed while the handler ran",
			"group", req.Group, "key", req.Key)
	}
	// Mark with a context that outlives a cancelled delivery: the effect
	// happened, record it.
	mctx, mcancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer mcancel()
	r := s.db.WithContext(mctx).Exec(s.sql.markDone, req.Group, req.Key, owner)
	if r.Error != nil {
		return dedup.Result{}, fmt.Errorf("sqldedup: mark done: %w", r.Error)
	}
	if r.RowsAffected == 0 {
		return dedup.Result{}, fmt.Errorf("sqldedup: mark done of %s/%s: %w", req.Group, req.Key, dedup.ErrLeaseLost)
	}
	return dedup.Result{Outcome: dedup.Processed}, nil
}

// claim inserts a PROCESSING row or takes over an expired one. When it does
// not claim, res says why (Duplicate or Busy).
func (s *Store) claim(ctx context.Context, req dedup.Request, owner string, leaseMS int64) (bool, dedup.Result, error) {
	db := s.db.WithContext(ctx)
	for try := 0; try < 3; try++ {
		r := db.Exec(s.sql.insertClaim, req.Group, req.Key, owner, leaseMS, req.MessageID, req.Fingerprint)
		if r.Error != nil {
			return false, dedup.Result{}, fmt.Errorf("sqldedup: claim: %w", r.Error)
		}
		if r.RowsAffected == 1 {
			return true, dedup.Result{}, nil
		}
		r = db.Exec(s.sql.takeover, owner, leaseMS, req.MessageID, req.Fingerprint, req.Group, req.Key)
		if r.Error != nil {
			return false, dedup.Result{}, fmt.Errorf("sqldedup: take over expired lease: %w", r.Error)
		}
		if r.RowsAffected == 1 {
			return true, dedup.Result{}, nil
		}
		var st rowState
		q := db.Raw(s.sql.selectRow, req.Group, req.Key).Scan(&st)
		if q.Error != nil {
			return false, dedup.Result{}, fmt.Errorf("sqldedup: read dedup row: %w", q.Error)
		}
		if q.RowsAffected == 0 {
			continue // released meanwhile: try to claim again
		}
		if st.Status == statusProcessing && st.Remaining <= 0 {
			continue // expired meanwhile: try to take over again
		}
		return false, s.stateResult(req, st), nil
	}
	return false, dedup.Result{Outcome: dedup.Busy}, nil
}

// renewLoop extends the lease until stop is closed. If the lease cannot be
// renewed before it runs out, or another owner took the key, it cancels the
// handler's context with dedup.ErrLeaseLost.
func (s *Store) renewLoop(ctx context.Context, cancel context.CancelCauseFunc, stop <-chan struct{}, req dedup.Request, owner string, leaseMS int64) {
	if s.cfg.RenewInterval < 0 {
		return
	}
	t := time.NewTicker(s.cfg.RenewInterval)
	defer t.Stop()
	deadline := time.Now().Add(s.cfg.LeaseDuration)
	for {
		select {
		case <-stop:
			return
		case <-ctx.Done():
			return
		case <-t.C:
		}
		rctx, rcancel := context.WithTimeout(ctx, s.cfg.RenewInterval)
		r := s.db.WithContext(rctx).Exec(s.sql.renew, leaseMS, req.Group, req.Key, owner)
		rcancel()
		switch {
		case r.Error == nil && r.RowsAffected == 1:
			deadline = time.Now().Add(s.cfg.LeaseDuration)
		case r.Error == nil:
			cancel(fmt.Errorf("%w: key %s/%s was taken over", dedup.ErrLeaseLost, req.Group, req.Key))
			return
		default:
			if time.Now().Add(s.cfg.RenewInterval).After(deadline) {
				cancel(fmt.Errorf("%w: renewal failed: %v", dedup.ErrLeaseLost, r.Error))
				return
			}
			s.cfg.Logger.Warn("sqldedup: lease renewal failed; retrying", "group", req.Group, "key", req.Key, "err", r.Error)
		}
	}
}

// release deletes the claim if this owner still holds it.
func (s *Store) release(req dedup.Request, owner string) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := s.db.WithContext(ctx).Exec(s.sql.release, req.Group, req.Key, owner).Error; err != nil {
		s.cfg.Logger.Warn("sqldedup: release of a failed claim failed; it expires with its lease",
			"group", req.Group, "key", req.Key, "err", err)
	}
}
