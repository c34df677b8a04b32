-- Auth's state: each org's SSO policy, and which members are linked to their
-- org's custom identity provider. Times are unix microseconds.

-- One row per org Auth has heard of. An org without a row does not allow
-- custom SSO (the safe default).
CREATE TABLE sso_policies (
    org_id           TEXT    NOT NULL PRIMARY KEY,
    allow_custom_sso INTEGER NOT NULL CHECK (allow_custom_sso IN (0, 1)),
    update_time      INTEGER NOT NULL
);

-- One row per linked member. WITHOUT ROWID clusters rows by (org_id,
-- member_id), so an org's connections are contiguous on disk: keyset pages,
-- counts and batch deletes all walk one range of the primary key.
CREATE TABLE sso_connections (
    org_id      TEXT    NOT NULL,
    member_id   TEXT    NOT NULL,
    create_time INTEGER NOT NULL,
    PRIMARY KEY (org_id, member_id)
) WITHOUT ROWID;
