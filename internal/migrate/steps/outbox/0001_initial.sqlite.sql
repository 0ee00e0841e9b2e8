-- Step 0001 of the outbox tables: the schema as first shipped.
-- Outbox table for SQLite (3.35 or newer for RETURNING).
-- {{prefix}} stands for the validated table prefix.
-- status: 0 pending, 1 sent, 2 failed. Timestamps are UTC text
-- 'YYYY-MM-DD HH:MM:SS.SSS' from the database clock, so they compare as text.
CREATE TABLE IF NOT EXISTS {{prefix}}outbox (
    id              INTEGER  PRIMARY KEY AUTOINCREMENT,
    message_id      TEXT     NOT NULL,
    topic           TEXT     NOT NULL,
    tags            TEXT     NOT NULL DEFAULT '',
    msg_keys        TEXT     NOT NULL DEFAULT '[]',
    body            BLOB     NOT NULL,
    properties      TEXT     NOT NULL DEFAULT '{}',
    sharding_key    TEXT     NOT NULL DEFAULT '',
    delay_level     INTEGER  NOT NULL DEFAULT 0,
    status          INTEGER  NOT NULL DEFAULT 0,
    attempts        INTEGER  NOT NULL DEFAULT 0,
    next_attempt_at DATETIME NOT NULL DEFAULT (strftime('%Y-%m-%d %H:%M:%f', 'now')),
    claimed_by      TEXT     NOT NULL DEFAULT '',
    claim_until     DATETIME NULL,
    last_error      TEXT     NOT NULL DEFAULT '',
    broker_msg_id   TEXT     NOT NULL DEFAULT '',
    created_at      DATETIME NOT NULL DEFAULT (strftime('%Y-%m-%d %H:%M:%f', 'now')),
    updated_at      DATETIME NOT NULL DEFAULT (strftime('%Y-%m-%d %H:%M:%f', 'now')),
    sent_at         DATETIME NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS {{prefix}}outbox_message_id_key ON {{prefix}}outbox (message_id);
CREATE INDEX IF NOT EXISTS {{prefix}}outbox_due_idx ON {{prefix}}outbox (next_attempt_at, id) WHERE status = 0;
CREATE INDEX IF NOT EXISTS {{prefix}}outbox_shard_idx ON {{prefix}}outbox (sharding_key, id) WHERE status = 0 AND sharding_key <> '';
CREATE INDEX IF NOT EXISTS {{prefix}}outbox_sent_idx ON {{prefix}}outbox (sent_at, id) WHERE status = 1;
CREATE INDEX IF NOT EXISTS {{prefix}}outbox_status_idx ON {{prefix}}outbox (status, topic, id);
