-- Secrets the server generates for itself, shared by every replica that
-- opens this database (so page tokens sealed by one are read by all).
CREATE TABLE server_secrets (
    name  TEXT PRIMARY KEY,
    value BYTEA NOT NULL
);
