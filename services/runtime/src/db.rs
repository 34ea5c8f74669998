//! PostgreSQL: one schema per service, so services never read each other's
//! tables. A service's pool sets `search_path` to its schema; its migrations
//! run there after the shared event bus tables.

pub mod warm;

use std::str::FromStr as _;
use std::time::Duration;

use sqlx::migrate::{Migration, Migrator};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{AssertSqlSafe, ConnectOptions as _, Connection as _, PgPool};

use crate::config::DatabaseConfig;

/// The event bus tables (outbox, inbox); versions below 100.
static EVENT_BUS_MIGRATOR: Migrator = sqlx::migrate!("../../migrations/runtime");

/// Service migrations number from this version up, after the bus tables.
pub const FIRST_SERVICE_MIGRATION: i64 = 100;

fn connect_options(config: &DatabaseConfig, schema: &str) -> Result<PgConnectOptions, sqlx::Error> {
    let statement_timeout = config.statement_timeout_ms.to_string();
    Ok(PgConnectOptions::from_str(config.url.expose())?
        .options([
            ("search_path", schema),
            ("statement_timeout", statement_timeout.as_str()),
        ])
        .log_statements(tracing::log::LevelFilter::Trace)
        .log_slow_statements(tracing::log::LevelFilter::Warn, Duration::from_secs(1)))
}

/// A pool whose connections live in `schema`. Connections open lazily, so
/// the pool exists even while PostgreSQL is down and recovers by itself.
pub fn pool(config: &DatabaseConfig, schema: &str) -> Result<PgPool, sqlx::Error> {
    Ok(pool_options(config).connect_lazy_with(connect_options(config, schema)?))
}

/// The pool settings every pool shares. No ping before every acquire: a
/// connection broken by a database restart fails its first query instead,
/// which callers already treat as UNAVAILABLE (or a transient consumer
/// failure) and retry.
fn pool_options(config: &DatabaseConfig) -> PgPoolOptions {
    PgPoolOptions::new()
        .test_before_acquire(false)
        .max_connections(config.max_connections)
        .acquire_timeout(Duration::from_secs(config.acquire_timeout_secs))
}

/// The role a service works as: it reaches only `schema`.
pub fn service_role(schema: &str) -> String {
    format!("cpm_{schema}")
}

/// A service's pool on `schema`: as [`pool`], each connection working as
/// the service's own role when `database.service_roles` is on, so a query
/// that strays into another service's schema is refused.
pub fn service_pool(config: &DatabaseConfig, schema: &str) -> Result<PgPool, sqlx::Error> {
    if !config.service_roles {
        return pool(config, schema);
    }
    let set_role = format!("SET ROLE \"{}\"", service_role(schema));
    Ok(pool_options(config)
        .after_connect(move |connection, _| {
            let set_role = set_role.clone();
            Box::pin(async move {
                // Dynamic: a role name cannot be a bind parameter.
                sqlx::query(AssertSqlSafe(set_role))
                    .execute(&mut *connection)
                    .await?;
                // Row-level security reads the scope (see [`narrow_to_agency`]);
                // a connection starts seeing every row its role may.
                sqlx::query("SELECT set_config('cpm.scope', 'all', false)")
                    .execute(connection)
                    .await?;
                Ok(())
            })
        })
        .connect_lazy_with(connect_options(config, schema)?))
}

/// Narrows the transaction to `agency_id`'s rows wherever row-level
/// security reads `cpm.scope` (referral-intake's referrals): a referrer's
/// call then cannot see another agency's rows even through a query that
/// forgot its filter. Ends with the transaction.
pub async fn narrow_to_agency(
    connection: &mut sqlx::PgConnection,
    agency_id: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query("SELECT set_config('cpm.scope', $1, true)")
        .bind(agency_id)
        .execute(connection)
        .await?;
    Ok(())
}

/// Makes the service's role, if missing, and grants it what `schema` holds
/// now (run after every migration, so new tables are granted too). Run as
/// the schema's owner. Roles are cluster-wide: services of several
/// databases on one server share them, each granted per database.
pub async fn grant_service_role(owner: &PgPool, schema: &str) -> anyhow::Result<()> {
    let role = service_role(schema);
    // Dynamic: role and schema names cannot be bind parameters; both come
    // from a service's constant schema name, never from input.
    let statements = [
        format!(
            "DO $$ BEGIN CREATE ROLE \"{role}\" NOLOGIN; \
             EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL; END $$"
        ),
        format!(
            "DO $$ BEGIN IF NOT (SELECT rolsuper FROM pg_roles WHERE rolname = current_user) \
             AND NOT pg_has_role(current_user, '{role}', 'MEMBER') \
             THEN GRANT \"{role}\" TO CURRENT_USER; END IF; END $$"
        ),
        format!("GRANT USAGE ON SCHEMA \"{schema}\" TO \"{role}\""),
        format!(
            "GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA \"{schema}\" TO \"{role}\""
        ),
        format!(
            "GRANT USAGE, SELECT, UPDATE ON ALL SEQUENCES IN SCHEMA \"{schema}\" TO \"{role}\""
        ),
    ];
    for statement in statements {
        sqlx::query(AssertSqlSafe(statement))
            .execute(owner)
            .await
            .map_err(|error| {
                anyhow::anyhow!(
                    "granting role {role} its schema {schema}: {error} \
                     (database.service_roles needs a user that may create roles; \
                     or set it to false)"
                )
            })?;
    }
    Ok(())
}

/// The bus tables and then `service`'s migrations, tracked in `schema`.
pub fn migrator(schema: &str, service: &Migrator) -> Migrator {
    let migrations: Vec<Migration> = EVENT_BUS_MIGRATOR
        .iter()
        .chain(service.iter())
        .cloned()
        .collect();
    assert!(
        service.iter().all(|m| m.version >= FIRST_SERVICE_MIGRATION),
        "service migrations must be numbered from {FIRST_SERVICE_MIGRATION}"
    );
    let mut migrator = Migrator::with_migrations(migrations);
    migrator.dangerous_set_table_name(format!("{schema}._sqlx_migrations"));
    migrator.create_schema(schema.to_owned());
    migrator
}

/// Creates the schema if needed and applies every pending migration.
/// Safe to run from several replicas at once: sqlx holds an advisory lock.
pub async fn migrate(pool: &PgPool, schema: &str, service: &Migrator) -> anyhow::Result<()> {
    migrator(schema, service)
        .run(pool)
        .await
        .map_err(|error| anyhow::anyhow!("migrating schema {schema}: {error}"))
}

/// Waits until PostgreSQL answers, retrying with back-off, or gives up when
/// `shutdown` fires.
pub async fn wait_until_ready(pool: &PgPool, shutdown: &crate::Shutdown) -> anyhow::Result<()> {
    let mut delays = crate::retry::reconnect();
    loop {
        match sqlx::query_scalar!("SELECT 1 AS one").fetch_one(pool).await {
            Ok(_) => return Ok(()),
            Err(error) => {
                if let Some(explanation) = refusal(&error) {
                    anyhow::bail!(explanation);
                }
                let delay = delays.next_pause();
                tracing::warn!(%error, retry_in_ms = delay.as_millis() as u64, "database not reachable");
                tokio::select! {
                    () = shutdown.cancelled() => anyhow::bail!("shut down while waiting for the database"),
                    () = tokio::time::sleep(delay) => {}
                }
            }
        }
    }
}

/// A refusal that waiting cannot cure (no such role, a wrong password, no
/// such database), explained in one line that names the key to set.
pub fn refusal(error: &sqlx::Error) -> Option<String> {
    let sqlx::Error::Database(database) = error else {
        return None;
    };
    let what = match database.code().as_deref() {
        Some("28000" | "28P01") => {
            "PostgreSQL refused the role or password in database.url; set CPM__DATABASE__URL \
             (or database.url in cpm.toml) to a role that exists, e.g. postgres://postgres@localhost/cpm"
        }
        Some("3D000") => {
            "the database named in database.url does not exist; run `cpm migrate` to create it, \
             or set CPM__DATABASE__URL"
        }
        _ => return None,
    };
    Some(format!("{what} ({})", database.message()))
}

/// Creates a database when it does not exist, connecting to `postgres` on the
/// same server. Used by `cpm migrate`, the demo and tests.
pub async fn ensure_database(url: &str) -> anyhow::Result<()> {
    let options = PgConnectOptions::from_str(url)?;
    let name = options
        .get_database()
        .ok_or_else(|| anyhow::anyhow!("database.url names no database"))?
        .to_owned();
    anyhow::ensure!(
        name.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-'),
        "database name `{name}` must be letters, digits, '_' or '-'"
    );
    let mut admin = sqlx::PgConnection::connect_with(&options.database("postgres")).await?;
    let exists = sqlx::query_scalar!(
        "SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1) AS \"exists!\"",
        &name
    )
    .fetch_one(&mut admin)
    .await?;
    if !exists {
        // A concurrent creator wins the race harmlessly.
        // Dynamic: the database name is known only at run time (checked above).
        if let Err(error) = sqlx::query(AssertSqlSafe(format!("CREATE DATABASE \"{name}\"")))
            .execute(&mut admin)
            .await
        {
            let duplicate = error
                .as_database_error()
                .and_then(|e| e.code())
                .is_some_and(|code| code == "42P04" || code == "23505");
            if !duplicate {
                return Err(error.into());
            }
        }
    }
    Ok(())
}

/// Drops a database (tests clean up after themselves).
pub async fn drop_database(url: &str) -> anyhow::Result<()> {
    let options = PgConnectOptions::from_str(url)?;
    let name = options
        .get_database()
        .ok_or_else(|| anyhow::anyhow!("no database in url"))?
        .to_owned();
    let mut admin = sqlx::PgConnection::connect_with(&options.database("postgres")).await?;
    // Dynamic: the database name is known only at run time.
    sqlx::query(AssertSqlSafe(format!(
        "DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"
    )))
    .execute(&mut admin)
    .await?;
    Ok(())
}

/// Holds, until the transaction on `connection` ends, an advisory lock on
/// `key`: callers that must not interleave (two registrations against one
/// cap, an erasure and an assessment of one client) name the same key and
/// take turns, across every replica. Keys start with the owning schema's
/// name, so services never share one by accident; a key's text must not
/// change while replicas of two versions may run side by side.
pub async fn lock_key(connection: &mut sqlx::PgConnection, key: &str) -> Result<(), sqlx::Error> {
    // In FROM: the function returns void, which a query's columns cannot carry.
    sqlx::query("SELECT true FROM pg_advisory_xact_lock(hashtextextended($1, 0))")
        .bind(key)
        .execute(connection)
        .await?;
    Ok(())
}

/// True when a database error is a unique violation of `constraint`.
pub fn is_unique_violation(error: &sqlx::Error, constraint: &str) -> bool {
    error
        .as_database_error()
        .is_some_and(|e| e.code().as_deref() == Some("23505") && e.constraint() == Some(constraint))
}

/// True when an error means the database could not be reached, so the
/// caller should hear UNAVAILABLE rather than INTERNAL.
pub fn is_unavailable(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Io(_) => true,
        sqlx::Error::Database(e) => e
            .code()
            .is_some_and(|code| code.starts_with("08") || code.starts_with("57P")),
        _ => false,
    }
}

/// True when PostgreSQL gave a transaction up for another one: a deadlock
/// (40P01), a serialization failure (40001) or a lock not available
/// (55P03). Nothing of it took effect, and the same work in a fresh
/// transaction succeeds once the other has finished.
pub fn is_conflict(error: &sqlx::Error) -> bool {
    error
        .as_database_error()
        .and_then(|e| e.code())
        .is_some_and(|code| matches!(code.as_ref(), "40P01" | "40001" | "55P03"))
}
