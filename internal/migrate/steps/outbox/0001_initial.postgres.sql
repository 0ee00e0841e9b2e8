-- Step 0001 of the outbox tables: the schema as first shipped.
-- Outbox table for PostgreSQL (9.5 or newer for SKIP LOCKED).
-- {{prefix}} stands for the validated table prefix.
-- status: 0 pending, 1 sent, 2 failed. Timestamps come from the database clock.
CREATE TABLE IF NOT EXISTS {{prefix}}outbox (
    id              BIGSERIAL    PRIMARY KEY,
    message_id      VARCHAR(128) NOT NULL,
    topic           VARCHAR(255) NOT NULL,
    tags            VARCHAR(255) NOT NULL DEFAULT '',
    msg_keys        TEXT         NOT NULL DEFAULT '[]',
    body            BYTEA        NOT NULL,
    properties      TEXT         NOT NULL DEFAULT '{}',
    sharding_key    VARCHAR(191) NOT NULL DEFAULT '',
    delay_level     INTEGER      NOT NULL DEFAULT 0,
    status          SMALLINT     NOT NULL DEFAULT 0,
    attempts        INTEGER      NOT NULL DEFAULT 0,
    next_attempt_at TIMESTAMPTZ  NOT NULL DEFAULT now(),
    claimed_by      VARCHAR(191) NOT NULL DEFAULT '',
    claim_until     TIMESTAMPTZ  NULL,
    last_error      TEXT         NOT NULL DEFAULT '',
    broker_msg_id   VARCHAR(128) NOT NULL DEFAULT '',
    created_at      TIMESTAMPTZ  NOT NULL DEFAULT now(),
    updated_at      TIMESTAMPTZ  NOT NULL DEFAULT now(),
    sent_at         TIMESTAMPTZ  NULL,
    CONSTRAINT {{prefix}}outbox_message_id_key UNIQUE (message_id)
);
CREATE INDEX IF NOT EXISTS {{prefix}}outbox_due_idx ON {{prefix}}outbox (next_attempt_at, id) WHERE status = 0;
CREATE INDEX IF NOT EXISTS {{prefix}}outbox_shard_idx ON {{prefix}}outbox (sharding_key, id) WHERE status = 0 AND sharding_key <> '';
CREATE INDEX IF NOT EXISTS {{prefix}}outbox_sent_idx ON {{prefix}}outbox (sent_at, id) WHERE status = 1;
CREATE INDEX IF NOT EXISTS {{prefix}}outbox_status_idx ON {{prefix}}outbox (status, topic, id);
