-- Step 0003 of the dedup tables: access paths ordered by time for cleanup, so
-- that deleting expired rows costs what it deletes, however large the tables.
-- Done rows by creation time (partial: processing and dead rows are never
-- cleaned up, and are not in it); attempts records by their last failure
-- (StaleAttempts reads them in that order too); redriven dead letters by
-- their redrive time (partial: a live dead letter is never deleted).
CREATE INDEX IF NOT EXISTS {{prefix}}dedup_done_created ON {{prefix}}dedup (created_at) WHERE status = 2;
CREATE INDEX IF NOT EXISTS {{prefix}}attempts_last_at ON {{prefix}}attempts (last_at);
CREATE INDEX IF NOT EXISTS {{prefix}}dead_letters_redriven ON {{prefix}}dead_letters (redriven_at) WHERE redriven_at IS NOT NULL;
