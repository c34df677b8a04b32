-- Secrets auth-server generates for itself, shared by every replica that
-- opens this database, so what one replica sealed another can open (page
-- tokens survive a restart and work across replicas). Filled at first start.
CREATE TABLE server_secrets (
    name  TEXT  NOT NULL PRIMARY KEY,
    value BYTEA NOT NULL
);
