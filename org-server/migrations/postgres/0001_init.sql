-- org-server on PostgreSQL: the same tables as migrations/sqlite/0001, in
-- PostgreSQL types, plus the trigger that tells other replicas about job
-- changes. Times are microseconds since the Unix epoch (BIGINT), as on
-- SQLite, so domain code sees one model. Ids that are paged through with
-- `>` are COLLATE "C": bytewise order, as on SQLite.

CREATE TABLE orgs (
    id               TEXT COLLATE "C" PRIMARY KEY,
    display_name     TEXT NOT NULL,
    allow_custom_sso BOOLEAN NOT NULL,
    revision         BIGINT NOT NULL,
    member_count     BIGINT NOT NULL DEFAULT 0,
    create_time      BIGINT NOT NULL,
    update_time      BIGINT NOT NULL
);

CREATE TABLE members (
    org_id      TEXT COLLATE "C" NOT NULL REFERENCES orgs (id),
    member_id   TEXT COLLATE "C" NOT NULL,
    email       TEXT NOT NULL,
    create_time BIGINT NOT NULL,
    PRIMARY KEY (org_id, member_id)
);

CREATE TABLE jobs (
    -- Enqueue order: jobs of one org run in seq order.
    seq               BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    id                UUID NOT NULL UNIQUE,
    org_id            TEXT COLLATE "C" NOT NULL,
    kind              SMALLINT NOT NULL,
    state             SMALLINT NOT NULL,
    total_members     BIGINT NOT NULL DEFAULT 0,
    processed_members BIGINT NOT NULL DEFAULT 0,
    unlinked_members  BIGINT NOT NULL DEFAULT 0,
    failed_members    BIGINT NOT NULL DEFAULT 0,
    attempt           INTEGER NOT NULL DEFAULT 0,
    last_error        TEXT NOT NULL DEFAULT '',
    -- The first few failures, served inline with the job.
    failure_sample    JSONB NOT NULL DEFAULT '[]',
    version           BIGINT NOT NULL DEFAULT 1,
    -- Last member id checkpointed; the job resumes after it.
    cursor            TEXT,
    -- Set when a running job has been asked to stop (CancelJob, superseded).
    cancel_reason     TEXT,
    lease_owner       TEXT,
    lease_epoch       BIGINT NOT NULL DEFAULT 0,
    lease_expires     BIGINT NOT NULL DEFAULT 0,
    create_time       BIGINT NOT NULL,
    update_time       BIGINT NOT NULL,
    start_time        BIGINT,
    end_time          BIGINT
);

CREATE INDEX jobs_active_by_org ON jobs (org_id, seq) WHERE state IN (1, 2);
CREATE INDEX jobs_active ON jobs (seq) WHERE state IN (1, 2);
CREATE INDEX jobs_by_org ON jobs (org_id, seq);
CREATE INDEX jobs_by_state ON jobs (state, seq);

CREATE TABLE job_failures (
    job_id    UUID NOT NULL,
    member_id TEXT COLLATE "C" NOT NULL,
    code      TEXT NOT NULL,
    message   TEXT NOT NULL,
    PRIMARY KEY (job_id, member_id)
);

CREATE TABLE idempotency_keys (
    method      TEXT NOT NULL,
    -- UpdateOrg keys are "{org_id}/{request_id}" (see org_writes.rs).
    request_id  TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    org_id      TEXT NOT NULL,
    job_id      UUID,
    org_json    JSONB NOT NULL,
    create_time BIGINT NOT NULL,
    PRIMARY KEY (method, request_id)
);

-- Every committed change of a job is announced on channel `orgauth_jobs`
-- (delivered at commit, never for a rolled-back change), so that the
-- replicas' workers and WatchJob streams learn of it at once. Payload:
-- "JOB_ID VERSION STATE CLAIMABLE STOP", where CLAIMABLE is 1 when the
-- change may have made a job runnable (a new queued job, a job that ended
-- and so unblocked its org's next one, a lease handed back), and STOP is 1
-- when a running job was just asked to stop (CancelJob, or superseded), so
-- the replica running it stops at once. Receivers treat it as a hint and
-- re-read the row: notifications are lost while a listener is
-- disconnected.
CREATE FUNCTION orgauth_announce_job_change() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    released BOOLEAN := TG_OP = 'UPDATE'
        AND OLD.lease_owner IS NOT NULL AND NEW.lease_owner IS NULL;
    stop BOOLEAN := TG_OP = 'UPDATE'
        AND OLD.cancel_reason IS NULL AND NEW.cancel_reason IS NOT NULL;
BEGIN
    IF TG_OP = 'INSERT' OR NEW.version <> OLD.version OR released OR stop THEN
        PERFORM pg_notify('orgauth_jobs', concat_ws(' ', NEW.id, NEW.version, NEW.state,
            CASE WHEN NEW.state <> 2 OR released THEN 1 ELSE 0 END,
            CASE WHEN stop THEN 1 ELSE 0 END));
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER jobs_announce_change AFTER INSERT OR UPDATE ON jobs
    FOR EACH ROW EXECUTE FUNCTION orgauth_announce_job_change();
