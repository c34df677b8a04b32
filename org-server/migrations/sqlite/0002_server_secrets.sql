-- Secrets the server generates for itself, shared by every process that
-- opens this database (so page tokens sealed by one survive a restart).
CREATE TABLE server_secrets (
    name  TEXT PRIMARY KEY,
    value BLOB NOT NULL
) STRICT;
