//! The web administration's HTTP side end to end: administrators' logins
//! and sessions, CSRF, the audit log, configuration forms and secrets, the
//! directory editor with a running `callhost serve` that follows it,
//! HTTPS, and the OpenAPI document fuzzed by schemathesis.

use crate::api::{answer, token, Server};
use crate::common::Harness;
use crate::reverse_lookup::RL;
use crate::sip::{answering_phone, register, trunk_call, BERT, DIRECTORY};
use crate::sip_harness::{free_port, Serve, Setup, SilentPhone};

use std::{
    io::Write as _,
    path::Path,
    process::{Command, Stdio},
    time::Duration,
};

use serde_json::{json, Value};

const HELLO: &str = "hello-0.1.0.cmod";
/// The administrators' password in these tests.
pub(crate) const PASSWORD: &str = "correct horse battery";

/// `callhost admin ARGS…` with `input` on standard input: status and
/// stdout or stderr.
pub(crate) fn admin(data: &Path, args: &[&str], input: &str) -> (bool, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_callhost"))
        .arg("--data")
        .arg(data)
        .arg("admin")
        .args(args)
        .env_remove("CALLHOST_DATA")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run callhost admin");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    let text = if output.status.success() {
        String::from_utf8_lossy(&output.stdout).into_owned()
    } else {
        String::from_utf8_lossy(&output.stderr).into_owned()
    };
    (output.status.success(), text)
}

/// A browser's view of the API: the session cookie and its CSRF token.
pub(crate) struct Browser {
    agent: ureq::Agent,
    base: String,
    cookie: Option<String>,
    csrf: Option<String>,
}

impl Browser {
    pub(crate) fn new(base: &str) -> Browser {
        Browser {
            agent: ureq::Agent::config_builder()
                .http_status_as_error(false)
                .timeout_global(Some(Duration::from_secs(30)))
                .build()
                .into(),
            base: base.trim_end_matches('/').to_string(),
            cookie: None,
            csrf: None,
        }
    }

    /// Logs in; the status and body, and the Set-Cookie header.
    pub(crate) fn login(&mut self, name: &str, password: &str) -> (u16, Value, Option<String>) {
        let response = self
            .agent
            .post(format!("{}/api/v1/login", self.base))
            .header("Content-Type", "application/json")
            .send(json!({ "name": name, "password": password }).to_string())
            .expect("POST login");
        let set_cookie = response
            .headers()
            .get("set-cookie")
            .map(|value| value.to_str().unwrap().to_string());
        let retry_after = response
            .headers()
            .get("retry-after")
            .map(|value| value.to_str().unwrap().to_string());
        let (status, mut body) = answer(response);
        if status == 200 {
            self.cookie = set_cookie
                .as_deref()
                .and_then(|header| header.split(';').next())
                .map(str::to_string);
            self.csrf = body["csrf"].as_str().map(str::to_string);
        }
        if let Some(seconds) = retry_after {
            body["retry_after"] = Value::String(seconds);
        }
        (status, body, set_cookie)
    }

    pub(crate) fn get(&self, path: &str) -> (u16, Value) {
        let mut request = self.agent.get(format!("{}{path}", self.base));
        if let Some(cookie) = &self.cookie {
            request = request.header("Cookie", cookie);
        }
        answer(request.call().expect("GET"))
    }

    /// A change with the session's CSRF token (`csrf: false`: without).
    pub(crate) fn send(
        &self,
        method: &str,
        path: &str,
        body: Option<Value>,
        csrf: bool,
    ) -> (u16, Value) {
        let mut request = ureq::http::Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base));
        if let Some(cookie) = &self.cookie {
            request = request.header("Cookie", cookie);
        }
        if let (true, Some(token)) = (csrf, &self.csrf) {
            request = request.header("X-CSRF-Token", token);
        }
        let body = match body {
            Some(body) => {
                request = request.header("Content-Type", "application/json");
                body.to_string()
            }
            None => String::new(),
        };
        answer(
            self.agent
                .run(request.body(body).unwrap())
                .expect("request"),
        )
    }
}

fn audit_actions(browser: &Browser) -> Vec<(String, String, String)> {
    let (status, body) = browser.get("/api/v1/audit");
    assert_eq!(status, 200, "{body}");
    audit_rows(&body)
}

/// Who, what and how it ended, of an audit log answer.
fn audit_rows(body: &Value) -> Vec<(String, String, String)> {
    body["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|entry| {
            (
                entry["actor"].as_str().unwrap().to_string(),
                entry["action"].as_str().unwrap().to_string(),
                entry["outcome"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn with_admin_and_hello() -> Harness {
    let h = Harness::new();
    h.install(HELLO);
    h.create("hello", "hi", "greeting = \"Ahoi\"\n");
    let (ok, text) = admin(h.data(), &["add", "anna"], &format!("{PASSWORD}\n"));
    assert!(ok, "{text}");
    h
}

#[test]
fn an_administrator_logs_in_and_every_change_needs_the_sessions_csrf_token() {
    let h = with_admin_and_hello();
    let server = Server::start(&h);
    let mut browser = Browser::new(&server.base);

    let (status, body, cookie) = browser.login("anna", "not the password");
    assert_eq!(
        (status, body["error"].as_str()),
        (401, Some("wrong name or password"))
    );
    assert!(cookie.is_none());
    let (status, body, _) = browser.login("nobody", PASSWORD);
    assert_eq!(
        (status, body["error"].as_str()),
        (401, Some("wrong name or password"))
    );
    assert_eq!(browser.get("/api/v1/instances").0, 401, "not logged in yet");

    let (status, body, cookie) = browser.login("anna", PASSWORD);
    assert_eq!(status, 200, "{body}");
    let cookie = cookie.expect("a session cookie");
    for flag in ["HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(cookie.contains(flag), "{cookie}");
    }
    assert!(!cookie.contains("Secure"), "plain HTTP: {cookie}");
    let (status, session) = browser.get("/api/v1/session");
    assert_eq!(status, 200);
    assert_eq!(session["admin"], "anna");
    assert_eq!(session["csrf"], body["csrf"]);

    // A change without the CSRF token (what a forged cross-site request
    // would be) is refused and changes nothing.
    let (status, body) = browser.send("POST", "/api/v1/instances/hi/deactivate", None, false);
    assert_eq!(status, 403, "{body}");
    assert!(body["error"].as_str().unwrap().contains("X-CSRF-Token"));
    assert_eq!(browser.get("/api/v1/instances").1[0]["status"], "active");
    let (status, _) = browser.send("POST", "/api/v1/instances/hi/deactivate", None, true);
    assert_eq!(status, 200);
    assert_eq!(browser.get("/api/v1/instances").1[0]["status"], "inactive");

    // Who did what is in the audit log, newest first; so are the logins.
    let actions = audit_actions(&browser);
    assert_eq!(
        actions[0],
        (
            "admin:anna".into(),
            "POST /api/v1/instances/hi/deactivate".into(),
            "ok".into()
        )
    );
    assert!(actions.contains(&(
        "login:anna".into(),
        "POST /api/v1/login".into(),
        "401 wrong name or password".into()
    )));
    assert!(actions.contains(&(
        "login:anna".into(),
        "POST /api/v1/login".into(),
        "ok".into()
    )));
    assert!(!actions
        .iter()
        .any(|(_, action, _)| action.contains("deactivate") && action.len() > 40));

    let (status, _) = browser.send("POST", "/api/v1/logout", None, true);
    assert_eq!(status, 200);
    assert_eq!(browser.get("/api/v1/session").0, 401, "the session is gone");

    // The password is never in the log.
    let log = server.log_with("path=/api/v1/logout");
    assert!(!log.contains(PASSWORD), "{log}");
    assert!(log.contains("actor=admin:anna"), "{log}");
}

#[test]
fn failed_logins_are_limited_per_name_and_per_source() {
    let h = with_admin_and_hello();
    let token = token(&h, "audit");
    let server = Server::start(&h);
    let mut browser = Browser::new(&server.base);
    for _ in 0..5 {
        assert_eq!(browser.login("anna", "guess guess guess").0, 401);
    }
    // The name is locked now, even with the right password.
    let (status, body, _) = browser.login("anna", PASSWORD);
    assert_eq!(status, 429, "{body}");
    let retry: u64 = body["retry_after"].as_str().unwrap().parse().unwrap();
    assert!((1..=300).contains(&retry), "{body}");
    // Other names from here may still try, up to the source's limit.
    for _ in 0..5 {
        assert_eq!(browser.login("bert", "guess guess guess").0, 401);
    }
    assert_eq!(browser.login("carl", "guess guess guess").0, 429);
    let actions = audit_actions_with_token(&token, &server);
    assert!(actions.iter().any(
        |(actor, _, outcome)| actor == "login:anna" && outcome == "429 too many failed logins"
    ));
}

fn audit_actions_with_token(token: &str, server: &Server) -> Vec<(String, String, String)> {
    let response = ureq::get(format!("{}/api/v1/audit?limit=1000", server.base))
        .header("Authorization", format!("Bearer {token}"))
        .call()
        .expect("GET audit");
    audit_rows(&answer(response).1)
}

#[test]
fn a_session_ends_with_a_new_password_or_when_its_administrator_is_removed() {
    let h = with_admin_and_hello();
    let server = Server::start(&h);
    let mut browser = Browser::new(&server.base);
    assert_eq!(browser.login("anna", PASSWORD).0, 200);
    let (ok, text) = admin(h.data(), &["password", "anna"], "another long password\n");
    assert!(ok, "{text}");
    assert_eq!(
        browser.get("/api/v1/instances").0,
        401,
        "a new password ends it"
    );
    assert_eq!(browser.login("anna", PASSWORD).0, 401);
    assert_eq!(browser.login("anna", "another long password").0, 200);
    assert_eq!(browser.get("/api/v1/instances").0, 200);
    let (ok, text) = admin(h.data(), &["remove", "anna"], "");
    assert!(ok, "{text}");
    assert_eq!(browser.get("/api/v1/instances").0, 401, "removed: ended");
}

#[test]
fn admin_add_names_what_is_wrong_with_a_name_or_password() {
    let h = Harness::new();
    let (ok, text) = admin(h.data(), &["add", "anna"], "short\n");
    assert!(!ok);
    assert!(text.contains("at least 10 characters"), "{text}");
    let (ok, text) = admin(h.data(), &["add", "an na"], &format!("{PASSWORD}\n"));
    assert!(!ok);
    assert!(text.contains("administrator name `an na`"), "{text}");
    assert!(admin(h.data(), &["add", "anna"], &format!("{PASSWORD}\n")).0);
    let (ok, text) = admin(h.data(), &["add", "anna"], &format!("{PASSWORD}\n"));
    assert!(!ok);
    assert!(text.contains("exists already"), "{text}");
    let (ok, listing) = admin(h.data(), &["list", "--json"], "");
    assert!(ok);
    let listing: Value = serde_json::from_str(&listing).unwrap();
    assert_eq!(listing[0]["name"], "anna");
    assert!(
        !listing.to_string().contains("argon2"),
        "no hash shown: {listing}"
    );
    // Only the argon2id hash is stored.
    let conn = rusqlite::Connection::open(h.data().join("callhost.db")).unwrap();
    let stored: String = conn
        .query_row("SELECT password_hash FROM admins", [], |row| row.get(0))
        .unwrap();
    assert!(
        stored.starts_with("$argon2id$") && !stored.contains(PASSWORD),
        "{stored}"
    );
}

#[test]
fn the_configuration_form_comes_from_the_modules_schema_and_names_the_refused_field() {
    let h = with_admin_and_hello();
    let server = Server::start(&h);
    let mut browser = Browser::new(&server.base);
    assert_eq!(browser.login("anna", PASSWORD).0, 200);

    let (status, shown) = browser.get("/api/v1/instances/hi");
    assert_eq!(status, 200, "{shown}");
    let properties = &shown["schema"]["properties"];
    assert_eq!(properties["greeting"]["type"], "string");
    assert!(
        properties["greeting"]["description"]
            .as_str()
            .unwrap()
            .contains("caller's name"),
        "doc comments are the help texts: {}",
        properties["greeting"]
    );
    assert_eq!(properties["setup_delay_ms"]["x-expert"], true);
    assert_eq!(shown["config"]["greeting"], "Ahoi");
    assert_eq!(shown["status"], "active");

    // A value the module refuses: the answer names the field.
    let (status, body) = browser.send(
        "PUT",
        "/api/v1/instances/hi/config",
        Some(json!({ "values": { "greeting": "Moin", "setup_delay_ms": "soon" } })),
        true,
    );
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["field"], "setup_delay_ms", "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("invalid type"),
        "{body}"
    );
    assert_eq!(
        browser.get("/api/v1/instances/hi").1["config"]["greeting"],
        "Ahoi"
    );

    let (status, body) = browser.send(
        "PUT",
        "/api/v1/instances/hi/config",
        Some(json!({ "values": { "greeting": "Moin", "numbers": ["201"], "tap": null } })),
        true,
    );
    assert_eq!(status, 200, "{body}");
    let shown = browser.get("/api/v1/instances/hi").1;
    assert_eq!(shown["config"]["greeting"], "Moin");
    assert_eq!(shown["config"]["numbers"], json!(["201"]));

    // The raw editor: TOML, refused with the field named too.
    let (status, body) = browser.send(
        "PUT",
        "/api/v1/instances/hi/config",
        Some(json!({ "toml": "greeting = \"Servus\"\nnumbrs = []\n" })),
        true,
    );
    assert_eq!(
        (status, body["field"].as_str()),
        (422, Some("numbrs")),
        "{body}"
    );
    let (status, body) = browser.send(
        "PUT",
        "/api/v1/instances/hi/config",
        Some(json!({ "toml": "greeting = \"Servus\n" })),
        true,
    );
    assert_eq!(status, 422, "{body}");
}

#[test]
fn secrets_never_reach_the_browser_and_stay_when_left_masked() {
    let h = Harness::new();
    h.install(RL);
    h.load_office();
    h.create(
        "reverse-lookup",
        "rl",
        r#"[[providers]]
id = "crm"
kind = "http"
format = "json"
url = "http://127.0.0.1:9/lookup?number={tel}"
auth = "bearer"
secrets = { token = "s3cret-value" }
[providers.extract]
first_name = "/data/0/first_name"
"#,
    );
    assert!(admin(h.data(), &["add", "anna"], &format!("{PASSWORD}\n")).0);
    let server = Server::start(&h);
    let mut browser = Browser::new(&server.base);
    assert_eq!(browser.login("anna", PASSWORD).0, 200);

    let (status, shown) = browser.get("/api/v1/instances/rl");
    assert_eq!(status, 200, "{shown}");
    let text = shown.to_string();
    assert!(!text.contains("s3cret-value"), "{text}");
    assert_eq!(
        shown["config"]["providers"][0]["secrets"]["token"],
        "********"
    );
    let secret_schema =
        &shown["schema"]["properties"]["providers"]["items"]["properties"]["secrets"];
    assert!(
        secret_schema.to_string().contains("\"writeOnly\":true"),
        "{secret_schema}"
    );

    // Saved back as shown: the secret stays.
    let mut values = shown["config"].clone();
    values["budget_ms"] = json!(300);
    let (status, body) = browser.send(
        "PUT",
        "/api/v1/instances/rl/config",
        Some(json!({ "values": values })),
        true,
    );
    assert_eq!(status, 200, "{body}");
    let exported = h.ok(&["instance", "export", "rl"]);
    assert!(exported.contains("s3cret-value"), "{exported}");
    assert!(exported.contains("budget_ms = 300"), "{exported}");

    // A new value replaces it.
    values["providers"][0]["secrets"]["token"] = json!("n3w-value");
    let (status, _) = browser.send(
        "PUT",
        "/api/v1/instances/rl/config",
        Some(json!({ "values": values })),
        true,
    );
    assert_eq!(status, 200);
    let exported = h.ok(&["instance", "export", "rl"]);
    assert!(
        exported.contains("n3w-value") && !exported.contains("s3cret-value"),
        "{exported}"
    );
    assert!(!server
        .log_with("path=/api/v1/instances/rl/config")
        .contains("n3w-value"));
}

#[test]
fn the_directory_editor_keeps_passwords_and_a_running_serve_follows_it() {
    let serve = Serve::start(DIRECTORY, "");
    assert!(admin(&serve.data, &["add", "anna"], &format!("{PASSWORD}\n")).0);
    let mut browser = Browser::new(&serve.http_url());
    assert_eq!(browser.login("anna", PASSWORD).0, 200);

    let (status, shown) = browser.get("/api/v1/directory");
    assert_eq!(status, 200, "{shown}");
    assert!(
        !shown.to_string().contains("bert-pw"),
        "no password is shown"
    );
    assert_eq!(
        shown["schema"]["properties"]["users"]["items"]["properties"]["password"]["writeOnly"],
        true
    );
    let mut directory = shown["directory"].clone();

    // Refused like `directory load`, with what is wrong named.
    let mut broken = directory.clone();
    broken["users"][0]["numbers"] = json!(["20x"]);
    let (status, body) = browser.send("PUT", "/api/v1/directory", Some(broken), true);
    assert_eq!(status, 422, "{body}");
    assert!(body["error"].as_str().unwrap().contains("20x"), "{body}");

    // Bert forwards to Carl: saved in the browser, followed by the
    // running server.
    directory["state"]["bert"] = json!({ "forward_always": "203" });
    let (status, body) = browser.send("PUT", "/api/v1/directory", Some(directory), true);
    assert_eq!(status, 200, "{body}");
    serve.wait_log(&["directory reloaded"]);

    // The passwords were kept: both phones register with them.
    let (bert, carl) = (free_port(), free_port());
    register(&serve, "bert", bert);
    register(&serve, "carl", carl);
    let berts_phone = SilentPhone::listen(bert);
    let carls_phone = answering_phone("carl answers", carl);
    let caller = trunk_call(&serve, "uac.xml", BERT, &[]).wait();
    let carls_phone = carls_phone.wait();
    caller.assert_ok();
    carls_phone.assert_ok();
    assert!(
        berts_phone.invites().is_empty(),
        "{:?}",
        berts_phone.invites()
    );

    // The dashboard saw the call.
    let (status, dashboard) = browser.get("/api/v1/status");
    assert_eq!(status, 200);
    let recent = &dashboard["live"]["recent_calls"][0];
    assert_eq!(recent["answered_by"], "carl", "{dashboard}");
    let registered: Vec<&str> = dashboard["live"]["registrations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["user"].as_str().unwrap())
        .collect();
    assert_eq!(registered, ["bert", "carl"], "{dashboard}");
}

#[test]
fn https_uses_the_configured_certificate_and_marks_the_cookie_secure() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path();
    let out = data.join("web");
    let made = crate::sip_harness::callhost(
        data,
        &[
            "tls",
            "self-signed",
            "--name",
            "127.0.0.1",
            "--out",
            out.to_str().unwrap(),
        ],
    );
    assert!(made.contains("sip-cert.pem"), "{made}");
    assert!(admin(data, &["add", "anna"], &format!("{PASSWORD}\n")).0);
    let serve = Serve::start_in_with(
        data,
        DIRECTORY,
        Setup {
            http: "certificate = \"web/sip-cert.pem\"\nkey = \"web/sip-key.pem\"",
            ..Setup::default()
        },
    );
    let url = serve.http_url();
    assert!(url.starts_with("https://"), "{url}");
    let output = Command::new("curl")
        .args(["-sS", "-i", "--cacert"])
        .arg(data.join("web/sip-cert.pem"))
        .args(["-H", "Content-Type: application/json", "--data"])
        .arg(json!({ "name": "anna", "password": PASSWORD }).to_string())
        .arg(format!("{url}/api/v1/login"))
        .output()
        .expect("run curl");
    let text = String::from_utf8_lossy(&output.stdout).to_lowercase();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        text.starts_with("http/2 200") || text.starts_with("http/1.1 200"),
        "{text}"
    );
    let cookie = text.lines().find(|l| l.starts_with("set-cookie:")).unwrap();
    assert!(
        cookie.contains("; secure") && cookie.contains("httponly"),
        "{cookie}"
    );
    assert!(
        text.contains("strict-transport-security: max-age="),
        "{text}"
    );
    // Plain HTTP to the HTTPS port gets no answer.
    let plain = Command::new("curl")
        .args([
            "-sS",
            "--max-time",
            "5",
            &url.replace("https://", "http://"),
        ])
        .output()
        .unwrap();
    assert!(!plain.status.success());
}

#[test]
fn the_openapi_document_covers_the_api_and_schemathesis_finds_no_server_error() {
    let h = with_admin_and_hello();
    h.install(RL);
    h.load_office();
    h.create("reverse-lookup", "rl", "");
    let token = token(&h, "fuzz");
    let mut server = Server::start(&h);
    let (status, document) = answer(
        ureq::get(format!("{}/api/openapi.json", server.base))
            .call()
            .unwrap(),
    );
    assert_eq!(
        status, 200,
        "public: it describes the code, not the installation"
    );
    let paths = document["paths"].as_object().unwrap();
    for path in [
        "/api/v1/login",
        "/api/v1/modules",
        "/api/v1/instances/{name}/config",
        "/api/v1/instances/{name}/actions/{action}",
        "/api/v1/directory",
        "/api/v1/audit",
        "/api/v1/admins",
    ] {
        assert!(
            paths.contains_key(path),
            "{path} missing from {:?}",
            paths.keys()
        );
    }
    let schema = h.data().join("openapi.json");
    std::fs::write(&schema, document.to_string()).unwrap();
    // The streams never end by design, and revoking the fuzzer's own token
    // would only test 401s from then on.
    let output = Command::new("schemathesis")
        .arg("run")
        .arg(&schema)
        .args(["--url", &server.base])
        .args(["-H", &format!("Authorization: Bearer {token}")])
        .args(["--checks", "not_a_server_error"])
        .args(["--max-examples", "25", "--request-timeout", "20"])
        .args(["--exclude-path-regex", "/(live|log/tail)$"])
        .args(["--exclude-path", "/api/v1/tokens/{name}"])
        .args(["--exclude-path", "/api/v1/logout"])
        .args(["--seed", "1"])
        .env("NO_COLOR", "1")
        // Its cache goes where the test's files go.
        .current_dir(h.data())
        .output()
        .expect("run schemathesis (installed by cargo xtask test)");
    let report = format!(
        "{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.status.success(), "{report}");
    assert!(!report.contains("Server error"), "{report}");
    // It ran for real, and the server is still there.
    assert!(report.contains("passed"), "{report}");
    let (status, _) = answer(
        ureq::get(format!("{}/api/v1/instances", server.base))
            .header("Authorization", format!("Bearer {token}"))
            .config()
            .http_status_as_error(false)
            .build()
            .call()
            .unwrap(),
    );
    assert_eq!(status, 200);
    assert!(server.stop().success());
}

#[test]
fn a_recording_plays_in_the_browser_as_pcm_and_only_files_the_module_lists_are_served() {
    use crate::recording::{call_bert, channel, file_of, read_wav, recorder, wait_for_recordings};
    let h = recorder("users = [\"bert\"]\n");
    assert!(admin(h.data(), &["add", "anna"], &format!("{PASSWORD}\n")).0);
    let serve = Serve::start_in(h.data(), DIRECTORY, "");
    call_bert(&serve, "uac.xml", "uas.xml", 1000);
    let entries = wait_for_recordings(&h, "rec", 1);
    let stored_path = file_of(&entries[0], ".wav");
    let stored_before = std::fs::read(&stored_path).unwrap();
    let mut browser = Browser::new(&serve.http_url());
    assert_eq!(browser.login("anna", PASSWORD).0, 200);
    let cookie = browser.cookie.clone().unwrap();

    let query = |file: &str| {
        format!(
            "{}/api/v1/instances/rec/audio?file={}",
            serve.http_url(),
            file.bytes()
                .map(|b| match b {
                    b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' => {
                        (b as char).to_string()
                    }
                    other => format!("%{other:02X}"),
                })
                .collect::<String>()
        )
    };
    let get = |url: String| {
        ureq::get(url)
            .header("Cookie", &cookie)
            .config()
            .http_status_as_error(false)
            .build()
            .call()
            .unwrap()
    };
    // Playable once an action listed it, not before.
    assert_eq!(
        get(query(stored_path.to_str().unwrap())).status().as_u16(),
        404
    );
    let (status, listed) = browser.send(
        "POST",
        "/api/v1/instances/rec/actions/recordings",
        Some(json!({ "args": ["--json"] })),
        true,
    );
    assert_eq!(status, 200, "{listed}");
    let mut response = get(query(stored_path.to_str().unwrap()));
    assert_eq!(response.status().as_u16(), 200, "{}", stored_path.display());
    assert_eq!(response.headers()["content-type"], "audio/wav");
    let pcm = response
        .body_mut()
        .with_config()
        .limit(u64::MAX)
        .read_to_vec()
        .unwrap();
    let played = h.data().join("played.wav");
    std::fs::write(&played, &pcm).unwrap();
    let (stored, decoded) = (read_wav(&stored_path), read_wav(&played));
    assert_eq!(
        (stored.format_tag, decoded.format_tag),
        (6, 1),
        "A-law in, PCM out"
    );
    assert_eq!(decoded.channels, stored.channels);
    // Sample for sample the stored A-law, decoded; one party per channel.
    for index in 0..usize::from(stored.channels) {
        let alaw = channel(&stored, index);
        let expected: Vec<u8> = alaw
            .iter()
            .flat_map(|&code| callhost_media::g711::alaw_to_linear(code).to_le_bytes())
            .collect();
        let got: Vec<u8> = decoded
            .data
            .chunks(2 * usize::from(decoded.channels))
            .flat_map(|frame| frame[2 * index..2 * index + 2].to_vec())
            .collect();
        assert_eq!(got, expected, "channel {index}");
    }
    assert_eq!(
        std::fs::read(&stored_path).unwrap(),
        stored_before,
        "the file is untouched"
    );

    // Nothing the module does not list: not another file, not a path
    // that leads out of the recordings.
    for other in [
        h.data().join("callhost.db").display().to_string(),
        format!(
            "{}/../../callhost.db",
            stored_path.parent().unwrap().display()
        ),
        "/etc/passwd".to_string(),
    ] {
        assert_eq!(get(query(&other)).status().as_u16(), 404, "{other}");
    }
    let info = file_of(&entries[0], "_info.txt");
    assert_eq!(
        get(query(info.to_str().unwrap())).status().as_u16(),
        404,
        "listed, not a WAV"
    );
}

#[test]
fn every_cli_function_has_an_endpoint_simulate_included() {
    let h = with_admin_and_hello();
    h.load_office();
    let token = token(&h, "script");
    let server = Server::start(&h);
    let post = |path: &str, body: &str| {
        answer(
            ureq::post(format!("{}{path}", server.base))
                .header("Authorization", format!("Bearer {token}"))
                .header("Content-Type", "text/plain")
                .config()
                .http_status_as_error(false)
                .build()
                .send(body)
                .unwrap(),
        )
    };
    let (status, body) = post(
        "/api/v1/simulate",
        "[[calls]]\nfrom = \"203\"\nto = \"201\"\n",
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["calls"][0]["outcome"], "ringing", "{body}");
    assert_eq!(body["calls"][0]["decisions"][0]["instance"], "hi", "{body}");
    let (status, body) = post(
        "/api/v1/simulate",
        "[[calls]]\nfrom = \"203\"\nto = \"201\"\nrepeat = 0\n",
    );
    assert_eq!(status, 422, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("calls[0].repeat"),
        "{body}"
    );
    let (status, body) = post(
        "/api/v1/simulate",
        "[[calls]]\nfrom = \"203\"\nto = \"201\"\nrepeat = 4000000000\n",
    );
    assert_eq!(status, 422, "{body}");
    // The CLI's other functions, by the OpenAPI document's paths.
    let (_, document) = answer(
        ureq::get(format!("{}/api/openapi.json", server.base))
            .call()
            .unwrap(),
    );
    let paths: Vec<&String> = document["paths"].as_object().unwrap().keys().collect();
    for path in [
        "/api/v1/modules/{id}",
        "/api/v1/instances/import",
        "/api/v1/instances/{name}/export",
        "/api/v1/instances/{name}/level",
        "/api/v1/instances/{name}/position",
        "/api/v1/instances/{name}/log",
        "/api/v1/instances/{name}/assets/{file}",
        "/api/v1/calls/{user}",
        "/api/v1/tokens",
        "/api/v1/trust",
        "/api/v1/simulate",
        "/api/v1/tls/self-signed",
    ] {
        assert!(
            paths.iter().any(|p| p.as_str() == path),
            "{path}: {paths:?}"
        );
    }
}

#[test]
fn a_long_action_reports_its_progress_before_its_answer() {
    use crate::reverse_lookup::{crm_instance, HARBOUR};
    let h = Harness::new();
    h.install(RL);
    h.load_office();
    crm_instance(&h, "");
    // Calls while the module is off leave entries without a name.
    h.ok(&["instance", "deactivate", "rl"]);
    for caller in [HARBOUR, "+4940555124", "+4940555125"] {
        h.simulate(&format!("[[calls]]\nfrom = \"{caller}\"\nto = \"202\"\n"));
    }
    h.ok(&["instance", "activate", "rl"]);
    let token = token(&h, "script");
    let server = Server::start(&h);
    let response = ureq::post(format!(
        "{}/api/v1/instances/rl/actions/refresh-call-lists/events",
        server.base
    ))
    .header("Authorization", format!("Bearer {token}"))
    .send_empty()
    .unwrap();
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    let text = response.into_body().read_to_string().unwrap();
    let events: Vec<(String, Value)> = text
        .split("\n\n")
        .filter_map(|block| {
            let event = block.lines().find_map(|l| l.strip_prefix("event: "))?;
            let data = block.lines().find_map(|l| l.strip_prefix("data: "))?;
            Some((event.to_string(), serde_json::from_str(data).unwrap()))
        })
        .collect();
    let (last, progress) = events.split_last().unwrap();
    assert_eq!(last.0, "answer", "{text}");
    assert_eq!(last.1["numbers"], 3, "{text}");
    assert_eq!(last.1["resolved"], 1, "Hanna Hafen: {text}");
    assert!(!progress.is_empty(), "no progress event: {text}");
    assert!(progress
        .iter()
        .all(|(event, p)| event == "progress" && p["total"] == 3));
    assert_eq!(progress.last().unwrap().1["done"], 3, "{text}");

    // An action that fails says so in an `error` event.
    let response = ureq::post(format!(
        "{}/api/v1/instances/rl/actions/defaults/events",
        server.base
    ))
    .header("Authorization", format!("Bearer {token}"))
    .send_empty()
    .unwrap();
    let text = response.into_body().read_to_string().unwrap();
    assert!(
        text.contains("event: error") && text.contains("usage: defaults"),
        "{text}"
    );
    // An unknown action is refused before any stream.
    let response = ureq::post(format!(
        "{}/api/v1/instances/rl/actions/nothing/events",
        server.base
    ))
    .header("Authorization", format!("Bearer {token}"))
    .config()
    .http_status_as_error(false)
    .build()
    .send_empty()
    .unwrap();
    assert_eq!(response.status().as_u16(), 404);
}

#[test]
fn changes_made_with_the_cli_are_in_the_audit_log_too() {
    let h = with_admin_and_hello();
    h.ok(&["instance", "deactivate", "hi"]);
    let error = h.fails(&["instance", "activate", "ghost"]);
    assert!(error.contains("no instance named `ghost`"), "{error}");
    h.ok(&["instance", "list"]);
    let token = token(&h, "audit");
    let server = Server::start(&h);
    let rows = audit_actions_with_token(&token, &server);
    let cli: Vec<&(String, String, String)> = rows
        .iter()
        .filter(|(actor, _, _)| actor.starts_with("cli:"))
        .collect();
    assert!(
        cli.iter().all(|(actor, _, _)| actor.contains("(uid ")),
        "{cli:?}"
    );
    let actions: Vec<(&str, &str)> = cli
        .iter()
        .map(|(_, action, outcome)| (action.as_str(), outcome.as_str()))
        .collect();
    // Newest first; reading (`list`) is not a change.
    assert_eq!(actions[0], ("api token create", "ok"), "{actions:?}");
    assert_eq!(actions[1].0, "instance activate");
    assert!(
        actions[1].1.contains("no instance named `ghost`"),
        "{actions:?}"
    );
    assert_eq!(actions[2], ("instance deactivate", "ok"));
    assert!(actions.contains(&("admin add", "ok")), "{actions:?}");
    assert!(
        !actions.iter().any(|(action, _)| action.contains("list")),
        "{actions:?}"
    );
}

#[test]
fn silent_and_slow_clients_are_cut_and_every_refusal_is_json() {
    use std::io::Read as _;
    let h = with_admin_and_hello();
    let token = token(&h, "script");
    let server = Server::start(&h);
    let address = server.base.trim_start_matches("http://").to_string();
    let connect = || {
        let stream = std::net::TcpStream::connect(&address).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        stream
    };
    // One address holds at most 32 connections: the 33rd is closed at once.
    let mut held: Vec<_> = (0..32).map(|_| connect()).collect();
    let started = std::time::Instant::now();
    let mut extra = connect();
    assert_eq!(
        extra.read(&mut [0u8; 16]).unwrap_or(0),
        0,
        "the 33rd is closed"
    );
    assert!(started.elapsed() < Duration::from_secs(5));
    // A connection that never says anything is closed after 10 s; so is a
    // login whose body does not come.
    drop(held.pop());
    std::thread::sleep(Duration::from_millis(200));
    let mut slow_login = connect();
    slow_login
        .write_all(
            b"POST /api/v1/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
              Content-Length: 100\r\n\r\n{\"na",
        )
        .unwrap();
    let mut reply = String::new();
    let _ = slow_login.read_to_string(&mut reply);
    assert!(reply.starts_with("HTTP/1.1 408"), "{reply}");
    assert!(
        reply.contains("{\"error\":\"body: not sent within 10 s\"}"),
        "{reply}"
    );
    for stream in &mut held {
        assert_eq!(
            stream.read(&mut [0u8; 16]).unwrap_or(0),
            0,
            "a silent one is closed"
        );
    }
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_secs(9) && waited < Duration::from_secs(20),
        "{waited:?}"
    );
    drop(held);

    // The framework's refusals are JSON like every other answer.
    let send = |method: &str, path: &str, content_type: &str, body: &[u8]| {
        let request = ureq::http::Request::builder()
            .method(method)
            .uri(format!("{}{path}", server.base))
            .header("Authorization", format!("Bearer {token}"))
            .header("Content-Type", content_type)
            .body(body.to_vec())
            .unwrap();
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .into();
        answer(agent.run(request).unwrap())
    };
    let (status, body) = send("POST", "/api/v1/instances", "text/plain", b"{}");
    assert_eq!(status, 415, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("application/json"),
        "{body}"
    );
    let (status, body) = send(
        "POST",
        "/api/v1/instances",
        "application/json",
        b"{\"module\":",
    );
    assert_eq!(status, 400, "{body}");
    let (status, body) = send("POST", "/api/v1/simulate", "text/plain", b"\xff");
    assert_eq!(status, 400, "{body}");
    let long = json!({ "description": "x".repeat(501) }).to_string();
    let (status, body) = send(
        "PUT",
        "/api/v1/instances/hi/description",
        "application/json",
        long.as_bytes(),
    );
    assert_eq!(status, 422, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("at most 500"),
        "{body}"
    );
    let (status, body) = send(
        "PUT",
        "/api/v1/instances/hi/description",
        "application/json",
        br#"{"description":"a\u0000b"}"#,
    );
    assert_eq!(status, 422, "{body}");
}
