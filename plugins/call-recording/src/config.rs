//! The instance configuration: which calls, which channels, where the
//! files go. Names are the ones scripts rely on (see
//! `docs/modules/call-recording.md`).

use std::path::{Path, PathBuf};

use callhost_numbers::Pattern;
use callhost_plugin_sdk::{config_error, ConfigError};
use callhost_recording::audio::Channels;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Users (ids) whose calls are recorded.
    pub users: Vec<String>,
    /// Groups (ids): calls to the group, and outgoing calls of members
    /// while they are logged in to it.
    pub groups: Vec<String>,
    /// Number patterns (`?` one digit, `*` any digits): a call is recorded
    /// when the caller's or the called number matches.
    pub numbers: Vec<Pattern>,
    pub direction: DirectionFilter,
    pub channels: ChannelsSetting,
    /// Also record calls dialled straight to a user who is logged in to a
    /// configured group (normally only calls to the group itself).
    pub record_direct_calls_to_group_members: bool,
    /// Keys either party presses to stop the recording (CR18). Empty: off.
    pub stop_digits: String,
    /// Where recordings are kept; none means a local directory in the
    /// instance's data directory.
    pub targets: Vec<Target>,
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
            targets: Vec::new(),
        }
    }
}

/// The seed's key sequence.
pub const DEFAULT_STOP_DIGITS: &str = "*1";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DirectionFilter {
    Incoming,
    Outgoing,
    All,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ChannelsSetting {
    Caller,
    Callee,
    Stereo,
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

/// One storage target.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Target {
    pub kind: TargetKind,
    /// A `local` target's directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<PathBuf>,
    /// Below the target's root: `$Y $M $D $h $m $s` are the recording's
    /// start (UTC).
    #[serde(default = "default_subdirectory")]
    pub subdirectory: String,
}

fn default_subdirectory() -> String {
    DEFAULT_SUBDIRECTORY.into()
}

/// One directory per day: few files per directory, and a day's
/// recordings can be archived as a whole.
pub const DEFAULT_SUBDIRECTORY: &str = "$Y/$M/$D";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TargetKind {
    Local,
    Smb,
    Sftp,
    S3,
    Onedrive,
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
        for (index, target) in self.targets.iter().enumerate() {
            let field = |name: &str| format!("targets[{index}].{name}");
            if target.kind != TargetKind::Local {
                return Err(config_error(
                    field("kind"),
                    format!(
                        "{:?} targets are not available in this version; use \"local\"",
                        target.kind
                    )
                    .to_lowercase(),
                ));
            }
            match &target.path {
                Some(path) if path.is_absolute() => {}
                Some(path) => {
                    return Err(config_error(
                        field("path"),
                        format!("{} is not an absolute path", path.display()),
                    ))
                }
                None => return Err(config_error(field("path"), "a local target needs a path")),
            }
            if let Err(message) = check_subdirectory(&target.subdirectory) {
                return Err(config_error(field("subdirectory"), message));
            }
        }
        if self.targets.len() > 1 {
            return Err(config_error(
                "targets",
                "only one local target is available in this version",
            ));
        }
        Ok(())
    }

    /// The directory recordings are written to (the local target's).
    pub fn local_root(&self, data_dir: &Path) -> PathBuf {
        self.targets
            .iter()
            .find(|t| t.kind == TargetKind::Local)
            .and_then(|t| t.path.clone())
            .unwrap_or_else(|| data_dir.join("recordings"))
    }

    pub fn subdirectory(&self) -> &str {
        self.targets
            .iter()
            .find(|t| t.kind == TargetKind::Local)
            .map_or(DEFAULT_SUBDIRECTORY, |t| t.subdirectory.as_str())
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
        let error = parse("[[targets]]\nkind = \"sftp\"\n").unwrap_err();
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
