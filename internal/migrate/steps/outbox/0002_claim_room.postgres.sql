-- Step 0002 of the outbox tables: room on each page for a claim's new row
-- version. A claim changes no indexed column, so PostgreSQL can write the
-- new version on the row's own page without touching any index (a HOT
-- update), if the page has room; inserts now fill pages to half, which
-- measured about half the cost of a claim (marks change the status, which
-- the indexes hold, so they cost the same). The price is space: pages
-- written after this step hold about half as many rows. It takes a brief
-- lock and rewrites nothing; existing pages keep their rows.
ALTER TABLE {{prefix}}outbox SET (fillfactor = 50);
