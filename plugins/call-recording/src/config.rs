//! The instance configuration: which calls, which channels, where the
//! files go. Names are the ones scripts rely on (see
//! `docs/modules/call-recording.md`).

use std::path::{Path, PathBuf};
use std::time::Duration;

use callhost_numbers::Pattern;
use callhost_plugin_sdk::settings::{duration, Secret};
use callhost_plugin_sdk::{config_error, ConfigError};
use callhost_recording::audio::Channels;
use callhost_storage as storage;
use serde::{Deserialize, Serialize};

/// Which calls are recorded, in which channels, and where the files go.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Users (ids) whose calls are recorded.
    pub users: Vec<String>,
    /// Groups (ids): calls to the group, and outgoing calls of members
    /// while they are logged in to it.
    pub groups: Vec<String>,
    /// Number patterns (`?` one digit, `*` any digits): a call is recorded
    /// when the caller's or the called number matches.
    #[schemars(with = "Vec<String>")]
    pub numbers: Vec<Pattern>,
    /// Which calls of those users, groups and numbers are recorded.
    pub direction: DirectionFilter,
    /// Whose voice is recorded, and into how many files.
    pub channels: ChannelsSetting,
    /// Also record calls dialled straight to a user who is logged in to a
    /// configured group (normally only calls to the group itself).
    #[schemars(title = "Record direct calls to group members")]
    pub record_direct_calls_to_group_members: bool,
    /// Keys either party presses to stop the recording (CR18): `0-9`, `*`,
    /// `#`. Empty: off.
    #[schemars(title = "Stop keys")]
    pub stop_digits: String,
    /// A notice played to the caller of an incoming call before the
    /// recording begins (CR7): an asset of the instance (`callhost instance
    /// asset add NAME FILE`), by file name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(title = "Notice for incoming calls")]
    pub notice_incoming: Option<String>,
    /// The same for outgoing calls: an asset of the instance, by file name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(title = "Notice for outgoing calls")]
    pub notice_outgoing: Option<String>,
    /// Where recordings are kept; none means a local directory in the
    /// instance's data directory.
    #[schemars(title = "Storage targets")]
    pub targets: Vec<Target>,
    /// How long after a recording is sealed its upload begins (humantime,
    /// e.g. "1m").
    #[schemars(title = "Upload delay", extend("x-expert" = true))]
    pub upload_delay: String,
    /// How long after a failed upload it is tried again (humantime, at
    /// least "1s").
    #[schemars(title = "Retry interval", extend("x-expert" = true))]
    pub retry_interval: String,
    /// Below this much free space (MB) where recordings are written, a
    /// warning (log and mail) every hour; recordings go on, nothing is
    /// deleted.
    #[schemars(title = "Free disk warning (MB)", extend("x-expert" = true))]
    pub min_free_disk_mb: u64,
    /// Recordings older than this (humantime, e.g. "10years") are deleted
    /// here and on the targets that allow it, each deletion entered in the
    /// chain. Absent: kept for ever.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention: Option<String>,
    /// Mail when something needs a person (failures, disk space).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mail: Option<MailConfig>,
    /// An RFC 3161 time-stamping authority that stamps the chain's head.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(title = "Time stamps")]
    pub timestamp: Option<TimestampConfig>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TimestampConfig {
    /// The TSA's URL (RFC 3161 over HTTP).
    #[schemars(title = "Time-stamping authority URL")]
    pub url: String,
    /// The head is stamped at most this often, and only when it changed
    /// (humantime, e.g. "1h").
    #[serde(default = "default_stamp_every")]
    #[schemars(title = "Stamp at most every", extend("x-expert" = true))]
    pub every: String,
}

fn default_stamp_every() -> String {
    "1h".into()
}

impl TimestampConfig {
    pub fn every(&self) -> Duration {
        humantime::parse_duration(&self.every).unwrap_or(Duration::from_secs(3600))
    }
}

/// The SMTP server notices go through.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MailConfig {
    /// The SMTP server's host name.
    #[schemars(title = "SMTP server")]
    pub server: String,
    /// The SMTP port. Default: 465 with `tls`, 587 with `starttls`, 25
    /// with `none`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// How the connection is encrypted.
    #[serde(default = "default_security")]
    pub security: MailSecurity,
    /// The SMTP login (with `password`); none: no login.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// The SMTP password (with `user`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<Secret>,
    /// The sender, e.g. `PBX <pbx@example.com>`.
    pub from: String,
    /// The recipients (at least one address).
    pub to: Vec<String>,
    /// At most one mail per this long; notices in between are collected
    /// (humantime, e.g. "1h").
    #[serde(default = "default_min_interval")]
    #[schemars(title = "At most one mail every", extend("x-expert" = true))]
    pub min_interval: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum MailSecurity {
    /// TLS from the first byte (port 465).
    Tls,
    /// Plain, upgraded with STARTTLS, which is required.
    Starttls,
    /// No encryption: only for a relay on this machine or in tests.
    None,
}

fn default_security() -> MailSecurity {
    MailSecurity::Starttls
}

fn default_min_interval() -> String {
    "1h".into()
}

impl MailConfig {
    pub fn min_interval(&self) -> Duration {
        humantime::parse_duration(&self.min_interval).unwrap_or(Duration::from_secs(3600))
    }

    fn validate(&self) -> Result<(), ConfigError> {
        if self.server.trim().is_empty() {
            return Err(config_error("mail.server", "must not be empty"));
        }
        self.from
            .parse::<lettre::message::Mailbox>()
            .map_err(|e| config_error("mail.from", format!("{:?}: {e}", self.from)))?;
        if self.to.is_empty() {
            return Err(config_error("mail.to", "needs at least one address"));
        }
        for (index, to) in self.to.iter().enumerate() {
            to.parse::<lettre::message::Mailbox>()
                .map_err(|e| config_error(format!("mail.to[{index}]"), format!("{to:?}: {e}")))?;
        }
        if self.user.is_some() != self.password.is_some() {
            return Err(config_error(
                "mail.password",
                "user and password go together",
            ));
        }
        duration("mail.min_interval", &self.min_interval).map(drop)
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            users: Vec::new(),
            groups: Vec::new(),
            numbers: Vec::new(),
            direction: DirectionFilter::All,
            channels: ChannelsSetting::Stereo,
            record_direct_calls_to_group_members: false,
            stop_digits: DEFAULT_STOP_DIGITS.into(),
            notice_incoming: None,
            notice_outgoing: None,
            targets: Vec::new(),
            upload_delay: "1m".into(),
            retry_interval: "1h".into(),
            min_free_disk_mb: 1024,
            retention: None,
            mail: None,
            timestamp: None,
        }
    }
}

/// The seed's key sequence.
pub const DEFAULT_STOP_DIGITS: &str = "*1";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum DirectionFilter {
    /// Calls to the configured users, groups and numbers.
    Incoming,
    /// Calls they make.
    Outgoing,
    /// Both.
    All,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ChannelsSetting {
    /// The caller only.
    Caller,
    /// The callee only.
    Callee,
    /// One stereo file: left the caller, right the callee.
    Stereo,
    /// One file per party.
    Separate,
}

impl ChannelsSetting {
    pub fn channels(self) -> Channels {
        match self {
            ChannelsSetting::Caller => Channels::Caller,
            ChannelsSetting::Callee => Channels::Callee,
            ChannelsSetting::Stereo => Channels::Stereo,
            ChannelsSetting::Separate => Channels::Separate,
        }
    }

    pub fn describe(self) -> &'static str {
        match self {
            ChannelsSetting::Caller => "caller only",
            ChannelsSetting::Callee => "callee only",
            ChannelsSetting::Stereo => "stereo (left: caller, right: callee)",
            ChannelsSetting::Separate => "separate files per party",
        }
    }
}

/// One storage target. `kind` says which; each kind has its own fields.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum Target {
    /// A directory on this machine (the recordings are written there).
    #[schemars(title = "Local directory")]
    Local {
        /// The directory, an absolute path.
        path: PathBuf,
        /// The directory below `path` per recording: `$Y $M $D $h $m $s`
        /// of its start (UTC).
        #[serde(default = "default_subdirectory")]
        #[schemars(extend("x-expert" = true))]
        subdirectory: String,
    },
    /// An SSH server (SFTP), its host key pinned.
    #[schemars(title = "SFTP server")]
    Sftp {
        /// The SSH server's host name.
        host: String,
        /// The SSH port.
        #[serde(default = "default_ssh_port")]
        port: u16,
        /// The SSH login.
        user: String,
        /// The login's password; set this or `key_file`, not both.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        password: Option<Secret>,
        /// A private key (ed25519 or ECDSA), an absolute path; instead of
        /// `password`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        #[schemars(title = "Key file")]
        key_file: Option<PathBuf>,
        /// The key file's passphrase, if it has one.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        #[schemars(title = "Key passphrase")]
        key_passphrase: Option<Secret>,
        /// The server's host key: `ssh-ed25519 AAAA…` (the server's `.pub`
        /// file) or `SHA256:…` (as `ssh-keygen -lf` prints it).
        #[schemars(title = "Host key")]
        host_key: String,
        /// The directory on the server.
        path: String,
        /// The directory below `path` per recording: `$Y $M $D $h $m $s`
        /// of its start (UTC).
        #[serde(default = "default_subdirectory")]
        #[schemars(extend("x-expert" = true))]
        subdirectory: String,
    },
    /// An S3 bucket (AWS or compatible), optionally with Object Lock.
    #[schemars(title = "S3 bucket")]
    S3 {
        /// An S3-compatible server's URL; absent for AWS.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        endpoint: Option<String>,
        /// The bucket's region.
        #[serde(default = "default_region")]
        region: String,
        /// The bucket's name.
        bucket: String,
        /// Put before every object's key, e.g. `pbx1/`.
        #[serde(default)]
        prefix: String,
        /// The access key's id (`AKIA…`).
        #[schemars(title = "Access key id")]
        access_key_id: String,
        /// The access key's secret.
        #[schemars(title = "Secret access key")]
        secret_access_key: Secret,
        /// Object Lock in compliance mode for this many days after the
        /// recording's start (the bucket must have Object Lock enabled).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        #[schemars(title = "Object Lock (days)")]
        retain_days: Option<u32>,
        /// The object key below `prefix` per recording: `$Y $M $D $h $m $s`
        /// of its start (UTC).
        #[serde(default = "default_subdirectory")]
        #[schemars(extend("x-expert" = true))]
        subdirectory: String,
    },
    /// OneDrive for Business / SharePoint through Microsoft Graph, with an
    /// app registration's client credentials.
    #[schemars(title = "OneDrive / SharePoint")]
    Onedrive {
        /// The Microsoft Entra tenant (id or domain).
        tenant: String,
        /// The app registration's client id.
        #[schemars(title = "Client id")]
        client_id: String,
        /// The app registration's client secret.
        #[schemars(title = "Client secret")]
        client_secret: Secret,
        /// The drive's id.
        drive: String,
        /// The folder in the drive.
        #[serde(default)]
        path: String,
        /// The login endpoint (another one for national clouds).
        #[serde(default = "default_login_url")]
        #[schemars(title = "Login URL", extend("x-expert" = true))]
        login_url: String,
        /// The Graph endpoint (another one for national clouds).
        #[serde(default = "default_graph_url")]
        #[schemars(title = "Graph URL", extend("x-expert" = true))]
        graph_url: String,
        /// The folder below `path` per recording: `$Y $M $D $h $m $s` of
        /// its start (UTC).
        #[serde(default = "default_subdirectory")]
        #[schemars(extend("x-expert" = true))]
        subdirectory: String,
    },
    /// Not in this version: refused with a message naming the field. Left
    /// out of the schema, so forms never offer it.
    #[schemars(skip)]
    Smb(std::collections::BTreeMap<String, toml::Value>),
}

fn default_subdirectory() -> String {
    DEFAULT_SUBDIRECTORY.into()
}

fn default_ssh_port() -> u16 {
    22
}

fn default_region() -> String {
    "us-east-1".into()
}

fn default_login_url() -> String {
    "https://login.microsoftonline.com".into()
}

fn default_graph_url() -> String {
    "https://graph.microsoft.com/v1.0".into()
}

/// One directory per day: few files per directory, and a day's
/// recordings can be archived as a whole.
pub const DEFAULT_SUBDIRECTORY: &str = "$Y/$M/$D";

/// A remote target gives up on a connection or transfer after this long.
const TARGET_TIMEOUT: Duration = Duration::from_secs(120);

impl Target {
    pub fn subdirectory(&self) -> &str {
        match self {
            Target::Local { subdirectory, .. }
            | Target::Sftp { subdirectory, .. }
            | Target::S3 { subdirectory, .. }
            | Target::Onedrive { subdirectory, .. } => subdirectory,
            Target::Smb(_) => DEFAULT_SUBDIRECTORY,
        }
    }

    /// The storage client for a remote target; `None` for `local`.
    pub fn remote(&self) -> Option<storage::Target> {
        Some(match self {
            Target::Local { .. } | Target::Smb(_) => return None,
            Target::Sftp {
                host,
                port,
                user,
                password,
                key_file,
                key_passphrase,
                host_key,
                path,
                ..
            } => storage::Target::Sftp(storage::sftp::Sftp {
                host: host.clone(),
                port: *port,
                user: user.clone(),
                auth: match (password, key_file) {
                    (Some(password), _) => storage::sftp::Auth::Password(password.expose().into()),
                    (None, Some(path)) => storage::sftp::Auth::KeyFile {
                        path: path.clone(),
                        passphrase: key_passphrase.as_ref().map(|p| p.expose().to_string()),
                    },
                    (None, None) => storage::sftp::Auth::Password(String::new()),
                },
                host_key: host_key.clone(),
                root: path.clone(),
                timeout: TARGET_TIMEOUT,
            }),
            Target::S3 {
                endpoint,
                region,
                bucket,
                prefix,
                access_key_id,
                secret_access_key,
                ..
            } => storage::Target::S3(storage::s3::S3 {
                endpoint: endpoint.clone(),
                region: region.clone(),
                bucket: bucket.clone(),
                prefix: prefix.clone(),
                access_key_id: access_key_id.clone(),
                secret_access_key: secret_access_key.expose().into(),
                timeout: TARGET_TIMEOUT,
            }),
            Target::Onedrive {
                tenant,
                client_id,
                client_secret,
                drive,
                path,
                login_url,
                graph_url,
                ..
            } => storage::Target::OneDrive(storage::onedrive::OneDrive::new(
                login_url.clone(),
                graph_url.clone(),
                tenant.clone(),
                client_id.clone(),
                client_secret.expose().into(),
                drive.clone(),
                path.clone(),
                TARGET_TIMEOUT,
            )),
        })
    }

    /// Object Lock's retention, for S3 targets that ask for it.
    pub fn retain_days(&self) -> Option<u32> {
        match self {
            Target::S3 { retain_days, .. } => *retain_days,
            _ => None,
        }
    }

    fn validate(&self, field: &dyn Fn(&str) -> String) -> Result<(), ConfigError> {
        let required = |name: &str, value: &str| {
            if value.trim().is_empty() {
                Err(config_error(field(name), "must not be empty"))
            } else {
                Ok(())
            }
        };
        let url = |name: &str, value: &str| {
            if value.starts_with("https://") || value.starts_with("http://") {
                Ok(())
            } else {
                Err(config_error(
                    field(name),
                    format!("{value:?} is not an http:// or https:// URL"),
                ))
            }
        };
        match self {
            Target::Local { path, .. } => {
                if !path.is_absolute() {
                    return Err(config_error(
                        field("path"),
                        format!("{} is not an absolute path", path.display()),
                    ));
                }
            }
            Target::Sftp {
                host,
                user,
                password,
                key_file,
                host_key,
                path,
                ..
            } => {
                required("host", host)?;
                required("user", user)?;
                required("path", path)?;
                match (password, key_file) {
                    (Some(_), Some(_)) => {
                        return Err(config_error(
                            field("password"),
                            "set password or key_file, not both",
                        ))
                    }
                    (None, None) => {
                        return Err(config_error(
                            field("password"),
                            "an sftp target needs password or key_file",
                        ))
                    }
                    (None, Some(key)) if !key.is_absolute() => {
                        return Err(config_error(
                            field("key_file"),
                            format!("{} is not an absolute path", key.display()),
                        ))
                    }
                    _ => {}
                }
                storage::sftp::Sftp::check_host_key(host_key)
                    .map_err(|message| config_error(field("host_key"), message))?;
            }
            Target::S3 {
                endpoint,
                bucket,
                access_key_id,
                retain_days,
                ..
            } => {
                required("bucket", bucket)?;
                required("access_key_id", access_key_id)?;
                if let Some(endpoint) = endpoint {
                    url("endpoint", endpoint)?;
                }
                if *retain_days == Some(0) {
                    return Err(config_error(
                        field("retain_days"),
                        "0 days keeps nothing locked; leave it out for no Object Lock",
                    ));
                }
            }
            Target::Onedrive {
                tenant,
                client_id,
                drive,
                login_url,
                graph_url,
                ..
            } => {
                required("tenant", tenant)?;
                required("client_id", client_id)?;
                required("drive", drive)?;
                url("login_url", login_url)?;
                url("graph_url", graph_url)?;
            }
            Target::Smb(_) => return Err(config_error(
                field("kind"),
                "smb targets are not available in this version; use local, sftp, s3 or onedrive",
            )),
        }
        check_subdirectory(self.subdirectory())
            .map_err(|message| config_error(field("subdirectory"), message))
    }
}

impl Config {
    /// Checks what serde cannot; errors name the field.
    pub fn validate(&self) -> Result<(), ConfigError> {
        for (index, user) in self.users.iter().enumerate() {
            if user.trim().is_empty() {
                return Err(config_error(format!("users[{index}]"), "empty user id"));
            }
        }
        for (index, group) in self.groups.iter().enumerate() {
            if group.trim().is_empty() {
                return Err(config_error(format!("groups[{index}]"), "empty group id"));
            }
        }
        if let Some(bad) = self
            .stop_digits
            .chars()
            .find(|c| !(c.is_ascii_digit() || *c == '*' || *c == '#'))
        {
            return Err(config_error(
                "stop_digits",
                format!("{bad:?} is not a key (0-9, *, #)"),
            ));
        }
        for (field, notice) in [
            ("notice_incoming", &self.notice_incoming),
            ("notice_outgoing", &self.notice_outgoing),
        ] {
            if let Some(name) = notice {
                if !callhost_plugin_sdk::abi::is_asset_file_name(name) {
                    return Err(config_error(
                        field,
                        format!("{name:?} is not an asset's file name"),
                    ));
                }
            }
        }
        for (index, target) in self.targets.iter().enumerate() {
            target.validate(&|name: &str| format!("targets[{index}].{name}"))?;
        }
        let locals = self
            .targets
            .iter()
            .filter(|t| matches!(t, Target::Local { .. }))
            .count();
        if locals > 1 {
            return Err(config_error(
                "targets",
                "one local target at most: it is where recordings are written",
            ));
        }
        duration("upload_delay", &self.upload_delay)?;
        let retry = duration("retry_interval", &self.retry_interval)?;
        if retry < Duration::from_secs(1) {
            return Err(config_error("retry_interval", "must be at least 1s"));
        }
        if let Some(retention) = &self.retention {
            if duration("retention", retention)? < Duration::from_secs(1) {
                return Err(config_error("retention", "must be at least 1s"));
            }
        }
        if let Some(mail) = &self.mail {
            mail.validate()?;
        }
        if let Some(timestamp) = &self.timestamp {
            if !(timestamp.url.starts_with("http://") || timestamp.url.starts_with("https://")) {
                return Err(config_error(
                    "timestamp.url",
                    format!("{:?} is not an http:// or https:// URL", timestamp.url),
                ));
            }
            duration("timestamp.every", &timestamp.every)?;
        }
        Ok(())
    }

    pub fn retention(&self) -> Option<Duration> {
        self.retention
            .as_deref()
            .and_then(|r| humantime::parse_duration(r).ok())
    }

    pub fn upload_delay(&self) -> Duration {
        humantime::parse_duration(&self.upload_delay).unwrap_or(Duration::from_secs(60))
    }

    pub fn retry_interval(&self) -> Duration {
        humantime::parse_duration(&self.retry_interval).unwrap_or(Duration::from_secs(3600))
    }

    /// Whether recordings stay on this machine: with a local target, or
    /// with no target at all. Otherwise they are deleted here once every
    /// target confirmed them.
    pub fn keeps_local(&self) -> bool {
        self.targets.is_empty()
            || self
                .targets
                .iter()
                .any(|t| matches!(t, Target::Local { .. }))
    }

    /// The directory recordings are written to (the local target's).
    /// (Without one: the instance's data directory, as a spool when
    /// there are remote targets.)
    pub fn local_root(&self, data_dir: &Path) -> PathBuf {
        self.local_target()
            .map(|(path, _)| path.to_owned())
            .unwrap_or_else(|| data_dir.join("recordings"))
    }

    pub fn subdirectory(&self) -> &str {
        self.local_target()
            .map_or(DEFAULT_SUBDIRECTORY, |(_, subdirectory)| subdirectory)
    }

    fn local_target(&self) -> Option<(&Path, &str)> {
        self.targets.iter().find_map(|t| match t {
            Target::Local { path, subdirectory } => Some((path.as_path(), subdirectory.as_str())),
            _ => None,
        })
    }
}

/// A relative path of plain names and placeholders: nothing that climbs
/// out of the target's root.
fn check_subdirectory(text: &str) -> Result<(), String> {
    for part in text.split('/') {
        if part == ".." || part == "." {
            return Err(format!("{part:?} is not allowed in a subdirectory"));
        }
        if let Some(bad) = part
            .chars()
            .find(|c| c.is_control() || matches!(c, '\\' | ':' | '*' | '?' | '"' | '<' | '>' | '|'))
        {
            return Err(format!("{bad:?} is not allowed in a subdirectory"));
        }
    }
    if text.starts_with('/') {
        return Err("must be relative to the target's root".into());
    }
    Ok(())
}

/// `subdirectory` with `$Y $M $D $h $m $s` filled in from `utc`
/// (`YYYY-MM-DDTHH:MM:SSZ`).
pub fn expand_subdirectory(template: &str, utc: &str) -> PathBuf {
    let field = |range: std::ops::Range<usize>| utc.get(range).unwrap_or("00");
    let expanded = template
        .replace("$Y", field(0..4))
        .replace("$M", field(5..7))
        .replace("$D", field(8..10))
        .replace("$h", field(11..13))
        .replace("$m", field(14..16))
        .replace("$s", field(17..19));
    expanded
        .split('/')
        .filter(|part| !part.is_empty())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, String> {
        let config: Config = toml::from_str(text).map_err(|e| e.to_string())?;
        config
            .validate()
            .map_err(|e| format!("{}: {}", e.field, e.message))?;
        Ok(config)
    }

    #[test]
    fn the_names_scripts_rely_on_parse() {
        let config = parse(
            r#"
            users = ["anna"]
            groups = ["sales"]
            numbers = ["+4930*", "0800????"]
            direction = "incoming"
            channels = "separate"
            [[targets]]
            kind = "local"
            path = "/srv/recordings"
            "#,
        )
        .unwrap();
        assert_eq!(config.direction, DirectionFilter::Incoming);
        assert_eq!(config.channels, ChannelsSetting::Separate);
        assert_eq!(
            config.local_root(Path::new("/x")),
            Path::new("/srv/recordings")
        );
        assert_eq!(config.subdirectory(), "$Y/$M/$D");
    }

    #[test]
    fn bad_values_name_their_field() {
        let error = parse("[[targets]]\nkind = \"local\"\npath = \"rel\"\n").unwrap_err();
        assert!(error.starts_with("targets[0].path:"), "{error}");
        let error = parse("[[targets]]\nkind = \"smb\"\nshare = \"x\"\n").unwrap_err();
        assert!(error.starts_with("targets[0].kind:"), "{error}");
        let error =
            parse("[[targets]]\nkind = \"local\"\npath = \"/a\"\nsubdirectory = \"../up\"\n")
                .unwrap_err();
        assert!(error.starts_with("targets[0].subdirectory:"), "{error}");
        let error = parse("stop_digits = \"*x\"\n").unwrap_err();
        assert!(error.starts_with("stop_digits:"), "{error}");
        assert!(parse("channels = \"mono\"\n")
            .unwrap_err()
            .contains("channels"));
    }

    const HOST_KEY: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl host";

    #[test]
    fn remote_targets_parse_with_their_own_fields() {
        let config = parse(&format!(
            r#"
            upload_delay = "30s"
            retry_interval = "15m"
            [[targets]]
            kind = "sftp"
            host = "backup.example.com"
            user = "rec"
            password = "pw"
            host_key = "{HOST_KEY}"
            path = "/srv/rec"
            [[targets]]
            kind = "s3"
            bucket = "rec"
            access_key_id = "AKIA"
            secret_access_key = "s3cret"
            retain_days = 3650
            [[targets]]
            kind = "onedrive"
            tenant = "t"
            client_id = "c"
            client_secret = "cs"
            drive = "b!x"
            "#
        ))
        .unwrap();
        assert_eq!(config.targets.len(), 3);
        assert!(!config.keeps_local(), "no local target: a spool only");
        assert_eq!(config.upload_delay(), Duration::from_secs(30));
        assert_eq!(config.retry_interval(), Duration::from_secs(900));
        let labels: Vec<String> = config
            .targets
            .iter()
            .map(|t| t.remote().unwrap().label())
            .collect();
        assert_eq!(labels[0], "sftp://rec@backup.example.com:22/srv/rec");
        assert_eq!(labels[1], "s3://rec");
        assert_eq!(config.targets[1].retain_days(), Some(3650));
        // Secrets are never shown back.
        let shown = serde_json::to_string(&config).unwrap();
        for secret in ["\"pw\"", "s3cret", "\"cs\""] {
            assert!(!shown.contains(secret), "{secret} in {shown}");
        }
        assert!(Config::default().keeps_local());
    }

    #[test]
    fn remote_targets_name_the_field_that_is_wrong() {
        let sftp = |extra: &str| {
            parse(&format!(
                "[[targets]]\nkind = \"sftp\"\nhost = \"h\"\nuser = \"u\"\npath = \"/p\"\n{extra}"
            ))
            .unwrap_err()
        };
        let error = sftp(&format!("host_key = \"{HOST_KEY}\"\n"));
        assert!(error.starts_with("targets[0].password:"), "{error}");
        let error = sftp("password = \"x\"\nhost_key = \"not a key\"\n");
        assert!(error.starts_with("targets[0].host_key:"), "{error}");
        let error = sftp(&format!(
            "key_file = \"rel/key\"\nhost_key = \"{HOST_KEY}\"\n"
        ));
        assert!(error.starts_with("targets[0].key_file:"), "{error}");
        let error = parse(
            "[[targets]]\nkind = \"s3\"\nbucket = \"b\"\naccess_key_id = \"a\"\nsecret_access_key = \"s\"\nendpoint = \"ftp://x\"\n",
        )
        .unwrap_err();
        assert!(error.starts_with("targets[0].endpoint:"), "{error}");
        let error = parse("retry_interval = \"often\"\n").unwrap_err();
        assert!(error.starts_with("retry_interval:"), "{error}");
        let error = parse(
            "[[targets]]\nkind = \"local\"\npath = \"/a\"\n[[targets]]\nkind = \"local\"\npath = \"/b\"\n",
        )
        .unwrap_err();
        assert!(error.starts_with("targets:"), "{error}");
    }

    #[test]
    fn the_schema_describes_the_documented_options() {
        let schema = callhost_plugin_sdk::testing::config_schema_naming::<Config>(&[
            "users",
            "groups",
            "numbers",
            "direction",
            "channels",
            "record_direct_calls_to_group_members",
            "stop_digits",
            "notice_incoming",
            "notice_outgoing",
            "targets",
            "upload_delay",
            "retry_interval",
            "min_free_disk_mb",
            "retention",
            "mail",
            "timestamp",
        ]);
        let properties = schema["properties"].as_object().unwrap();
        assert_eq!(schema["additionalProperties"], false);
        assert_eq!(properties["retry_interval"]["x-expert"], true);
        assert!(properties["users"].get("x-expert").is_none());
        assert_eq!(properties["numbers"]["items"]["type"], "string");
        assert_eq!(properties["stop_digits"]["default"], DEFAULT_STOP_DIGITS);
        let channels = serde_json::to_string(&properties["channels"]).unwrap();
        for channel in ["\"caller\"", "\"callee\"", "\"stereo\"", "\"separate\""] {
            assert!(channels.contains(channel), "{channels}");
        }

        // One alternative per kind, each with its own fields; smb is not
        // offered.
        let targets = &properties["targets"];
        assert_eq!(targets["type"], "array");
        let kinds = targets["items"]["oneOf"].as_array().unwrap();
        let kind = |target: &serde_json::Value| target["properties"]["kind"]["const"].clone();
        let names: Vec<_> = kinds.iter().map(kind).collect();
        assert_eq!(names, ["local", "sftp", "s3", "onedrive"]);
        for target in kinds {
            assert_eq!(target["additionalProperties"], false, "{target}");
            assert!(target["title"].is_string(), "{target}");
            let required = target["required"].as_array().unwrap();
            assert!(required.contains(&"kind".into()), "{target}");
        }
        let sftp = &kinds[1]["properties"];
        assert_eq!(sftp["password"]["writeOnly"], true);
        assert_eq!(sftp["key_passphrase"]["writeOnly"], true);
        assert_eq!(sftp["port"]["default"], 22);
        assert_eq!(
            kinds[2]["properties"]["secret_access_key"]["writeOnly"],
            true
        );
        assert_eq!(kinds[3]["properties"]["client_secret"]["writeOnly"], true);
        assert_eq!(kinds[3]["properties"]["graph_url"]["x-expert"], true);

        let mail = &properties["mail"];
        assert_eq!(mail["properties"]["password"]["writeOnly"], true);
        assert_eq!(
            mail["required"],
            serde_json::json!(["server", "from", "to"])
        );
    }

    #[test]
    fn subdirectories_take_the_start_time() {
        assert_eq!(
            expand_subdirectory("$Y/$M/$D", "2026-12-02T19:25:01Z"),
            Path::new("2026/12/02")
        );
        assert_eq!(
            expand_subdirectory("rec-$Y_$M_$D_$h_$m_$s", "2026-12-02T19:25:01Z"),
            Path::new("rec-2026_12_02_19_25_01")
        );
    }
}
