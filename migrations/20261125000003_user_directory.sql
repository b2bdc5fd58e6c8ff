-- The user directory (users registered through the REST API and their API keys, kept by the
-- gateway in <data_dir>/users/users.log) mirrored into Postgres by the exchange
-- (sinks::directory). Times are ms since the epoch, as the gateway keeps them. Password hashes
-- and secrets are never copied.
ALTER TABLE users ADD COLUMN username TEXT UNIQUE;         -- NULL: known from the engine only
ALTER TABLE users ADD COLUMN registered_ms BIGINT;         -- NULL: not registered through the API

ALTER TABLE api_keys ADD COLUMN source TEXT NOT NULL DEFAULT 'config'
    CHECK (source IN ('config', 'api'));                   -- the configuration, or the REST API
ALTER TABLE api_keys ADD COLUMN label TEXT NOT NULL DEFAULT '';
ALTER TABLE api_keys ADD COLUMN created_ms BIGINT;         -- NULL for configured keys
ALTER TABLE api_keys ADD COLUMN revoked_ms BIGINT;         -- NULL while the key is active
