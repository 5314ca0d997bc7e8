//! Databases for tests: a fresh PostgreSQL database per call, and SQLite files in a
//! directory the test owns. Used by this crate's tests and by the end-to-end tests.
//! Failures panic with the reason, as test set-up should.

use std::path::Path;

use sqlx::{Connection, Executor, PgConnection};

/// Environment variable naming the PostgreSQL server (any database on it) that test
/// databases are created on.
pub const TEST_POSTGRES_URL_ENV: &str = "LORAFLOW_TEST_POSTGRES_URL";
pub const DEFAULT_TEST_POSTGRES_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// The server URL from `LORAFLOW_TEST_POSTGRES_URL`, or the local default.
pub fn test_postgres_server_url() -> String {
    std::env::var(TEST_POSTGRES_URL_ENV).unwrap_or_else(|_| DEFAULT_TEST_POSTGRES_URL.to_string())
}

/// Creates an empty database `loraflow_test_<random>` and returns its URL.
pub async fn fresh_postgres_url() -> String {
    let server = test_postgres_server_url();
    let name = format!("loraflow_test_{}", uuid::Uuid::new_v4().simple());
    let mut conn = PgConnection::connect(&server)
        .await
        .unwrap_or_else(|e| panic!("cannot connect to the test PostgreSQL server (set {TEST_POSTGRES_URL_ENV}): {e}"));
    conn.execute(format!("CREATE DATABASE {name}").as_str()).await.unwrap_or_else(|e| panic!("cannot create test database {name}: {e}"));
    let _ = conn.close().await;
    crate::storage::config::with_database(&server, &name)
}

/// Drops the database a [`fresh_postgres_url`] URL names, closing its connections.
/// Best effort: errors are ignored.
pub async fn drop_postgres_database(url: &str) {
    let Some(name) = database_name(url) else {
        return;
    };
    if !name.starts_with("loraflow_test_") || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
        return;
    }
    let server = test_postgres_server_url();
    if let Ok(mut conn) = PgConnection::connect(&server).await {
        let _ = conn.execute(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)").as_str()).await;
        let _ = conn.close().await;
    }
}

/// A URL for a new SQLite file (created on connect) inside `dir`.
pub fn temp_sqlite_url(dir: &Path) -> String {
    let file = dir.join(format!("loraflow-{}.db", uuid::Uuid::new_v4().simple()));
    format!("sqlite://{}", file.display())
}

fn database_name(url: &str) -> Option<&str> {
    let base = url.split('?').next()?;
    let authority_start = base.find("://")? + 3;
    let path = &base[authority_start..];
    let slash = path.find('/')?;
    Some(&path[slash + 1..]).filter(|n| !n.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_name_is_replaced_and_query_kept() {
        assert_eq!(crate::storage::config::with_database("postgres://u:p@h:5432/postgres", "x"), "postgres://u:p@h:5432/x");
        assert_eq!(crate::storage::config::with_database("postgres://h/postgres?sslmode=disable", "x"), "postgres://h/x?sslmode=disable");
        assert_eq!(crate::storage::config::with_database("postgres://h", "x"), "postgres://h/x");
        assert_eq!(database_name("postgres://h:1/abc?x=1"), Some("abc"));
        assert_eq!(database_name("postgres://h"), None);
    }
}
