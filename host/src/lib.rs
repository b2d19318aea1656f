//! The callhost host: module library, instances, hook dispatch and the
//! call simulator. The `callhost` binary is a thin CLI over this crate.

pub mod commands;
pub mod config;
pub mod db;
pub mod dispatch;
pub mod instance_log;
pub mod instances;
pub mod library;
pub mod loader;
pub mod paths;
pub mod simulate;

use anyhow::Result;

/// Everything one host process works with.
pub struct Host {
    pub data: paths::DataDir,
    pub db: db::Db,
    pub loader: loader::Loader,
    pub config: config::HostConfig,
}

impl Host {
    pub fn open(data: impl Into<std::path::PathBuf>) -> Result<Host> {
        let data = paths::DataDir::new(data);
        let db = db::Db::open(data.root())?;
        let config = config::HostConfig::load(&data.config_file())?;
        Ok(Host {
            data,
            db,
            loader: loader::Loader::default(),
            config,
        })
    }
}
