package sqldedup

import (
	"context"
	"fmt"
	"time"

	"github.com/idemq/idemq/dedup"
)

// processLease claims the key, runs fn under a lease kept by a
// dedup.LeaseKeeper and marks the key done (or releases it) with
// compare-and-set on the owner token.
func (s *Store) processLease(ctx context.Context, req dedup.Request, fn dedup.Func) (dedup.Result, error) {
	owner := newOwnerToken()
	leaseMS := s.cfg.LeaseDuration.Milliseconds()

	claimed, sentAt, fence, res, err := s.claim(ctx, req, owner, leaseMS)
	if err != nil || !claimed {
		return res, err
	}
	completed := false
	defer func() {
		if !completed {
			// fn panicked (or the fence could not be read): release the
			// claim so a redelivery may try again; a panic goes on.
			s.release(req, owner)
		}
	}()
	if fence == 0 {
		if err := s.db.WithContext(ctx).Raw(s.sql.selectFence, req.Group, req.Key, owner).Scan(&fence).Error; err != nil {
			return dedup.Result{}, fmt.Errorf("sqldedup: read fencing token: %w", err)
		}
	}

	ferr, lost := s.keeper(req, owner, leaseMS).Run(ctx, sentAt, fence, fn)
	completed = true
	if ferr != nil {
		s.release(req, owner)
		return dedup.Result{}, ferr
	}
	if lost != nil {
		// The handler finished after its lease may have run out; the mark
		// below is fenced and decides.
		s.cfg.Logger.Warn("sqldedup: the handler outlived its lease",
			"group", req.Group, "key", req.Key, "err", lost)
	}
	// Mark with a context that outlives a cancelled delivery: the effect
	// happened, record it.
	// On SQLite concurrent marks share a statement (leasebatch.go).
	if err := s.markDone(req.Group, req.Key, owner); err != nil {
		return dedup.Result{}, err
	}
	return dedup.Result{Outcome: dedup.Processed}, nil
}

// keeper returns the LeaseKeeper of owner's claim on req's key.
func (s *Store) keeper(req dedup.Request, owner string, leaseMS int64) dedup.LeaseKeeper {
	return dedup.LeaseKeeper{
		Lease:      s.cfg.LeaseDuration,
		RenewEvery: s.cfg.RenewInterval,
		Renew: func(ctx context.Context) error {
			r := s.db.WithContext(ctx).Exec(s.sql.renew, leaseMS, req.Group, req.Key, owner)
			if r.Error != nil {
				return r.Error
			}
			if r.RowsAffected == 0 {
				return fmt.Errorf("%w: key %s/%s was taken over", dedup.ErrLeaseLost, req.Group, req.Key)
			}
			return nil
		},
		OnLost: func(cause error) {
			s.cfg.Logger.Warn("sqldedup: lease lost; the handler's context ends",
				"group", req.Group, "key", req.Key, "err", cause)
		},
	}
}

// claim inserts a PROCESSING row or takes over an expired one. It returns
// when the claiming statement was sent (the lease starts no earlier) and,
// where the dialect returns it with the claim, the new fencing token (0
// otherwise: the caller reads it). When it does not claim, res says why
// (Duplicate or Busy).
func (s *Store) claim(ctx context.Context, req dedup.Request, owner string, leaseMS int64) (bool, time.Time, uint64, dedup.Result, error) {
	db := s.db.WithContext(ctx)
	if err := ctx.Err(); err != nil {
		// A shared claim does not watch the delivery's context: do not
		// queue one for a delivery that is already over.
		return false, time.Time{}, 0, dedup.Result{}, fmt.Errorf("sqldedup: claim: %w", err)
	}
	for try := 0; try < 3; try++ {
		var (
			sentAt  time.Time
			claimed bool
			fence   uint64
			err     error
		)
		if s.sql.claimHead != "" && s.shareLease() {
			claimed, fence, sentAt, err = s.insertClaimShared(req, owner, leaseMS)
		} else {
			sentAt = time.Now()
			claimed, fence, err = s.insertClaim(ctx, req, owner, leaseMS)
		}
		if err != nil {
			return false, time.Time{}, 0, dedup.Result{}, fmt.Errorf("sqldedup: claim: %w", err)
		}
		if claimed {
			return true, sentAt, fence, dedup.Result{}, nil
		}
		sentAt = time.Now()
		claimed, fence, err = s.takeOver(ctx, req, owner, leaseMS)
		if err != nil {
			return false, time.Time{}, 0, dedup.Result{}, fmt.Errorf("sqldedup: take over expired lease: %w", err)
		}
		if claimed {
			return true, sentAt, fence, dedup.Result{}, nil
		}
		var st rowState
		q := db.Raw(s.sql.selectRow, req.Group, req.Key).Scan(&st)
		if q.Error != nil {
			return false, time.Time{}, 0, dedup.Result{}, fmt.Errorf("sqldedup: read dedup row: %w", q.Error)
		}
		if q.RowsAffected == 0 {
			continue // released meanwhile: try to claim again
		}
		if st.Status == statusProcessing && st.Remaining <= 0 {
			continue // expired meanwhile: try to take over again
		}
		return false, time.Time{}, 0, s.stateResult(req, st), nil
	}
	return false, time.Time{}, 0, dedup.Result{Outcome: dedup.Busy}, nil
}

// takeOver takes an expired PROCESSING row over for owner and reports
// whether it did, with the new fencing token where the dialect returns it.
func (s *Store) takeOver(ctx context.Context, req dedup.Request, owner string, leaseMS int64) (bool, uint64, error) {
	args := []any{owner, leaseMS, req.MessageID, req.Fingerprint, req.Group, req.Key}
	if s.sql.takeoverRet != "" {
		return s.returnFence(ctx, s.sql.takeoverRet, args)
	}
	r := s.db.WithContext(ctx).Exec(s.sql.takeover, args...)
	return r.Error == nil && r.RowsAffected == 1, 0, r.Error
}

// returnFence runs a claiming statement that returns the new row's
// fencing token, and reports whether it claimed (it returned a row).
func (s *Store) returnFence(ctx context.Context, q string, args []any) (bool, uint64, error) {
	var fences []uint64
	if err := s.db.WithContext(ctx).Raw(q, args...).Scan(&fences).Error; err != nil {
		return false, 0, err
	}
	if len(fences) != 1 || fences[0] == 0 {
		return false, 0, nil
	}
	return true, fences[0], nil
}

// insertClaim inserts a PROCESSING row for owner and reports whether it
// did, with the new fencing token where the dialect returns it. On MySQL
// the answer is the insert ID, because rows affected by the duplicate
// branch depend on the DSN's clientFoundRows: the claim sets the insert ID
// to the new row's fencing token (a time in microseconds), the duplicate
// branch to the row's status (1 to 3). The claim's UPDATEs (takeover,
// renew, mark, release) match only rows they change, so either count
// tells the truth there.
func (s *Store) insertClaim(ctx context.Context, req dedup.Request, owner string, leaseMS int64) (bool, uint64, error) {
	args := []any{req.Group, req.Key, owner, leaseMS, req.MessageID, req.Fingerprint}
	s.claimStatements.Add(1)
	if s.sql.insertClaimRet != "" {
		return s.returnFence(ctx, s.sql.insertClaimRet, args)
	}
	if s.dialect == "mysql" {
		sqlDB, err := s.db.DB()
		if err != nil {
			return false, 0, err
		}
		res, err := sqlDB.ExecContext(ctx, s.sql.insertClaim, args...)
		if err != nil {
			return false, 0, err
		}
		id, err := res.LastInsertId()
		switch {
		case err != nil:
			return false, 0, err
		case id > statusDead:
			return true, uint64(id), nil
		case id != 0:
			return false, 0, nil
		}
		// A server that does not hand LAST_INSERT_ID(expr) back as the
		// insert ID: owner holds the key exactly when it claimed it.
		var fences []uint64
		if err := s.db.WithContext(ctx).Raw(s.sql.selectFence, req.Group, req.Key, owner).Scan(&fences).Error; err != nil {
			return false, 0, err
		}
		if len(fences) != 1 || fences[0] == 0 {
			return false, 0, nil
		}
		return true, fences[0], nil
	}
	r := s.db.WithContext(ctx).Exec(s.sql.insertClaim, args...)
	return r.RowsAffected == 1, 0, r.Error
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
