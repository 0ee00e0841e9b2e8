-- Step 0002 of the outbox tables: room on each page for a claim's new row
-- version, a PostgreSQL setting. SQLite rewrites a row in place and
-- updates only the indexes whose columns change, so there is nothing to do
-- here.
SELECT 1;
