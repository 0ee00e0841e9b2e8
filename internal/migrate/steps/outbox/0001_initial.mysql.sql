-- Step 0001 of the outbox tables: the schema as first shipped.
-- Outbox table for MariaDB 10.6+ / MySQL 8.0+ (SKIP LOCKED).
-- {{prefix}} stands for the validated table prefix.
-- status: 0 pending, 1 sent, 2 failed. Timestamps are UTC from the database
-- clock (UTC_TIMESTAMP(6)); the DSN needs parseTime=true.
CREATE TABLE IF NOT EXISTS {{prefix}}outbox (
    id              BIGINT       NOT NULL AUTO_INCREMENT,
    message_id      VARCHAR(128) NOT NULL,
    topic           VARCHAR(255) NOT NULL,
    tags            VARCHAR(255) NOT NULL DEFAULT '',
    msg_keys        TEXT         NOT NULL,
    body            LONGBLOB     NOT NULL,
    properties      MEDIUMTEXT   NOT NULL,
    sharding_key    VARCHAR(191) NOT NULL DEFAULT '',
    delay_level     INT          NOT NULL DEFAULT 0,
    status          SMALLINT     NOT NULL DEFAULT 0,
    attempts        INT          NOT NULL DEFAULT 0,
    next_attempt_at DATETIME(6)  NOT NULL,
    claimed_by      VARCHAR(191) NOT NULL DEFAULT '',
    claim_until     DATETIME(6)  NULL,
    last_error      TEXT         NOT NULL,
    broker_msg_id   VARCHAR(128) NOT NULL DEFAULT '',
    created_at      DATETIME(6)  NOT NULL,
    updated_at      DATETIME(6)  NOT NULL,
    sent_at         DATETIME(6)  NULL,
    PRIMARY KEY (id),
    UNIQUE KEY {{prefix}}outbox_message_id_key (message_id),
    KEY {{prefix}}outbox_due_idx (status, next_attempt_at, id),
    KEY {{prefix}}outbox_shard_idx (sharding_key, status, id),
    KEY {{prefix}}outbox_sent_idx (status, sent_at, id),
    KEY {{prefix}}outbox_status_idx (status, topic, id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;
