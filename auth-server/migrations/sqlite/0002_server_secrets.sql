-- Secrets auth-server generates for itself, shared by every process that
-- opens this database, so what one process sealed another can open (page
-- tokens survive a restart and work across replicas). Filled at first start.
CREATE TABLE server_secrets (
    name  TEXT NOT NULL PRIMARY KEY,
    value BLOB NOT NULL
) STRICT;
