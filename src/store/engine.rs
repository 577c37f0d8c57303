//! What differs between the two database engines: how to connect, the column types the
//! schema uses, how a write transaction starts and how the audit chain head is locked.
//! Everything else is shared SQL in `sql.rs`.

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::{AnyPool, ConnectOptions, Executor};

use super::Result;

const MIGRATIONS: &[(i64, &str)] = &[
    (1, include_str!("migrations/0001_init.sql")),
    (2, include_str!("migrations/0002_approvals.sql")),
    (3, include_str!("migrations/0003_providers.sql")),
    (4, include_str!("migrations/0004_external_secrets.sql")),
    (5, include_str!("migrations/0005_secret_ops.sql")),
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    Sqlite,
    Postgres,
}

impl Engine {
    /// The engine a database URL names.
    pub fn of_url(url: &str) -> Option<Engine> {
        if url.starts_with("sqlite:") {
            Some(Engine::Sqlite)
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Some(Engine::Postgres)
        } else {
            None
        }
    }

    pub fn sqlite_url(data_dir: &Path) -> String {
        format!("sqlite://{}?mode=rwc", data_dir.join("airlock.db").display())
    }

    pub fn name(self) -> &'static str {
        match self {
            Engine::Sqlite => "sqlite",
            Engine::Postgres => "postgres",
        }
    }

    /// SQLite takes its single write lock up front so that a transaction that reads before
    /// it writes cannot fail halfway with SQLITE_BUSY; PostgreSQL locks rows instead.
    pub(super) fn begin_sql(self) -> &'static str {
        match self {
            Engine::Sqlite => "BEGIN IMMEDIATE",
            Engine::Postgres => "BEGIN",
        }
    }

    /// `(…), (…)…`: parameters for `rows` rows of `columns` values, for a statement that
    /// has no other parameters. SQLite gets anonymous `?`: binding a `$N` makes it look the
    /// name up in a list, which is quadratic over a few hundred parameters.
    pub(super) fn values_list(self, rows: usize, columns: usize) -> String {
        let rows: Vec<String> = (0..rows).map(|r| format!("({})", self.param_list(r * columns + 1, columns))).collect();
        rows.join(", ")
    }

    /// `?, ?, …` or `$first, $first+1, …`: `n` parameters, numbered from `first` on PostgreSQL.
    pub(super) fn param_list(self, first: usize, n: usize) -> String {
        let params: Vec<String> = (first..first + n)
            .map(|i| match self {
                Engine::Sqlite => "?".to_owned(),
                Engine::Postgres => format!("${i}"),
            })
            .collect();
        params.join(", ")
    }

    /// Appended to the select of a tenant's audit head inside a write transaction.
    pub(super) fn lock_clause(self) -> &'static str {
        match self {
            Engine::Sqlite => "",
            Engine::Postgres => " FOR UPDATE",
        }
    }

    fn schema(self, sql: &str) -> String {
        let (bytes, path_text) = match self {
            Engine::Sqlite => ("BLOB", "TEXT"),
            // Byte-wise ordering so that namespace range scans mean the same on both engines.
            Engine::Postgres => ("BYTEA", "TEXT COLLATE \"C\""),
        };
        sql.replace("{bytes}", bytes).replace("{path_text}", path_text)
    }

    pub(super) async fn connect(self, url: &str) -> Result<AnyPool> {
        sqlx::any::install_default_drivers();
        let options = AnyConnectOptions::from_str(url)?
            .log_statements(log::LevelFilter::Trace)
            .log_slow_statements(log::LevelFilter::Warn, Duration::from_millis(500));
        let pool = match self {
            Engine::Sqlite => {
                AnyPoolOptions::new()
                    .max_connections(8)
                    .after_connect(|conn, _| {
                        Box::pin(async move {
                            conn.execute(
                                "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; \
                                 PRAGMA busy_timeout = 10000; PRAGMA foreign_keys = ON; \
                                 PRAGMA wal_autocheckpoint = 0; PRAGMA journal_size_limit = 134217728;",
                            )
                            .await?;
                            Ok(())
                        })
                    })
                    .connect_with(options)
                    .await?
            }
            Engine::Postgres => AnyPoolOptions::new().max_connections(16).connect_with(options).await?,
        };
        self.migrate(&pool).await?;
        Ok(pool)
    }

    /// Applies the migrations this database has not seen, each in its own transaction.
    /// On PostgreSQL an advisory lock keeps replicas that start together from racing.
    async fn migrate(self, pool: &AnyPool) -> Result<()> {
        let mut conn = pool.acquire().await?;
        if self == Engine::Postgres {
            conn.execute("SELECT pg_advisory_lock(7878)").await?;
        }
        let result = async {
            conn.execute(
                "CREATE TABLE IF NOT EXISTS airlock_migrations (version BIGINT PRIMARY KEY, applied_at BIGINT NOT NULL)",
            )
            .await?;
            for (version, sql) in MIGRATIONS {
                let applied: Option<i64> = sqlx::query_scalar("SELECT version FROM airlock_migrations WHERE version = $1")
                    .bind(*version)
                    .fetch_optional(&mut *conn)
                    .await?;
                if applied.is_some() {
                    continue;
                }
                tracing::info!(version, engine = self.name(), "applying schema migration");
                conn.execute("BEGIN").await?;
                for statement in self.schema(sql).split(';').filter(|s| !s.trim().is_empty()) {
                    conn.execute(statement).await?;
                }
                sqlx::query("INSERT INTO airlock_migrations (version, applied_at) VALUES ($1, $2)")
                    .bind(*version)
                    .bind(crate::domain::time::now_ms())
                    .execute(&mut *conn)
                    .await?;
                conn.execute("COMMIT").await?;
            }
            Ok::<_, sqlx::Error>(())
        }
        .await;
        if result.is_err() {
            let _ = conn.execute("ROLLBACK").await;
        }
        if self == Engine::Postgres {
            conn.execute("SELECT pg_advisory_unlock(7878)").await?;
        }
        Ok(result?)
    }
}

#[cfg(test)]
mod tests {
    use super::Engine;

    #[test]
    fn values_lists_number_postgres_parameters_and_leave_sqlite_ones_anonymous() {
        assert_eq!(Engine::Postgres.values_list(2, 2), "($1, $2), ($3, $4)");
        assert_eq!(Engine::Sqlite.values_list(2, 2), "(?, ?), (?, ?)");
        assert_eq!(Engine::Postgres.values_list(1, 3), "($1, $2, $3)");
    }
}
