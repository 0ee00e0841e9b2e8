-- Step 0001 of the producer's tables for PostgreSQL: the schema as first shipped.
-- {{prefix}} stands for the validated table prefix.

-- Snowflake node leases: one row per node ID ever leased.
CREATE TABLE IF NOT EXISTS {{prefix}}node_leases (
    node_id    BIGINT      NOT NULL PRIMARY KEY,
    owner      VARCHAR(64) NOT NULL DEFAULT '',
    expires_at BIGINT      NOT NULL DEFAULT 0,  -- database-clock Unix ms; 0 = released
    last_ms    BIGINT      NOT NULL DEFAULT 0   -- Unix ms: held, >= the holder's reservation; released, the last issued
);

-- Local-transaction records of transactional (half) messages.
CREATE TABLE IF NOT EXISTS {{prefix}}tx_records (
    message_id VARCHAR(64)  NOT NULL PRIMARY KEY,
    topic      VARCHAR(255) NOT NULL,
    created_at TIMESTAMPTZ  NOT NULL DEFAULT CURRENT_TIMESTAMP
);
CREATE INDEX IF NOT EXISTS {{prefix}}tx_records_created_at ON {{prefix}}tx_records (created_at);
