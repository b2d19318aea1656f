//! What each CLI command does, separate from argument parsing.

use std::path::Path;

use anyhow::{anyhow, bail, Context as _, Result};
use callhost_pbx::directory::Directory;
use serde::{Deserialize, Serialize};

use crate::{
    config::parse_toml,
    db::{Conflict, InstanceRow, Invalid},
    instance_log,
    instances::{run_action, EngineSlot, Instances, LiveInstance, Refusal},
    library, Host,
};

pub fn module_install(host: &Host, file: &Path, allow_unsigned: bool) -> Result<String> {
    let installed = library::install(&host.data, &host.db, &host.loader, file, allow_unsigned)?;
    let module = &installed.module;
    let mut text = match &installed.replaced {
        Some(old) => format!("replaced {} {old} with {}", module.id, module.version),
        None => format!("installed {} {}", module.id, module.version),
    };
    text.push_str(&format!(
        " ({}; {} instance(s) kept)",
        module
            .signed_by
            .as_deref()
            .map(|key| format!("signed by key {key}"))
            .unwrap_or_else(|| "UNSIGNED".into()),
        installed.instances
    ));
    for refused in &installed.refused {
        text.push_str(&format!("\nwarning: configuration kept but refused by the new version, instance marked faulted: {refused}"));
    }
    Ok(text)
}

#[derive(Serialize)]
struct ModuleListing {
    id: String,
    name: String,
    version: String,
    abi_version: u32,
    signed_by: Option<String>,
    instances: usize,
    installed_at: String,
    description: String,
}

pub fn module_list(host: &Host, json: bool) -> Result<String> {
    let instances = host.db.instances()?;
    let listing: Vec<ModuleListing> = host
        .db
        .modules()?
        .into_iter()
        .map(|m| ModuleListing {
            instances: instances.iter().filter(|i| i.module_id == m.id).count(),
            id: m.id,
            name: m.name,
            version: m.version,
            abi_version: m.abi_version,
            signed_by: m.signed_by,
            installed_at: m.installed_at,
            description: m.description,
        })
        .collect();
    if json {
        return Ok(serde_json::to_string_pretty(&listing)?);
    }
    let mut text = format!(
        "{:<20} {:<10} {:<4} {:<9} {}\n",
        "ID", "VERSION", "ABI", "INSTANCES", "NAME"
    );
    for m in &listing {
        text.push_str(&format!(
            "{:<20} {:<10} {:<4} {:<9} {}\n",
            m.id, m.version, m.abi_version, m.instances, m.name
        ));
    }
    Ok(text.trim_end().to_string())
}

fn read_config_file(file: &Path) -> Result<String> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    check_toml(&text, &file.display().to_string())?;
    Ok(text)
}

/// Syntax errors are reported with where the text came from, before the
/// module sees it.
fn check_toml(text: &str, source: &str) -> Result<()> {
    text.parse::<toml::Table>().map_err(|e| Refusal::Syntax {
        origin: source.to_string(),
        message: e.message().to_string(),
    })?;
    Ok(())
}

pub fn instance_create(
    host: &Host,
    module: &str,
    name: &str,
    config: Option<&Path>,
    description: Option<&str>,
    inactive: bool,
) -> Result<String> {
    let text = config.map(read_config_file).transpose()?;
    instance_create_text(
        host,
        module,
        name,
        text.as_deref().unwrap_or_default(),
        description,
        inactive,
    )
    .map_err(|error| match config {
        Some(file) => Refusal::in_file(error, file, ""),
        None => error,
    })
}

/// Creates an instance with `config` (TOML text, empty for defaults).
pub fn instance_create_text(
    host: &Host,
    module: &str,
    name: &str,
    config: &str,
    description: Option<&str>,
    inactive: bool,
) -> Result<String> {
    check_instance_name(name)?;
    check_description(description.unwrap_or_default())?;
    check_toml(config, "configuration")?;
    let config = config.to_string();
    let row = InstanceRow {
        name: name.into(),
        module_id: module.into(),
        description: description.unwrap_or_default().into(),
        config,
        position: 0,
        active: !inactive,
        log_level: "INFO".into(),
        fault: None,
        updated_at: String::new(),
        config_error: None,
    };
    Instances::new(&host.data, &host.db, &host.loader).check_config(&row, &row.config)?;
    host.db.insert_instance(&row)?;
    Ok(format!(
        "created instance {name} of {module} ({})",
        if inactive { "inactive" } else { "active" }
    ))
}

/// Longest description an instance may have (it shows in every listing).
const MAX_DESCRIPTION_CHARS: usize = 500;

fn check_description(description: &str) -> Result<()> {
    if description.chars().count() > MAX_DESCRIPTION_CHARS {
        return Err(Invalid(format!(
            "description: {} characters, at most {MAX_DESCRIPTION_CHARS}",
            description.chars().count()
        ))
        .into());
    }
    if description.chars().any(char::is_control) {
        return Err(
            Invalid("description: no control characters (line breaks, tabs, NUL)".into()).into(),
        );
    }
    Ok(())
}

/// Sets an instance's description.
pub fn instance_describe(host: &Host, name: &str, description: &str) -> Result<String> {
    check_description(description)?;
    host.db.instance(name)?;
    host.db.set_description(name, description)?;
    Ok(format!("described {name}"))
}

fn check_instance_name(name: &str) -> Result<()> {
    check_name("instance", name)
}

fn check_name(what: &str, name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && !name.starts_with('.');
    if !ok {
        return Err(Invalid(format!(
            "{what} name `{name}` must be 1-64 characters of letters, digits, '-', '_' or '.'"
        ))
        .into());
    }
    Ok(())
}

pub fn instance_configure(host: &Host, name: &str, file: &Path) -> Result<String> {
    let config = read_config_file(file)?;
    instance_configure_text(host, name, &config).map_err(|error| Refusal::in_file(error, file, ""))
}

/// Replaces an instance's configuration with `config` (TOML text) once
/// the module accepted it.
pub fn instance_configure_text(host: &Host, name: &str, config: &str) -> Result<String> {
    let row = host.db.instance(name)?;
    check_toml(config, "configuration")?;
    Instances::new(&host.data, &host.db, &host.loader).check_config(&row, config)?;
    host.db.set_config(name, config)?;
    Ok(format!("configured {name}"))
}

/// Deletes an instance: the row goes, the module's `uninstall` hook runs,
/// and the instance's directory is kept aside (renamed, never deleted) so a
/// new instance of the same name starts fresh without anything being lost.
pub fn instance_delete(host: &Host, name: &str) -> Result<String> {
    let row = host.db.instance(name)?;
    // A module that cannot load any more must not keep the instance alive.
    let live =
        Instances::new(&host.data, &host.db, &host.loader).live(&row, &EngineSlot::default());
    // The row goes first: if that fails, the module has not cleaned up yet.
    host.db.delete_instance(name)?;
    if let Ok(live) = live {
        let _ = live.instance.uninstall();
    }
    let dir = host.data.instance_dir(name);
    if dir.exists() {
        let kept = host.data.deleted_instance_dir(name);
        std::fs::create_dir_all(kept.parent().expect("has a parent"))?;
        std::fs::rename(&dir, &kept).with_context(|| format!("moving {} aside", dir.display()))?;
        return Ok(format!(
            "deleted {name} (its files are kept in {})",
            kept.display()
        ));
    }
    Ok(format!("deleted {name}"))
}

pub fn module_remove(host: &Host, id: &str, with_instances: bool) -> Result<String> {
    for name in library::removable(&host.db, id, with_instances)? {
        instance_delete(host, &name)?;
    }
    host.db.remove_module(id)?;
    Ok(format!("removed {id}"))
}

#[derive(Serialize)]
struct InstanceListing<'a> {
    position: u32,
    name: &'a str,
    module: &'a str,
    module_version: Option<String>,
    status: &'static str,
    log_level: &'a str,
    description: &'a str,
    fault: Option<&'a str>,
}

pub fn instance_list(host: &Host, json: bool) -> Result<String> {
    let rows = host.db.instances()?;
    let modules = host.db.modules()?;
    let listing: Vec<InstanceListing> = rows
        .iter()
        .map(|row| InstanceListing {
            position: row.position,
            name: &row.name,
            module: &row.module_id,
            module_version: modules
                .iter()
                .find(|m| m.id == row.module_id)
                .map(|m| m.version.clone()),
            status: row.status(),
            log_level: &row.log_level,
            description: &row.description,
            fault: row.fault.as_deref(),
        })
        .collect();
    if json {
        return Ok(serde_json::to_string_pretty(&listing)?);
    }
    let mut text = format!(
        "{:<3} {:<20} {:<20} {:<9} {:<6} {}\n",
        "#", "NAME", "MODULE", "STATUS", "LEVEL", "DESCRIPTION"
    );
    for i in &listing {
        text.push_str(&format!(
            "{:<3} {:<20} {:<20} {:<9} {:<6} {}{}\n",
            i.position,
            i.name,
            i.module,
            i.status,
            i.log_level,
            i.description,
            i.fault
                .map(|f| format!(" [fault: {f}]"))
                .unwrap_or_default()
        ));
    }
    Ok(text.trim_end().to_string())
}

pub fn instance_show(host: &Host, name: &str) -> Result<String> {
    let row = host.db.instance(name)?;
    let live =
        Instances::new(&host.data, &host.db, &host.loader).live(&row, &EngineSlot::default())?;
    Ok(live.instance.effective_config().into_string())
}

/// Largest asset taken: a prompt of several minutes as WAV.
const MAX_ASSET_BYTES: u64 = 50 * 1024 * 1024;

/// The asset's file name, checked: a plain name, no path.
pub fn asset_name(asset: &str) -> Result<&str> {
    if !callhost_plugin_abi::is_asset_file_name(asset) {
        return Err(Invalid(format!(
            "asset name {asset:?}: letters, digits, '.', '-' and '_' only, not starting with '.'"
        ))
        .into());
    }
    Ok(asset)
}

pub fn instance_asset_add(host: &Host, name: &str, file: &Path) -> Result<String> {
    host.db.instance(name)?;
    let file_name = file
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .ok_or_else(|| anyhow!("{}: not a file", file.display()))?;
    let asset = asset_name(&file_name)?;
    let size = std::fs::metadata(file)
        .with_context(|| format!("{}", file.display()))?
        .len();
    if size > MAX_ASSET_BYTES {
        return Err(Invalid(format!(
            "{}: {size} bytes, more than the {MAX_ASSET_BYTES} an asset may have",
            file.display()
        ))
        .into());
    }
    // A prompt that does not decode is refused now, not at the first call.
    let prompt = callhost_media::prompt::Prompt::load(file).map_err(|e| {
        Invalid(format!(
            "{}: not a playable sound file: {e}",
            file.display()
        ))
    })?;
    let dir = host.data.instance_assets(name);
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let staging = dir.join(format!(".{asset}.partial"));
    std::fs::copy(file, &staging).with_context(|| format!("copying {}", file.display()))?;
    std::fs::rename(&staging, dir.join(asset))
        .with_context(|| format!("storing {asset} in {}", dir.display()))?;
    Ok(format!(
        "added instance/{asset} to {name} ({:.1} s)",
        prompt.duration().as_secs_f64()
    ))
}

pub fn instance_asset_list(host: &Host, name: &str) -> Result<String> {
    host.db.instance(name)?;
    let dir = host.data.instance_assets(name);
    let mut names: Vec<String> = match std::fs::read_dir(&dir) {
        Ok(entries) => entries
            .filter_map(Result::ok)
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| !n.starts_with('.'))
            .map(|n| format!("instance/{n}"))
            .collect(),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(error) => return Err(error).with_context(|| format!("reading {}", dir.display())),
    };
    names.sort();
    Ok(names.join("\n"))
}

pub fn instance_asset_remove(host: &Host, name: &str, asset: &str) -> Result<String> {
    host.db.instance(name)?;
    let asset = asset_name(asset.strip_prefix("instance/").unwrap_or(asset))?;
    let path = host.data.instance_assets(name).join(asset);
    if !path.is_file() {
        return Err(crate::db::NotFound(format!("{name} has no asset {asset}")).into());
    }
    std::fs::remove_file(&path).with_context(|| format!("removing {}", path.display()))?;
    Ok(format!("removed instance/{asset} from {name}"))
}

pub fn instance_log(host: &Host, name: &str, level: Option<&str>) -> Result<String> {
    host.db.instance(name)?;
    let min = instance_log::parse_level(level.unwrap_or("TRACE"))?;
    Ok(instance_log::read(&host.data.instance_log(name), min)?.join("\n"))
}

pub fn instance_set_level(host: &Host, name: &str, level: &str) -> Result<String> {
    let level = instance_log::level_name(instance_log::parse_level(level)?);
    host.db.set_level(name, level)?;
    Ok(format!("{name} logs at {level}"))
}

/// The export file: everything needed to recreate an instance elsewhere.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExportedInstance {
    pub name: String,
    pub module: String,
    /// The version it was exported from (informational).
    #[serde(default)]
    pub module_version: String,
    #[serde(default)]
    pub description: String,
    #[serde(default = "yes")]
    pub active: bool,
    #[serde(default = "info")]
    pub log_level: String,
    #[serde(default)]
    pub config: toml::Table,
}

fn yes() -> bool {
    true
}

fn info() -> String {
    "INFO".into()
}

pub fn instance_export(host: &Host, name: &str) -> Result<String> {
    let row = host.db.instance(name)?;
    if let Some(error) = &row.config_error {
        bail!("{error}");
    }
    let config: toml::Table = row
        .config
        .parse()
        .with_context(|| format!("stored configuration of {name} is not valid TOML"))?;
    let exported = ExportedInstance {
        name: row.name.clone(),
        module: row.module_id.clone(),
        module_version: host
            .db
            .module(&row.module_id)?
            .map(|m| m.version)
            .unwrap_or_default(),
        description: row.description.clone(),
        active: row.active,
        log_level: row.log_level.clone(),
        config,
    };
    Ok(toml::to_string(&exported)?)
}

pub fn instance_import(host: &Host, file: &Path, replace: bool) -> Result<String> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    instance_import_text(host, &text, &file.display().to_string(), replace)
        .map_err(|error| Refusal::in_file(error, file, "config"))
}

/// Creates (or with `replace` overwrites) an instance from an export's
/// text; `source` names where it came from in errors.
pub fn instance_import_text(
    host: &Host,
    text: &str,
    source: &str,
    replace: bool,
) -> Result<String> {
    let exported: ExportedInstance = parse_toml(text, source)?;
    check_instance_name(&exported.name)?;
    check_description(&exported.description)?;
    instance_log::parse_level(&exported.log_level)
        .with_context(|| format!("{source}: field `log_level`"))?;
    let config = if exported.config.is_empty() {
        String::new()
    } else {
        toml::to_string(&exported.config)?
    };
    let row = InstanceRow {
        name: exported.name.clone(),
        module_id: exported.module.clone(),
        description: exported.description.clone(),
        config: config.clone(),
        position: 0,
        active: exported.active,
        log_level: exported.log_level.to_ascii_uppercase(),
        fault: None,
        updated_at: String::new(),
        config_error: None,
    };
    Instances::new(&host.data, &host.db, &host.loader).check_config(&row, &config)?;
    match host.db.instance(&exported.name) {
        Ok(existing) if !replace => Err(Conflict(format!(
            "an instance named `{}` exists already (module {}); use --replace to overwrite it",
            existing.name, existing.module_id
        ))
        .into()),
        Ok(existing) => {
            if existing.module_id != exported.module {
                bail!(
                    "instance `{}` belongs to module {}, the file is for {}",
                    existing.name,
                    existing.module_id,
                    exported.module
                );
            }
            host.db.set_config(&row.name, &config)?;
            host.db.set_description(&row.name, &row.description)?;
            host.db.set_level(&row.name, &row.log_level)?;
            host.db.set_active(&row.name, row.active)?;
            Ok(format!("replaced configuration of {}", row.name))
        }
        Err(_) => {
            host.db.insert_instance(&row)?;
            Ok(format!("imported {}", row.name))
        }
    }
}

/// A live instance of `row` for admin actions (CLI and API): its host
/// services answer from the stored directory.
pub fn action_instance(host: &Host, row: &InstanceRow) -> Result<LiveInstance> {
    Instances::new(&host.data, &host.db, &host.loader).live(row, &host.stored_engine()?)
}

pub fn instance_action(host: &Host, name: &str, action: &str, args: Vec<String>) -> Result<String> {
    let live = action_instance(host, &host.db.instance(name)?)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let answer = runtime.block_on(run_action(&live, action, args))?;
    // A text answer (a certificate, say) is printed as the text it is.
    if let serde_json::Value::String(text) = answer {
        return Ok(text.trim_end().to_string());
    }
    Ok(serde_json::to_string_pretty(&answer)?)
}

pub fn directory_load(host: &mut Host, file: &Path) -> Result<String> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    directory_load_text(host, &text, &file.display().to_string())
}

/// Replaces the directory from TOML text (call lists are kept); `source`
/// names where it came from in errors.
pub fn directory_load_text(host: &mut Host, text: &str, source: &str) -> Result<String> {
    let directory = parse_directory(text, source)?;
    save_directory(host, directory)
}

fn parse_directory(text: &str, source: &str) -> Result<Directory> {
    Ok(
        Directory::from_toml_str(text).map_err(|error| Refusal::Directory {
            origin: source.to_string(),
            message: crate::error_chain(&error),
        })?,
    )
}

/// As [`directory_load_text`], for an editor that never shows passwords: a
/// user without one (or with the mask the editor shows) keeps the
/// password stored for the same user id.
pub fn directory_load_keeping_passwords(
    host: &mut Host,
    text: &str,
    source: &str,
) -> Result<String> {
    let mut directory = parse_directory(text, source)?;
    let stored = host.db.store.load_directory()?;
    for user in &mut directory.users {
        let masked = user
            .password
            .as_ref()
            .is_some_and(|password| password.expose() == crate::http::SECRET_MASK);
        if masked {
            user.password = None;
        }
        if user.password.is_none() {
            user.sip_ha1 = stored
                .iter()
                .flat_map(|stored| &stored.users)
                .find(|before| before.id == user.id)
                .and_then(|before| before.sip_ha1.clone());
        }
    }
    save_directory(host, directory)
}

fn save_directory(host: &mut Host, directory: Directory) -> Result<String> {
    host.db
        .store
        .save_directory(&directory)
        .map_err(|error| match error {
            // A directory that does not hold together is the input's fault.
            callhost_pbx::store::StoreError::Directory(error) => Refusal::Directory {
                origin: "directory".into(),
                message: crate::error_chain(&error),
            }
            .into(),
            other => anyhow::Error::new(other),
        })?;
    Ok(format!(
        "loaded {} users, {} groups, {} contacts",
        directory.users.len(),
        directory.groups.len(),
        directory.contacts.len()
    ))
}

pub fn call_list(host: &Host, user: &str, json: bool) -> Result<String> {
    let entries = host.db.store.call_list(user)?;
    if json {
        return Ok(serde_json::to_string_pretty(&entries)?);
    }
    let mut text = format!("{:<21} {:<4} {:<18} {}\n", "TIME", "DIR", "NUMBER", "NAME");
    for e in &entries {
        text.push_str(&format!(
            "{:<21} {:<4} {:<18} {}\n",
            e.time,
            e.direction.as_str(),
            e.number,
            e.name.as_deref().unwrap_or("")
        ));
    }
    Ok(text.trim_end().to_string())
}

/// Adds an administrator of the web UI.
pub fn admin_add(host: &Host, name: &str, password: &str) -> Result<String> {
    check_name("administrator", name)?;
    crate::http::check_password_rules(password).map_err(Invalid)?;
    host.db
        .add_admin(name, &crate::http::hash_password(password)?)?;
    Ok(format!("added administrator {name}"))
}

/// Sets an administrator's password; their sessions end.
pub fn admin_password(host: &Host, name: &str, password: &str) -> Result<String> {
    crate::http::check_password_rules(password).map_err(Invalid)?;
    host.db
        .set_admin_password(name, &crate::http::hash_password(password)?)?;
    Ok(format!("set the password of {name}; their sessions ended"))
}

pub fn admin_list(host: &Host, json: bool) -> Result<String> {
    let admins = host.db.admins()?;
    if json {
        return Ok(serde_json::to_string_pretty(&admins)?);
    }
    let mut text = format!("{:<24} {}\n", "NAME", "CREATED");
    for admin in &admins {
        text.push_str(&format!("{:<24} {}\n", admin.name, admin.created_at));
    }
    Ok(text.trim_end().to_string())
}

pub fn admin_remove(host: &Host, name: &str) -> Result<String> {
    host.db.remove_admin(name)?;
    Ok(format!(
        "removed administrator {name}; their sessions ended"
    ))
}

/// Creates an API token and returns it: the only time it is shown. The
/// database keeps its SHA-256.
pub fn api_token_create(host: &Host, name: &str) -> Result<String> {
    check_name("API token", name)?;
    let token = crate::http::new_token();
    host.db
        .add_api_token(name, &hex::encode(crate::http::token_digest(&token)))?;
    Ok(token)
}

pub fn api_token_list(host: &Host, json: bool) -> Result<String> {
    let tokens = host.db.api_tokens()?;
    if json {
        return Ok(serde_json::to_string_pretty(&tokens)?);
    }
    let mut text = format!("{:<24} {}\n", "NAME", "CREATED");
    for token in &tokens {
        text.push_str(&format!("{:<24} {}\n", token.name, token.created_at));
    }
    Ok(text.trim_end().to_string())
}

pub fn api_token_revoke(host: &Host, name: &str) -> Result<String> {
    host.db.revoke_api_token(name)?;
    Ok(format!("revoked API token {name}"))
}

/// Writes a self-signed certificate for SIP over TLS (a test setup) into
/// `out` (default `<data>/tls`) and says how to configure it.
pub fn tls_self_signed(
    host: &Host,
    names: &[String],
    out: Option<&Path>,
    force: bool,
) -> Result<String> {
    let names = if names.is_empty() {
        vec![
            "localhost".to_string(),
            host.config.sip.listen.ip().to_string(),
        ]
    } else {
        names.to_vec()
    };
    let dir = out.map_or_else(|| host.data.root().join("tls"), Path::to_path_buf);
    let certificate = dir.join("sip-cert.pem");
    let key = dir.join("sip-key.pem");
    for path in [&certificate, &key] {
        if path.exists() && !force {
            return Err(Conflict(format!(
                "{} exists; --force replaces it (phones that trust it must then be told the new one)",
                path.display()
            ))
            .into());
        }
    }
    let made = callhost_sip::tls::self_signed(&names)
        .map_err(|error| Invalid(format!("cannot make a certificate for {names:?}: {error}")))?;
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    {
        use std::io::Write as _;
        // The key is the owner's only, from its first byte on.
        let _ = std::fs::remove_file(&key);
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        options
            .open(&key)
            .and_then(|mut file| file.write_all(made.key.as_bytes()))
            .with_context(|| format!("writing {}", key.display()))?;
    }
    std::fs::write(&certificate, made.certificate.as_bytes())
        .with_context(|| format!("writing {}", certificate.display()))?;
    // Absolute in the snippet: relative names in callhost.toml are taken
    // from its own directory, not from where this ran.
    let absolute = |path: &Path| std::path::absolute(path).unwrap_or_else(|_| path.to_owned());
    Ok(format!(
        "wrote {} and {} (self-signed, for {})\nin {}:\n[sip.tls]\ncertificate = \"{}\"\nkey = \"{}\"",
        certificate.display(),
        key.display(),
        names.join(", "),
        host.data.config_file().display(),
        absolute(&certificate).display(),
        absolute(&key).display()
    ))
}
