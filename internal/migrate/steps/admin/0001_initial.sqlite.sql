-- Step 0001 of the admin tables for SQLite.
-- {{prefix}} stands for the validated table prefix.
-- The audit log: one row per operator action (who, when, what, how many).
-- at is milliseconds since the Unix epoch, from the database clock.
CREATE TABLE IF NOT EXISTS {{prefix}}audit_log (
  id      INTEGER PRIMARY KEY,
  at      INTEGER NOT NULL,
  actor   TEXT    NOT NULL,
  action  TEXT    NOT NULL,
  target  TEXT    NOT NULL DEFAULT '',
  count   INTEGER NOT NULL DEFAULT 0,
  detail  TEXT    NOT NULL DEFAULT '{}'
);
CREATE INDEX IF NOT EXISTS {{prefix}}audit_log_at ON {{prefix}}audit_log (at, id);
