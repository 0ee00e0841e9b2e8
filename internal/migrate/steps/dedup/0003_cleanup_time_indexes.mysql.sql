-- Step 0003 of the dedup tables: access paths ordered by time for cleanup, so
-- that deleting expired rows costs what it deletes, however large the tables.
-- InnoDB has no partial indexes: done rows are found through (status,
-- created_at), so cleanup's range is the done rows' alone. Attempts records
-- by their last failure (StaleAttempts reads them in that order too);
-- redriven dead letters by their redrive time (a live dead letter has none).
-- One statement per table, so a table is altered whole or not at all; InnoDB
-- builds a secondary index online (concurrent writes go on).
ALTER TABLE {{prefix}}dedup ADD KEY {{prefix}}dedup_status_created (status, created_at);
ALTER TABLE {{prefix}}attempts ADD KEY {{prefix}}attempts_last_at (last_at);
ALTER TABLE {{prefix}}dead_letters ADD KEY {{prefix}}dead_letters_redriven (redriven_at);
