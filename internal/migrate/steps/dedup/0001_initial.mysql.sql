-- Step 0001 of the dedup tables: the schema as first shipped.
-- idemq dedup schema for MySQL 8 and MariaDB 10.5+. {{prefix}} is the validated table prefix.
-- Keys are VARBINARY so that comparison is byte-exact (no case folding, no pad-space).
-- Times are milliseconds since the Unix epoch, taken from the database clock.
-- The dedup table's primary key is (consumer_group, dedup_key): one index to
-- maintain per message, which the dedup insert checks and cleanup walks.
CREATE TABLE IF NOT EXISTS {{prefix}}dedup (
  consumer_group VARBINARY(191) NOT NULL,
  dedup_key      VARBINARY(191) NOT NULL,
  status         SMALLINT       NOT NULL,            -- 1 processing, 2 done, 3 dead
  owner          VARCHAR(64)    NOT NULL DEFAULT '', -- lease owner token (processing only)
  lease_until    BIGINT         NOT NULL DEFAULT 0,
  message_id     VARCHAR(191)   NOT NULL DEFAULT '',
  fingerprint    VARCHAR(64)    NOT NULL DEFAULT '',
  created_at     BIGINT         NOT NULL,
  updated_at     BIGINT         NOT NULL,
  PRIMARY KEY (consumer_group, dedup_key)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;

CREATE TABLE IF NOT EXISTS {{prefix}}attempts (
  consumer_group VARBINARY(191) NOT NULL,
  dedup_key      VARBINARY(191) NOT NULL,
  attempts       INT            NOT NULL DEFAULT 0,
  last_error     TEXT           NOT NULL,
  history        MEDIUMTEXT     NOT NULL,
  first_at       BIGINT         NOT NULL,
  last_at        BIGINT         NOT NULL,
  PRIMARY KEY (consumer_group, dedup_key)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;

CREATE TABLE IF NOT EXISTS {{prefix}}dead_letters (
  id              BIGINT         NOT NULL AUTO_INCREMENT,
  consumer_group  VARBINARY(191) NOT NULL,
  dedup_key       VARBINARY(191) NOT NULL,
  message_id      VARCHAR(191)   NOT NULL DEFAULT '',
  topic           VARCHAR(255)   NOT NULL DEFAULT '',
  tags            VARCHAR(255)   NOT NULL DEFAULT '',
  msg_keys        TEXT           NOT NULL,
  body            LONGBLOB,
  properties      MEDIUMTEXT     NOT NULL,
  attempts        INT            NOT NULL DEFAULT 0,
  reason          TEXT           NOT NULL,
  history         MEDIUMTEXT     NOT NULL,
  first_failed_at BIGINT         NOT NULL,
  dead_at         BIGINT         NOT NULL,
  redriven_at     BIGINT         NULL,
  PRIMARY KEY (id),
  KEY {{prefix}}dead_letters_group (consumer_group, id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;
