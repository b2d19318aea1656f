//! Writing `.cmod` packages.

use std::collections::BTreeMap;
use std::fs;
use std::io::{Cursor, Write};
use std::path::{Path, PathBuf};

use zip::write::SimpleFileOptions;
use zip::{CompressionMethod, DateTime, ZipWriter};

use crate::checksums::format_checksums;
use crate::paths::{check_no_file_dir_conflict, check_path};
use crate::signature::format_signature;
use crate::{Manifest, PackageError, SigningKey, CHECKSUMS_FILE, MANIFEST_FILE, SIGNATURE_FILE};

/// Assembles and writes a `.cmod` package.
///
/// The output is deterministic: entries are sorted, timestamps fixed at
/// 1980-01-01 and Ed25519 signatures are deterministic, so the same inputs and
/// key always give byte-identical packages.
#[derive(Debug, Clone)]
pub struct PackageBuilder {
    manifest: Manifest,
    library: Option<Vec<u8>>,
    // Kept as a list so duplicates can be reported at write time.
    assets: Vec<(String, Vec<u8>)>,
}

impl PackageBuilder {
    /// Starts a package for `manifest`.
    pub fn new(manifest: Manifest) -> Self {
        PackageBuilder {
            manifest,
            library: None,
            assets: Vec::new(),
        }
    }

    /// Sets the library bytes, stored at `manifest.library`.
    pub fn library(mut self, bytes: Vec<u8>) -> Self {
        self.library = Some(bytes);
        self
    }

    /// Adds a file at `path` inside the zip. The path is validated by [`Self::write`]
    /// (relative, `/`-separated, no `..`, no reserved or duplicate names).
    pub fn asset(mut self, path: &str, bytes: Vec<u8>) -> Self {
        self.assets.push((path.to_owned(), bytes));
        self
    }

    /// Writes the .cmod; signs when key is Some.
    ///
    /// The file is written to a temporary sibling and renamed into place, so
    /// `out` never holds a half-written package.
    pub fn write(self, out: &Path, key: Option<&SigningKey>) -> Result<(), PackageError> {
        let bytes = self.to_bytes(key)?;
        let tmp = temp_sibling(out);
        let result = fs::File::create(&tmp)
            .and_then(|mut f| f.write_all(&bytes).and_then(|()| f.sync_all()))
            .map_err(|e| PackageError::io("write", &tmp, e))
            .and_then(|()| fs::rename(&tmp, out).map_err(|e| PackageError::io("create", out, e)));
        if result.is_err() {
            // Best effort: the original error is the one worth reporting.
            let _ = fs::remove_file(&tmp);
        }
        result
    }

    /// Builds the package in memory; [`Self::write`] without the file.
    pub fn to_bytes(self, key: Option<&SigningKey>) -> Result<Vec<u8>, PackageError> {
        let files = self.into_files()?;
        let sums = format_checksums(&files);

        let mut zip = ZipWriter::new(Cursor::new(Vec::new()));
        for (name, bytes) in &files {
            add_entry(&mut zip, name, bytes)?;
        }
        add_entry(&mut zip, CHECKSUMS_FILE, sums.as_bytes())?;
        if let Some(key) = key {
            let signature = format_signature(key, sums.as_bytes());
            add_entry(&mut zip, SIGNATURE_FILE, signature.as_bytes())?;
        }
        let cursor = zip.finish().map_err(zip_write_err)?;
        Ok(cursor.into_inner())
    }

    /// Validates everything and returns the checksummed files by path.
    fn into_files(self) -> Result<BTreeMap<String, Vec<u8>>, PackageError> {
        self.manifest.validate()?;
        let library = self.library.ok_or_else(|| PackageError::NoLibrary {
            path: self.manifest.library.clone(),
        })?;
        let mut files = BTreeMap::new();
        files.insert(
            MANIFEST_FILE.to_owned(),
            self.manifest.to_toml().into_bytes(),
        );
        files.insert(self.manifest.library.clone(), library);
        for (path, bytes) in self.assets {
            check_path(&path)?;
            let reserved = [MANIFEST_FILE, CHECKSUMS_FILE, SIGNATURE_FILE];
            if let Some(name) = reserved.iter().find(|r| **r == path) {
                return Err(PackageError::PathConflict {
                    path,
                    other: (*name).to_owned(),
                    reason: "reserved for the package format",
                });
            }
            if path == self.manifest.library {
                return Err(PackageError::PathConflict {
                    other: path.clone(),
                    path,
                    reason: "that is where the library goes",
                });
            }
            if files.contains_key(&path) {
                return Err(PackageError::PathConflict {
                    other: path.clone(),
                    path,
                    reason: "asset added twice",
                });
            }
            files.insert(path, bytes);
        }
        check_no_file_dir_conflict(files.keys().map(String::as_str))?;
        Ok(files)
    }
}

fn add_entry(
    zip: &mut ZipWriter<Cursor<Vec<u8>>>,
    name: &str,
    bytes: &[u8],
) -> Result<(), PackageError> {
    let options = SimpleFileOptions::default()
        .compression_method(CompressionMethod::Deflated)
        .last_modified_time(DateTime::default())
        .unix_permissions(0o644);
    zip.start_file(name, options).map_err(zip_write_err)?;
    zip.write_all(bytes)
        .map_err(|e| zip_write_err(zip::result::ZipError::Io(e)))
}

fn zip_write_err(source: zip::result::ZipError) -> PackageError {
    PackageError::ZipWrite { source }
}

fn temp_sibling(out: &Path) -> PathBuf {
    let mut name = out.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".tmp-{}", std::process::id()));
    out.with_file_name(name)
}
