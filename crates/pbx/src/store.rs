//! SQLite persistence for the directory, the address book and the per-user
//! call lists, plus the versioned migration runner the host reuses.
//!
//! Several processes (host, admin CLI) open the same file, hence WAL mode
//! and a busy timeout. Every value goes in as a bound parameter.
//!
//! The SIP users' HA1 hashes are stored sealed (`callhost-seal`), each
//! bound to its user (`users.sip_ha1:<id>`); the loaded directory has them
//! in clear, as the SIP front end needs them.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use callhost_seal::{Place, SealError, Sealer};
use rusqlite::{params, Connection, OptionalExtension, Transaction, TransactionBehavior};
use serde::{Deserialize, Serialize};

use crate::directory::{Contact, Directory, DirectoryError, Group, User, UserState};

/// How long a writer waits for another process's lock before failing.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Migration component of this crate's tables.
const COMPONENT: &str = "pbx";

/// `contacts.origin` of contacts that come from the directory and are
/// replaced by [`Store::save_directory`].
const ORIGIN_DIRECTORY: &str = "directory";
/// `contacts.origin` of contacts added at run time; a directory load keeps them.
const ORIGIN_ADDED: &str = "added";

/// Where a user's sealed HA1 lives (`users.sip_ha1` of the user's id).
fn ha1_place(user_id: &str) -> Place<'_> {
    Place::new("users.sip_ha1", user_id)
}

/// One schema step: SQL, or code for what SQL cannot do (sealing values).
#[derive(Clone, Copy)]
pub enum Step<'a> {
    Sql(&'a str),
    /// Runs inside the step's transaction, with the database's sealer.
    Code(fn(&Connection, &Sealer) -> Result<(), StoreError>),
}

/// This crate's schema, one step per version. Never edit a released step:
/// append a new one.
pub const PBX_MIGRATIONS: &[Step<'static>] = &[
    Step::Sql(
        r#"
CREATE TABLE pbx_settings (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE users (
    id         TEXT PRIMARY KEY,
    position   INTEGER NOT NULL,
    name       TEXT NOT NULL,
    first_name TEXT,
    last_name  TEXT,
    mobile     TEXT,
    password   TEXT
);
CREATE TABLE user_numbers (
    user_id  TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    position INTEGER NOT NULL,
    number   TEXT NOT NULL,
    PRIMARY KEY (user_id, position)
);
CREATE TABLE groups (
    id       TEXT PRIMARY KEY,
    position INTEGER NOT NULL,
    name     TEXT NOT NULL
);
CREATE TABLE group_numbers (
    group_id TEXT NOT NULL REFERENCES groups(id) ON DELETE CASCADE,
    position INTEGER NOT NULL,
    number   TEXT NOT NULL,
    PRIMARY KEY (group_id, position)
);
CREATE TABLE group_members (
    group_id TEXT NOT NULL REFERENCES groups(id) ON DELETE CASCADE,
    user_id  TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    position INTEGER NOT NULL,
    active   INTEGER NOT NULL CHECK (active IN (0, 1)),
    PRIMARY KEY (group_id, user_id)
);
CREATE TABLE contacts (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    origin     TEXT NOT NULL CHECK (origin IN ('directory', 'added')),
    first_name TEXT,
    last_name  TEXT,
    company    TEXT
);
CREATE TABLE contact_numbers (
    contact_id INTEGER NOT NULL REFERENCES contacts(id) ON DELETE CASCADE,
    position   INTEGER NOT NULL,
    number     TEXT NOT NULL,
    PRIMARY KEY (contact_id, position)
);
CREATE INDEX contact_numbers_number ON contact_numbers(number);
CREATE TABLE user_state (
    user_id           TEXT PRIMARY KEY REFERENCES users(id) ON DELETE CASCADE,
    dnd               INTEGER NOT NULL,
    forward_always    TEXT,
    forward_busy      TEXT,
    forward_no_answer TEXT,
    no_answer_seconds INTEGER NOT NULL,
    call_waiting      INTEGER NOT NULL,
    busy              INTEGER NOT NULL,
    registered        INTEGER NOT NULL
);
-- No foreign key to users: call lists outlive directory reloads.
CREATE TABLE call_list (
    id        INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id   TEXT NOT NULL,
    time      TEXT NOT NULL,
    direction TEXT NOT NULL CHECK (direction IN ('in', 'out')),
    number    TEXT NOT NULL,
    name      TEXT,
    call_id   TEXT NOT NULL
);
CREATE INDEX call_list_user_time ON call_list(user_id, time);
CREATE INDEX call_list_number ON call_list(number);
"#,
    ),
    // 2: ring the mobile along (P2, iFMC-like)
    Step::Sql("ALTER TABLE user_state ADD COLUMN ring_mobile INTEGER NOT NULL DEFAULT 0;"),
    // 3: SIP passwords are kept only as digest hashes (P2); step 4 hashes
    // the clear passwords of older stores and clears the column.
    Step::Sql("ALTER TABLE users ADD COLUMN sip_ha1 TEXT;"),
    // 4: HA1 hashes sealed, bound to their user.
    Step::Code(seal_sip_secrets),
    // 5: a counter every change to what calls are routed on bumps (not the
    // call lists): a running server reloads its directory only then.
    Step::Sql(
        r#"
CREATE TABLE directory_generation (id INTEGER PRIMARY KEY CHECK (id = 1), value INTEGER NOT NULL);
INSERT INTO directory_generation (id, value) VALUES (1, 0);
CREATE TRIGGER pbx_settings_insert_bumps AFTER INSERT ON pbx_settings BEGIN UPDATE directory_generation SET value = value + 1; END;
CREATE TRIGGER pbx_settings_update_bumps AFTER UPDATE ON pbx_settings BEGIN UPDATE directory_generation SET value = value + 1; END;
CREATE TRIGGER pbx_settings_delete_bumps AFTER DELETE ON pbx_settings BEGIN UPDATE directory_generation SET value = value + 1; END;
CREATE TRIGGER users_insert_bumps AFTER INSERT ON users BEGIN UPDATE directory_generation SET value = value + 1; END;
CREATE TRIGGER users_update_bumps AFTER UPDATE ON users BEGIN UPDATE directory_generation SET value = value + 1; END;
CREATE TRIGGER users_delete_bumps AFTER DELETE ON users BEGIN UPDATE directory_generation SET value = value + 1; END;
CREATE TRIGGER user_numbers_insert_bumps AFTER INSERT ON user_numbers BEGIN UPDATE directory_generation SET value = value + 1; END;
CREATE TRIGGER user_numbers_update_bumps AFTER UPDATE ON user_numbers BEGIN UPDATE directory_generation SET value = value + 1; END;
CREATE TRIGGER user_numbers_delete_bumps AFTER DELETE ON user_numbers BEGIN UPDATE directory_generation SET value = value + 1; END;
CREATE TRIGGER groups_insert_bumps AFTER INSERT ON groups BEGIN UPDATE directory_generation SET value = value + 1; END;
CREATE TRIGGER groups_update_bumps AFTER UPDATE ON groups BEGIN UPDATE directory_generation SET value = value + 1; END;
CREATE TRIGGER groups_delete_bumps AFTER DELETE ON groups BEGIN UPDATE directory_generation SET value = value + 1; END;
CREATE TRIGGER group_numbers_insert_bumps AFTER INSERT ON group_numbers BEGIN UPDATE directory_generation SET value = value + 1; END;
CREATE TRIGGER group_numbers_update_bumps AFTER UPDATE ON group_numbers BEGIN UPDATE directory_generation SET value = value + 1; END;
CREATE TRIGGER group_numbers_delete_bumps AFTER DELETE ON group_numbers BEGIN UPDATE directory_generation SET value = value + 1; END;
CREATE TRIGGER group_members_insert_bumps AFTER INSERT ON group_members BEGIN UPDATE directory_generation SET value = value + 1; END;
CREATE TRIGGER group_members_update_bumps AFTER UPDATE ON group_members BEGIN UPDATE directory_generation SET value = value + 1; END;
CREATE TRIGGER group_members_delete_bumps AFTER DELETE ON group_members BEGIN UPDATE directory_generation SET value = value + 1; END;
CREATE TRIGGER contacts_insert_bumps AFTER INSERT ON contacts BEGIN UPDATE directory_generation SET value = value + 1; END;
CREATE TRIGGER contacts_update_bumps AFTER UPDATE ON contacts BEGIN UPDATE directory_generation SET value = value + 1; END;
CREATE TRIGGER contacts_delete_bumps AFTER DELETE ON contacts BEGIN UPDATE directory_generation SET value = value + 1; END;
CREATE TRIGGER contact_numbers_insert_bumps AFTER INSERT ON contact_numbers BEGIN UPDATE directory_generation SET value = value + 1; END;
CREATE TRIGGER contact_numbers_update_bumps AFTER UPDATE ON contact_numbers BEGIN UPDATE directory_generation SET value = value + 1; END;
CREATE TRIGGER contact_numbers_delete_bumps AFTER DELETE ON contact_numbers BEGIN UPDATE directory_generation SET value = value + 1; END;
CREATE TRIGGER user_state_insert_bumps AFTER INSERT ON user_state BEGIN UPDATE directory_generation SET value = value + 1; END;
CREATE TRIGGER user_state_update_bumps AFTER UPDATE ON user_state BEGIN UPDATE directory_generation SET value = value + 1; END;
CREATE TRIGGER user_state_delete_bumps AFTER DELETE ON user_state BEGIN UPDATE directory_generation SET value = value + 1; END;
"#,
    ),
];

impl Store {
    /// Changes whenever the directory (users, groups, numbers, state, the
    /// address book, settings) changes, in any process; call lists do not
    /// change it.
    pub fn directory_generation(&self) -> Result<i64, StoreError> {
        self.conn
            .query_row("SELECT value FROM directory_generation", [], |row| {
                row.get(0)
            })
            .context("reading the directory generation")
    }
}

/// Errors from the store. Messages say what was being done; the cause
/// (SQLite's or the system's words) is the source, not repeated.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database file could not be opened or configured.
    #[error("cannot open database {}", path.display())]
    Open {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
    /// The database directory could not be created.
    #[error("cannot create directory {}", path.display())]
    CreateDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// WAL mode could not be enabled (e.g. an in-memory database).
    #[error("cannot enable WAL mode: journal_mode is {0:?}")]
    NoWal(String),
    /// A migration step failed; it was rolled back.
    #[error("migration {component} v{version} failed")]
    Migration {
        component: String,
        version: i64,
        #[source]
        source: rusqlite::Error,
    },
    /// The database was migrated by a newer program than this one.
    #[error(
        "database schema of {component:?} is at version {found}, this program knows only {known}"
    )]
    SchemaTooNew {
        component: String,
        found: i64,
        known: i64,
    },
    /// A query failed.
    #[error("{context}")]
    Sql {
        context: &'static str,
        #[source]
        source: rusqlite::Error,
    },
    /// The directory to save is invalid; nothing was written.
    #[error("invalid directory")]
    Directory(#[from] DirectoryError),
    /// A user id that is not in the stored directory.
    #[error("unknown user {0:?}")]
    UnknownUser(String),
    /// A group id that is not in the stored directory.
    #[error("unknown group {0:?}")]
    UnknownGroup(String),
    /// A user who is not a member of the group.
    #[error("user {user:?} is not a member of group {group:?}")]
    NotAMember { user: String, group: String },
    /// A value to store is malformed.
    #[error("{field}: {value:?} {message}")]
    InvalidValue {
        field: &'static str,
        value: String,
        message: &'static str,
    },
    /// A stored value this program cannot read.
    #[error("corrupt database: {table}.{column} has {value:?}")]
    Corrupt {
        table: &'static str,
        column: &'static str,
        value: String,
    },
    /// A sealed value that does not open (another row's, another key, an
    /// older form); the message names the row.
    #[error(transparent)]
    Seal(#[from] SealError),
    /// A migration step written in code failed; it was rolled back.
    #[error("migration {component} v{version} failed")]
    MigrationStep {
        component: String,
        version: i64,
        #[source]
        source: Box<StoreError>,
    },
}

/// Attach a context to a rusqlite result.
trait Context<T> {
    fn context(self, context: &'static str) -> Result<T, StoreError>;
}

impl<T> Context<T> for Result<T, rusqlite::Error> {
    fn context(self, context: &'static str) -> Result<T, StoreError> {
        self.map_err(|source| StoreError::Sql { context, source })
    }
}

/// Apply the SQL steps of `component` that `schema_migrations` does not
/// list yet (see [`migrate_steps`]).
pub fn migrate(conn: &Connection, component: &str, steps: &[&str]) -> Result<(), StoreError> {
    let steps: Vec<Step<'_>> = steps.iter().map(|sql| Step::Sql(sql)).collect();
    apply_steps(conn, component, &steps, None).map(drop)
}

/// Apply the steps of `component` that `schema_migrations` does not list yet,
/// each in its own transaction. Step `i` (0-based) is version `i + 1`.
/// Safe to run concurrently from several processes. Returns how many steps
/// this call applied. After a code step the WAL is checkpointed, so the
/// values it rewrote leave the files (with `secure_delete`, see
/// [`Store::open`]).
pub fn migrate_steps(
    conn: &Connection,
    component: &str,
    steps: &[Step<'_>],
    sealer: &Sealer,
) -> Result<usize, StoreError> {
    apply_steps(conn, component, steps, Some(sealer))
}

/// The schema version of `component` in `conn` (0: none yet).
pub fn schema_version(conn: &Connection, component: &str) -> Result<i64, StoreError> {
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS schema_migrations (
            component  TEXT NOT NULL,
            version    INTEGER NOT NULL,
            applied_at TEXT NOT NULL,
            PRIMARY KEY (component, version)
        )",
    )
    .context("creating schema_migrations")?;
    current_version(conn, component)
}

fn apply_steps(
    conn: &Connection,
    component: &str,
    steps: &[Step<'_>],
    sealer: Option<&Sealer>,
) -> Result<usize, StoreError> {
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS schema_migrations (
            component  TEXT NOT NULL,
            version    INTEGER NOT NULL,
            applied_at TEXT NOT NULL,
            PRIMARY KEY (component, version)
        )",
    )
    .context("creating schema_migrations")?;

    let known = steps.len() as i64;
    let current = current_version(conn, component)?;
    if current > known {
        return Err(StoreError::SchemaTooNew {
            component: component.to_owned(),
            found: current,
            known,
        });
    }
    let mut applied_steps = 0;
    let mut rewrote = false;
    for (i, step) in steps.iter().enumerate().skip(current as usize) {
        let version = i as i64 + 1;
        let failed = |source| StoreError::Migration {
            component: component.to_owned(),
            version,
            source,
        };
        // IMMEDIATE takes the write lock first, so a second process waits
        // here and then sees the step as applied instead of re-running it.
        let tx =
            Transaction::new_unchecked(conn, TransactionBehavior::Immediate).map_err(failed)?;
        let applied: bool = tx
            .query_row(
                "SELECT EXISTS (SELECT 1 FROM schema_migrations WHERE component = ?1 AND version = ?2)",
                params![component, version],
                |row| row.get(0),
            )
            .map_err(failed)?;
        if applied {
            continue;
        }
        match step {
            Step::Sql(sql) => tx.execute_batch(sql).map_err(failed)?,
            Step::Code(run) => {
                let sealer = sealer.expect("code steps come with a sealer (migrate_steps)");
                run(&tx, sealer).map_err(|source| StoreError::MigrationStep {
                    component: component.to_owned(),
                    version,
                    source: Box::new(source),
                })?;
                rewrote = true;
            }
        }
        tx.execute(
            "INSERT INTO schema_migrations (component, version, applied_at)
             VALUES (?1, ?2, ?3)",
            params![component, version, rfc3339_utc(SystemTime::now())],
        )
        .map_err(failed)?;
        tx.commit().map_err(failed)?;
        applied_steps += 1;
        tracing::info!(component, version, "applied database migration");
    }
    if rewrote {
        checkpoint(conn);
    }
    Ok(applied_steps)
}

/// Copies the WAL into the database file and empties it, so the old forms
/// of rewritten values are overwritten (secure_delete) rather than left in
/// the WAL. Best effort: a reader holding an old snapshot lets it finish
/// at a later checkpoint.
fn checkpoint(conn: &Connection) {
    let done = conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |row| {
        row.get::<_, i64>(0)
    });
    match done {
        Ok(0) => {}
        Ok(_) => {
            tracing::warn!("WAL checkpoint after a migration was incomplete (a reader is busy)")
        }
        Err(error) => tracing::warn!("WAL checkpoint after a migration failed: {error}"),
    }
}

fn current_version(conn: &Connection, component: &str) -> Result<i64, StoreError> {
    conn.query_row(
        "SELECT COALESCE(MAX(version), 0) FROM schema_migrations WHERE component = ?1",
        [component],
        |row| row.get(0),
    )
    .context("reading schema_migrations")
}

/// Direction of a call list entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CallDirection {
    In,
    Out,
}

impl CallDirection {
    /// `"in"` or `"out"`, as stored.
    pub fn as_str(self) -> &'static str {
        match self {
            CallDirection::In => "in",
            CallDirection::Out => "out",
        }
    }
}

/// One entry of a user's call list.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallListEntry {
    /// Row id; `None` for an entry not stored yet (ignored when adding).
    pub id: Option<i64>,
    pub user_id: String,
    /// RFC 3339 UTC, e.g. `2024-05-01T12:00:00Z` (see [`rfc3339_utc`]).
    pub time: String,
    pub direction: CallDirection,
    /// The other party's number.
    pub number: String,
    /// Resolved name; `None` until resolved.
    pub name: Option<String>,
    pub call_id: String,
}

fn check_call_list_entry(entry: &CallListEntry) -> Result<(), StoreError> {
    if !is_rfc3339_utc(&entry.time) {
        return Err(StoreError::InvalidValue {
            field: "time",
            value: entry.time.clone(),
            message: "is not an RFC 3339 UTC time (YYYY-MM-DDTHH:MM:SSZ)",
        });
    }
    Ok(())
}

fn insert_call_list_entry(conn: &Connection, entry: &CallListEntry) -> Result<(), StoreError> {
    conn.prepare_cached(
        "INSERT INTO call_list (user_id, time, direction, number, name, call_id)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )
    .and_then(|mut insert| {
        insert.execute(params![
            entry.user_id,
            entry.time,
            entry.direction.as_str(),
            entry.number,
            entry.name,
            entry.call_id
        ])
    })
    .context("adding a call list entry")?;
    Ok(())
}

/// Format `t` as RFC 3339 UTC with second precision, e.g. `2024-05-01T12:00:00Z`.
pub fn rfc3339_utc(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}

/// `YYYY-MM-DDTHH:MM:SS[.fraction]Z`: UTC only, so text order is time order.
fn is_rfc3339_utc(s: &str) -> bool {
    let b = s.as_bytes();
    let digits = |r: std::ops::Range<usize>| b[r].iter().all(u8::is_ascii_digit);
    if b.len() < 20 || b[b.len() - 1] != b'Z' {
        return false;
    }
    let shape = digits(0..4)
        && b[4] == b'-'
        && digits(5..7)
        && b[7] == b'-'
        && digits(8..10)
        && b[10] == b'T'
        && digits(11..13)
        && b[13] == b':'
        && digits(14..16)
        && b[16] == b':'
        && digits(17..19);
    let rest = &b[19..b.len() - 1];
    let fraction = rest.is_empty()
        || (rest.len() > 1 && rest[0] == b'.' && rest[1..].iter().all(u8::is_ascii_digit));
    shape && fraction
}

/// Migration 4: every user's HA1 sealed for that user. Clear SIP passwords
/// left by stores before migration 3 become their sealed hash; HA1s stored
/// in clear (migration 3) are sealed.
fn seal_sip_secrets(conn: &Connection, sealer: &Sealer) -> Result<(), StoreError> {
    type Row = (String, Option<String>, Option<String>);
    let users: Vec<Row> = conn
        .prepare("SELECT id, password, sip_ha1 FROM users")
        .and_then(|mut stmt| {
            stmt.query_map([], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)))?
                .collect()
        })
        .context("reading SIP credentials")?;
    for (id, password, stored) in users {
        let ha1 = match (password, stored) {
            (Some(password), _) => Some(crate::directory::digest_ha1(&id, &password)),
            (None, Some(stored)) => Some(sealer.unseal_legacy(ha1_place(&id), &stored)?),
            (None, None) => None,
        };
        let sealed = ha1.map(|ha1| sealer.seal(ha1_place(&id), &ha1));
        conn.execute(
            "UPDATE users SET sip_ha1 = ?1, password = NULL WHERE id = ?2",
            params![sealed, id],
        )
        .context("sealing SIP credentials")?;
    }
    Ok(())
}

/// The PBX database. Keeps its connection open; share the file with the host
/// through [`Store::conn`].
#[derive(Debug)]
pub struct Store {
    conn: Connection,
    sealer: Arc<Sealer>,
}

impl Store {
    /// Open or create the database at `path`, enable WAL, a 5 s busy
    /// timeout and `secure_delete` (what is overwritten or deleted leaves
    /// no copy in free pages), and apply this crate's migrations. `sealer`
    /// seals the HA1 hashes (the data directory's key).
    pub fn open(path: &Path, sealer: Arc<Sealer>) -> Result<Store, StoreError> {
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(|source| StoreError::CreateDir {
                path: parent.to_owned(),
                source,
            })?;
        }
        let open_err = |source| StoreError::Open {
            path: path.to_owned(),
            source,
        };
        let conn = Connection::open(path).map_err(open_err)?;
        // The timeout first: switching to WAL itself may wait for a lock.
        conn.busy_timeout(BUSY_TIMEOUT).map_err(open_err)?;
        let mode: String = conn
            .pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0))
            .map_err(open_err)?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(StoreError::NoWal(mode));
        }
        // Per connection, off by default; the cascades below rely on it.
        conn.pragma_update(None, "foreign_keys", true)
            .map_err(open_err)?;
        // Before the migrations: a value they seal leaves no clear copy.
        conn.pragma_update(None, "secure_delete", "ON")
            .map_err(open_err)?;
        migrate_steps(&conn, COMPONENT, PBX_MIGRATIONS, &sealer)?;
        tracing::debug!(path = %path.display(), "database opened");
        Ok(Store { conn, sealer })
    }

    /// The sealer the store seals with (the data directory's key).
    pub fn sealer(&self) -> &Arc<Sealer> {
        &self.sealer
    }

    /// The connection, for the host's own tables in the same file.
    pub fn conn(&self) -> &Connection {
        &self.conn
    }

    /// Validate `dir` and replace the stored users, groups, directory
    /// contacts and state with it in one transaction: on any error nothing
    /// changes. Call lists and contacts added with [`Store::add_contact`]
    /// are kept.
    pub fn save_directory(&mut self, dir: &Directory) -> Result<(), StoreError> {
        dir.validate()?;
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .context("starting the directory transaction")?;
        write_directory(&tx, dir, &self.sealer)?;
        tx.commit().context("committing the directory")?;
        tracing::info!(
            users = dir.users.len(),
            groups = dir.groups.len(),
            contacts = dir.contacts.len(),
            "directory saved"
        );
        Ok(())
    }

    /// The stored directory, or `None` if none was ever saved. Contacts added
    /// with [`Store::add_contact`] are not part of it (see [`Store::contacts`]).
    pub fn load_directory(&self) -> Result<Option<Directory>, StoreError> {
        // One read transaction: a consistent snapshot even while another
        // process saves.
        let tx = self
            .conn
            .unchecked_transaction()
            .context("starting the directory read")?;
        self.read_directory(&tx)
    }

    /// The stored directory as calls are routed on it (its address book
    /// with the contacts added since, see [`Store::contacts`]) and the
    /// [`Store::directory_generation`] it is at, read in one snapshot:
    /// whoever holds both knows exactly which changes the directory has.
    pub fn directory_snapshot(&self) -> Result<Option<(Directory, i64)>, StoreError> {
        let tx = self
            .conn
            .unchecked_transaction()
            .context("starting the directory read")?;
        // In WAL mode the first read fixes the snapshot for the rest.
        let generation: i64 = tx
            .query_row("SELECT value FROM directory_generation", [], |row| {
                row.get(0)
            })
            .context("reading the directory generation")?;
        let Some(mut directory) = self.read_directory(&tx)? else {
            return Ok(None);
        };
        directory.contacts = read_contacts(&tx, None)?;
        Ok(Some((directory, generation)))
    }

    fn read_directory(&self, tx: &Transaction<'_>) -> Result<Option<Directory>, StoreError> {
        let home_country: Option<String> = tx
            .query_row(
                "SELECT value FROM pbx_settings WHERE key = 'home_country'",
                [],
                |row| row.get(0),
            )
            .optional()
            .context("reading home_country")?;
        let Some(home_country) = home_country else {
            return Ok(None);
        };

        let mut user_numbers = numbers_by_owner(
            tx,
            "SELECT user_id, number FROM user_numbers ORDER BY user_id, position",
        )?;
        let mut users = Vec::new();
        {
            let mut stmt = tx
                .prepare(
                    "SELECT id, name, first_name, last_name, mobile, sip_ha1
                     FROM users ORDER BY position",
                )
                .context("reading users")?;
            let rows = stmt
                .query_map([], |row| {
                    Ok(User {
                        id: row.get(0)?,
                        name: row.get(1)?,
                        first_name: row.get(2)?,
                        last_name: row.get(3)?,
                        numbers: Vec::new(),
                        mobile: row.get(4)?,
                        password: None,
                        sip_ha1: row.get(5)?,
                    })
                })
                .context("reading users")?;
            for user in rows {
                let mut user = user.context("reading users")?;
                user.numbers = user_numbers.remove(&user.id).unwrap_or_default();
                if let Some(sealed) = user.sip_ha1.take() {
                    user.sip_ha1 = Some(self.sealer.unseal(ha1_place(&user.id), &sealed)?);
                }
                users.push(user);
            }
        }

        let mut group_numbers = numbers_by_owner(
            tx,
            "SELECT group_id, number FROM group_numbers ORDER BY group_id, position",
        )?;
        let mut members: BTreeMap<String, (Vec<String>, Vec<String>)> = BTreeMap::new();
        {
            let mut stmt = tx
                .prepare(
                    "SELECT group_id, user_id, active FROM group_members
                     ORDER BY group_id, position",
                )
                .context("reading group members")?;
            let rows = stmt
                .query_map([], |row| {
                    Ok((
                        row.get::<_, String>(0)?,
                        row.get::<_, String>(1)?,
                        row.get::<_, bool>(2)?,
                    ))
                })
                .context("reading group members")?;
            for row in rows {
                let (group, user, active) = row.context("reading group members")?;
                let entry = members.entry(group).or_default();
                if !active {
                    entry.1.push(user.clone());
                }
                entry.0.push(user);
            }
        }
        let mut groups = Vec::new();
        {
            let mut stmt = tx
                .prepare("SELECT id, name FROM groups ORDER BY position")
                .context("reading groups")?;
            let rows = stmt
                .query_map([], |row| Ok((row.get::<_, String>(0)?, row.get(1)?)))
                .context("reading groups")?;
            for row in rows {
                let (id, name) = row.context("reading groups")?;
                let (members, inactive) = members.remove(&id).unwrap_or_default();
                groups.push(Group {
                    numbers: group_numbers.remove(&id).unwrap_or_default(),
                    id,
                    name,
                    members,
                    inactive,
                });
            }
        }

        let contacts = read_contacts(tx, Some(ORIGIN_DIRECTORY))?;

        let mut state = BTreeMap::new();
        {
            let mut stmt = tx
                .prepare(
                    "SELECT user_id, dnd, forward_always, forward_busy, forward_no_answer,
                            no_answer_seconds, call_waiting, busy, registered, ring_mobile
                     FROM user_state ORDER BY user_id",
                )
                .context("reading user state")?;
            let rows = stmt
                .query_map([], |row| {
                    Ok((
                        row.get::<_, String>(0)?,
                        UserState {
                            dnd: row.get(1)?,
                            forward_always: row.get(2)?,
                            forward_busy: row.get(3)?,
                            forward_no_answer: row.get(4)?,
                            no_answer_seconds: row.get(5)?,
                            call_waiting: row.get(6)?,
                            busy: row.get(7)?,
                            registered: row.get(8)?,
                            ring_mobile: row.get(9)?,
                        },
                    ))
                })
                .context("reading user state")?;
            for row in rows {
                let (user, s) = row.context("reading user state")?;
                state.insert(user, s);
            }
        }

        Ok(Some(Directory {
            home_country,
            users,
            groups,
            contacts,
            state,
        }))
    }

    /// Replace one user's state (DND, forwards, ...). The caller validates
    /// forward targets against the current directory.
    pub fn set_user_state(&mut self, user_id: &str, state: &UserState) -> Result<(), StoreError> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .context("starting the user state update")?;
        let exists: bool = tx
            .query_row(
                "SELECT EXISTS (SELECT 1 FROM users WHERE id = ?1)",
                [user_id],
                |row| row.get(0),
            )
            .context("looking up the user")?;
        if !exists {
            return Err(StoreError::UnknownUser(user_id.to_owned()));
        }
        insert_state(&tx, user_id, state)?;
        tx.commit().context("committing the user state")?;
        Ok(())
    }

    /// Logs a member in to a group (`active`) or out of it, as the group's
    /// `inactive` list of a loaded directory says, in one transaction. The
    /// caller validates against the current directory; this refuses an
    /// unknown group and a user who is no member.
    pub fn set_group_login(
        &mut self,
        group_id: &str,
        user_id: &str,
        active: bool,
    ) -> Result<(), StoreError> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .context("starting the group login update")?;
        let exists: bool = tx
            .query_row(
                "SELECT EXISTS (SELECT 1 FROM groups WHERE id = ?1)",
                [group_id],
                |row| row.get(0),
            )
            .context("looking up the group")?;
        if !exists {
            return Err(StoreError::UnknownGroup(group_id.to_owned()));
        }
        let changed = tx
            .execute(
                "UPDATE group_members SET active = ?3 WHERE group_id = ?1 AND user_id = ?2",
                params![group_id, user_id, active],
            )
            .context("saving the group login")?;
        if changed == 0 {
            return Err(StoreError::NotAMember {
                user: user_id.to_owned(),
                group: group_id.to_owned(),
            });
        }
        tx.commit().context("committing the group login")?;
        Ok(())
    }

    /// Append an entry to a user's call list; returns its row id. The user
    /// need not be in the current directory (call lists outlive reloads).
    pub fn add_call_list_entry(&self, entry: &CallListEntry) -> Result<i64, StoreError> {
        check_call_list_entry(entry)?;
        insert_call_list_entry(&self.conn, entry)?;
        Ok(self.conn.last_insert_rowid())
    }

    /// Adds `entries` in one transaction (all or none): one commit, one
    /// sync, however many calls ended meanwhile.
    pub fn add_call_list_entries(&self, entries: &[CallListEntry]) -> Result<(), StoreError> {
        for entry in entries {
            check_call_list_entry(entry)?;
        }
        let tx = self
            .conn
            .unchecked_transaction()
            .context("starting a call list batch")?;
        for entry in entries {
            insert_call_list_entry(&tx, entry)?;
        }
        tx.commit().context("committing a call list batch")?;
        Ok(())
    }

    /// A user's call list, newest first.
    pub fn call_list(&self, user_id: &str) -> Result<Vec<CallListEntry>, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT id, user_id, time, direction, number, name, call_id
                 FROM call_list WHERE user_id = ?1 ORDER BY time DESC, id DESC",
            )
            .context("reading the call list")?;
        call_list_rows(&mut stmt, params![user_id])
    }

    /// The newest `limit` entries of a user's call list, newest first.
    pub fn recent_calls(
        &self,
        user_id: &str,
        limit: u32,
    ) -> Result<Vec<CallListEntry>, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT id, user_id, time, direction, number, name, call_id
                 FROM call_list WHERE user_id = ?1 ORDER BY time DESC, id DESC LIMIT ?2",
            )
            .context("reading the call list")?;
        call_list_rows(&mut stmt, params![user_id, limit])
    }

    /// Distinct numbers of call list entries (any user) still without a
    /// name: NULL, empty, or the number itself.
    pub fn unresolved_call_list_numbers(&self) -> Result<Vec<String>, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT DISTINCT number FROM call_list
                 WHERE name IS NULL OR trim(name) = '' OR name = number
                 ORDER BY number",
            )
            .context("reading unresolved call list numbers")?;
        let numbers = stmt
            .query_map([], |row| row.get(0))
            .context("reading unresolved call list numbers")?
            .collect::<Result<Vec<String>, _>>()
            .context("reading unresolved call list numbers")?;
        Ok(numbers)
    }

    /// Set the name of every call list entry with `number`, for all users;
    /// returns how many entries changed.
    pub fn set_call_list_name(&self, number: &str, name: &str) -> Result<usize, StoreError> {
        self.conn
            .execute(
                "UPDATE call_list SET name = ?2 WHERE number = ?1 AND name IS NOT ?2",
                params![number, name],
            )
            .context("updating call list names")
    }

    /// Add a contact to the address book (e.g. created automatically for a
    /// resolved number); a later directory load keeps it. Numbers are stored
    /// as given: normalise them first. Returns the contact's row id.
    pub fn add_contact(&self, contact: &Contact) -> Result<i64, StoreError> {
        let tx = self
            .conn
            .unchecked_transaction()
            .context("starting to add a contact")?;
        let id = insert_contact(&tx, contact, ORIGIN_ADDED)?;
        tx.commit().context("committing the contact")?;
        Ok(id)
    }

    /// The home country of the stored directory, if one was loaded.
    pub fn home_country(&self) -> Result<Option<String>, StoreError> {
        self.conn
            .query_row(
                "SELECT value FROM pbx_settings WHERE key = 'home_country'",
                [],
                |row| row.get(0),
            )
            .optional()
            .context("reading home_country")
    }

    /// The whole address book: directory contacts, then added ones.
    pub fn contacts(&self) -> Result<Vec<Contact>, StoreError> {
        read_contacts(&self.conn, None)
    }
}

/// The entries `stmt` (selecting the call list's columns in table order)
/// finds with `params`.
fn call_list_rows(
    stmt: &mut rusqlite::CachedStatement<'_>,
    params: impl rusqlite::Params,
) -> Result<Vec<CallListEntry>, StoreError> {
    let rows = stmt
        .query_map(params, |row| {
            Ok((
                row.get::<_, i64>(0)?,
                row.get::<_, String>(1)?,
                row.get::<_, String>(2)?,
                row.get::<_, String>(3)?,
                row.get::<_, String>(4)?,
                row.get::<_, Option<String>>(5)?,
                row.get::<_, String>(6)?,
            ))
        })
        .context("reading the call list")?;
    let mut entries = Vec::new();
    for row in rows {
        let (id, user_id, time, direction, number, name, call_id) =
            row.context("reading the call list")?;
        let direction = match direction.as_str() {
            "in" => CallDirection::In,
            "out" => CallDirection::Out,
            _ => {
                return Err(StoreError::Corrupt {
                    table: "call_list",
                    column: "direction",
                    value: direction,
                })
            }
        };
        entries.push(CallListEntry {
            id: Some(id),
            user_id,
            time,
            direction,
            number,
            name,
            call_id,
        });
    }
    Ok(entries)
}

fn write_directory(
    tx: &Transaction<'_>,
    dir: &Directory,
    sealer: &Sealer,
) -> Result<(), StoreError> {
    // Cascades clear numbers, members and state along with their owners.
    tx.execute_batch(
        "DELETE FROM group_members;
         DELETE FROM groups;
         DELETE FROM users;",
    )
    .context("clearing the directory")?;
    tx.execute("DELETE FROM contacts WHERE origin = ?1", [ORIGIN_DIRECTORY])
        .context("clearing directory contacts")?;
    tx.execute(
        "INSERT INTO pbx_settings (key, value) VALUES ('home_country', ?1)
         ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        [&dir.home_country],
    )
    .context("saving home_country")?;

    {
        let mut user_stmt = tx
            .prepare(
                "INSERT INTO users (id, position, name, first_name, last_name, mobile, sip_ha1)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            )
            .context("saving users")?;
        let mut number_stmt = tx
            .prepare("INSERT INTO user_numbers (user_id, position, number) VALUES (?1, ?2, ?3)")
            .context("saving user numbers")?;
        for (i, user) in dir.users.iter().enumerate() {
            user_stmt
                .execute(params![
                    user.id,
                    i as i64,
                    user.name,
                    user.first_name,
                    user.last_name,
                    user.mobile,
                    user.digest_ha1()
                        .map(|ha1| sealer.seal(ha1_place(&user.id), &ha1)),
                ])
                .context("saving users")?;
            for (j, number) in user.numbers.iter().enumerate() {
                number_stmt
                    .execute(params![user.id, j as i64, number])
                    .context("saving user numbers")?;
            }
        }
    }

    {
        let mut group_stmt = tx
            .prepare("INSERT INTO groups (id, position, name) VALUES (?1, ?2, ?3)")
            .context("saving groups")?;
        let mut number_stmt = tx
            .prepare("INSERT INTO group_numbers (group_id, position, number) VALUES (?1, ?2, ?3)")
            .context("saving group numbers")?;
        let mut member_stmt = tx
            .prepare(
                "INSERT INTO group_members (group_id, user_id, position, active)
                 VALUES (?1, ?2, ?3, ?4)",
            )
            .context("saving group members")?;
        for (i, group) in dir.groups.iter().enumerate() {
            group_stmt
                .execute(params![group.id, i as i64, group.name])
                .context("saving groups")?;
            for (j, number) in group.numbers.iter().enumerate() {
                number_stmt
                    .execute(params![group.id, j as i64, number])
                    .context("saving group numbers")?;
            }
            for (j, member) in group.members.iter().enumerate() {
                let active = !group.inactive.contains(member);
                member_stmt
                    .execute(params![group.id, member, j as i64, active])
                    .context("saving group members")?;
            }
        }
    }

    for contact in &dir.contacts {
        insert_contact(tx, contact, ORIGIN_DIRECTORY)?;
    }
    for (user_id, state) in &dir.state {
        insert_state(tx, user_id, state)?;
    }
    Ok(())
}

fn insert_state(conn: &Connection, user_id: &str, s: &UserState) -> Result<(), StoreError> {
    conn.execute(
        "INSERT OR REPLACE INTO user_state
            (user_id, dnd, forward_always, forward_busy, forward_no_answer,
             no_answer_seconds, call_waiting, busy, registered, ring_mobile)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
        params![
            user_id,
            s.dnd,
            s.forward_always,
            s.forward_busy,
            s.forward_no_answer,
            s.no_answer_seconds,
            s.call_waiting,
            s.busy,
            s.registered,
            s.ring_mobile
        ],
    )
    .context("saving user state")?;
    Ok(())
}

fn insert_contact(conn: &Connection, contact: &Contact, origin: &str) -> Result<i64, StoreError> {
    conn.execute(
        "INSERT INTO contacts (origin, first_name, last_name, company) VALUES (?1, ?2, ?3, ?4)",
        params![
            origin,
            contact.first_name,
            contact.last_name,
            contact.company
        ],
    )
    .context("saving a contact")?;
    let id = conn.last_insert_rowid();
    let mut stmt = conn
        .prepare_cached(
            "INSERT INTO contact_numbers (contact_id, position, number) VALUES (?1, ?2, ?3)",
        )
        .context("saving contact numbers")?;
    for (j, number) in contact.numbers.iter().enumerate() {
        stmt.execute(params![id, j as i64, number])
            .context("saving contact numbers")?;
    }
    Ok(id)
}

fn read_contacts(conn: &Connection, origin: Option<&str>) -> Result<Vec<Contact>, StoreError> {
    let mut numbers: BTreeMap<i64, Vec<String>> = BTreeMap::new();
    {
        let mut stmt = conn
            .prepare_cached(
                "SELECT contact_id, number FROM contact_numbers ORDER BY contact_id, position",
            )
            .context("reading contact numbers")?;
        let rows = stmt
            .query_map([], |row| Ok((row.get::<_, i64>(0)?, row.get(1)?)))
            .context("reading contact numbers")?;
        for row in rows {
            let (id, number) = row.context("reading contact numbers")?;
            numbers.entry(id).or_default().push(number);
        }
    }
    // Directory contacts first, each group in insertion order.
    let mut stmt = conn
        .prepare_cached(
            "SELECT id, first_name, last_name, company FROM contacts
             WHERE ?1 IS NULL OR origin = ?1
             ORDER BY origin = 'added', id",
        )
        .context("reading contacts")?;
    let rows = stmt
        .query_map([origin], |row| {
            Ok((
                row.get::<_, i64>(0)?,
                Contact {
                    first_name: row.get(1)?,
                    last_name: row.get(2)?,
                    company: row.get(3)?,
                    numbers: Vec::new(),
                },
            ))
        })
        .context("reading contacts")?;
    let mut contacts = Vec::new();
    for row in rows {
        let (id, mut contact) = row.context("reading contacts")?;
        contact.numbers = numbers.remove(&id).unwrap_or_default();
        contacts.push(contact);
    }
    Ok(contacts)
}

/// Numbers by owner id, in position order. `sql` selects `(owner, number)`
/// rows ordered by owner and position.
fn numbers_by_owner(
    conn: &Connection,
    sql: &'static str,
) -> Result<BTreeMap<String, Vec<String>>, StoreError> {
    let mut stmt = conn.prepare(sql).context("reading numbers")?;
    let rows = stmt
        .query_map([], |row| Ok((row.get::<_, String>(0)?, row.get(1)?)))
        .context("reading numbers")?;
    let mut map: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for row in rows {
        let (owner, number) = row.context("reading numbers")?;
        map.entry(owner).or_default().push(number);
    }
    Ok(map)
}

#[cfg(test)]
mod tests {
    use std::time::UNIX_EPOCH;

    use super::*;

    #[test]
    fn formats_rfc3339() {
        assert_eq!(rfc3339_utc(UNIX_EPOCH), "1970-01-01T00:00:00Z");
        let t = UNIX_EPOCH + Duration::from_secs(1_709_210_096); // leap day
        assert_eq!(rfc3339_utc(t), "2024-02-29T12:34:56Z");
        let t = UNIX_EPOCH + Duration::from_secs(951_782_400); // 2000-02-29
        assert_eq!(rfc3339_utc(t), "2000-02-29T00:00:00Z");
        assert!(is_rfc3339_utc(&rfc3339_utc(SystemTime::now())));
    }

    #[test]
    fn checks_rfc3339_shape() {
        assert!(is_rfc3339_utc("2024-05-01T12:00:00Z"));
        assert!(is_rfc3339_utc("2024-05-01T12:00:00.123Z"));
        assert!(!is_rfc3339_utc("2024-05-01T12:00:00+02:00"));
        assert!(!is_rfc3339_utc("2024-05-01 12:00:00Z"));
        assert!(!is_rfc3339_utc("2024-05-01T12:00:00.Z"));
        assert!(!is_rfc3339_utc("yesterday"));
    }

    #[test]
    fn migrate_refuses_a_newer_schema() {
        let conn = Connection::open_in_memory().unwrap();
        migrate(&conn, "x", &["CREATE TABLE a (x)", "CREATE TABLE b (x)"]).unwrap();
        let e = migrate(&conn, "x", &["CREATE TABLE a (x)"]).unwrap_err();
        assert!(
            matches!(
                e,
                StoreError::SchemaTooNew {
                    found: 2,
                    known: 1,
                    ..
                }
            ),
            "{e}"
        );
    }

    #[test]
    fn failed_migration_step_is_rolled_back() {
        let conn = Connection::open_in_memory().unwrap();
        let e = migrate(&conn, "x", &["CREATE TABLE a (x); CREATE TABLE a (y);"]).unwrap_err();
        assert!(e.to_string().starts_with("migration x v1 failed"), "{e}");
        assert_eq!(current_version(&conn, "x").unwrap(), 0);
        // Nothing of the failed step remains, so a fixed step applies cleanly.
        migrate(&conn, "x", &["CREATE TABLE a (x)"]).unwrap();
        assert_eq!(current_version(&conn, "x").unwrap(), 1);
    }
}
