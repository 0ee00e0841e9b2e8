-- Step 0001 of the admin tables for MySQL 8 and MariaDB 10.5+.
-- {{prefix}} stands for the validated table prefix.
-- The audit log: one row per operator action (who, when, what, how many).
-- at is milliseconds since the Unix epoch, from the database clock.
CREATE TABLE IF NOT EXISTS {{prefix}}audit_log (
  id      BIGINT       NOT NULL AUTO_INCREMENT,
  at      BIGINT       NOT NULL,
  actor   VARCHAR(191) NOT NULL,
  action  VARCHAR(64)  NOT NULL,
  target  TEXT         NOT NULL,
  count   BIGINT       NOT NULL DEFAULT 0,
  detail  MEDIUMTEXT   NOT NULL,
  PRIMARY KEY (id),
  KEY {{prefix}}audit_log_at (at, id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;
