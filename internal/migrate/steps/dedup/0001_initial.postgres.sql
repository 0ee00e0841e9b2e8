-- Step 0001 of the dedup tables: the schema as first shipped.
-- idemq dedup schema for PostgreSQL. {{prefix}} is the validated table prefix.
-- Times are milliseconds since the Unix epoch, taken from the database clock.
-- Keys are COLLATE "C": compared byte for byte, whatever the database's
-- locale (no locale-dependent equality or order), which is also the
-- cheapest comparison for the index the dedup insert checks.
-- The dedup table's primary key is (consumer_group, dedup_key): one index to
-- maintain per message, which the dedup insert checks and cleanup walks.
CREATE TABLE IF NOT EXISTS {{prefix}}dedup (
  consumer_group VARCHAR(191) COLLATE "C" NOT NULL,
  dedup_key      VARCHAR(191) COLLATE "C" NOT NULL,
  status         SMALLINT     NOT NULL,            -- 1 processing, 2 done, 3 dead
  owner          VARCHAR(64)  NOT NULL DEFAULT '', -- lease owner token (processing only)
  lease_until    BIGINT       NOT NULL DEFAULT 0,
  message_id     VARCHAR(191) NOT NULL DEFAULT '',
  fingerprint    VARCHAR(64)  NOT NULL DEFAULT '',
  created_at     BIGINT       NOT NULL,
  updated_at     BIGINT       NOT NULL,
  PRIMARY KEY (consumer_group, dedup_key)
);

CREATE TABLE IF NOT EXISTS {{prefix}}attempts (
  consumer_group VARCHAR(191) COLLATE "C" NOT NULL,
  dedup_key      VARCHAR(191) COLLATE "C" NOT NULL,
  attempts       INTEGER      NOT NULL DEFAULT 0,
  last_error     TEXT         NOT NULL DEFAULT '',
  history        TEXT         NOT NULL DEFAULT '[]',
  first_at       BIGINT       NOT NULL,
  last_at        BIGINT       NOT NULL,
  PRIMARY KEY (consumer_group, dedup_key)
);

CREATE TABLE IF NOT EXISTS {{prefix}}dead_letters (
  id              BIGSERIAL    PRIMARY KEY,
  consumer_group  VARCHAR(191) NOT NULL,
  dedup_key       VARCHAR(191) NOT NULL,
  message_id      VARCHAR(191) NOT NULL DEFAULT '',
  topic           VARCHAR(255) NOT NULL DEFAULT '',
  tags            VARCHAR(255) NOT NULL DEFAULT '',
  msg_keys        TEXT         NOT NULL DEFAULT '[]',
  body            BYTEA,
  properties      TEXT         NOT NULL DEFAULT '{}',
  attempts        INTEGER      NOT NULL DEFAULT 0,
  reason          TEXT         NOT NULL DEFAULT '',
  history         TEXT         NOT NULL DEFAULT '[]',
  first_failed_at BIGINT       NOT NULL,
  dead_at         BIGINT       NOT NULL,
  redriven_at     BIGINT
);

CREATE INDEX IF NOT EXISTS {{prefix}}dead_letters_group ON {{prefix}}dead_letters (consumer_group, id);
