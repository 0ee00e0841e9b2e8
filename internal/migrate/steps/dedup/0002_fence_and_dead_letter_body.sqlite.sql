-- Step 0002 of the dedup tables: the lease fencing token, and dead letters that
-- say how much of the body they keep.
ALTER TABLE {{prefix}}dedup ADD COLUMN fence INTEGER NOT NULL DEFAULT 0;       -- lease fencing token (grows with every owner)
ALTER TABLE {{prefix}}dead_letters ADD COLUMN body_size INTEGER NOT NULL DEFAULT 0;  -- size of the whole body
ALTER TABLE {{prefix}}dead_letters ADD COLUMN body_sha256 TEXT NOT NULL DEFAULT '';  -- SHA-256 of the whole body
ALTER TABLE {{prefix}}dead_letters ADD COLUMN truncated INTEGER NOT NULL DEFAULT 0;  -- 1: body cut to 1 MiB; no redrive
CREATE INDEX IF NOT EXISTS {{prefix}}dead_letters_key ON {{prefix}}dead_letters (consumer_group, dedup_key, id);
