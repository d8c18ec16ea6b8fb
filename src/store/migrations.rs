//! Plain SQL migrations from `migrations/`, embedded in the binary and applied by refinery.

use secrecy::ExposeSecret;
use tokio_postgres::NoTls;

use crate::configuration::DatabaseSettings;

refinery::embed_migrations!("migrations");

/// Any constant works; it only has to be the same on every instance.
const MIGRATION_LOCK: i64 = 0x6c6f_6773_7469_7463;

/// Applies pending migrations. Instances starting together serialize on an advisory lock.
pub async fn run_migrations(settings: &DatabaseSettings) -> anyhow::Result<()> {
    let (mut client, connection) =
        tokio_postgres::connect(settings.url.expose_secret(), NoTls).await?;
    let driver = tokio::spawn(connection);
    client
        .execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK])
        .await?;
    let report = migrations::runner().run_async(&mut client).await;
    client
        .execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK])
        .await?;
    drop(client);
    let _ = driver.await;
    for migration in report?.applied_migrations() {
        tracing::info!(migration = %migration, "applied migration");
    }
    Ok(())
}

/// True when the database has every migration this binary knows.
pub async fn migrations_applied(client: &tokio_postgres::Client) -> bool {
    let latest = migrations::runner()
        .get_migrations()
        .iter()
        .map(|m| i64::from(m.version()))
        .max()
        .unwrap_or(0);
    match client
        .query_one(
            "SELECT coalesce(max(version), 0)::bigint FROM refinery_schema_history",
            &[],
        )
        .await
    {
        Ok(row) => row.get::<_, i64>(0) >= latest,
        Err(_) => false,
    }
}
