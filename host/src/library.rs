//! The module library: installing, listing and removing module packages.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _, Result};
use callhost_package::{load_trusted_keys, open_verified, PublicKey, VerifyOptions};
use callhost_plugin_abi::ABI_VERSION;
use sha2::{Digest, Sha256};

use crate::{
    db::{now, Db, ModuleRow},
    instances::Instances,
    loader::Loader,
    paths::DataDir,
};

/// The host's version, checked against each module's requirement.
pub fn host_version() -> semver::Version {
    semver::Version::parse(env!("CARGO_PKG_VERSION")).expect("crate version is semver")
}

pub struct Installed {
    pub module: ModuleRow,
    pub replaced: Option<String>,
    /// Instances whose configuration the new version refused (kept, marked faulted).
    pub refused: Vec<String>,
    pub instances: usize,
}

/// Verifies, stores and registers a package. An installed module of the same
/// id is replaced whatever its version; its instances keep their
/// configuration and move to the new library.
pub fn install(
    data: &DataDir,
    db: &Db,
    loader: &Loader,
    package: &Path,
    allow_unsigned: bool,
) -> Result<Installed> {
    // Its errors name the file or directory.
    let trusted = load_trusted_keys(&data.trusted_keys()).context("reading trusted keys")?;
    let host_version = host_version();
    let verified = open_verified(
        package,
        &VerifyOptions {
            trusted: &trusted,
            allow_unsigned,
            host_abi: ABI_VERSION,
            host_version: &host_version,
        },
    )
    .map_err(|error| {
        // Said once: most refusals do not name the file, these do.
        if error.names_package() {
            anyhow::Error::new(error)
        } else {
            anyhow::Error::new(error).context(format!("refusing {}", package.display()))
        }
    })?;
    let manifest = &verified.manifest;
    let file_name = Path::new(&manifest.library)
        .file_name()
        .context("module.toml: field `library` has no file name")?
        .to_owned();
    // What the version directory holds: the library under its plain name,
    // assets and verify.sh as packaged.
    let mut files: Vec<(PathBuf, &[u8])> =
        vec![(PathBuf::from(&file_name), verified.library_bytes())];
    for (name, bytes) in &verified.files {
        if name.starts_with("assets/") || name == "verify.sh" {
            files.push((PathBuf::from(name), bytes.as_slice()));
        }
    }
    let version_dir = store_version(
        &data.module_dir(&manifest.id),
        &manifest.version.to_string(),
        &files,
    )?;
    let library_path = version_dir.join(&file_name);
    let library_sha256 = verified.library_sha256().to_string();

    // Loaded like every later load: only with the checksum SHA256SUMS lists.
    let library = crate::instances::ModuleLibrary {
        library: loader.load(&library_path, &library_sha256)?,
        stored_path: data.to_stored(&library_path),
    };
    let found = &library.library.manifest;
    if found.id.as_str() != manifest.id || found.version.as_str() != manifest.version.to_string() {
        bail!(
            "the library says it is {} {}, module.toml says {} {}",
            found.id,
            found.version,
            manifest.id,
            manifest.version
        );
    }

    let previous = db.module(&manifest.id)?;
    let row = ModuleRow {
        id: manifest.id.clone(),
        name: manifest.name.clone(),
        version: manifest.version.to_string(),
        abi_version: manifest.abi_version,
        description: manifest.description.clone(),
        library_path: data.to_stored(&library_path),
        signed_by: verified.signed_by.clone(),
        installed_at: now(),
        library_sha256: Some(library_sha256),
    };

    // Check every existing configuration against the new version before
    // switching; a refusal keeps the configuration and marks the instance.
    let instances = Instances::new(data, db, loader);
    let mine: Vec<_> = db
        .instances()?
        .into_iter()
        .filter(|row| row.module_id == manifest.id)
        .collect();
    // A configuration that does not open stays faulted as it is.
    let refused: Vec<(String, String, bool)> = mine
        .iter()
        .filter(|instance| instance.config_error.is_none())
        .filter_map(|instance| {
            instances
                .check_config_with(&library, instance, &instance.config)
                .err()
                .map(|error| {
                    // A configuration refusal names the instance already.
                    let named = matches!(
                        error.downcast_ref::<crate::instances::Refusal>(),
                        Some(crate::instances::Refusal::Config { .. })
                    );
                    (instance.name.clone(), format!("{error:#}"), named)
                })
        })
        .collect();
    db.upsert_module(&row)?;
    for (name, why, _) in &refused {
        db.set_fault(
            name,
            &format!("configuration refused by {} {}: {why}", row.id, row.version),
        )?;
    }
    Ok(Installed {
        module: row,
        replaced: previous.map(|p| p.version),
        refused: refused
            .into_iter()
            .map(|(name, why, named)| if named { why } else { format!("{name}: {why}") })
            .collect(),
        instances: mine.len(),
    })
}

/// Stores one version's files in a directory named by their content, so a
/// loaded library is never overwritten: the files go to a private temporary
/// directory first (synced), which is then renamed into place. A directory
/// that exists already is used only if it holds exactly these files (a
/// crash or a disk error may have left it short); otherwise a new name is
/// taken.
fn store_version(module_dir: &Path, version: &str, files: &[(PathBuf, &[u8])]) -> Result<PathBuf> {
    let digest = content_digest(files);
    std::fs::create_dir_all(module_dir)
        .with_context(|| format!("creating {}", module_dir.display()))?;
    for attempt in 0..100 {
        let name = match attempt {
            0 => format!("{version}-{}", &digest[..12]),
            n => format!("{version}-{}-{n}", &digest[..12]),
        };
        let target = module_dir.join(name);
        if target.exists() {
            if holds_exactly(&target, files) {
                return Ok(target);
            }
            continue;
        }
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let staging = module_dir.join(format!(".partial-{}-{nanos}", std::process::id()));
        for (name, bytes) in files {
            let path = staging.join(name);
            std::fs::create_dir_all(path.parent().expect("below staging"))?;
            let mut file = std::fs::File::create(&path)
                .with_context(|| format!("writing {}", path.display()))?;
            std::io::Write::write_all(&mut file, bytes)?;
            file.sync_all()?;
        }
        match std::fs::rename(&staging, &target) {
            Ok(()) => return Ok(target),
            // Another install got there first: use it if it is the same.
            Err(_) if target.exists() => {
                let _ = std::fs::remove_dir_all(&staging);
                if holds_exactly(&target, files) {
                    return Ok(target);
                }
            }
            Err(error) => {
                let _ = std::fs::remove_dir_all(&staging);
                return Err(error).with_context(|| format!("storing {}", target.display()));
            }
        }
    }
    bail!(
        "cannot find a free directory for version {version} in {}",
        module_dir.display()
    )
}

/// The hash a version directory is named by (its first 12 hex): over
/// every file's name and SHA-256, in name order.
fn content_digest(files: &[(PathBuf, &[u8])]) -> String {
    let mut digest = Sha256::new();
    let mut sorted: Vec<_> = files.iter().collect();
    sorted.sort_by(|a, b| a.0.cmp(&b.0));
    for (name, bytes) in &sorted {
        digest.update(name.to_string_lossy().as_bytes());
        digest.update([0]);
        digest.update(Sha256::digest(bytes));
    }
    hex::encode(digest.finalize())
}

/// Modules installed before callhost recorded library checksums (host
/// schema 2) get theirs once, when the database is upgraded: only if their
/// version directory still holds exactly the files its name was derived
/// from at install. Otherwise the checksum stays unknown and the module is
/// refused, naming the file, until its package is installed again.
pub fn record_legacy_checksums(data: &DataDir, db: &Db) -> Result<()> {
    for module in db.modules()? {
        if module.library_sha256.is_some() {
            continue;
        }
        let library = data.resolve(&module.library_path);
        match legacy_checksum(&library, &module.version) {
            Ok(sha256) => db.set_library_sha256(&module.id, &sha256)?,
            Err(why) => tracing::warn!(
                module = %module.id,
                "{}: {why:#}; the module will not load until its package is installed again",
                library.display()
            ),
        }
    }
    Ok(())
}

/// The library's SHA-256 if its version directory matches its name.
fn legacy_checksum(library: &Path, version: &str) -> Result<String> {
    let dir = library.parent().context("the library has no directory")?;
    let name = dir
        .file_name()
        .and_then(|name| name.to_str())
        .context("the version directory has no name")?;
    // `<version>-<12 hex>` or `<version>-<12 hex>-<n>` (see store_version).
    let named = name
        .strip_prefix(version)
        .and_then(|rest| rest.strip_prefix('-'))
        .and_then(|rest| {
            rest.get(..12)
                .filter(|_| rest.len() == 12 || rest[12..].starts_with('-'))
        })
        .context("the version directory's name carries no content hash")?;
    let mut files = Vec::new();
    collect_files(dir, Path::new(""), &mut files)?;
    let borrowed: Vec<(PathBuf, &[u8])> = files
        .iter()
        .map(|(name, bytes)| (name.clone(), bytes.as_slice()))
        .collect();
    if !content_digest(&borrowed).starts_with(named) {
        bail!(
            "the files in {} are not the ones installed there (their hash is not {named})",
            dir.display()
        );
    }
    Ok(crate::loader::file_sha256(library)?)
}

/// Every file below `dir`, by its path relative to the version directory.
fn collect_files(dir: &Path, relative: &Path, files: &mut Vec<(PathBuf, Vec<u8>)>) -> Result<()> {
    for entry in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let entry = entry?;
        let path = entry.path();
        let name = relative.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            collect_files(&path, &name, files)?;
        } else {
            let bytes =
                std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
            files.push((name, bytes));
        }
    }
    Ok(())
}

fn holds_exactly(dir: &Path, files: &[(PathBuf, &[u8])]) -> bool {
    files
        .iter()
        .all(|(name, bytes)| std::fs::read(dir.join(name)).is_ok_and(|found| found == *bytes))
}

/// Checks a module can be removed; returns the instances that go with it.
/// Refused while instances use it, unless they go too.
pub fn removable(db: &Db, id: &str, with_instances: bool) -> Result<Vec<String>> {
    if db.module(id)?.is_none() {
        return Err(crate::instances::Refusal::NotInstalled {
            module: id.to_string(),
        }
        .into());
    }
    let users: Vec<String> = db
        .instances()?
        .into_iter()
        .filter(|row| row.module_id == id)
        .map(|row| row.name)
        .collect();
    if !users.is_empty() && !with_instances {
        return Err(crate::db::Conflict(format!(
            "module `{id}` still has instances ({}); export them first, then remove with --with-instances",
            users.join(", ")
        ))
        .into());
    }
    Ok(users)
}

/// Copies a public key into the trusted keys, named by its key id.
pub fn trust(data: &DataDir, key_file: &Path) -> Result<PathBuf> {
    let text = std::fs::read_to_string(key_file)
        .with_context(|| format!("reading {}", key_file.display()))?;
    let key = PublicKey::from_file_text(&text)
        .with_context(|| format!("{} is not a callhost public key", key_file.display()))?;
    let dir = data.trusted_keys();
    std::fs::create_dir_all(&dir)?;
    let target = dir.join(format!("{}.pub", key.key_id()));
    std::fs::write(&target, key.to_file_text())?;
    Ok(target)
}
