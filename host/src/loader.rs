//! Loading module libraries.
//!
//! A library is loaded only if its file's SHA-256 is the one recorded when
//! it was installed (from the package's signed `SHA256SUMS`): a file changed
//! on disk afterwards is refused before `dlopen` runs any of its code. The
//! file is read and hashed, then opened by the same path; someone who can
//! swap the file in between can also rewrite the checksum in `callhost.db`,
//! which this check does not defend against.
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
    #[error(
        "refusing to load {path}: its SHA-256 is {found}, the installed package's is {expected}: \
         the file was changed after installation; install the package again"
    )]
    Checksum {
        path: PathBuf,
        expected: String,
        found: String,
    },
}

/// A loaded module library. Dropping the last handle stops the module's
/// runtime (its code stays mapped until the process ends).
pub struct Library {
    pub path: PathBuf,
    /// The SHA-256 (hex) the file had when it was loaded.
    pub sha256: String,
    pub root: ModuleRootRef,
    pub manifest: ModuleManifest,
    /// The instance configuration's JSON Schema (text), as the module
    /// describes it; `{}` from a module that describes none.
    pub config_schema: String,
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
    /// The library at `path`, loaded if its SHA-256 is `sha256` (hex).
    pub fn load(&self, path: &Path, sha256: &str) -> Result<Arc<Library>, LoadError> {
        let mut loaded = self.loaded.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(library) = loaded.get(path).and_then(std::sync::Weak::upgrade) {
            if !library.sha256.eq_ignore_ascii_case(sha256) {
                return Err(LoadError::Checksum {
                    path: path.to_path_buf(),
                    expected: sha256.to_string(),
                    found: library.sha256.clone(),
                });
            }
            return Ok(library);
        }
        let found = file_sha256(path)?;
        if !found.eq_ignore_ascii_case(sha256) {
            return Err(LoadError::Checksum {
                path: path.to_path_buf(),
                expected: sha256.to_string(),
                found,
            });
        }
        let library = Arc::new(load_library(path, found)?);
        loaded.insert(path.to_path_buf(), Arc::downgrade(&library));
        Ok(library)
    }
}

/// The SHA-256 (lowercase hex) of the file at `path`.
pub fn file_sha256(path: &Path) -> Result<String, LoadError> {
    use sha2::Digest as _;
    let mut file = std::fs::File::open(path).map_err(|e| LoadError::Open {
        path: path.to_path_buf(),
        message: e.to_string(),
    })?;
    let mut digest = sha2::Sha256::new();
    std::io::copy(&mut file, &mut digest).map_err(|e| LoadError::Open {
        path: path.to_path_buf(),
        message: e.to_string(),
    })?;
    Ok(hex::encode(digest.finalize()))
}

/// Checks our own ABI number first (one clear line), then abi_stable's
/// layout check, then asks the module for its manifest.
fn load_library(path: &Path, sha256: String) -> Result<Library, LoadError> {
    let open_error = |message: String| LoadError::Open {
        path: path.to_path_buf(),
        message,
    };
    // SAFETY: loading a library runs its initialisers; callhost only loads
    // libraries from packages whose checksums and signature were verified,
    // and only while the file still has the verified checksum (above).
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
    let config_schema = match root.config_schema() {
        Some(schema) => schema().into_string(),
        None => "{}".to_string(),
    };
    Ok(Library {
        path: path.to_path_buf(),
        sha256,
        root,
        manifest,
        config_schema,
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
