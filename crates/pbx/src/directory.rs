//! The directory: users, groups, the address book and per-user state, as
//! loaded from TOML (a file or the `[directory]` table of a call scenario),
//! plus [`DirectoryIndex`], the immutable O(1) lookup structure the call
//! engine routes with.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;

use callhost_numbers::{ExternalNumber, NumberError, NumberPlan};
use serde::{Deserialize, Serialize};

/// Longest internal (extension) number, in digits.
const INTERNAL_MAX_DIGITS: usize = 6;
/// Shortest internal number: a single digit would clash with dialling prefixes.
const INTERNAL_MIN_DIGITS: usize = 2;

/// Errors from loading or validating a directory. Every message starts with
/// the field path (e.g. `users[2].numbers[0]`) and quotes the offending value.
#[derive(Debug, thiserror::Error)]
pub enum DirectoryError {
    /// TOML syntax error, wrong type or unknown field.
    #[error("{path}: {message}")]
    Parse { path: String, message: String },
    /// `home_country` is not a country the number plan knows.
    #[error("home_country: {value:?} is not a valid country")]
    HomeCountry {
        value: String,
        #[source]
        source: NumberError,
    },
    /// An id with characters outside `[a-z0-9_.-]`, or empty.
    #[error("{field}: {value:?} is not a valid id (use a-z, 0-9, '_', '.', '-')")]
    InvalidId { field: String, value: String },
    /// The same id on two users/groups.
    #[error("{field}: duplicate id {value:?} (already used by {first})")]
    DuplicateId {
        field: String,
        value: String,
        first: String,
    },
    /// A state flag that needs something the user does not have.
    #[error("{field}: {reason}")]
    NeedsField { field: String, reason: String },
    /// A user or group without any number.
    #[error("{field}: must contain at least the primary internal number")]
    NoNumbers { field: String },
    /// A number that is malformed where an internal number is required.
    #[error("{field}: {value:?} {reason}")]
    InvalidNumber {
        field: String,
        value: String,
        reason: String,
    },
    /// A number that is neither internal nor a valid external number.
    #[error("{field}: {value:?} is not a valid internal or external number")]
    ExternalNumber {
        field: String,
        value: String,
        #[source]
        source: NumberError,
    },
    /// A number (internal, or external after normalisation) owned twice.
    #[error("{field}: number {value:?} is already used by {owner}")]
    DuplicateNumber {
        field: String,
        value: String,
        owner: String,
    },
    /// A reference to a user id that does not exist.
    #[error("{field}: unknown user {value:?}")]
    UnknownUser { field: String, value: String },
    /// The same user listed twice as a member of one group.
    #[error("{field}: duplicate member {value:?}")]
    DuplicateMember { field: String, value: String },
    /// A user listed in `inactive` but not in `members`.
    #[error("{field}: {value:?} is not a member of group {group:?}")]
    NotAMember {
        field: String,
        value: String,
        group: String,
    },
    /// A forward to an internal number nobody owns.
    #[error("{field}: unknown internal number {value:?}")]
    UnknownInternalNumber { field: String, value: String },
    /// A field that must not be empty.
    #[error("{field}: must not be empty")]
    Empty { field: String },
    /// A numeric field outside its allowed range.
    #[error("{field}: {value} is out of range ({range})")]
    OutOfRange {
        field: String,
        value: u64,
        range: &'static str,
    },
}

/// A secret (SIP password). Serialises as the plain string so the directory
/// round-trips, but `Debug` never shows it, so it cannot leak into logs.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// Wrap a secret value.
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }

    /// The secret itself; call sites that need it are easy to audit.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// A password in the directory's JSON Schema: write-only (the web UI never
/// shows one; a user saved without one keeps the stored password).
impl schemars::JsonSchema for Secret {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Password".into()
    }

    fn inline_schema() -> bool {
        true
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({ "type": "string", "writeOnly": true })
    }
}

/// A PBX user.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct User {
    /// Unique across users and groups, `[a-z0-9_.-]+`.
    pub id: String,
    /// Display name.
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_name: Option<String>,
    /// The first entry is the primary internal number; further entries are
    /// internal numbers or DIDs in any external form.
    pub numbers: Vec<String>,
    /// Mobile number that rings along (iFMC-like).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mobile: Option<String>,
    /// SIP digest password, as written in the directory file. The store
    /// keeps only its digest hash ([`User::sip_ha1`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<Secret>,
    /// RFC 7616 HA1 (`MD5(id:realm:password)`), lowercase hex. The store
    /// keeps it sealed for this user; a loaded directory has it in clear
    /// and no password.
    #[serde(skip)]
    pub sip_ha1: Option<String>,
}

/// The digest realm phones authenticate in. Fixed, because the stored HA1
/// hashes depend on it (changing it would invalidate every password).
pub const SIP_REALM: &str = "callhost";

/// RFC 7616 HA1 for MD5 digests: `MD5(user:realm:password)`, lowercase hex.
pub fn digest_ha1(user: &str, password: &str) -> String {
    use md5::{Digest, Md5};
    hex::encode(Md5::digest(format!("{user}:{SIP_REALM}:{password}")))
}

impl User {
    /// The HA1 phones' digests are checked against: the stored hash, or
    /// the hash of a password from a directory file not stored yet.
    pub fn digest_ha1(&self) -> Option<String> {
        self.sip_ha1.clone().or_else(|| {
            self.password
                .as_ref()
                .map(|password| digest_ha1(&self.id, password.expose()))
        })
    }

    /// The primary internal number (`""` only for an unvalidated user without numbers).
    pub fn primary_number(&self) -> &str {
        self.numbers.first().map_or("", String::as_str)
    }
}

/// A group whose active members ring together.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Group {
    /// Unique across users and groups, `[a-z0-9_.-]+`.
    pub id: String,
    pub name: String,
    /// Same rules as [`User::numbers`].
    pub numbers: Vec<String>,
    /// User ids.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub members: Vec<String>,
    /// Members currently logged out of the group.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub inactive: Vec<String>,
}

impl Group {
    /// Members not logged out, in member order.
    pub fn active_members(&self) -> impl Iterator<Item = &str> {
        self.members
            .iter()
            .map(String::as_str)
            .filter(|m| !self.inactive.iter().any(|i| i == m))
    }

    /// The primary internal number (`""` only for an unvalidated group without numbers).
    pub fn primary_number(&self) -> &str {
        self.numbers.first().map_or("", String::as_str)
    }
}

/// An address book entry.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Contact {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub company: Option<String>,
    /// External numbers; [`Directory::from_value`] rewrites them to `+E.164`.
    #[serde(default)]
    pub numbers: Vec<String>,
}

impl Contact {
    /// "First Last", else the company ([`callhost_plugin_abi::display_name`]),
    /// else "".
    pub fn display_name(&self) -> String {
        callhost_plugin_abi::display_name(
            self.first_name.as_deref(),
            self.last_name.as_deref(),
            self.company.as_deref(),
        )
        .unwrap_or_default()
    }
}

/// Per-user call handling state. Every field is optional in TOML.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct UserState {
    /// Do not disturb.
    pub dnd: bool,
    /// Internal or external number every call goes to.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub forward_always: Option<String>,
    /// Where calls go while the user is busy.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub forward_busy: Option<String>,
    /// Where calls go after `no_answer_seconds` of ringing.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub forward_no_answer: Option<String>,
    pub no_answer_seconds: u32,
    pub call_waiting: bool,
    /// Already in a call (for simulation).
    #[schemars(extend("x-expert" = true))]
    pub busy: bool,
    /// `false`: no phone online (for simulation; `callhost serve` knows).
    #[schemars(extend("x-expert" = true))]
    pub registered: bool,
    /// Ring the user's `mobile` along with their phone (iFMC-like).
    pub ring_mobile: bool,
}

impl Default for UserState {
    fn default() -> Self {
        UserState {
            dnd: false,
            forward_always: None,
            forward_busy: None,
            forward_no_answer: None,
            no_answer_seconds: 20,
            call_waiting: true,
            busy: false,
            registered: true,
            ring_mobile: false,
        }
    }
}

/// The whole directory. The TOML shape is a public interface.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Directory {
    /// ISO 3166 alpha-2 code, e.g. "DE": decides how national numbers are read.
    pub home_country: String,
    #[serde(default)]
    pub users: Vec<User>,
    #[serde(default)]
    pub groups: Vec<Group>,
    /// The address book.
    #[serde(default)]
    pub contacts: Vec<Contact>,
    /// State by user id.
    #[serde(default)]
    pub state: BTreeMap<String, UserState>,
}

/// Whether `number` has the internal (extension) form: 2 to 6 digits, not
/// starting with 0 (0 is the trunk prefix for external numbers).
pub fn is_internal_number(number: &str) -> bool {
    internal_number_problem(number).is_none()
}

/// Why `number` is not an internal number, if it is not.
fn internal_number_problem(number: &str) -> Option<&'static str> {
    if number.is_empty() || !number.bytes().all(|b| b.is_ascii_digit()) {
        // "+4930…" is a number, just not an extension: say so precisely.
        if callhost_numbers::clean(number).is_ok() {
            return Some("is not an internal number (it must be 2 to 6 digits)");
        }
        return Some("is not a number");
    }
    if !(INTERNAL_MIN_DIGITS..=INTERNAL_MAX_DIGITS).contains(&number.len()) {
        return Some("is not an internal number (it must have 2 to 6 digits)");
    }
    if number.starts_with('0') {
        return Some("is not an internal number (it must not start with 0)");
    }
    None
}

/// The emergency numbers of a country (ISO code): an outside call that
/// the carrier routes, whoever dials them (unless an administrator made
/// one an extension). 112 works in every GSM network and the EU.
pub fn emergency_numbers(country: &str) -> &'static [&'static str] {
    match country.to_ascii_uppercase().as_str() {
        "DE" => &["110", "112"],
        "AT" => &["112", "122", "133", "144"],
        "CH" | "LI" => &["112", "117", "118", "144"],
        "GB" | "IE" => &["112", "999"],
        "US" | "CA" => &["911"],
        "AU" => &["000", "112"],
        "NL" | "BE" | "LU" | "FR" | "IT" | "ES" | "PL" | "DK" | "SE" | "NO" | "FI" => &["112"],
        _ => &["112"],
    }
}

/// Digits only, at most 6, no leading 0: what a phone dials for an extension.
/// Such a number that matches nobody is [`Resolved::Unknown`], not external.
fn is_short_number(number: &str) -> bool {
    !number.is_empty()
        && number.len() <= INTERNAL_MAX_DIGITS
        && !number.starts_with('0')
        && number.bytes().all(|b| b.is_ascii_digit())
}

fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id
            .bytes()
            .all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'_' | b'.' | b'-'))
}

/// Who owns a number: index into `users` or `groups`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Owner {
    User(usize),
    Group(usize),
}

/// Everything validation learns, reused by [`DirectoryIndex`] so numbers are
/// normalised only once.
struct Analysis {
    plan: NumberPlan,
    internal: HashMap<String, Owner>,
    /// Keyed by the `00…` international form.
    dids: HashMap<String, Owner>,
    /// Per contact, the normalised numbers in contact order.
    contact_numbers: Vec<Vec<ExternalNumber>>,
}

impl Directory {
    /// Parse and validate a directory from TOML text.
    pub fn from_toml_str(text: &str) -> Result<Directory, DirectoryError> {
        let value: toml::Value = toml::from_str(text).map_err(|e| {
            // A syntax error has no field path yet; the position is what helps.
            let path = e.span().map_or_else(
                || ".".to_owned(),
                |span| {
                    let before = text.get(..span.start).unwrap_or(text);
                    let line = before.matches('\n').count() + 1;
                    let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
                    format!("line {line}, column {column}")
                },
            );
            DirectoryError::Parse {
                path,
                message: e.message().trim().to_owned(),
            }
        })?;
        Directory::from_value(value)
    }

    /// Deserialise and validate a directory from a TOML value (the inline
    /// `[directory]` table of a call scenario). Contact numbers are rewritten
    /// to `+E.164` so the address book holds one form.
    pub fn from_value(value: toml::Value) -> Result<Directory, DirectoryError> {
        let mut dir: Directory =
            serde_path_to_error::deserialize(value).map_err(|e| DirectoryError::Parse {
                path: e.path().to_string(),
                message: e.inner().message().to_owned(),
            })?;
        let analysis = dir.analyse()?;
        for (contact, normalised) in dir.contacts.iter_mut().zip(analysis.contact_numbers) {
            contact.numbers = normalised.into_iter().map(|n| n.e164).collect();
        }
        Ok(dir)
    }

    /// Check every rule a loaded directory must satisfy (see the module docs
    /// of the TOML shape); the first violation is returned.
    pub fn validate(&self) -> Result<(), DirectoryError> {
        self.analyse().map(|_| ())
    }

    /// The user with `id` (linear scan; use [`DirectoryIndex`] on hot paths).
    pub fn user(&self, id: &str) -> Option<&User> {
        self.users.iter().find(|u| u.id == id)
    }

    fn analyse(&self) -> Result<Analysis, DirectoryError> {
        let plan =
            NumberPlan::new(&self.home_country).map_err(|source| DirectoryError::HomeCountry {
                value: self.home_country.clone(),
                source,
            })?;

        // Ids: unique across users and groups.
        let mut ids: HashMap<&str, String> = HashMap::new();
        let entities = self
            .users
            .iter()
            .enumerate()
            .map(|(i, u)| (format!("users[{i}]"), u.id.as_str(), "user"))
            .chain(
                self.groups
                    .iter()
                    .enumerate()
                    .map(|(i, g)| (format!("groups[{i}]"), g.id.as_str(), "group")),
            );
        for (path, id, kind) in entities {
            let field = format!("{path}.id");
            if !valid_id(id) {
                return Err(DirectoryError::InvalidId {
                    field,
                    value: id.to_owned(),
                });
            }
            if let Some(first) = ids.get(id) {
                return Err(DirectoryError::DuplicateId {
                    field,
                    value: id.to_owned(),
                    first: first.clone(),
                });
            }
            ids.insert(id, format!("{kind} {id:?} ({path})"));
        }

        // Numbers: each internal number and each (normalised) DID has one owner.
        let mut internal = HashMap::new();
        let mut dids = HashMap::new();
        let owners = self
            .users
            .iter()
            .enumerate()
            .map(|(i, u)| ("users", i, Owner::User(i), &u.numbers))
            .chain(
                self.groups
                    .iter()
                    .enumerate()
                    .map(|(i, g)| ("groups", i, Owner::Group(i), &g.numbers)),
            );
        for (list, i, owner, numbers) in owners {
            if numbers.is_empty() {
                return Err(DirectoryError::NoNumbers {
                    field: format!("{list}[{i}].numbers"),
                });
            }
            for (j, number) in numbers.iter().enumerate() {
                let field = format!("{list}[{i}].numbers[{j}]");
                if j == 0 || is_short_number(number) {
                    if let Some(reason) = internal_number_problem(number) {
                        return Err(DirectoryError::InvalidNumber {
                            field,
                            value: number.clone(),
                            reason: reason.to_owned(),
                        });
                    }
                    if let Some(prev) = internal.insert(number.clone(), owner) {
                        return Err(DirectoryError::DuplicateNumber {
                            field,
                            value: number.clone(),
                            owner: self.describe(prev),
                        });
                    }
                } else {
                    let ext = plan.normalize(number).map_err(|source| {
                        DirectoryError::ExternalNumber {
                            field: field.clone(),
                            value: number.clone(),
                            source,
                        }
                    })?;
                    if let Some(prev) = dids.insert(ext.international.clone(), owner) {
                        return Err(DirectoryError::DuplicateNumber {
                            field,
                            value: number.clone(),
                            owner: format!("{} (as {})", self.describe(prev), ext.e164),
                        });
                    }
                }
            }
        }

        for (i, user) in self.users.iter().enumerate() {
            if let Some(mobile) = &user.mobile {
                plan.normalize(mobile)
                    .map_err(|source| DirectoryError::ExternalNumber {
                        field: format!("users[{i}].mobile"),
                        value: mobile.clone(),
                        source,
                    })?;
            }
        }

        let user_ids: HashSet<&str> = self.users.iter().map(|u| u.id.as_str()).collect();
        for (i, group) in self.groups.iter().enumerate() {
            let mut seen = HashSet::new();
            for member in &group.members {
                let field = format!("groups[{i}].members");
                if !user_ids.contains(member.as_str()) {
                    return Err(DirectoryError::UnknownUser {
                        field,
                        value: member.clone(),
                    });
                }
                if !seen.insert(member.as_str()) {
                    return Err(DirectoryError::DuplicateMember {
                        field,
                        value: member.clone(),
                    });
                }
            }
            for inactive in &group.inactive {
                if !seen.contains(inactive.as_str()) {
                    return Err(DirectoryError::NotAMember {
                        field: format!("groups[{i}].inactive"),
                        value: inactive.clone(),
                        group: group.id.clone(),
                    });
                }
            }
        }

        let mut contact_numbers = Vec::with_capacity(self.contacts.len());
        for (i, contact) in self.contacts.iter().enumerate() {
            let mut normalised = Vec::with_capacity(contact.numbers.len());
            for (j, number) in contact.numbers.iter().enumerate() {
                let ext =
                    plan.normalize(number)
                        .map_err(|source| DirectoryError::ExternalNumber {
                            field: format!("contacts[{i}].numbers[{j}]"),
                            value: number.clone(),
                            source,
                        })?;
                normalised.push(ext);
            }
            contact_numbers.push(normalised);
        }

        for (user_id, state) in &self.state {
            let path = format!("state.{user_id}");
            if !user_ids.contains(user_id.as_str()) {
                return Err(DirectoryError::UnknownUser {
                    field: path,
                    value: user_id.clone(),
                });
            }
            let forwards = [
                ("forward_always", &state.forward_always),
                ("forward_busy", &state.forward_busy),
                ("forward_no_answer", &state.forward_no_answer),
            ];
            for (name, target) in forwards {
                let Some(target) = target else { continue };
                let field = format!("{path}.{name}");
                check_forward_target(&plan, &internal, field, target)?;
            }
            if state.ring_mobile && self.user(user_id).is_some_and(|u| u.mobile.is_none()) {
                return Err(DirectoryError::NeedsField {
                    field: format!("{path}.ring_mobile"),
                    reason: format!("user {user_id:?} has no `mobile` number to ring"),
                });
            }
            if !(1..=3600).contains(&state.no_answer_seconds) {
                return Err(DirectoryError::OutOfRange {
                    field: format!("{path}.no_answer_seconds"),
                    value: state.no_answer_seconds.into(),
                    range: "1..=3600",
                });
            }
        }

        Ok(Analysis {
            plan,
            internal,
            dids,
            contact_numbers,
        })
    }

    fn describe(&self, owner: Owner) -> String {
        match owner {
            Owner::User(i) => format!("user {:?}", self.users[i].id),
            Owner::Group(i) => format!("group {:?}", self.groups[i].id),
        }
    }
}

/// A forward goes to an existing internal number or a valid external one.
fn check_forward_target(
    plan: &NumberPlan,
    internal: &HashMap<String, Owner>,
    field: String,
    target: &str,
) -> Result<(), DirectoryError> {
    if target.trim().is_empty() {
        return Err(DirectoryError::Empty { field });
    }
    if is_short_number(target) {
        if internal.contains_key(target) {
            return Ok(());
        }
        return Err(DirectoryError::UnknownInternalNumber {
            field,
            value: target.to_owned(),
        });
    }
    plan.normalize(target)
        .map(|_| ())
        .map_err(|source| DirectoryError::ExternalNumber {
            field,
            value: target.to_owned(),
            source,
        })
}

/// What a dialled or calling number resolves to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Resolved<'a> {
    /// An internal number or DID of a user.
    User(&'a User),
    /// An internal number or DID of a group.
    Group(&'a Group),
    /// A valid external number, with the address book entry that has it.
    External(ExternalNumber, Option<&'a Contact>),
    /// A short number nobody has, or something that is not a number.
    Unknown,
}

/// Immutable lookup structure over a validated [`Directory`]; build once and
/// share via `Arc`. Every lookup is a hash lookup.
pub struct DirectoryIndex {
    dir: Directory,
    plan: NumberPlan,
    users: HashMap<String, usize>,
    groups: HashMap<String, usize>,
    internal: HashMap<String, Owner>,
    dids: HashMap<String, Owner>,
    /// Keyed by the `00…` international form; the first contact with a number wins.
    contacts: HashMap<String, usize>,
    groups_of: HashMap<String, Vec<usize>>,
    active_groups_of: HashMap<String, Vec<usize>>,
}

impl fmt::Debug for DirectoryIndex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The full directory is large; counts are what a log line needs.
        f.debug_struct("DirectoryIndex")
            .field("home_country", &self.dir.home_country)
            .field("users", &self.users.len())
            .field("groups", &self.groups.len())
            .field("contacts", &self.dir.contacts.len())
            .finish()
    }
}

impl DirectoryIndex {
    /// Validate `dir` and index it.
    pub fn new(dir: Directory) -> Result<DirectoryIndex, DirectoryError> {
        let analysis = dir.analyse()?;

        let users = dir
            .users
            .iter()
            .enumerate()
            .map(|(i, u)| (u.id.clone(), i))
            .collect();
        let groups = dir
            .groups
            .iter()
            .enumerate()
            .map(|(i, g)| (g.id.clone(), i))
            .collect();

        let mut contacts = HashMap::new();
        for (i, numbers) in analysis.contact_numbers.iter().enumerate() {
            for number in numbers {
                if let Some(&first) = contacts.get(&number.international) {
                    if first != i {
                        // Shared numbers (a company switchboard) are legitimate.
                        tracing::debug!(
                            number = %number.e164,
                            contact = i,
                            first,
                            "number on several contacts; the first one is used"
                        );
                    }
                    continue;
                }
                contacts.insert(number.international.clone(), i);
            }
        }

        let mut groups_of: HashMap<String, Vec<usize>> = HashMap::new();
        let mut active_groups_of: HashMap<String, Vec<usize>> = HashMap::new();
        for (i, group) in dir.groups.iter().enumerate() {
            for member in &group.members {
                groups_of.entry(member.clone()).or_default().push(i);
            }
            for member in group.active_members() {
                active_groups_of
                    .entry(member.to_owned())
                    .or_default()
                    .push(i);
            }
        }

        tracing::debug!(
            users = dir.users.len(),
            groups = dir.groups.len(),
            contacts = dir.contacts.len(),
            dids = analysis.dids.len(),
            "directory indexed"
        );
        Ok(DirectoryIndex {
            plan: analysis.plan,
            users,
            groups,
            internal: analysis.internal,
            dids: analysis.dids,
            contacts,
            groups_of,
            active_groups_of,
            dir,
        })
    }

    /// Resolve a number: internal number, then DID, then external with its
    /// address book contact; short numbers nobody has are `Unknown`.
    pub fn resolve(&self, number: &str) -> Resolved<'_> {
        let number = number.trim();
        if let Some(&owner) = self.internal.get(number) {
            return self.owner(owner);
        }
        if self.is_emergency(number) {
            // Dialled as is: the carrier knows its own emergency numbers.
            let emergency = ExternalNumber {
                international: number.to_string(),
                e164: number.to_string(),
                national: number.to_string(),
                country: None,
            };
            return Resolved::External(emergency, None);
        }
        if is_short_number(number) {
            return Resolved::Unknown;
        }
        let Ok(ext) = self.plan.normalize(number) else {
            return Resolved::Unknown;
        };
        if let Some(&owner) = self.dids.get(&ext.international) {
            return self.owner(owner);
        }
        let contact = self.contact_by_number(&ext.international);
        Resolved::External(ext, contact)
    }

    fn owner(&self, owner: Owner) -> Resolved<'_> {
        match owner {
            Owner::User(i) => Resolved::User(&self.dir.users[i]),
            Owner::Group(i) => Resolved::Group(&self.dir.groups[i]),
        }
    }

    /// The user with `id`.
    pub fn user(&self, id: &str) -> Option<&User> {
        self.users.get(id).map(|&i| &self.dir.users[i])
    }

    /// The group with `id`.
    pub fn group(&self, id: &str) -> Option<&Group> {
        self.groups.get(id).map(|&i| &self.dir.groups[i])
    }

    /// The user's state; the default for users without a `[state.<id>]` entry.
    pub fn state(&self, user_id: &str) -> UserState {
        self.dir.state.get(user_id).cloned().unwrap_or_default()
    }

    /// Ids of all groups the user is a member of, in directory order.
    pub fn groups_of(&self, user_id: &str) -> Vec<&str> {
        self.group_ids(self.groups_of.get(user_id))
    }

    /// Ids of the groups the user is an active (logged-in) member of.
    pub fn active_groups_of(&self, user_id: &str) -> Vec<&str> {
        self.group_ids(self.active_groups_of.get(user_id))
    }

    fn group_ids(&self, indices: Option<&Vec<usize>>) -> Vec<&str> {
        indices
            .into_iter()
            .flatten()
            .map(|&i| self.dir.groups[i].id.as_str())
            .collect()
    }

    /// `number` is an emergency number of the home country.
    pub fn is_emergency(&self, number: &str) -> bool {
        emergency_numbers(&self.dir.home_country).contains(&number.trim())
    }

    /// The address book entry with this number (`00…` international form).
    pub fn contact_by_number(&self, international: &str) -> Option<&Contact> {
        self.contacts
            .get(international)
            .map(|&i| &self.dir.contacts[i])
    }

    /// The home country's number plan.
    pub fn plan(&self) -> &NumberPlan {
        &self.plan
    }

    /// The indexed directory.
    pub fn directory(&self) -> &Directory {
        &self.dir
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEMO: &str = r#"
home_country = "DE"

[[users]]
id = "boss"
name = "Anna Boss"
first_name = "Anna"
last_name = "Boss"
numbers = ["201", "+4930123456201"]
mobile = "+491701234567"
password = "secret"

[[users]]
id = "sec"
name = "Sekretariat"
numbers = ["202", "0049 30 123456202"]

[[users]]
id = "clerk"
name = "Clerk"
numbers = ["203"]

[[groups]]
id = "office"
name = "Office"
numbers = ["300", "030 123456300"]
members = ["sec", "clerk"]
inactive = ["clerk"]

[[contacts]]
first_name = "Max"
last_name = "Kunde"
company = "Kunde GmbH"
numbers = ["0891234567"]

[[contacts]]
company = "Lieferant AG"
numbers = ["+43 1 5123456"]

[state.boss]
dnd = false
forward_always = "202"
forward_busy = "202"
forward_no_answer = "+491701234567"
no_answer_seconds = 15

[state.sec]
call_waiting = false
"#;

    fn demo() -> Directory {
        Directory::from_toml_str(DEMO).expect("demo directory is valid")
    }

    fn err(text: &str) -> String {
        Directory::from_toml_str(text)
            .expect_err("directory must be rejected")
            .to_string()
    }

    #[test]
    fn loads_demo_and_normalises_contacts() {
        let dir = demo();
        assert_eq!(dir.users.len(), 3);
        assert_eq!(dir.users[0].primary_number(), "201");
        assert_eq!(dir.contacts[0].numbers, ["+49891234567"]);
        assert_eq!(dir.contacts[1].numbers, ["+4315123456"]);
        assert_eq!(dir.state["boss"].no_answer_seconds, 15);
        assert!(!dir.state["sec"].call_waiting);
        // Unspecified fields take the defaults.
        assert_eq!(dir.state["sec"].no_answer_seconds, 20);
        assert!(dir.state["sec"].registered);
        // DIDs stay as written: the index compares normalised forms.
        assert_eq!(dir.users[1].numbers[1], "0049 30 123456202");
    }

    #[test]
    fn password_is_never_debug_printed() {
        let dir = demo();
        let debug = format!("{dir:?}");
        assert!(!debug.contains("secret"), "{debug}");
        assert!(debug.contains("***"));
        assert_eq!(
            dir.users[0].password.as_ref().map(Secret::expose),
            Some("secret")
        );
    }

    #[test]
    fn emergency_numbers_go_outside_unless_made_an_extension() {
        let index = DirectoryIndex::new(demo()).unwrap();
        match index.resolve("112") {
            Resolved::External(number, None) => assert_eq!(number.national, "112"),
            other => panic!("112 resolved to {other:?}"),
        }
        assert_eq!(index.resolve("113"), Resolved::Unknown);
        // An extension an administrator gave an emergency number rings.
        let taken = Directory::from_toml_str(&DEMO.replacen("\"201\"", "\"112\"", 1)).unwrap();
        let taken = DirectoryIndex::new(taken).unwrap();
        assert!(matches!(taken.resolve("112"), Resolved::User(_)));
    }

    #[test]
    fn toml_round_trip() {
        let dir = demo();
        let text = toml::to_string(&dir).unwrap();
        assert_eq!(Directory::from_toml_str(&text).unwrap(), dir);
    }

    #[test]
    fn from_value_accepts_inline_table() {
        let scenario: toml::Value = toml::from_str(&format!(
            "[directory]\n{}",
            DEMO.replace("[[", "[[directory.")
                .replace("[state.", "[directory.state.")
        ))
        .unwrap();
        let inline = scenario.get("directory").cloned().unwrap();
        assert_eq!(Directory::from_value(inline).unwrap(), demo());
    }

    #[test]
    fn defaults() {
        let s = UserState::default();
        assert!(s.call_waiting && s.registered && !s.dnd && !s.busy);
        assert_eq!(s.no_answer_seconds, 20);
        let g = &demo().groups[0];
        assert_eq!(g.active_members().collect::<Vec<_>>(), ["sec"]);
        assert_eq!(g.primary_number(), "300");
    }

    #[test]
    fn contact_display_name() {
        let c = |f: Option<&str>, l: Option<&str>, co: Option<&str>| Contact {
            first_name: f.map(Into::into),
            last_name: l.map(Into::into),
            company: co.map(Into::into),
            numbers: vec![],
        };
        assert_eq!(
            c(Some("Max"), Some("Kunde"), Some("K")).display_name(),
            "Max Kunde"
        );
        assert_eq!(c(None, Some("Kunde"), Some("K")).display_name(), "Kunde");
        assert_eq!(
            c(None, None, Some("Kunde GmbH")).display_name(),
            "Kunde GmbH"
        );
        assert_eq!(c(Some(" "), None, None).display_name(), "");
        assert_eq!(
            c(Some(" Max "), Some(""), Some("K")).display_name(),
            "Max",
            "parts are trimmed, blank ones skipped"
        );
    }

    #[test]
    fn unknown_field_names_the_path() {
        let e = err(&DEMO.replace("mobile = ", "mobil = "));
        assert!(e.starts_with("users[0]"), "{e}");
        assert!(e.contains("unknown field `mobil`"), "{e}");

        let e = err(&DEMO.replace("dnd = false", "dnd = false\ndnt = 1"));
        assert!(e.starts_with("state.boss"), "{e}");
        assert!(e.contains("dnt"), "{e}");

        let e = err(&DEMO.replace("no_answer_seconds = 15", "no_answer_seconds = \"x\""));
        assert!(e.starts_with("state.boss.no_answer_seconds"), "{e}");
    }

    #[test]
    fn syntax_error_is_reported() {
        let e = err("home_country = \"DE\"\n[[users]\n");
        assert!(e.starts_with("line 2, column "), "{e}");
    }

    #[test]
    fn invalid_directories_name_field_and_value() {
        let cases: &[(&str, &str, &str)] = &[
            (
                r#"numbers = ["203"]"#,
                r#"numbers = ["20a"]"#,
                r#"users[2].numbers[0]: "20a" is not a number"#,
            ),
            (
                r#"numbers = ["203"]"#,
                r#"numbers = ["2"]"#,
                r#"users[2].numbers[0]: "2" is not an internal number"#,
            ),
            (
                r#"numbers = ["203"]"#,
                r#"numbers = ["+4930123456203"]"#,
                r#"users[2].numbers[0]: "+4930123456203" is not an internal number"#,
            ),
            (
                r#"numbers = ["203"]"#,
                r#"numbers = []"#,
                "users[2].numbers: must contain at least the primary internal number",
            ),
            (
                r#"numbers = ["203"]"#,
                r#"numbers = ["201"]"#,
                r#"users[2].numbers[0]: number "201" is already used by user "boss""#,
            ),
            (
                r#"numbers = ["300", "030 123456300"]"#,
                r#"numbers = ["300", "004930123456201"]"#,
                r#"groups[0].numbers[1]: number "004930123456201" is already used by user "boss" (as +4930123456201)"#,
            ),
            (
                r#"numbers = ["300", "030 123456300"]"#,
                r#"numbers = ["300", "12x"]"#,
                r#"groups[0].numbers[1]: "12x" is not a valid internal or external number"#,
            ),
            (
                r#"members = ["sec", "clerk"]"#,
                r#"members = ["sec", "clerkk"]"#,
                r#"groups[0].members: unknown user "clerkk""#,
            ),
            (
                r#"inactive = ["clerk"]"#,
                r#"inactive = ["boss"]"#,
                r#"groups[0].inactive: "boss" is not a member of group "office""#,
            ),
            (
                "[state.sec]",
                "[state.nobody]",
                r#"state.nobody: unknown user "nobody""#,
            ),
            (
                r#"home_country = "DE""#,
                r#"home_country = "XX""#,
                r#"home_country: "XX" is not a valid country"#,
            ),
            (
                r#"id = "clerk""#,
                r#"id = "office""#,
                r#"groups[0].id: duplicate id "office" (already used by user "office" (users[2]))"#,
            ),
            (
                r#"id = "clerk""#,
                r#"id = "Clerk""#,
                r#"users[2].id: "Clerk" is not a valid id"#,
            ),
            (
                r#"forward_busy = "202""#,
                r#"forward_busy = """#,
                "state.boss.forward_busy: must not be empty",
            ),
            (
                r#"forward_busy = "202""#,
                r#"forward_busy = "299""#,
                r#"state.boss.forward_busy: unknown internal number "299""#,
            ),
            (
                r#"mobile = "+491701234567""#,
                r#"mobile = "17012""#,
                r#"users[0].mobile: "17012" is not a valid internal or external number"#,
            ),
            (
                r#"numbers = ["0891234567"]"#,
                r#"numbers = ["abc"]"#,
                r#"contacts[0].numbers[0]: "abc" is not a valid internal or external number"#,
            ),
            (
                "no_answer_seconds = 15",
                "no_answer_seconds = 0",
                "state.boss.no_answer_seconds: 0 is out of range",
            ),
        ];
        for (from, to, want) in cases {
            assert!(DEMO.contains(from), "test case does not apply: {from}");
            let e = err(&DEMO.replacen(from, to, 1));
            assert!(e.starts_with(want), "want {want:?}\n got {e:?}");
        }
    }

    #[test]
    fn index_resolves_internal_dids_contacts_and_unknown() {
        let index = DirectoryIndex::new(demo()).unwrap();
        let user = |r: Resolved<'_>| match r {
            Resolved::User(u) => u.id.clone(),
            other => panic!("expected a user, got {other:?}"),
        };
        let group = |r: Resolved<'_>| match r {
            Resolved::Group(g) => g.id.clone(),
            other => panic!("expected a group, got {other:?}"),
        };
        assert_eq!(user(index.resolve("201")), "boss");
        assert_eq!(user(index.resolve(" 202 ")), "sec");
        assert_eq!(group(index.resolve("300")), "office");
        // The same DID in every form.
        for form in [
            "+4930123456201",
            "004930123456201",
            "030123456201",
            "030 123456-201",
        ] {
            assert_eq!(user(index.resolve(form)), "boss", "{form}");
        }
        assert_eq!(user(index.resolve("+4930123456202")), "sec");
        assert_eq!(group(index.resolve("030123456300")), "office");

        match index.resolve("0049891234567") {
            Resolved::External(ext, Some(c)) => {
                assert_eq!(ext.e164, "+49891234567");
                assert_eq!(c.display_name(), "Max Kunde");
            }
            other => panic!("expected a contact, got {other:?}"),
        }
        match index.resolve("0043 1 5123456") {
            Resolved::External(_, Some(c)) => assert_eq!(c.display_name(), "Lieferant AG"),
            other => panic!("expected a contact, got {other:?}"),
        }
        match index.resolve("+491709999999") {
            Resolved::External(ext, None) => assert_eq!(ext.international, "00491709999999"),
            other => panic!("expected an unknown external number, got {other:?}"),
        }
        assert_eq!(index.resolve("299"), Resolved::Unknown);
        assert_eq!(index.resolve("5"), Resolved::Unknown);
        assert_eq!(index.resolve("*21#"), Resolved::Unknown);
        assert_eq!(index.resolve(""), Resolved::Unknown);
    }

    #[test]
    fn index_lookups() {
        let index = DirectoryIndex::new(demo()).unwrap();
        assert_eq!(index.user("boss").unwrap().name, "Anna Boss");
        assert!(index.user("office").is_none());
        assert_eq!(index.group("office").unwrap().name, "Office");
        assert_eq!(index.state("boss").forward_busy.as_deref(), Some("202"));
        assert_eq!(index.state("clerk"), UserState::default());
        assert_eq!(index.groups_of("clerk"), ["office"]);
        assert!(index.active_groups_of("clerk").is_empty());
        assert_eq!(index.active_groups_of("sec"), ["office"]);
        assert!(index.groups_of("boss").is_empty());
        assert_eq!(index.plan().home_country(), "DE");
        assert_eq!(index.directory().users.len(), 3);
        let debug = format!("{index:?}");
        assert!(debug.contains("users: 3"), "{debug}");
    }

    #[test]
    fn index_is_shareable() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<DirectoryIndex>();
    }
}
