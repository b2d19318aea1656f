//! The host's own tables in `<data>/callhost.db`: installed modules and
//! instances. The directory's tables belong to `callhost-pbx`; both share
//! the file and the migration table.
//!
//! Instance configurations are sealed (`callhost-seal`), each bound to its
//! instance (`instances.config:<name>`).

use std::{path::Path, sync::Arc};

use anyhow::{Context as _, Result};
use callhost_pbx::store::{migrate_steps, schema_version, Step, Store, StoreError};
use callhost_seal::{Form, Place, Sealer};
use rusqlite::{params, Connection, OptionalExtension};

/// The host schema version that added `modules.library_sha256`.
const CHECKSUMS_VERSION: i64 = 3;

const MIGRATIONS: &[Step<'static>] = &[
    // 1: modules and instances
    Step::Sql(
        "CREATE TABLE modules (
        id TEXT PRIMARY KEY,
        name TEXT NOT NULL,
        version TEXT NOT NULL,
        abi_version INTEGER NOT NULL,
        description TEXT NOT NULL,
        library_path TEXT NOT NULL,
        signed_by TEXT,
        installed_at TEXT NOT NULL
    );
    CREATE TABLE instances (
        name TEXT PRIMARY KEY,
        module_id TEXT NOT NULL,
        description TEXT NOT NULL DEFAULT '',
        config TEXT NOT NULL DEFAULT '',
        position INTEGER NOT NULL,
        active INTEGER NOT NULL DEFAULT 0,
        log_level TEXT NOT NULL DEFAULT 'INFO',
        fault TEXT,
        updated_at TEXT NOT NULL
    );
    -- Bumped on every change a running host must pick up.
    CREATE TABLE generation (id INTEGER PRIMARY KEY CHECK (id = 1), value INTEGER NOT NULL);
    INSERT INTO generation (id, value) VALUES (1, 0);",
    ),
    // 2: HTTP API tokens; only a token's SHA-256 is kept, never the token
    Step::Sql(
        "CREATE TABLE api_tokens (
        name TEXT PRIMARY KEY,
        sha256 TEXT NOT NULL UNIQUE,
        created_at TEXT NOT NULL
    );",
    ),
    // 3: the library's SHA-256 from the package's SHA256SUMS, checked
    // before every load. Rows installed before get it once, when the
    // version directory still matches its name (`library::record_legacy_checksums`).
    Step::Sql("ALTER TABLE modules ADD COLUMN library_sha256 TEXT;"),
    // 4: configurations sealed for their instance: plain (from before
    // sealing) and `sealed:v1` (no row binding) values sealed again.
    Step::Code(reseal_configs),
    // 5: administrators of the web UI (argon2 PHC strings, never the
    // password) and the audit log of every change made over HTTP
    Step::Sql(
        "CREATE TABLE admins (
        name TEXT PRIMARY KEY,
        password_hash TEXT NOT NULL,
        created_at TEXT NOT NULL
    );
    CREATE TABLE audit_log (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        at TEXT NOT NULL,
        actor TEXT NOT NULL,
        source TEXT NOT NULL,
        action TEXT NOT NULL,
        target TEXT NOT NULL,
        outcome TEXT NOT NULL
    );",
    ),
];

/// Where an instance's sealed configuration lives.
fn config_place(name: &str) -> Place<'_> {
    Place::new("instances.config", name)
}

/// Migration 4. Fails (and changes nothing) if a `sealed:v1` value does
/// not open with this key: the error names the instance and the key file.
fn reseal_configs(conn: &Connection, sealer: &Sealer) -> Result<(), StoreError> {
    let rows: Vec<(String, String)> = conn
        .prepare("SELECT name, config FROM instances")
        .and_then(|mut statement| {
            statement
                .query_map([], |row| Ok((row.get(0)?, row.get(1)?)))?
                .collect()
        })
        .map_err(|source| StoreError::Sql {
            context: "reading instance configurations",
            source,
        })?;
    for (name, stored) in rows {
        if Form::of(&stored) == Form::V2 {
            continue;
        }
        let config = sealer.unseal_legacy(config_place(&name), &stored)?;
        conn.execute(
            "UPDATE instances SET config = ?2 WHERE name = ?1",
            params![name, sealer.seal(config_place(&name), &config)],
        )
        .map_err(|source| StoreError::Sql {
            context: "sealing instance configurations",
            source,
        })?;
    }
    Ok(())
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct ModuleRow {
    pub id: String,
    pub name: String,
    pub version: String,
    pub abi_version: u32,
    pub description: String,
    pub library_path: String,
    pub signed_by: Option<String>,
    pub installed_at: String,
    /// The library's SHA-256 (hex) as the package's `SHA256SUMS` listed
    /// it; `None` for a module installed before checksums were recorded
    /// whose files could not be verified then (refused until reinstalled).
    pub library_sha256: Option<String>,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct InstanceRow {
    pub name: String,
    pub module_id: String,
    pub description: String,
    #[serde(skip)]
    pub config: String,
    pub position: u32,
    pub active: bool,
    pub log_level: String,
    pub fault: Option<String>,
    pub updated_at: String,
    /// Why the stored configuration does not open (sealed for another
    /// instance, another key): then `config` is empty, `fault` says so and
    /// the instance is never started; `instance configure` replaces it.
    #[serde(skip)]
    pub config_error: Option<String>,
}

impl InstanceRow {
    pub fn status(&self) -> &'static str {
        match (self.active, &self.fault) {
            (true, Some(_)) => "faulted",
            (true, None) => "active",
            (false, _) => "inactive",
        }
    }
}

/// The host database: the directory store plus the host's tables.
/// Instance configurations are sealed at rest (`callhost-seal`).
pub struct Db {
    pub store: Store,
    sealer: Arc<Sealer>,
}

/// A name that is not there (an instance, a token, an administrator).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct NotFound(pub String);

/// A name that is taken, or a thing still in use.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Conflict(pub String);

/// A value the administrator gave that is not allowed (a name, a level,
/// a position); the message names it.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Invalid(pub String);

pub fn now() -> String {
    humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string()
}

impl Db {
    /// The sealer of this data directory, for another connection to the
    /// same database (the call-list writer's).
    pub fn sealer(&self) -> Arc<Sealer> {
        self.sealer.clone()
    }

    pub fn open(data: &Path) -> Result<Db> {
        std::fs::create_dir_all(data)
            .with_context(|| format!("cannot create data directory {}", data.display()))?;
        let data_dir = crate::paths::DataDir::new(data);
        let path = data_dir.database();
        let sealer = Arc::new(Sealer::open(data)?);
        let store = Store::open(&path, sealer.clone()).map_err(|error| match error {
            // These name the file already.
            StoreError::Open { .. } | StoreError::CreateDir { .. } => anyhow::Error::new(error),
            other => anyhow::Error::new(other)
                .context(format!("cannot open database {}", path.display())),
        })?;
        let before = schema_version(store.conn(), "host")?;
        migrate_steps(store.conn(), "host", MIGRATIONS, &sealer)
            .context("host database migration")?;
        let db = Db { store, sealer };
        if before > 0 && before < CHECKSUMS_VERSION {
            crate::library::record_legacy_checksums(&data_dir, &db)?;
        }
        Ok(db)
    }

    /// A row as read, with its configuration unsealed. One that does not
    /// open is returned marked (`config_error`, `fault`), so the others
    /// still work and this one can be listed, reconfigured or deleted.
    fn unsealed(&self, mut row: InstanceRow) -> InstanceRow {
        match self.sealer.unseal(config_place(&row.name), &row.config) {
            Ok(config) => row.config = config,
            Err(error) => {
                let error = error.to_string();
                row.config = String::new();
                row.fault = Some(error.clone());
                row.config_error = Some(error);
            }
        }
        row
    }

    /// Records the checksum of a module installed before checksums were
    /// (see `library::record_legacy_checksums`).
    pub fn set_library_sha256(&self, id: &str, sha256: &str) -> Result<()> {
        self.conn().execute(
            "UPDATE modules SET library_sha256 = ?2 WHERE id = ?1 AND library_sha256 IS NULL",
            params![id, sha256],
        )?;
        Ok(())
    }

    fn conn(&self) -> &rusqlite::Connection {
        self.store.conn()
    }

    pub fn generation(&self) -> Result<i64> {
        Ok(self
            .conn()
            .query_row("SELECT value FROM generation WHERE id = 1", [], |row| {
                row.get(0)
            })?)
    }

    fn bump(&self) -> Result<()> {
        self.conn()
            .execute("UPDATE generation SET value = value + 1 WHERE id = 1", [])?;
        Ok(())
    }

    pub fn modules(&self) -> Result<Vec<ModuleRow>> {
        let mut statement = self.conn().prepare(
            "SELECT id, name, version, abi_version, description, library_path, signed_by, installed_at,
                    library_sha256
             FROM modules ORDER BY id",
        )?;
        let rows = statement.query_map([], module_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    pub fn module(&self, id: &str) -> Result<Option<ModuleRow>> {
        Ok(self
            .conn()
            .query_row(
                "SELECT id, name, version, abi_version, description, library_path, signed_by, installed_at,
                        library_sha256
                 FROM modules WHERE id = ?1",
                params![id],
                module_row,
            )
            .optional()?)
    }

    pub fn upsert_module(&self, row: &ModuleRow) -> Result<()> {
        self.conn().execute(
            "INSERT INTO modules (id, name, version, abi_version, description, library_path, signed_by,
                installed_at, library_sha256)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)
             ON CONFLICT (id) DO UPDATE SET name = ?2, version = ?3, abi_version = ?4,
                description = ?5, library_path = ?6, signed_by = ?7, installed_at = ?8,
                library_sha256 = ?9",
            params![
                row.id,
                row.name,
                row.version,
                row.abi_version,
                row.description,
                row.library_path,
                row.signed_by,
                row.installed_at,
                row.library_sha256
            ],
        )?;
        self.bump()
    }

    pub fn remove_module(&self, id: &str) -> Result<bool> {
        let removed = self
            .conn()
            .execute("DELETE FROM modules WHERE id = ?1", params![id])?;
        self.bump()?;
        Ok(removed > 0)
    }

    pub fn instances(&self) -> Result<Vec<InstanceRow>> {
        let mut statement = self.conn().prepare(
            "SELECT name, module_id, description, config, position, active, log_level, fault, updated_at
             FROM instances ORDER BY position, name",
        )?;
        let rows = statement.query_map([], instance_row)?;
        rows.map(|row| Ok(self.unsealed(row?))).collect()
    }

    pub fn instance(&self, name: &str) -> Result<InstanceRow> {
        self.find_instance(name)?.ok_or_else(|| {
            NotFound(format!(
                "no instance named `{name}` (see `callhost instance list`)"
            ))
            .into()
        })
    }

    /// The instance named `name`, `None` when there is none.
    pub fn find_instance(&self, name: &str) -> Result<Option<InstanceRow>> {
        self.conn()
            .query_row(
                "SELECT name, module_id, description, config, position, active, log_level, fault, updated_at
                 FROM instances WHERE name = ?1",
                params![name],
                instance_row,
            )
            .optional()?
            .map(|row| Ok(self.unsealed(row)))
            .transpose()
    }

    pub fn insert_instance(&self, row: &InstanceRow) -> Result<()> {
        let next: u32 = self.conn().query_row(
            "SELECT COALESCE(MAX(position), 0) + 1 FROM instances",
            [],
            |r| r.get(0),
        )?;
        let inserted = self.conn().execute(
            "INSERT INTO instances (name, module_id, description, config, position, active, log_level, fault, updated_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, NULL, ?8)
             ON CONFLICT (name) DO NOTHING",
            params![
                row.name,
                row.module_id,
                row.description,
                self.sealer.seal(config_place(&row.name), &row.config),
                next,
                row.active,
                row.log_level,
                now()
            ],
        )?;
        if inserted == 0 {
            return Err(
                Conflict(format!("an instance named `{}` exists already", row.name)).into(),
            );
        }
        self.bump()
    }

    pub fn set_config(&self, name: &str, config: &str) -> Result<()> {
        self.update(
            name,
            "UPDATE instances SET config = ?2, fault = NULL, updated_at = ?3 WHERE name = ?1",
            &self.sealer.seal(config_place(name), config),
        )
    }

    pub fn set_description(&self, name: &str, description: &str) -> Result<()> {
        self.update(
            name,
            "UPDATE instances SET description = ?2, updated_at = ?3 WHERE name = ?1",
            description,
        )
    }

    pub fn set_level(&self, name: &str, level: &str) -> Result<()> {
        self.update(
            name,
            "UPDATE instances SET log_level = ?2, updated_at = ?3 WHERE name = ?1",
            level,
        )
    }

    /// Activating clears a fault: the administrator asks for another try.
    pub fn set_active(&self, name: &str, active: bool) -> Result<()> {
        let changed = self.conn().execute(
            "UPDATE instances SET active = ?2, fault = NULL, updated_at = ?3 WHERE name = ?1",
            params![name, active, now()],
        )?;
        self.changed(name, changed)
    }

    /// Records a fault found on a live instance, only if the row still holds
    /// the configuration and library it was found on (an administrator may
    /// have fixed it meanwhile).
    pub fn set_fault_if_current(
        &self,
        name: &str,
        config: &str,
        library_path: &str,
        fault: &str,
    ) -> Result<()> {
        // Sealed values differ each time: compare the text, then update only
        // the very value that was compared.
        let stored: Option<String> = self
            .conn()
            .query_row(
                "SELECT config FROM instances WHERE name = ?1",
                params![name],
                |row| row.get(0),
            )
            .optional()?;
        let Some(stored) = stored else {
            return Ok(());
        };
        if self.sealer.unseal(config_place(name), &stored)? != config {
            return Ok(());
        }
        let changed = self.conn().execute(
            "UPDATE instances SET fault = ?4, updated_at = ?5
             WHERE name = ?1 AND config = ?2
               AND module_id IN (SELECT id FROM modules WHERE library_path = ?3)",
            params![name, stored, library_path, fault, now()],
        )?;
        if changed > 0 {
            self.bump()?;
        }
        Ok(())
    }

    pub fn set_fault(&self, name: &str, fault: &str) -> Result<()> {
        self.update(
            name,
            "UPDATE instances SET fault = ?2, updated_at = ?3 WHERE name = ?1",
            fault,
        )
    }

    pub fn delete_instance(&self, name: &str) -> Result<()> {
        let changed = self
            .conn()
            .execute("DELETE FROM instances WHERE name = ?1", params![name])?;
        self.changed(name, changed)
    }

    /// Moves `name` to 1-based `position`; the others keep their order.
    pub fn reorder(&self, name: &str, position: usize) -> Result<()> {
        let mut names: Vec<String> = self.instances()?.into_iter().map(|row| row.name).collect();
        let from = names
            .iter()
            .position(|n| n == name)
            .ok_or_else(|| NotFound(format!("no instance named `{name}`")))?;
        if position == 0 || position > names.len() {
            return Err(Invalid(format!(
                "position {position} is out of range 1..={}",
                names.len()
            ))
            .into());
        }
        let moved = names.remove(from);
        names.insert(position - 1, moved);
        let transaction = self.conn().unchecked_transaction()?;
        for (index, n) in names.iter().enumerate() {
            transaction.execute(
                "UPDATE instances SET position = ?2 WHERE name = ?1",
                params![n, index as u32 + 1],
            )?;
        }
        transaction.commit()?;
        self.bump()
    }

    fn update(&self, name: &str, sql: &str, value: &str) -> Result<()> {
        let changed = self.conn().execute(sql, params![name, value, now()])?;
        self.changed(name, changed)
    }

    fn changed(&self, name: &str, changed: usize) -> Result<()> {
        if changed == 0 {
            return Err(NotFound(format!(
                "no instance named `{name}` (see `callhost instance list`)"
            ))
            .into());
        }
        self.bump()
    }
}

/// An HTTP API token as listed: the hash stays in the database.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ApiTokenRow {
    pub name: String,
    pub created_at: String,
}

impl Db {
    /// Stores a new API token by the hex SHA-256 of its text.
    pub fn add_api_token(&self, name: &str, sha256_hex: &str) -> Result<()> {
        let inserted = self.conn().execute(
            "INSERT INTO api_tokens (name, sha256, created_at) VALUES (?1, ?2, ?3)
             ON CONFLICT (name) DO NOTHING",
            params![name, sha256_hex, now()],
        )?;
        if inserted == 0 {
            return Err(Conflict(format!(
                "an API token named `{name}` exists already (revoke it first)"
            ))
            .into());
        }
        Ok(())
    }

    pub fn api_tokens(&self) -> Result<Vec<ApiTokenRow>> {
        let mut statement = self
            .conn()
            .prepare("SELECT name, created_at FROM api_tokens ORDER BY name")?;
        let rows = statement.query_map([], |row| {
            Ok(ApiTokenRow {
                name: row.get(0)?,
                created_at: row.get(1)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Every token's name with its hex SHA-256, for checking a request.
    pub fn api_token_hashes(&self) -> Result<Vec<(String, String)>> {
        Ok(api_token_hashes(self.conn())?)
    }

    pub fn revoke_api_token(&self, name: &str) -> Result<()> {
        let deleted = self
            .conn()
            .execute("DELETE FROM api_tokens WHERE name = ?1", params![name])?;
        if deleted == 0 {
            return Err(NotFound(format!(
                "no API token named `{name}` (see `callhost api token list`)"
            ))
            .into());
        }
        Ok(())
    }
}

/// An administrator of the web UI.
#[derive(Debug, Clone, serde::Serialize)]
pub struct AdminRow {
    pub name: String,
    pub created_at: String,
}

/// One change made over HTTP, as the audit log keeps it.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct AuditEntry {
    pub id: i64,
    /// RFC 3339, UTC.
    pub at: String,
    /// `admin:NAME`, `token:NAME` or, for a failed login, the name tried.
    pub actor: String,
    /// The client's IP address.
    pub source: String,
    /// What was asked, e.g. `POST /api/v1/instances/rl/activate`.
    pub action: String,
    /// What it was done to (an instance, a module, a user), or empty.
    pub target: String,
    /// `ok`, or the HTTP status and the reason it was refused.
    pub outcome: String,
}

impl Db {
    /// Adds an administrator with an argon2 PHC string; refused when the
    /// name exists.
    pub fn add_admin(&self, name: &str, password_hash: &str) -> Result<()> {
        let inserted = self.conn().execute(
            "INSERT INTO admins (name, password_hash, created_at) VALUES (?1, ?2, ?3)
             ON CONFLICT (name) DO NOTHING",
            params![name, password_hash, now()],
        )?;
        if inserted == 0 {
            return Err(Conflict(format!(
                "an administrator named `{name}` exists already (use `callhost admin password {name}`)"
            ))
            .into());
        }
        Ok(())
    }

    /// Replaces an administrator's password hash (their sessions end).
    pub fn set_admin_password(&self, name: &str, password_hash: &str) -> Result<()> {
        let changed = self.conn().execute(
            "UPDATE admins SET password_hash = ?2 WHERE name = ?1",
            params![name, password_hash],
        )?;
        if changed == 0 {
            return Err(NotFound(format!(
                "no administrator named `{name}` (see `callhost admin list`)"
            ))
            .into());
        }
        Ok(())
    }

    pub fn admins(&self) -> Result<Vec<AdminRow>> {
        let mut statement = self
            .conn()
            .prepare("SELECT name, created_at FROM admins ORDER BY name")?;
        let rows = statement.query_map([], |row| {
            Ok(AdminRow {
                name: row.get(0)?,
                created_at: row.get(1)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    pub fn remove_admin(&self, name: &str) -> Result<()> {
        let deleted = self
            .conn()
            .execute("DELETE FROM admins WHERE name = ?1", params![name])?;
        if deleted == 0 {
            return Err(NotFound(format!(
                "no administrator named `{name}` (see `callhost admin list`)"
            ))
            .into());
        }
        Ok(())
    }

    /// Appends one entry to the audit log.
    pub fn audit(&self, entry: &AuditEntry) -> Result<()> {
        self.conn().execute(
            "INSERT INTO audit_log (at, actor, source, action, target, outcome)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![
                entry.at,
                entry.actor,
                entry.source,
                entry.action,
                entry.target,
                entry.outcome
            ],
        )?;
        Ok(())
    }

    /// The newest `limit` audit entries with an id below `before` (all
    /// when `None`), newest first.
    pub fn audit_log(&self, before: Option<i64>, limit: u32) -> Result<Vec<AuditEntry>> {
        let mut statement = self.conn().prepare(
            "SELECT id, at, actor, source, action, target, outcome FROM audit_log
             WHERE id < ?1 ORDER BY id DESC LIMIT ?2",
        )?;
        let rows = statement.query_map(params![before.unwrap_or(i64::MAX), limit], |row| {
            Ok(AuditEntry {
                id: row.get(0)?,
                at: row.get(1)?,
                actor: row.get(2)?,
                source: row.get(3)?,
                action: row.get(4)?,
                target: row.get(5)?,
                outcome: row.get(6)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}

/// Every administrator's name with their argon2 PHC string, on any
/// connection to `callhost.db` (the HTTP server's credential set).
pub fn admin_hashes(conn: &Connection) -> rusqlite::Result<Vec<(String, String)>> {
    let mut statement = conn.prepare_cached("SELECT name, password_hash FROM admins")?;
    let rows = statement.query_map([], |row| Ok((row.get(0)?, row.get(1)?)))?;
    rows.collect()
}

/// Every API token's name with its hex SHA-256, on any connection to
/// `callhost.db` (the API server keeps one for its token set).
pub fn api_token_hashes(conn: &Connection) -> rusqlite::Result<Vec<(String, String)>> {
    let mut statement = conn.prepare_cached("SELECT name, sha256 FROM api_tokens")?;
    let rows = statement.query_map([], |row| Ok((row.get(0)?, row.get(1)?)))?;
    rows.collect()
}

fn module_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<ModuleRow> {
    Ok(ModuleRow {
        id: row.get(0)?,
        name: row.get(1)?,
        version: row.get(2)?,
        abi_version: row.get(3)?,
        description: row.get(4)?,
        library_path: row.get(5)?,
        signed_by: row.get(6)?,
        installed_at: row.get(7)?,
        library_sha256: row.get(8)?,
    })
}

fn instance_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<InstanceRow> {
    Ok(InstanceRow {
        name: row.get(0)?,
        module_id: row.get(1)?,
        description: row.get(2)?,
        config: row.get(3)?,
        position: row.get(4)?,
        active: row.get(5)?,
        log_level: row.get(6)?,
        fault: row.get(7)?,
        updated_at: row.get(8)?,
        config_error: None,
    })
}
