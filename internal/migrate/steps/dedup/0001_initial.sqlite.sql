-- Step 0001 of the dedup tables: the schema as first shipped.
-- idemq dedup schema for SQLite. {{prefix}} is the validated table prefix.
-- Times are milliseconds since the Unix epoch, taken from the database clock.
-- The dedup table's primary key is (consumer_group, dedup_key): one index to
-- maintain per message, which the dedup insert checks and cleanup walks.
CREATE TABLE IF NOT EXISTS {{prefix}}dedup (
  consumer_group TEXT    NOT NULL,
  dedup_key      TEXT    NOT NULL,
  status         INTEGER NOT NULL,             -- 1 processing, 2 done, 3 dead
  owner          TEXT    NOT NULL DEFAULT '',  -- lease owner token (processing only)
  lease_until    INTEGER NOT NULL DEFAULT 0,
  message_id     TEXT    NOT NULL DEFAULT '',
  fingerprint    TEXT    NOT NULL DEFAULT '',
  created_at     INTEGER NOT NULL,
  updated_at     INTEGER NOT NULL,
  PRIMARY KEY (consumer_group, dedup_key)
) WITHOUT ROWID;

CREATE TABLE IF NOT EXISTS {{prefix}}attempts (
  consumer_group TEXT    NOT NULL,
  dedup_key      TEXT    NOT NULL,
  attempts       INTEGER NOT NULL DEFAULT 0,
  last_error     TEXT    NOT NULL DEFAULT '',
  history        TEXT    NOT NULL DEFAULT '[]',
  first_at       INTEGER NOT NULL,
  last_at        INTEGER NOT NULL,
  PRIMARY KEY (consumer_group, dedup_key)
);

CREATE TABLE IF NOT EXISTS {{prefix}}dead_letters (
  id              INTEGER PRIMARY KEY,
  consumer_group  TEXT    NOT NULL,
  dedup_key       TEXT    NOT NULL,
  message_id      TEXT    NOT NULL DEFAULT '',
  topic           TEXT    NOT NULL DEFAULT '',
  tags            TEXT    NOT NULL DEFAULT '',
  msg_keys        TEXT    NOT NULL DEFAULT '[]',
  body            BLOB,
  properties      TEXT    NOT NULL DEFAULT '{}',
  attempts        INTEGER NOT NULL DEFAULT 0,
  reason          TEXT    NOT NULL DEFAULT '',
  history         TEXT    NOT NULL DEFAULT '[]',
  first_failed_at INTEGER NOT NULL,
  dead_at         INTEGER NOT NULL,
  redriven_at     INTEGER
);

CREATE INDEX IF NOT EXISTS {{prefix}}dead_letters_group ON {{prefix}}dead_letters (consumer_group, id);
