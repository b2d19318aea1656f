//! The web UI in a real browser: Debian's Chromium driven by Playwright
//! (`host/tests/browser/ui.mjs`, its npm lock file installed by `cargo
//! xtask test`) against `callhost serve` with SIPp phones. The script says
//! `WAIT …` where a call must happen; this side places it and answers `GO`.
//! Set `CALLHOST_UI_SCREENSHOTS=DIR` to keep the screenshots (the ones in
//! `docs/screenshots/` were made so).

use crate::common::{package, Harness};
use crate::reverse_lookup::{crm_instance, HARBOUR, RL};
use crate::sip::{answering_phone, register, trunk_call, trunk_caller, DIRECTORY};
use crate::sip_harness::{free_port, Serve, SilentPhone};
use crate::web::{admin, PASSWORD};

use std::{
    io::{BufRead as _, BufReader, Write as _},
    process::{Command, Stdio},
};

const BERT: &str = "+4930123456202";
const CARL: &str = "+4930123456203";

/// A data directory with reverse-lookup asking a CRM database, and an
/// administrator.
fn prepared() -> Harness {
    let h = Harness::new();
    h.install(RL);
    crm_instance(&h, "");
    assert!(admin(h.data(), &["add", "anna"], &format!("{PASSWORD}\n")).0);
    h
}

#[test]
fn an_administrator_works_through_the_web_ui_in_chromium() {
    let h = prepared();
    let serve = Serve::start_in(h.data(), DIRECTORY, "");
    let screenshots = std::env::var_os("CALLHOST_UI_SCREENSHOTS")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| h.data().join("screenshots"));
    std::fs::create_dir_all(&screenshots).unwrap();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/browser/ui.mjs");
    let mut node = Command::new("node")
        .arg(script)
        .env("CALLHOST_URL", serve.http_url())
        .env("CALLHOST_ADMIN", "anna")
        .env("CALLHOST_PASSWORD", PASSWORD)
        .env("CALLHOST_HELLO_PACKAGE", package("hello-0.1.0.cmod"))
        .env("CALLHOST_SCREENSHOTS", &screenshots)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run node (the machine's Node.js) with host/tests/browser/ui.mjs");
    let mut to_script = node.stdin.take().unwrap();
    let mut said = Vec::new();
    for line in BufReader::new(node.stdout.take().unwrap()).lines() {
        let line = line.unwrap();
        said.push(line.clone());
        match line.as_str() {
            // A caller the CRM knows: reverse-lookup names them, and the
            // live view in the browser shows the lookup.
            "WAIT live" => {
                let bert = free_port();
                register(&serve, "bert", bert);
                let phone = answering_phone("bert answers", bert);
                let file = trunk_caller(&serve, HARBOUR);
                let caller = trunk_call(&serve, "t_uac_any.xml", BERT, &["-inf", &file]).wait();
                caller.assert_ok();
                phone.wait().assert_ok();
                writeln!(to_script, "GO").unwrap();
            }
            // Carl's forward was changed to Anna in the browser: a call to
            // Carl rings Anna's phone, not Bert's (the forward before).
            "WAIT directory" => {
                serve.wait_log(&["directory reloaded"]);
                let (anna, bert) = (free_port(), free_port());
                register(&serve, "anna", anna);
                register(&serve, "bert", bert);
                let berts_phone = SilentPhone::listen(bert);
                let annas_phone = answering_phone("anna answers", anna);
                let caller = trunk_call(&serve, "uac.xml", CARL, &[]).wait();
                caller.assert_ok();
                annas_phone.wait().assert_ok();
                assert!(
                    berts_phone.invites().is_empty(),
                    "Bert's phone rang: {:?}",
                    berts_phone.invites()
                );
                writeln!(to_script, "GO").unwrap();
            }
            _ => {}
        }
    }
    let output = node.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success() && said.last().map(String::as_str) == Some("PASS"),
        "the browser script failed after:\n{}\n{stderr}\nserver log:\n{}",
        said.join("\n"),
        serve.log()
    );
    for page in [
        "dashboard",
        "modules",
        "instance-error",
        "directory",
        "audit",
    ] {
        assert!(
            screenshots.join(format!("{page}.png")).exists(),
            "{page}.png"
        );
    }
}
