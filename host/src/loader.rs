//! Loading module libraries.
//!
//! Libraries are never unloaded (abi_stable cannot do it soundly, and a
//! library that ran tokio must not be `dlclose`d). Each installed version
//! has its own file, so loading a new version never touches a loaded one.

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
};

use abi_stable::library::{lib_header_from_path, LibraryError};
use callhost_plugin_abi::{ModuleManifest, ModuleRootRef, ABI_VERSION, ABI_VERSION_SYMBOL};

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("cannot open module library {path}: {message}")]
    Open { path: PathBuf, message: String },
    #[error("{path} is not a callhost module: it has no `{ABI_VERSION_SYMBOL}` symbol")]
    NotAModule { path: PathBuf },
    #[error("module built for ABI version {module}, this host speaks ABI version {host}")]
    AbiVersion { module: u32, host: u32 },
    #[error("module library {path} does not match this host's ABI: {message}")]
    Layout { path: PathBuf, message: String },
}

/// A loaded module library. Dropping the last handle stops the module's
/// runtime (its code stays mapped until the process ends).
pub struct Library {
    pub path: PathBuf,
    pub root: ModuleRootRef,
    pub manifest: ModuleManifest,
}

impl Drop for Library {
    fn drop(&mut self) {
        (self.root.shutdown())();
    }
}

/// Loaded libraries by path, so every user of a path shares one handle.
#[derive(Default)]
pub struct Loader {
    loaded: Mutex<HashMap<PathBuf, std::sync::Weak<Library>>>,
}

impl Loader {
    pub fn load(&self, path: &Path) -> Result<Arc<Library>, LoadError> {
        let mut loaded = self.loaded.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(library) = loaded.get(path).and_then(std::sync::Weak::upgrade) {
            return Ok(library);
        }
        let library = Arc::new(load_library(path)?);
        loaded.insert(path.to_path_buf(), Arc::downgrade(&library));
        Ok(library)
    }
}

/// Checks our own ABI number first (one clear line), then abi_stable's
/// layout check, then asks the module for its manifest.
fn load_library(path: &Path) -> Result<Library, LoadError> {
    let open_error = |message: String| LoadError::Open {
        path: path.to_path_buf(),
        message,
    };
    // SAFETY: loading a library runs its initialisers; callhost only loads
    // libraries from packages whose checksums and signature were verified.
    let raw = unsafe { libloading::Library::new(path) }.map_err(|e| open_error(e.to_string()))?;
    let module_abi = {
        // SAFETY: the symbol is declared by the SDK as `extern "C" fn() -> u32`.
        let symbol = unsafe { raw.get::<extern "C" fn() -> u32>(ABI_VERSION_SYMBOL.as_bytes()) }
            .map_err(|_| LoadError::NotAModule {
                path: path.to_path_buf(),
            })?;
        symbol()
    };
    // Never unloaded: see the module docs.
    std::mem::forget(raw);
    if module_abi != ABI_VERSION {
        return Err(LoadError::AbiVersion {
            module: module_abi,
            host: ABI_VERSION,
        });
    }
    let header = lib_header_from_path(path).map_err(|e| layout_error(path, e))?;
    let root = header
        .init_root_module::<ModuleRootRef>()
        .map_err(|e| layout_error(path, e))?;
    let manifest = (root.manifest())();
    Ok(Library {
        path: path.to_path_buf(),
        root,
        manifest,
    })
}

/// abi_stable's layout errors run to thousands of lines; the `Error:` lines
/// say what differs.
fn layout_error(path: &Path, error: LibraryError) -> LoadError {
    let full = error.to_string();
    let mut lines: Vec<&str> = full
        .lines()
        .map(str::trim)
        .filter(|line| line.starts_with("Error:"))
        .take(5)
        .collect();
    if lines.is_empty() {
        lines = full.lines().take(3).collect();
    }
    LoadError::Layout {
        path: path.to_path_buf(),
        message: lines.join("; "),
    }
}
