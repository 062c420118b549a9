-- trainrt service schema, version 1 (SQLite). Times are milliseconds since the Unix epoch.

CREATE TABLE tenants (
    id          INTEGER PRIMARY KEY,
    name        TEXT NOT NULL UNIQUE,
    quota       TEXT NOT NULL,               -- JSON: model::Quota
    created_at  INTEGER NOT NULL,
    last_served INTEGER NOT NULL DEFAULT 0   -- round-robin position: the claim that last served it
);

CREATE TABLE tokens (
    id          TEXT PRIMARY KEY,
    hash        TEXT NOT NULL UNIQUE,        -- SHA-256 of the secret; the secret is never stored
    tenant_id   INTEGER REFERENCES tenants(id), -- NULL: the operator
    created_at  INTEGER NOT NULL,
    revoked_at  INTEGER
);

CREATE TABLE uploads (
    tenant_id   INTEGER NOT NULL REFERENCES tenants(id),
    kind        TEXT NOT NULL,               -- callbacks | datasets
    name        TEXT NOT NULL,
    sha256      TEXT NOT NULL,
    bytes       INTEGER NOT NULL,
    created_at  INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, kind, name)
);

CREATE TABLE jobs (
    seq              INTEGER PRIMARY KEY AUTOINCREMENT, -- submission order (cursors, FIFO per tenant)
    id               TEXT NOT NULL UNIQUE,
    tenant_id        INTEGER NOT NULL REFERENCES tenants(id),
    state            TEXT NOT NULL,
    config           TEXT NOT NULL,          -- JSON, as submitted
    resolved         TEXT NOT NULL,          -- JSON, uploads resolved to hashes
    idempotency_key  TEXT,
    reason           TEXT,
    attempts         INTEGER NOT NULL DEFAULT 0,
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    storage_bytes    INTEGER NOT NULL DEFAULT 0,
    summary          TEXT,
    created_at       INTEGER NOT NULL,
    started_at       INTEGER,
    finished_at      INTEGER,
    UNIQUE (tenant_id, idempotency_key)
);
CREATE INDEX jobs_by_state ON jobs (state, tenant_id, seq);

-- One row per attempt: who ran it and when (the lease history), and what it used.
CREATE TABLE attempts (
    job_id      TEXT NOT NULL REFERENCES jobs(id),
    attempt     INTEGER NOT NULL,
    tenant_id   INTEGER NOT NULL REFERENCES tenants(id),
    worker      TEXT NOT NULL,
    started_at  INTEGER NOT NULL,
    ended_at    INTEGER,
    cpu_seconds REAL NOT NULL DEFAULT 0,
    fuel        INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (job_id, attempt)
);

CREATE TABLE job_events (
    job_id  TEXT NOT NULL REFERENCES jobs(id),
    seq     INTEGER NOT NULL,
    at      INTEGER NOT NULL,
    kind    TEXT NOT NULL,
    data    TEXT NOT NULL,                   -- JSON
    PRIMARY KEY (job_id, seq)
);
