//! The client protocol, version 1: JSON text frames (see
//! `docs/modules/api-connector.md` for every message with an example, and
//! `assets/protocol.schema.json`).
//!
//! Parsing is two-step so every refusal is precise: the frame must be a
//! JSON object with a string `type` (else `bad_message`); an unknown type
//! is `unknown_command`; a known one with missing or mistyped fields is
//! `bad_message` naming the field. Unknown fields are ignored, so a newer
//! client's additions do not break an older connector. Nothing parsed here
//! ever prints a password or key.

use std::fmt;

use serde::Deserialize;
use serde_json::{json, Map, Value};

use callhost_plugin_sdk::{CallListDirection, CallListItem, Decision, ForwardKind, UserPresence};

/// The protocol version this connector speaks.
pub const VERSION: u64 = 1;
/// Users one client may watch at once.
pub const MAX_SUBSCRIPTIONS: usize = 200;
/// Entries one `call_list` may ask for.
pub const MAX_CALL_LIST: u32 = 500;
/// Entries a `call_list` without a limit gets.
pub const DEFAULT_CALL_LIST: u32 = 50;

/// Longest accepted text fields (longer ones are `bad_message`).
const MAX_USER: usize = 128;
const MAX_SECRET: usize = 1024;
const MAX_NUMBER: usize = 64;
const MAX_ID: usize = 128;
/// Client names and versions are cut to this (they go into logs and the
/// `seats` action).
const MAX_CLIENT_TEXT: usize = 64;

/// Every error code a client can get, in `error` messages and sign-in
/// refusals.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    BadMessage,
    UnsupportedVersion,
    BadKey,
    UnknownUser,
    WrongPassword,
    NoPassword,
    NoSeat,
    TooManyFailures,
    HelloTimeout,
    UnknownCommand,
    RateLimited,
    InvalidArgument,
    /// The host refused or failed the command; the message says why.
    Failed,
    /// The host did not answer in time.
    Timeout,
    /// The connector is shutting down or cannot reach the host's services.
    Unavailable,
}

impl ErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadMessage => "bad_message",
            ErrorCode::UnsupportedVersion => "unsupported_version",
            ErrorCode::BadKey => "bad_key",
            ErrorCode::UnknownUser => "unknown_user",
            ErrorCode::WrongPassword => "wrong_password",
            ErrorCode::NoPassword => "no_password",
            ErrorCode::NoSeat => "no_seat",
            ErrorCode::TooManyFailures => "too_many_failures",
            ErrorCode::HelloTimeout => "hello_timeout",
            ErrorCode::UnknownCommand => "unknown_command",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::InvalidArgument => "invalid_argument",
            ErrorCode::Failed => "failed",
            ErrorCode::Timeout => "timeout",
            ErrorCode::Unavailable => "unavailable",
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why the connector closes a connection: the WebSocket close code and a
/// short reason (the close frame's). Sign-in refusals close with their
/// own code after their `error` message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ending {
    /// The sign-in was refused with this code.
    Refused(ErrorCode),
    SignedOut,
    Revoked,
    /// A message over `max_message_bytes`.
    TooBig,
    /// 100 commands over the rate in a row.
    Flooding,
    /// The client does not read what it is sent.
    TooSlow,
    /// No pong within twice `ping_seconds`.
    PingTimeout,
    /// The connector is stopping (deactivated, upgraded, host shutdown).
    Stopping,
    /// The client closed (or the connection broke): nothing to send.
    Gone,
}

impl Ending {
    pub fn close_code(&self) -> u16 {
        match self {
            Ending::Refused(code) => match code {
                ErrorCode::BadMessage => 4000,
                ErrorCode::UnsupportedVersion => 4001,
                ErrorCode::BadKey => 4002,
                ErrorCode::UnknownUser => 4003,
                ErrorCode::WrongPassword => 4004,
                ErrorCode::NoPassword => 4005,
                ErrorCode::NoSeat => 4006,
                ErrorCode::TooManyFailures => 4007,
                ErrorCode::HelloTimeout => 4009,
                // The connector's own trouble: "try again later".
                ErrorCode::Unavailable | ErrorCode::Timeout => 1013,
                _ => 4000,
            },
            Ending::SignedOut => 1000,
            Ending::Revoked => 4008,
            Ending::TooBig => 1009,
            Ending::Flooding => 4010,
            Ending::TooSlow => 4011,
            Ending::PingTimeout => 4012,
            Ending::Stopping => 1001,
            Ending::Gone => 1000,
        }
    }

    /// The close frame's reason (at most 123 bytes).
    pub fn reason(&self) -> &'static str {
        match self {
            Ending::Refused(code) => code.as_str(),
            Ending::SignedOut => "signed out",
            Ending::Revoked => "revoked",
            Ending::TooBig => "message too big",
            Ending::Flooding => "too many commands over the rate",
            Ending::TooSlow => "too slow",
            Ending::PingTimeout => "no pong",
            Ending::Stopping => "the connector is stopping",
            Ending::Gone => "",
        }
    }
}

/// A refusal of one client message: its `error` answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// The command's `id`, when it had a usable one.
    pub id: Option<Value>,
    pub code: ErrorCode,
    pub message: String,
}

impl Refusal {
    pub fn new(id: Option<Value>, code: ErrorCode, message: impl Into<String>) -> Refusal {
        Refusal {
            id,
            code,
            message: message.into(),
        }
    }

    /// `{"type":"error","id":…,"code":…,"message":…}`
    pub fn to_json(&self) -> String {
        error_message(self.id.as_ref(), self.code, &self.message)
    }
}

/// A text a client sent that must not show anywhere.
#[derive(Clone, Deserialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct Sensitive(String);

impl Sensitive {
    pub fn new(text: impl Into<String>) -> Sensitive {
        Sensitive(text.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Sensitive {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("********")
    }
}

/// The first message: who signs in, with what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hello {
    pub key: Sensitive,
    pub user: String,
    pub password: Sensitive,
    pub client: ClientSoftware,
}

/// The client's own name and version (`hello.client`), cut to 64
/// characters, control characters and invisible formatting replaced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientSoftware {
    pub name: String,
    pub version: String,
}

/// A command after sign-in, with the `id` its answer echoes.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    pub id: Value,
    pub command: Command,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    Dial {
        number: String,
    },
    HangUp {
        call_id: String,
    },
    SetDnd {
        on: bool,
    },
    SetForward {
        kind: ForwardKind,
        target: Option<String>,
    },
    GroupLogin {
        group: String,
        logged_in: bool,
    },
    Lookup {
        number: String,
    },
    CallList {
        limit: u32,
    },
    Subscribe {
        users: Vec<String>,
    },
    Unsubscribe {
        users: Vec<String>,
    },
    SignOut,
}

/// The command names, as `type`.
pub const COMMANDS: &[&str] = &[
    "dial",
    "hang_up",
    "set_dnd",
    "set_forward",
    "group_login",
    "lookup",
    "call_list",
    "subscribe",
    "unsubscribe",
    "sign_out",
];

/// The frame as an object with its `type`.
fn object(text: &str) -> Result<(Map<String, Value>, String), Refusal> {
    let value: Value = serde_json::from_str(text)
        .map_err(|error| Refusal::new(None, ErrorCode::BadMessage, format!("not JSON: {error}")))?;
    let Value::Object(object) = value else {
        return Err(Refusal::new(
            None,
            ErrorCode::BadMessage,
            "a message is a JSON object",
        ));
    };
    let kind = match object.get("type") {
        Some(Value::String(kind)) => kind.clone(),
        Some(_) => {
            return Err(Refusal::new(
                usable_id(&object),
                ErrorCode::BadMessage,
                "`type` must be a string",
            ))
        }
        None => {
            return Err(Refusal::new(
                usable_id(&object),
                ErrorCode::BadMessage,
                "a message needs a `type`",
            ))
        }
    };
    Ok((object, kind))
}

/// The `id` if it is one a client may choose: a string (≤ 128 bytes) or
/// an integer.
fn usable_id(object: &Map<String, Value>) -> Option<Value> {
    match object.get("id")? {
        Value::String(id) if id.len() <= MAX_ID => Some(Value::String(id.clone())),
        Value::Number(n) if n.is_i64() || n.is_u64() => Some(Value::Number(n.clone())),
        _ => None,
    }
}

/// Deserialises the fields of a known message, naming the culprit.
fn fields<T: serde::de::DeserializeOwned>(
    object: Map<String, Value>,
    id: Option<Value>,
    kind: &str,
) -> Result<T, Refusal> {
    serde_json::from_value(Value::Object(object))
        .map_err(|error| Refusal::new(id, ErrorCode::BadMessage, format!("`{kind}`: {error}")))
}

fn check_text(
    id: &Option<Value>,
    field: &str,
    text: &str,
    max: usize,
    allow_empty: bool,
) -> Result<(), Refusal> {
    if !allow_empty && text.trim().is_empty() {
        return Err(Refusal::new(
            id.clone(),
            ErrorCode::BadMessage,
            format!("`{field}` must not be empty"),
        ));
    }
    if text.len() > max {
        return Err(Refusal::new(
            id.clone(),
            ErrorCode::BadMessage,
            format!("`{field}` is longer than {max} bytes"),
        ));
    }
    if text.chars().any(is_unprintable) {
        return Err(Refusal::new(
            id.clone(),
            ErrorCode::BadMessage,
            format!("`{field}` must not contain control characters or invisible formatting"),
        ));
    }
    Ok(())
}

/// Characters that must not reach a log line or an administrator's
/// listing from a client: control characters, and the invisible ones that
/// change how a line reads: a bidirectional override (U+202E) shows the
/// rest of the line backwards, zero-width characters make two names look
/// alike, U+2028/U+2029 break lines in some viewers. No user id, number,
/// group or call id needs them.
pub fn is_unprintable(c: char) -> bool {
    // Soft hyphen, Arabic letter mark, Mongolian vowel separator;
    // zero-width space, joiners and the left-to-right and right-to-left
    // marks; line and paragraph separators, embeddings and overrides; word
    // joiner, invisible operators and isolates; the byte order mark;
    // interlinear annotations.
    c.is_control()
        || matches!(
            c,
            '\u{00AD}'
                | '\u{061C}'
                | '\u{180E}'
                | '\u{200B}'..='\u{200F}'
                | '\u{2028}'..='\u{202E}'
                | '\u{2060}'..='\u{206F}'
                | '\u{FEFF}'
                | '\u{FFF9}'..='\u{FFFB}'
        )
}

/// A client-supplied name for logs and listings: cut, control characters
/// and invisible formatting ([`is_unprintable`]) replaced.
fn tidy(text: &str) -> String {
    let tidy: String = text
        .chars()
        .take(MAX_CLIENT_TEXT)
        .map(|c| if is_unprintable(c) { '?' } else { c })
        .collect();
    let tidy = tidy.trim();
    if tidy.is_empty() {
        "unnamed".to_string()
    } else {
        tidy.to_string()
    }
}

/// Parses the first message. The version is looked at before anything
/// else, so a client of a later version gets `unsupported_version`
/// whatever else its hello holds.
pub fn parse_hello(text: &str) -> Result<Hello, Refusal> {
    let (object, kind) = object(text)?;
    if kind != "hello" {
        return Err(Refusal::new(
            None,
            ErrorCode::BadMessage,
            format!("the first message must be `hello`, not `{}`", tidy(&kind)),
        ));
    }
    match object.get("version") {
        Some(Value::Number(n)) if n.as_u64() == Some(VERSION) => {}
        Some(Value::Number(n)) => {
            return Err(Refusal::new(
                None,
                ErrorCode::UnsupportedVersion,
                format!("this connector speaks version {VERSION} of the protocol, not {n}"),
            ))
        }
        _ => {
            return Err(Refusal::new(
                None,
                ErrorCode::BadMessage,
                "`hello` needs a numeric `version`",
            ))
        }
    }
    #[derive(Deserialize)]
    struct HelloFields {
        key: Sensitive,
        user: String,
        password: Sensitive,
        #[serde(default)]
        client: Option<ClientFields>,
    }
    #[derive(Deserialize)]
    struct ClientFields {
        #[serde(default)]
        name: Option<String>,
        #[serde(default)]
        version: Option<String>,
    }
    let hello: HelloFields = fields(object, None, "hello")?;
    check_text(&None, "user", &hello.user, MAX_USER, false)?;
    for (field, secret) in [("key", &hello.key), ("password", &hello.password)] {
        if secret.expose().len() > MAX_SECRET {
            return Err(Refusal::new(
                None,
                ErrorCode::BadMessage,
                format!("`{field}` is longer than {MAX_SECRET} bytes"),
            ));
        }
    }
    let client = hello.client.unwrap_or(ClientFields {
        name: None,
        version: None,
    });
    Ok(Hello {
        key: hello.key,
        user: hello.user,
        password: hello.password,
        client: ClientSoftware {
            name: tidy(client.name.as_deref().unwrap_or("")),
            version: tidy(client.version.as_deref().unwrap_or("")),
        },
    })
}

/// Parses a command of a signed-in client.
pub fn parse_request(text: &str) -> Result<Request, Refusal> {
    let (object, kind) = object(text)?;
    let id = usable_id(&object);
    if object.contains_key("id") && id.is_none() {
        return Err(Refusal::new(
            None,
            ErrorCode::BadMessage,
            "`id` must be a string of at most 128 bytes or an integer",
        ));
    }
    if !COMMANDS.contains(&kind.as_str()) {
        let message = if kind == "hello" {
            "already signed in".to_string()
        } else {
            format!(
                "unknown command `{}`; the commands are {}",
                tidy(&kind),
                COMMANDS.join(", ")
            )
        };
        return Err(Refusal::new(id, ErrorCode::UnknownCommand, message));
    }
    let Some(request_id) = id
        .clone()
        .or_else(|| (kind == "sign_out").then_some(Value::Null))
    else {
        return Err(Refusal::new(
            None,
            ErrorCode::BadMessage,
            format!("`{kind}` needs an `id` (a string or an integer) to answer to"),
        ));
    };
    let command = match kind.as_str() {
        "dial" => {
            #[derive(Deserialize)]
            struct Dial {
                number: String,
            }
            let dial: Dial = fields(object, id.clone(), &kind)?;
            check_text(&id, "number", &dial.number, MAX_NUMBER, false)?;
            Command::Dial {
                number: dial.number.trim().to_string(),
            }
        }
        "hang_up" => {
            #[derive(Deserialize)]
            struct HangUp {
                call_id: String,
            }
            let hang_up: HangUp = fields(object, id.clone(), &kind)?;
            check_text(&id, "call_id", &hang_up.call_id, MAX_ID, false)?;
            Command::HangUp {
                call_id: hang_up.call_id,
            }
        }
        "set_dnd" => {
            #[derive(Deserialize)]
            struct SetDnd {
                on: bool,
            }
            let set: SetDnd = fields(object, id.clone(), &kind)?;
            Command::SetDnd { on: set.on }
        }
        "set_forward" => {
            #[derive(Deserialize)]
            #[serde(rename_all = "snake_case")]
            enum Kind {
                Always,
                Busy,
                NoAnswer,
            }
            #[derive(Deserialize)]
            struct SetForward {
                kind: Kind,
                // Present and null clears: `Option` would take a missing
                // field for a clear, so it is required.
                target: Value,
            }
            let set: SetForward = fields(object, id.clone(), &kind)?;
            let target = match set.target {
                Value::Null => None,
                Value::String(target) if target.trim().is_empty() => None,
                Value::String(target) => {
                    check_text(&id, "target", &target, MAX_NUMBER, false)?;
                    Some(target.trim().to_string())
                }
                _ => {
                    return Err(Refusal::new(
                        id,
                        ErrorCode::BadMessage,
                        "`set_forward`: `target` is a number as a string, or null to clear",
                    ))
                }
            };
            Command::SetForward {
                kind: match set.kind {
                    Kind::Always => ForwardKind::Always,
                    Kind::Busy => ForwardKind::Busy,
                    Kind::NoAnswer => ForwardKind::NoAnswer,
                },
                target,
            }
        }
        "group_login" => {
            #[derive(Deserialize)]
            struct GroupLogin {
                group: String,
                logged_in: bool,
            }
            let login: GroupLogin = fields(object, id.clone(), &kind)?;
            check_text(&id, "group", &login.group, MAX_USER, false)?;
            Command::GroupLogin {
                group: login.group,
                logged_in: login.logged_in,
            }
        }
        "lookup" => {
            #[derive(Deserialize)]
            struct Lookup {
                number: String,
            }
            let lookup: Lookup = fields(object, id.clone(), &kind)?;
            check_text(&id, "number", &lookup.number, MAX_NUMBER, false)?;
            Command::Lookup {
                number: lookup.number.trim().to_string(),
            }
        }
        "call_list" => {
            #[derive(Deserialize)]
            struct CallList {
                #[serde(default)]
                limit: Option<u64>,
            }
            let list: CallList = fields(object, id.clone(), &kind)?;
            let limit = list.limit.unwrap_or(u64::from(DEFAULT_CALL_LIST));
            if limit == 0 || limit > u64::from(MAX_CALL_LIST) {
                return Err(Refusal::new(
                    id,
                    ErrorCode::InvalidArgument,
                    format!("`limit` is 1 to {MAX_CALL_LIST}"),
                ));
            }
            Command::CallList {
                limit: limit as u32,
            }
        }
        "subscribe" | "unsubscribe" => {
            #[derive(Deserialize)]
            struct Users {
                users: Vec<String>,
            }
            let users: Users = fields(object, id.clone(), &kind)?;
            if users.users.len() > MAX_SUBSCRIPTIONS {
                return Err(Refusal::new(
                    id,
                    ErrorCode::InvalidArgument,
                    format!("at most {MAX_SUBSCRIPTIONS} users at once"),
                ));
            }
            for (index, user) in users.users.iter().enumerate() {
                check_text(&id, &format!("users[{index}]"), user, MAX_USER, false)?;
            }
            let mut unique = users.users;
            unique.sort();
            unique.dedup();
            if kind == "subscribe" {
                Command::Subscribe { users: unique }
            } else {
                Command::Unsubscribe { users: unique }
            }
        }
        _ => Command::SignOut,
    };
    Ok(Request {
        id: request_id,
        command,
    })
}

/// `{"type":"error", …}` for any code.
pub fn error_message(id: Option<&Value>, code: ErrorCode, message: &str) -> String {
    json!({
        "type": "error",
        "id": id.cloned().unwrap_or(Value::Null),
        "code": code.as_str(),
        "message": message,
    })
    .to_string()
}

/// `{"type":"result","id":…,"ok":true, …fields}`.
pub fn result_message(id: &Value, fields: Value) -> String {
    let mut object = Map::new();
    object.insert("type".into(), json!("result"));
    object.insert("id".into(), id.clone());
    object.insert("ok".into(), json!(true));
    if let Value::Object(fields) = fields {
        object.extend(fields);
    }
    Value::Object(object).to_string()
}

fn text(field: &abi_stable::std_types::ROption<abi_stable::std_types::RString>) -> Value {
    field
        .as_ref()
        .into_option()
        .map_or(Value::Null, |t| json!(t.as_str()))
}

/// A user's presence as clients see it.
pub fn presence_json(presence: &UserPresence) -> Value {
    json!({
        "user": presence.user.as_str(),
        "number": presence.number.as_str(),
        "name": text(&presence.name),
        "registered": presence.registered,
        "in_call": presence.in_call,
        "dnd": presence.dnd,
        "forwards": {
            "always": text(&presence.forward_always),
            "busy": text(&presence.forward_busy),
            "no_answer": text(&presence.forward_no_answer),
        },
        "groups": presence.groups.iter().map(|g| g.as_str()).collect::<Vec<_>>(),
        "active_groups": presence.active_groups.iter().map(|g| g.as_str()).collect::<Vec<_>>(),
    })
}

/// A user the host has no presence for (a host without the service).
pub fn bare_presence_json(user: &str) -> Value {
    json!({
        "user": user,
        "number": null,
        "name": null,
        "registered": false,
        "in_call": false,
        "dnd": false,
        "forwards": { "always": null, "busy": null, "no_answer": null },
        "groups": [],
        "active_groups": [],
    })
}

/// `{"type":"presence","user":{…}}`
pub fn presence_event(presence: &Value) -> String {
    json!({ "type": "presence", "user": presence }).to_string()
}

/// The answer fields of `lookup`.
pub fn lookup_json(number: &str, decision: &Decision) -> Value {
    json!({
        "number": number,
        "display": text(&decision.display).as_str().map(str::to_string).or_else(|| decision.display_name()),
        "first_name": text(&decision.first_name),
        "last_name": text(&decision.last_name),
        "company": text(&decision.company),
        "flag": text(&decision.flag),
        "reason": text(&decision.reason),
    })
}

/// One call-list entry as clients see it.
pub fn call_list_entry_json(entry: &CallListItem) -> Value {
    json!({
        "time": entry.time.as_str(),
        "direction": match entry.direction {
            CallListDirection::In => "in",
            CallListDirection::Out => "out",
        },
        "number": entry.number.as_str(),
        "name": text(&entry.name),
        "call_id": entry.call_id.as_str(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hello(extra: &str) -> String {
        format!(r#"{{"type":"hello","version":1,"key":"k","user":"anna","password":"pw"{extra}}}"#)
    }

    #[test]
    fn a_full_hello_parses_and_hides_its_secrets() {
        let parsed = parse_hello(&hello(r#","client":{"name":"CRM","version":"2.1"}"#)).unwrap();
        assert_eq!(parsed.user, "anna");
        assert_eq!(parsed.key.expose(), "k");
        assert_eq!(parsed.password.expose(), "pw");
        assert_eq!(
            parsed.client,
            ClientSoftware {
                name: "CRM".into(),
                version: "2.1".into()
            }
        );
        let shown = format!("{parsed:?}");
        assert!(
            !shown.contains("\"pw\"") && !shown.contains("\"k\""),
            "{shown}"
        );
    }

    #[test]
    fn a_hello_without_client_or_with_odd_names_is_tidied() {
        let parsed = parse_hello(&hello("")).unwrap();
        assert_eq!(parsed.client.name, "unnamed");
        let long = "x".repeat(200);
        let parsed = parse_hello(&hello(&format!(
            r#","client":{{"name":"a\nb","version":"{long}"}}"#
        )))
        .unwrap();
        assert_eq!(parsed.client.name, "a?b");
        assert_eq!(parsed.client.version.len(), 64);
    }

    #[test]
    fn invisible_formatting_never_reaches_a_log() {
        // A name that reads like another, a bidirectional override that
        // turns the rest of a log line around, a line separator.
        for user in [
            "an\u{200B}na",
            "anna\u{202E}nimda",
            "anna\u{2028}forged line",
        ] {
            let text = json!({"type":"hello","version":1,"key":"k","user":user,"password":"pw"})
                .to_string();
            let refusal = parse_hello(&text).unwrap_err();
            assert_eq!(refusal.code, ErrorCode::BadMessage, "{user:?}");
            assert!(refusal.message.contains("`user`"), "{refusal:?}");
        }
        for command in [
            json!({"type":"dial","id":1,"number":"0301\u{202E}234"}),
            json!({"type":"group_login","id":1,"group":"sales\u{2066}","logged_in":true}),
            json!({"type":"hang_up","id":1,"call_id":"c-1\u{FEFF}"}),
            json!({"type":"subscribe","id":1,"users":["bert\u{200D}"]}),
        ] {
            let refusal = parse_request(&command.to_string()).unwrap_err();
            assert_eq!(refusal.code, ErrorCode::BadMessage, "{command}");
        }
        let parsed = parse_hello(&hello(
            r#","client":{"name":"CRM\u202eexe.txt","version":"1\u2029"}"#,
        ))
        .unwrap();
        assert_eq!(parsed.client.name, "CRM?exe.txt");
        assert_eq!(parsed.client.version, "1?");
        // Printable text of any script is fine.
        let text =
            json!({"type":"hello","version":1,"key":"k","user":"jürgen-سارا-日本","password":"pw"})
                .to_string();
        assert_eq!(parse_hello(&text).unwrap().user, "jürgen-سارا-日本");
    }

    #[test]
    fn hello_refusals_are_precise() {
        let cases = [
            ("", ErrorCode::BadMessage, "not JSON"),
            ("[1]", ErrorCode::BadMessage, "JSON object"),
            (r#"{"version":1}"#, ErrorCode::BadMessage, "needs a `type`"),
            (
                r#"{"type":"dial","id":1,"number":"1"}"#,
                ErrorCode::BadMessage,
                "must be `hello`",
            ),
            (
                r#"{"type":"hello","version":2}"#,
                ErrorCode::UnsupportedVersion,
                "version 1",
            ),
            (
                r#"{"type":"hello","version":"1"}"#,
                ErrorCode::BadMessage,
                "numeric `version`",
            ),
            (
                r#"{"type":"hello","version":1,"user":"anna","password":"x"}"#,
                ErrorCode::BadMessage,
                "key",
            ),
            (
                r#"{"type":"hello","version":1,"key":"k","user":"","password":"x"}"#,
                ErrorCode::BadMessage,
                "`user` must not be empty",
            ),
            (
                r#"{"type":"hello","version":1,"key":"k","user":7,"password":"x"}"#,
                ErrorCode::BadMessage,
                "invalid type",
            ),
        ];
        for (text, code, needle) in cases {
            let refusal = parse_hello(text).unwrap_err();
            assert_eq!(refusal.code, code, "{text}: {refusal:?}");
            assert!(refusal.message.contains(needle), "{text}: {refusal:?}");
        }
        let huge = format!(
            r#"{{"type":"hello","version":1,"key":"k","user":"anna","password":"{}"}}"#,
            "p".repeat(2000)
        );
        let refusal = parse_hello(&huge).unwrap_err();
        assert!(refusal.message.contains("`password`"), "{refusal:?}");
        assert!(!refusal.message.contains("ppp"), "{refusal:?}");
    }

    #[test]
    fn every_command_parses() {
        let cases: Vec<(&str, Command)> = vec![
            (
                r#"{"type":"dial","id":1,"number":" 0301234567 "}"#,
                Command::Dial {
                    number: "0301234567".into(),
                },
            ),
            (
                r#"{"type":"hang_up","id":"a","call_id":"c-1"}"#,
                Command::HangUp {
                    call_id: "c-1".into(),
                },
            ),
            (
                r#"{"type":"set_dnd","id":2,"on":true}"#,
                Command::SetDnd { on: true },
            ),
            (
                r#"{"type":"set_forward","id":3,"kind":"no_answer","target":"202"}"#,
                Command::SetForward {
                    kind: ForwardKind::NoAnswer,
                    target: Some("202".into()),
                },
            ),
            (
                r#"{"type":"set_forward","id":3,"kind":"always","target":null}"#,
                Command::SetForward {
                    kind: ForwardKind::Always,
                    target: None,
                },
            ),
            (
                r#"{"type":"set_forward","id":3,"kind":"busy","target":""}"#,
                Command::SetForward {
                    kind: ForwardKind::Busy,
                    target: None,
                },
            ),
            (
                r#"{"type":"group_login","id":4,"group":"sales","logged_in":false}"#,
                Command::GroupLogin {
                    group: "sales".into(),
                    logged_in: false,
                },
            ),
            (
                r#"{"type":"lookup","id":5,"number":"+49301234567"}"#,
                Command::Lookup {
                    number: "+49301234567".into(),
                },
            ),
            (
                r#"{"type":"call_list","id":6,"limit":500}"#,
                Command::CallList { limit: 500 },
            ),
            (
                r#"{"type":"call_list","id":6}"#,
                Command::CallList {
                    limit: DEFAULT_CALL_LIST,
                },
            ),
            (
                r#"{"type":"subscribe","id":7,"users":["bert","anna","bert"]}"#,
                Command::Subscribe {
                    users: vec!["anna".into(), "bert".into()],
                },
            ),
            (
                r#"{"type":"unsubscribe","id":8,"users":["bert"]}"#,
                Command::Unsubscribe {
                    users: vec!["bert".into()],
                },
            ),
            (r#"{"type":"sign_out"}"#, Command::SignOut),
            (
                r#"{"type":"sign_out","id":9,"extra":"ignored"}"#,
                Command::SignOut,
            ),
        ];
        for (text, command) in cases {
            let request = parse_request(text).unwrap_or_else(|e| panic!("{text}: {e:?}"));
            assert_eq!(request.command, command, "{text}");
        }
        assert_eq!(
            parse_request(r#"{"type":"set_dnd","id":"x-1","on":false}"#)
                .unwrap()
                .id,
            json!("x-1")
        );
    }

    #[test]
    fn command_refusals_are_precise_and_echo_the_id() {
        let cases = [
            (
                r#"{"type":"fly","id":1}"#,
                ErrorCode::UnknownCommand,
                Some(json!(1)),
                "unknown command `fly`",
            ),
            (
                r#"{"type":"hello","id":1}"#,
                ErrorCode::UnknownCommand,
                Some(json!(1)),
                "already signed in",
            ),
            (
                r#"{"type":"dial","number":"1"}"#,
                ErrorCode::BadMessage,
                None,
                "needs an `id`",
            ),
            (
                r#"{"type":"dial","id":{"a":1},"number":"1"}"#,
                ErrorCode::BadMessage,
                None,
                "`id` must be",
            ),
            (
                r#"{"type":"dial","id":1.5,"number":"1"}"#,
                ErrorCode::BadMessage,
                None,
                "`id` must be",
            ),
            (
                r#"{"type":"dial","id":1}"#,
                ErrorCode::BadMessage,
                Some(json!(1)),
                "missing field `number`",
            ),
            (
                r#"{"type":"dial","id":1,"number":""}"#,
                ErrorCode::BadMessage,
                Some(json!(1)),
                "must not be empty",
            ),
            (
                r#"{"type":"set_dnd","id":1,"on":"yes"}"#,
                ErrorCode::BadMessage,
                Some(json!(1)),
                "invalid type",
            ),
            (
                r#"{"type":"set_forward","id":1,"kind":"sometimes","target":null}"#,
                ErrorCode::BadMessage,
                Some(json!(1)),
                "unknown variant",
            ),
            (
                r#"{"type":"set_forward","id":1,"kind":"busy"}"#,
                ErrorCode::BadMessage,
                Some(json!(1)),
                "missing field `target`",
            ),
            (
                r#"{"type":"set_forward","id":1,"kind":"busy","target":5}"#,
                ErrorCode::BadMessage,
                Some(json!(1)),
                "or null to clear",
            ),
            (
                r#"{"type":"call_list","id":1,"limit":501}"#,
                ErrorCode::InvalidArgument,
                Some(json!(1)),
                "1 to 500",
            ),
            (
                r#"{"type":"call_list","id":1,"limit":0}"#,
                ErrorCode::InvalidArgument,
                Some(json!(1)),
                "1 to 500",
            ),
            (
                r#"{"type":"call_list","id":1,"limit":-1}"#,
                ErrorCode::BadMessage,
                Some(json!(1)),
                "invalid",
            ),
            (
                r#"{"type":"subscribe","id":1,"users":[""]}"#,
                ErrorCode::BadMessage,
                Some(json!(1)),
                "`users[0]`",
            ),
            (
                r#"{"type":"subscribe","id":1,"users":"anna"}"#,
                ErrorCode::BadMessage,
                Some(json!(1)),
                "invalid type",
            ),
            (
                r#"{"type":7,"id":1}"#,
                ErrorCode::BadMessage,
                Some(json!(1)),
                "`type` must be a string",
            ),
            (
                r#"{"type":"dial","id":1,"number":"1\u0007"}"#,
                ErrorCode::BadMessage,
                Some(json!(1)),
                "control characters",
            ),
            ("not json", ErrorCode::BadMessage, None, "not JSON"),
            (
                "\"just a string\"",
                ErrorCode::BadMessage,
                None,
                "JSON object",
            ),
        ];
        for (text, code, id, needle) in cases {
            let refusal = parse_request(text).unwrap_err();
            assert_eq!(
                (refusal.code, &refusal.id),
                (code, &id),
                "{text}: {refusal:?}"
            );
            assert!(refusal.message.contains(needle), "{text}: {refusal:?}");
        }
        let many: Vec<String> = (0..201).map(|n| format!("u{n}")).collect();
        let text = json!({"type":"subscribe","id":1,"users":many}).to_string();
        assert_eq!(
            parse_request(&text).unwrap_err().code,
            ErrorCode::InvalidArgument
        );
    }

    #[test]
    fn hostile_input_never_panics() {
        let samples = [
            "{",
            "}",
            "null",
            "[]",
            "{\"type\":null}",
            "{\"type\":\"\"}",
            "{\"type\":\"dial\",\"id\":18446744073709551616,\"number\":\"1\"}",
            "{\"type\":\"subscribe\",\"id\":1,\"users\":[null]}",
            "{\"type\":\"hello\",\"version\":18446744073709551615}",
            "{\"type\":\"hello\",\"version\":-1}",
            "{\"type\":\"hello\",\"version\":1e400}",
        ];
        for text in samples {
            let _ = parse_request(text);
            let _ = parse_hello(text);
        }
        let deep = "[".repeat(100_000);
        assert_eq!(
            parse_request(&deep).unwrap_err().code,
            ErrorCode::BadMessage
        );
    }

    #[test]
    fn answers_have_their_shape() {
        let error: Value = serde_json::from_str(&error_message(
            Some(&json!(3)),
            ErrorCode::RateLimited,
            "slow down",
        ))
        .unwrap();
        assert_eq!(
            error,
            json!({"type":"error","id":3,"code":"rate_limited","message":"slow down"})
        );
        let result: Value =
            serde_json::from_str(&result_message(&json!("a"), json!({"call_id":"c1"}))).unwrap();
        assert_eq!(
            result,
            json!({"type":"result","id":"a","ok":true,"call_id":"c1"})
        );
    }

    #[test]
    fn the_shipped_schema_names_every_message_and_error_code() {
        let schema: Value =
            serde_json::from_str(include_str!("../assets/protocol.schema.json")).unwrap();
        let definitions = schema["$defs"].as_object().unwrap();
        for command in COMMANDS.iter().chain(&["hello"]) {
            assert_eq!(
                definitions[*command]["properties"]["type"]["const"], *command,
                "{command}"
            );
        }
        let codes: Vec<&str> = schema["$defs"]["error"]["properties"]["code"]["enum"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c.as_str().unwrap())
            .collect();
        let all = [
            ErrorCode::BadMessage,
            ErrorCode::UnsupportedVersion,
            ErrorCode::BadKey,
            ErrorCode::UnknownUser,
            ErrorCode::WrongPassword,
            ErrorCode::NoPassword,
            ErrorCode::NoSeat,
            ErrorCode::TooManyFailures,
            ErrorCode::HelloTimeout,
            ErrorCode::UnknownCommand,
            ErrorCode::RateLimited,
            ErrorCode::InvalidArgument,
            ErrorCode::Failed,
            ErrorCode::Timeout,
            ErrorCode::Unavailable,
        ];
        assert_eq!(codes, all.map(ErrorCode::as_str));
    }

    #[test]
    fn every_ending_has_its_own_close_code() {
        let endings = [
            Ending::Refused(ErrorCode::BadMessage),
            Ending::Refused(ErrorCode::UnsupportedVersion),
            Ending::Refused(ErrorCode::BadKey),
            Ending::Refused(ErrorCode::UnknownUser),
            Ending::Refused(ErrorCode::WrongPassword),
            Ending::Refused(ErrorCode::NoPassword),
            Ending::Refused(ErrorCode::NoSeat),
            Ending::Refused(ErrorCode::TooManyFailures),
            Ending::Refused(ErrorCode::HelloTimeout),
            Ending::SignedOut,
            Ending::Revoked,
            Ending::TooBig,
            Ending::Flooding,
            Ending::TooSlow,
            Ending::PingTimeout,
            Ending::Stopping,
        ];
        let mut codes: Vec<u16> = endings.iter().map(Ending::close_code).collect();
        codes.sort();
        codes.dedup();
        assert_eq!(codes.len(), endings.len());
        assert_eq!(Ending::Revoked.close_code(), 4008);
        assert!(endings.iter().all(|e| e.reason().len() <= 123));
    }
}
