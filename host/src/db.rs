//! The host's own tables in `<data>/callhost.db`: installed modules and
//! instances. The directory's tables belong to `callhost-pbx`; both share
//! the file and the migration table.

use std::path::Path;

use anyhow::{bail, Context as _, Result};
use callhost_pbx::store::{migrate, Store};
use rusqlite::{params, OptionalExtension};

const MIGRATIONS: &[&str] = &[
    // 1: modules and instances
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
    // 2: HTTP API tokens; only a token's SHA-256 is kept, never the token
    "CREATE TABLE api_tokens (
        name TEXT PRIMARY KEY,
        sha256 TEXT NOT NULL UNIQUE,
        created_at TEXT NOT NULL
    );",
];

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
/// Instance configurations are sealed at rest (see `seal`).
pub struct Db {
    pub store: Store,
    sealer: crate::seal::Sealer,
}

pub fn now() -> String {
    humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string()
}

impl Db {
    pub fn open(data: &Path) -> Result<Db> {
        std::fs::create_dir_all(data)
            .with_context(|| format!("cannot create data directory {}", data.display()))?;
        let path = crate::paths::DataDir::new(data).database();
        let store = Store::open(&path)
            .with_context(|| format!("cannot open database {}", path.display()))?;
        migrate(store.conn(), "host", MIGRATIONS).context("host database migration")?;
        // Overwrite what is deleted, so a configuration sealed now leaves
        // no clear copy in free pages.
        store
            .conn()
            .pragma_update(None, "secure_delete", "ON")
            .context("enabling secure_delete")?;
        let sealer = crate::seal::Sealer::open(data)?;
        let db = Db { store, sealer };
        db.seal_plain_configs()?;
        Ok(db)
    }

    /// Seals configurations stored before sealing existed (idempotent).
    fn seal_plain_configs(&self) -> Result<()> {
        let plain: Vec<(String, String)> = self
            .conn()
            .prepare("SELECT name, config FROM instances WHERE config NOT LIKE 'sealed:%'")?
            .query_map([], |row| Ok((row.get(0)?, row.get(1)?)))?
            .collect::<Result<_, _>>()?;
        for (name, config) in plain {
            // Only if nobody changed it meanwhile.
            self.conn().execute(
                "UPDATE instances SET config = ?3 WHERE name = ?1 AND config = ?2",
                params![name, config, self.sealer.seal(&config)],
            )?;
        }
        Ok(())
    }

    /// A row as read, with its configuration unsealed.
    fn unsealed(&self, mut row: InstanceRow) -> Result<InstanceRow> {
        row.config = self
            .sealer
            .unseal(&row.config)
            .with_context(|| format!("instance `{}`", row.name))?;
        Ok(row)
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
            "SELECT id, name, version, abi_version, description, library_path, signed_by, installed_at
             FROM modules ORDER BY id",
        )?;
        let rows = statement.query_map([], module_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    pub fn module(&self, id: &str) -> Result<Option<ModuleRow>> {
        Ok(self
            .conn()
            .query_row(
                "SELECT id, name, version, abi_version, description, library_path, signed_by, installed_at
                 FROM modules WHERE id = ?1",
                params![id],
                module_row,
            )
            .optional()?)
    }

    pub fn upsert_module(&self, row: &ModuleRow) -> Result<()> {
        self.conn().execute(
            "INSERT INTO modules (id, name, version, abi_version, description, library_path, signed_by, installed_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
             ON CONFLICT (id) DO UPDATE SET name = ?2, version = ?3, abi_version = ?4,
                description = ?5, library_path = ?6, signed_by = ?7, installed_at = ?8",
            params![
                row.id,
                row.name,
                row.version,
                row.abi_version,
                row.description,
                row.library_path,
                row.signed_by,
                row.installed_at
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
        rows.map(|row| self.unsealed(row?)).collect()
    }

    pub fn instance(&self, name: &str) -> Result<InstanceRow> {
        self.find_instance(name)?
            .with_context(|| format!("no instance named `{name}` (see `callhost instance list`)"))
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
            .map(|row| self.unsealed(row))
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
                self.sealer.seal(&row.config),
                next,
                row.active,
                row.log_level,
                now()
            ],
        )?;
        if inserted == 0 {
            bail!("an instance named `{}` exists already", row.name);
        }
        self.bump()
    }

    pub fn set_config(&self, name: &str, config: &str) -> Result<()> {
        self.update(
            name,
            "UPDATE instances SET config = ?2, fault = NULL, updated_at = ?3 WHERE name = ?1",
            &self.sealer.seal(config),
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
        if self.sealer.unseal(&stored)? != config {
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
            .with_context(|| format!("no instance named `{name}`"))?;
        if position == 0 || position > names.len() {
            bail!("position {position} is out of range 1..={}", names.len());
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
            bail!("no instance named `{name}` (see `callhost instance list`)");
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
            bail!("an API token named `{name}` exists already (revoke it first)");
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
        let mut statement = self.conn().prepare("SELECT name, sha256 FROM api_tokens")?;
        let rows = statement.query_map([], |row| Ok((row.get(0)?, row.get(1)?)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    pub fn revoke_api_token(&self, name: &str) -> Result<()> {
        let deleted = self
            .conn()
            .execute("DELETE FROM api_tokens WHERE name = ?1", params![name])?;
        if deleted == 0 {
            bail!("no API token named `{name}` (see `callhost api token list`)");
        }
        Ok(())
    }
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
    })
}
