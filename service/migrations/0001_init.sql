-- trainrt service schema, version 1, for SQLite and PostgreSQL alike: the words in braces are
-- each backend's spelling of a type (store/schema.rs). Times are milliseconds since the Unix epoch.

CREATE TABLE tenants (
    id          {serial} PRIMARY KEY,
    name        TEXT NOT NULL UNIQUE,
    quota       TEXT NOT NULL,               -- JSON: model::Quota
    created_at  {int} NOT NULL,
    last_served {int} NOT NULL DEFAULT 0   -- round-robin position: the claim that last served it
);

CREATE TABLE tokens (
    id          TEXT PRIMARY KEY,
    hash        TEXT NOT NULL UNIQUE,        -- SHA-256 of the secret; the secret is never stored
    tenant_id   {int} REFERENCES tenants(id), -- NULL: the operator
    created_at  {int} NOT NULL,
    revoked_at  {int}
);

CREATE TABLE uploads (
    tenant_id   {int} NOT NULL REFERENCES tenants(id),
    kind        TEXT NOT NULL,               -- callbacks | datasets
    name        TEXT NOT NULL,
    sha256      TEXT NOT NULL,
    bytes       {int} NOT NULL,
    created_at  {int} NOT NULL,
    PRIMARY KEY (tenant_id, kind, name)
);

CREATE TABLE jobs (
    seq              {serial} PRIMARY KEY, -- submission order (cursors, FIFO per tenant)
    id               TEXT NOT NULL UNIQUE,
    tenant_id        {int} NOT NULL REFERENCES tenants(id),
    state            TEXT NOT NULL,
    config           TEXT NOT NULL,          -- JSON, as submitted
    resolved         TEXT NOT NULL,          -- JSON, uploads resolved to hashes
    idempotency_key  TEXT,
    reason           TEXT,
    attempts         {int} NOT NULL DEFAULT 0,
    cancel_requested {int} NOT NULL DEFAULT 0,
    storage_bytes    {int} NOT NULL DEFAULT 0,
    summary          TEXT,
    created_at       {int} NOT NULL,
    started_at       {int},
    finished_at      {int},
    UNIQUE (tenant_id, idempotency_key)
);
CREATE INDEX jobs_by_state ON jobs (state, tenant_id, seq);

-- One row per attempt: who ran it and when (the lease history), and what it used.
CREATE TABLE attempts (
    job_id      TEXT NOT NULL REFERENCES jobs(id),
    attempt     {int} NOT NULL,
    tenant_id   {int} NOT NULL REFERENCES tenants(id),
    worker      TEXT NOT NULL,
    started_at  {int} NOT NULL,
    ended_at    {int},
    cpu_seconds {real} NOT NULL DEFAULT 0,
    fuel        {int} NOT NULL DEFAULT 0,
    PRIMARY KEY (job_id, attempt)
);

CREATE TABLE job_events (
    job_id  TEXT NOT NULL REFERENCES jobs(id),
    seq     {int} NOT NULL,
    at      {int} NOT NULL,
    kind    TEXT NOT NULL,
    data    TEXT NOT NULL,                   -- JSON
    PRIMARY KEY (job_id, seq)
);
