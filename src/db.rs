//! Database bootstrap: create the database if missing, connect, migrate.

use anyhow::Context;
use roster_command::writer::PING_WHEN_IDLE;
use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions, Connection, PgConnection, PgPool};
use std::str::FromStr;
use std::time::Duration;

pub static MIGRATOR: Migrator = sqlx::migrate!("./migrations");

/// Creates the database named in `url` unless it exists.
pub async fn ensure_database(url: &str) -> anyhow::Result<()> {
    let opts = PgConnectOptions::from_str(url).context("invalid DATABASE_URL")?;
    let name = opts.get_database().unwrap_or("postgres").to_string();
    let mut conn: PgConnection = opts
        .clone()
        .database("postgres")
        .connect()
        .await
        .context("cannot connect to Postgres")?;
    let exists: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
        .bind(&name)
        .fetch_one(&mut conn)
        .await?;
    if !exists {
        let sql = format!("CREATE DATABASE \"{}\"", name.replace('"', "\"\""));
        match sqlx::query(&sql).execute(&mut conn).await {
            Ok(_) => tracing::info!(database = %name, "database created"),
            // Another process created it first.
            Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("42P04") => {}
            Err(e) => return Err(e).context("cannot create the database"),
        }
    }
    conn.close().await.ok();
    Ok(())
}

pub async fn connect(url: &str, max_connections: u32) -> anyhow::Result<PgPool> {
    let opts = PgConnectOptions::from_str(url).context("invalid DATABASE_URL")?;
    PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(Duration::from_secs(3))
        // A ping before every acquire is a round trip per statement. Only a
        // connection that sat idle (through a Postgres restart, say) is
        // pinged; one used within the last second that died anyway fails
        // its statement as unavailable (503) and is replaced.
        .test_before_acquire(false)
        .before_acquire(|conn, meta| {
            Box::pin(async move {
                if meta.idle_for < PING_WHEN_IDLE {
                    return Ok(true);
                }
                Ok(conn.ping().await.is_ok())
            })
        })
        .connect_with(opts)
        .await
        .context("cannot connect to the database")
}

/// Creates the database if missing and applies pending migrations.
pub async fn prepare(url: &str, max_connections: u32) -> anyhow::Result<PgPool> {
    ensure_database(url).await?;
    let pool = connect(url, max_connections).await?;
    MIGRATOR.run(&pool).await.context("cannot apply migrations")?;
    Ok(pool)
}
