//! The callhost host: module library, instances, hook dispatch, the call
//! simulator, the web UI and the HTTP API. The `callhost` binary is a thin CLI
//! over this crate.

pub mod commands;
pub mod config;
pub mod db;
pub mod dispatch;
pub mod http;
pub mod instance_log;
pub mod instances;
pub mod library;
pub mod live;
pub mod loader;
pub mod paths;
pub mod serve;
pub mod simulate;
pub mod writer;

use std::sync::Arc;

use anyhow::Result;
use callhost_pbx::{
    directory::{Directory, DirectoryIndex},
    engine::{Engine, EngineConfig},
};

/// Everything one host process works with.
pub struct Host {
    pub data: paths::DataDir,
    pub db: db::Db,
    /// Shared by every `Host` of a process that loads libraries: one handle
    /// per library path (see `loader`).
    pub loader: Arc<loader::Loader>,
    pub config: config::HostConfig,
}

impl Host {
    pub fn open(data: impl Into<std::path::PathBuf>) -> Result<Host> {
        Host::open_with_loader(data, Arc::default())
    }

    /// Opens the data directory with a loader already in use (the API
    /// server opens the database per request).
    pub fn open_with_loader(
        data: impl Into<std::path::PathBuf>,
        loader: Arc<loader::Loader>,
    ) -> Result<Host> {
        let data = paths::DataDir::new(data);
        let db = db::Db::open(data.root())?;
        let config = config::HostConfig::load(&data.config_file())?;
        Ok(Host {
            data,
            db,
            loader,
            config,
        })
    }

    /// The engine on the stored directory with this host's call settings,
    /// in a slot for host services; empty when no directory was loaded.
    pub fn stored_engine(&self) -> Result<instances::EngineSlot> {
        let slot = instances::EngineSlot::default();
        if let Some(directory) = self.stored_directory()? {
            slot.store(Some(engine_on(directory, self.config.engine())?));
        }
        Ok(slot)
    }

    /// The stored directory as calls see it: its address book includes the
    /// contacts added since it was loaded (e.g. by a module, RL12).
    pub fn stored_directory(&self) -> Result<Option<Directory>> {
        let Some(mut directory) = self.db.store.load_directory()? else {
            return Ok(None);
        };
        directory.contacts = self.db.store.contacts()?;
        Ok(Some(directory))
    }
}

/// An error and its causes, `: `-separated like anyhow's `{:#}`, for
/// typed errors that end up in one string (messages do not repeat their
/// source; the chain says it once).
pub fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// A call engine on `directory`.
pub fn engine_on(directory: Directory, config: EngineConfig) -> Result<Arc<Engine>> {
    let index = DirectoryIndex::new(directory)?;
    Ok(Arc::new(Engine::new(Arc::new(index), config)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_engine_answers_from_the_stored_directory() {
        let dir = tempfile::tempdir().unwrap();
        let mut host = Host::open(dir.path()).unwrap();
        assert!(host.stored_engine().unwrap().load().is_none());
        let office = include_str!("../../examples/office.toml");
        host.db
            .store
            .save_directory(&Directory::from_toml_str(office).unwrap())
            .unwrap();
        let slot = host.stored_engine().unwrap();
        let engine = slot.load_full().expect("an engine on the stored directory");
        assert_eq!(engine.directory().directory().home_country, "DE");
        // The address book answers for outside numbers (national form too).
        let customer = engine.party("089 1234567");
        let name = customer.name.as_ref().map(|n| n.to_string()).into_option();
        assert!(
            name.as_deref().is_some_and(|n| n.contains("Kunde")),
            "{name:?}"
        );
    }
}
