-- Orgs, members, durable jobs and idempotency keys. Times are microseconds
-- since the Unix epoch.

CREATE TABLE orgs (
    id               TEXT PRIMARY KEY NOT NULL,
    display_name     TEXT NOT NULL,
    allow_custom_sso INTEGER NOT NULL,
    revision         INTEGER NOT NULL,
    member_count     INTEGER NOT NULL DEFAULT 0,
    create_time      INTEGER NOT NULL,
    update_time      INTEGER NOT NULL
) WITHOUT ROWID;

CREATE TABLE members (
    org_id      TEXT NOT NULL REFERENCES orgs (id),
    member_id   TEXT NOT NULL,
    email       TEXT NOT NULL,
    create_time INTEGER NOT NULL,
    PRIMARY KEY (org_id, member_id)
) WITHOUT ROWID;

CREATE TABLE jobs (
    -- Enqueue order: jobs of one org run in seq order.
    seq               INTEGER PRIMARY KEY AUTOINCREMENT,
    id                TEXT NOT NULL UNIQUE,
    org_id            TEXT NOT NULL,
    kind              INTEGER NOT NULL,
    state             INTEGER NOT NULL,
    total_members     INTEGER NOT NULL DEFAULT 0,
    processed_members INTEGER NOT NULL DEFAULT 0,
    unlinked_members  INTEGER NOT NULL DEFAULT 0,
    failed_members    INTEGER NOT NULL DEFAULT 0,
    attempt           INTEGER NOT NULL DEFAULT 0,
    last_error        TEXT NOT NULL DEFAULT '',
    -- JSON array of the first few failures, served inline with the job.
    failure_sample    TEXT NOT NULL DEFAULT '[]',
    version           INTEGER NOT NULL DEFAULT 1,
    -- Last member id checkpointed; the job resumes after it.
    cursor            TEXT,
    -- Set when a running job has been asked to stop (CancelJob, superseded).
    cancel_reason     TEXT,
    lease_owner       TEXT,
    lease_epoch       INTEGER NOT NULL DEFAULT 0,
    lease_expires     INTEGER NOT NULL DEFAULT 0,
    create_time       INTEGER NOT NULL,
    update_time       INTEGER NOT NULL,
    start_time        INTEGER,
    end_time          INTEGER
);

-- Unfinished jobs per org, for claiming in order and superseding.
CREATE INDEX jobs_active_by_org ON jobs (org_id, seq) WHERE state IN (1, 2);
-- The claim scan: unfinished jobs in enqueue order.
CREATE INDEX jobs_active ON jobs (seq) WHERE state IN (1, 2);
CREATE INDEX jobs_by_org ON jobs (org_id, seq);
CREATE INDEX jobs_by_state ON jobs (state, seq);

CREATE TABLE job_failures (
    job_id    TEXT NOT NULL,
    member_id TEXT NOT NULL,
    code      TEXT NOT NULL,
    message   TEXT NOT NULL,
    PRIMARY KEY (job_id, member_id)
) WITHOUT ROWID;

CREATE TABLE idempotency_keys (
    method      TEXT NOT NULL,
    request_id  TEXT NOT NULL,
    -- The request's meaningful content: a reused key with another request
    -- is refused instead of silently answered with an unrelated response.
    fingerprint TEXT NOT NULL,
    org_id      TEXT NOT NULL,
    job_id      TEXT,
    -- The org as the first response returned it (JSON).
    org_json    TEXT NOT NULL,
    create_time INTEGER NOT NULL,
    PRIMARY KEY (method, request_id)
) WITHOUT ROWID;
