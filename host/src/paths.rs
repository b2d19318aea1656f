//! The layout of the data directory.

use std::path::{Path, PathBuf};

#[derive(Debug, Clone)]
pub struct DataDir {
    root: PathBuf,
}

impl DataDir {
    pub fn new(root: impl Into<PathBuf>) -> DataDir {
        DataDir { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// A path stored relative to the data directory, made usable; stored
    /// paths stay valid when the directory is named differently or moved.
    pub fn resolve(&self, stored: &str) -> PathBuf {
        self.root.join(stored)
    }

    /// `path` below the data directory as stored (relative).
    pub fn to_stored(&self, path: &Path) -> String {
        path.strip_prefix(&self.root)
            .unwrap_or(path)
            .display()
            .to_string()
    }

    /// Public keys whose signatures the host accepts.
    pub fn trusted_keys(&self) -> PathBuf {
        self.root.join("trusted-keys")
    }

    /// `modules/<id>/`: one subdirectory per installed version, plus `shared/`.
    pub fn module_dir(&self, id: &str) -> PathBuf {
        self.root.join("modules").join(id)
    }

    /// State all instances of a module share.
    pub fn module_shared_dir(&self, id: &str) -> PathBuf {
        self.module_dir(id).join("shared")
    }

    pub fn instance_dir(&self, name: &str) -> PathBuf {
        self.root.join("instances").join(name)
    }

    /// Where a deleted instance's files are kept.
    pub fn deleted_instance_dir(&self, name: &str) -> PathBuf {
        let stamp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        self.root
            .join("instances")
            .join(".deleted")
            .join(format!("{name}-{stamp}"))
    }

    /// An instance's own assets (prompts an administrator uploaded),
    /// named `instance/<file>` by its module.
    pub fn instance_assets(&self, name: &str) -> PathBuf {
        self.instance_dir(name).join("assets")
    }

    pub fn instance_log(&self, name: &str) -> PathBuf {
        self.instance_dir(name).join("instance.log")
    }

    /// The host database (directory, call lists, address book, modules).
    pub fn database(&self) -> PathBuf {
        self.root.join("callhost.db")
    }

    /// The installation's id (see `instances::installation_id`).
    pub fn installation_id_file(&self) -> PathBuf {
        self.root.join("installation-id")
    }

    pub fn config_file(&self) -> PathBuf {
        self.root.join("callhost.toml")
    }
}
