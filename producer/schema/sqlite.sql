-- idemq producer tables for SQLite. The table prefix is "idemq_";
-- producer.SchemaSQL("sqlite", prefix) returns this file for another prefix.

-- Snowflake node leases: one row per node ID ever leased.
CREATE TABLE IF NOT EXISTS idemq_node_leases (
    node_id    INTEGER NOT NULL PRIMARY KEY,
    owner      TEXT    NOT NULL DEFAULT '',
    expires_at INTEGER NOT NULL DEFAULT 0,  -- database-clock Unix ms; 0 = released
    last_ms    INTEGER NOT NULL DEFAULT 0   -- Unix ms: held, >= the holder's reservation; released, the last issued
);

-- Local-transaction records of transactional (half) messages.
CREATE TABLE IF NOT EXISTS idemq_tx_records (
    message_id TEXT     NOT NULL PRIMARY KEY,
    topic      TEXT     NOT NULL,
    created_at DATETIME NOT NULL DEFAULT CURRENT_TIMESTAMP
);
CREATE INDEX IF NOT EXISTS idemq_tx_records_created_at ON idemq_tx_records (created_at);
