-- Auth's state: each org's SSO policy, and which members are linked to their
-- org's custom identity provider. Times are unix microseconds. The same
-- schema as migrations/sqlite/0001_init.sql, in PostgreSQL's types.
--
-- Ids are compared and sorted as bytes (COLLATE "C"), as SQLite does: pages
-- of ListSsoConnections walk the same order on both backends, and the
-- B-tree compares with memcmp instead of a locale's rules.

-- One row per org Auth has heard of. An org without a row does not allow
-- custom SSO (the safe default). LinkSso locks its org's row FOR SHARE and
-- SetOrgSsoPolicy's upsert locks it exclusively: see src/store/postgres.rs.
CREATE TABLE sso_policies (
    org_id           TEXT COLLATE "C" NOT NULL PRIMARY KEY,
    allow_custom_sso BOOLEAN NOT NULL,
    update_time      BIGINT  NOT NULL
);

-- One row per linked member. The primary key's B-tree keeps an org's
-- connections in one range: keyset pages, counts and batch deletes
-- (member_id = ANY($2)) all walk or probe that range.
CREATE TABLE sso_connections (
    org_id      TEXT COLLATE "C" NOT NULL,
    member_id   TEXT COLLATE "C" NOT NULL,
    create_time BIGINT NOT NULL,
    PRIMARY KEY (org_id, member_id)
);
