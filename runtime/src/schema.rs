//! Migrating a database at start, and refusing one that a newer binary has
//! migrated, the same way in both servers and on both backends.
//!
//! [`migrate_sqlite`] and [`migrate_postgres`] read the versions recorded in
//! `_sqlx_migrations` first: a version above every one this binary embeds
//! means a newer release owns the schema, and running against it could
//! corrupt data, so start is refused with [`MigrationError::SchemaTooNew`]
//! ("upgrade the binary") instead of sqlx's less helpful "previously
//! applied but missing". Pending migrations are then applied.

use std::future::Future;
use std::pin::Pin;

use sqlx::migrate::{MigrateError, Migrator};
use sqlx::{PgConnection, SqliteConnection};

/// Why a database could not be brought up to this binary's schema.
#[derive(Debug, thiserror::Error)]
pub enum MigrationError {
    #[error(
        "database schema version {version} is newer than this binary (knows up to {known}); \
         upgrade the binary"
    )]
    SchemaTooNew { version: i64, known: i64 },
    #[error("cannot migrate the database schema: {0}")]
    Migrate(#[from] MigrateError),
    #[error("cannot read the database's schema version: {0}")]
    Read(#[from] sqlx::Error),
}

/// Refuses a newer schema, then applies `migrator`'s pending migrations.
pub async fn migrate_sqlite(
    migrator: &'static Migrator,
    conn: &mut SqliteConnection,
) -> Result<(), MigrationError> {
    let exists: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM sqlite_master \
         WHERE type = 'table' AND name = '_sqlx_migrations')",
    )
    .fetch_one(&mut *conn)
    .await?;
    check(&applied(exists, &mut *conn).await?, migrator)?;
    run(migrator, conn)
        .await
        .map_err(|err| newer(err, migrator))
}

/// Refuses a newer schema, then applies `migrator`'s pending migrations.
/// sqlx creates `_sqlx_migrations` unqualified, so it is looked up through
/// the search path as sqlx will.
pub async fn migrate_postgres(
    migrator: &'static Migrator,
    conn: &mut PgConnection,
) -> Result<(), MigrationError> {
    let exists: bool = sqlx::query_scalar("SELECT to_regclass('_sqlx_migrations') IS NOT NULL")
        .fetch_one(&mut *conn)
        .await?;
    let applied: Vec<i64> = if exists {
        sqlx::query_scalar("SELECT version FROM _sqlx_migrations")
            .fetch_all(&mut *conn)
            .await?
    } else {
        Vec::new()
    };
    check(&applied, migrator)?;
    run(migrator, conn)
        .await
        .map_err(|err| newer(err, migrator))
}

async fn applied(exists: bool, conn: &mut SqliteConnection) -> Result<Vec<i64>, sqlx::Error> {
    if !exists {
        return Ok(Vec::new());
    }
    sqlx::query_scalar("SELECT version FROM _sqlx_migrations")
        .fetch_all(conn)
        .await
}

/// Refuses `applied` versions above every version `migrator` knows.
pub fn check(applied: &[i64], migrator: &Migrator) -> Result<(), MigrationError> {
    let known = newest_known(migrator);
    match applied.iter().copied().max() {
        Some(version) if version > known => Err(MigrationError::SchemaTooNew { version, known }),
        _ => Ok(()),
    }
}

/// sqlx's refusal of an unknown applied migration, as
/// [`MigrationError::SchemaTooNew`] when it is a newer one: a replica of a
/// newer release may have migrated between [`check`] and the migrator
/// taking its lock.
fn newer(err: MigrateError, migrator: &Migrator) -> MigrationError {
    let known = newest_known(migrator);
    match err {
        MigrateError::VersionMissing(version) if version > known => {
            MigrationError::SchemaTooNew { version, known }
        }
        other => MigrationError::Migrate(other),
    }
}

/// Applies `migrator`'s pending migrations on `conn`.
///
/// The future is boxed at one concrete lifetime: awaiting `Migrator::run`
/// directly inside a server's start makes rustc fail to prove the server's
/// future `Send` ("implementation of `Acquire` is not general enough")
/// where it is spawned.
fn run<'c, C>(
    migrator: &'static Migrator,
    conn: &'c mut C,
) -> Pin<Box<dyn Future<Output = Result<(), MigrateError>> + Send + 'c>>
where
    C: Send,
    &'c mut C: sqlx::Acquire<'c>,
    <<&'c mut C as sqlx::Acquire<'c>>::Connection as std::ops::Deref>::Target:
        sqlx::migrate::Migrate,
{
    Box::pin(migrator.run(conn))
}

/// The highest migration version `migrator` embeds.
fn newest_known(migrator: &Migrator) -> i64 {
    migrator
        .iter()
        .map(|migration| migration.version)
        .max()
        .unwrap_or(0)
}
