//! The gateway's state on disk (SQLite): every cluster, its owner, spec, state, where
//! its scheduler is, its token and what the backend started for it. A restarted gateway
//! reads its clusters back from here.

use std::path::Path;

use parking_lot::Mutex;
use rusqlite::{Connection, OptionalExtension, params};

/// Lifecycle of a cluster.
pub const STARTING: &str = "starting";
/// Its scheduler answers.
pub const RUNNING: &str = "running";
/// Stopped by its owner or for idleness.
pub const STOPPED: &str = "stopped";
/// Failed to start, or its scheduler went away without being stopped.
pub const FAILED: &str = "failed";

/// One cluster as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct ClusterRow {
    /// Unique name, e.g. `alice-3`.
    pub name: String,
    /// The user it belongs to.
    pub owner: String,
    /// Its spec as JSON (`SpecText`), with the groups' current sizes.
    pub spec: String,
    /// One of [`STARTING`], [`RUNNING`], [`STOPPED`], [`FAILED`].
    pub state: String,
    /// Why it is in that state (empty when running).
    pub reason: String,
    /// The scheduler's URL, once started.
    pub scheduler: String,
    /// Its dashboard's URL, once started.
    pub dashboard: String,
    /// The cluster token its scheduler, workers and clients use.
    pub token: String,
    /// What the backend started (process ids, Slurm job ids, pod names), as JSON.
    pub backend_ids: String,
    /// Unix seconds.
    pub created: f64,
    /// The PEM certificate of the cluster's own authority, when its scheduler serves TLS
    /// (empty when not).
    pub tls_ca: String,
}

/// The database, one connection behind a lock (the gateway's writes are few).
pub struct Db(Mutex<Connection>);

fn fail(e: rusqlite::Error, path: &str) -> String {
    format!("the gateway's state database {path}: {e}")
}

impl Db {
    /// Opens (creating if needed) the database at `path`.
    pub fn open(path: &Path) -> Result<Self, String> {
        let shown = path.display().to_string();
        let conn = Connection::open(path).map_err(|e| fail(e, &shown))?;
        // It holds every cluster's token: for the gateway's user only.
        {
            use std::os::unix::fs::PermissionsExt;
            let private = std::fs::Permissions::from_mode(0o600);
            std::fs::set_permissions(path, private)
                .map_err(|e| format!("the gateway's state database {shown}: {e}"))?;
        }
        conn.execute_batch(
            "PRAGMA journal_mode = WAL;
             CREATE TABLE IF NOT EXISTS clusters (
                 name TEXT PRIMARY KEY,
                 owner TEXT NOT NULL,
                 spec TEXT NOT NULL,
                 state TEXT NOT NULL,
                 reason TEXT NOT NULL DEFAULT '',
                 scheduler TEXT NOT NULL DEFAULT '',
                 dashboard TEXT NOT NULL DEFAULT '',
                 token TEXT NOT NULL,
                 backend_ids TEXT NOT NULL DEFAULT '{}',
                 created REAL NOT NULL
             );
             CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);",
        )
        .map_err(|e| fail(e, &shown))?;
        // Databases of gateways before cluster TLS lack the column.
        let has_tls_ca: bool = conn
            .query_row(
                "SELECT COUNT(*) > 0 FROM pragma_table_info('clusters') WHERE name = 'tls_ca'",
                [],
                |row| row.get(0),
            )
            .map_err(|e| fail(e, &shown))?;
        if !has_tls_ca {
            conn.execute_batch("ALTER TABLE clusters ADD COLUMN tls_ca TEXT NOT NULL DEFAULT ''")
                .map_err(|e| fail(e, &shown))?;
        }
        Ok(Self(Mutex::new(conn)))
    }

    /// The next number for a cluster name (never reused, across restarts too).
    pub fn next_number(&self) -> Result<u64, String> {
        let conn = self.0.lock();
        conn.query_row(
            "INSERT INTO counters (name, value) VALUES ('cluster', 1)
             ON CONFLICT(name) DO UPDATE SET value = value + 1 RETURNING value",
            [],
            |row| row.get::<_, i64>(0),
        )
        .map(|v| v as u64)
        .map_err(|e| fail(e, "counters"))
    }

    /// Stores a new cluster, or every field of an existing one.
    pub fn put(&self, row: &ClusterRow) -> Result<(), String> {
        self.0
            .lock()
            .execute(
                "INSERT OR REPLACE INTO clusters
                 (name, owner, spec, state, reason, scheduler, dashboard, token, backend_ids,
                  created, tls_ca)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
                params![
                    row.name,
                    row.owner,
                    row.spec,
                    row.state,
                    row.reason,
                    row.scheduler,
                    row.dashboard,
                    row.token,
                    row.backend_ids,
                    row.created,
                    row.tls_ca
                ],
            )
            .map(|_| ())
            .map_err(|e| fail(e, "clusters"))
    }

    /// One cluster by name.
    pub fn get(&self, name: &str) -> Result<Option<ClusterRow>, String> {
        let conn = self.0.lock();
        conn.query_row(&format!("{SELECT} WHERE name = ?1"), params![name], row_of)
            .optional()
            .map_err(|e| fail(e, "clusters"))
    }

    /// Every cluster (of `owner`, when given), oldest first.
    pub fn list(&self, owner: Option<&str>) -> Result<Vec<ClusterRow>, String> {
        let conn = self.0.lock();
        let mut statement = conn
            .prepare(&format!(
                "{SELECT} WHERE ?1 IS NULL OR owner = ?1 ORDER BY created, name"
            ))
            .map_err(|e| fail(e, "clusters"))?;
        let rows = statement
            .query_map(params![owner], row_of)
            .map_err(|e| fail(e, "clusters"))?;
        rows.collect::<Result<_, _>>()
            .map_err(|e| fail(e, "clusters"))
    }
}

const SELECT: &str = "SELECT name, owner, spec, state, reason, scheduler, dashboard, token, \
                      backend_ids, created, tls_ca FROM clusters";

fn row_of(row: &rusqlite::Row<'_>) -> rusqlite::Result<ClusterRow> {
    Ok(ClusterRow {
        name: row.get(0)?,
        owner: row.get(1)?,
        spec: row.get(2)?,
        state: row.get(3)?,
        reason: row.get(4)?,
        scheduler: row.get(5)?,
        dashboard: row.get(6)?,
        token: row.get(7)?,
        backend_ids: row.get(8)?,
        created: row.get(9)?,
        tls_ca: row.get(10)?,
    })
}
