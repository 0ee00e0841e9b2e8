-- Step 0002 of the outbox tables: room on each page for a claim's new row
-- version, a PostgreSQL setting. InnoDB updates columns no index holds in
-- place, so there is nothing to do here.
SELECT 1;
