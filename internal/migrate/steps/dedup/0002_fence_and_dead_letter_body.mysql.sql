-- Step 0002 of the dedup tables: the lease fencing token, and dead letters that
-- say how much of the body they keep. One statement per table, so a table is
-- altered whole or not at all.
ALTER TABLE {{prefix}}dedup ADD COLUMN fence BIGINT NOT NULL DEFAULT 0;  -- lease fencing token (grows with every owner)
ALTER TABLE {{prefix}}dead_letters
  ADD COLUMN body_size   BIGINT      NOT NULL DEFAULT 0,   -- size of the whole body
  ADD COLUMN body_sha256 VARCHAR(64) NOT NULL DEFAULT '',  -- SHA-256 of the whole body
  ADD COLUMN truncated   SMALLINT    NOT NULL DEFAULT 0,   -- 1: body cut to 1 MiB; no redrive
  ADD KEY {{prefix}}dead_letters_key (consumer_group, dedup_key, id);
