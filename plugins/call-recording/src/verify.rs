//! The built-in `verify` (CR13): per recording the checks `verify.sh`
//! makes (checksums, signature, certificate) plus what only the log can
//! tell (the hash file is the one entered, the entry's link), and for the
//! chain as a whole its links and its anchored head.

use std::path::Path;

use callhost_plugin_sdk::serde_json::{self, json};
use callhost_recording::evidence::{self, Check};

use crate::chain::{self, Chain, Entry, EntryKind};
use crate::recording::Place;

/// Runs every check; `Err` (with the full report) when any failed, so the
/// CLI's exit code says whether all passed.
pub fn run(place: &Place, wanted: &[String], as_json: bool) -> Result<serde_json::Value, String> {
    let chain = Chain::open(&place.chain_path()).map_err(|e| e.to_string())?;
    let entries = chain.entries().map_err(|e| e.to_string())?;
    let certificates = crate::certificates(place)?;
    let breaks = chain.breaks().map_err(|e| e.to_string())?;

    let chosen: Vec<&Entry> = if wanted.is_empty() {
        entries
            .iter()
            .filter(|e| e.kind == EntryKind::Recording)
            .collect()
    } else {
        let mut chosen = Vec::new();
        for path in wanted {
            match entry_for(&entries, path) {
                Some(entry) => chosen.push(entry),
                None => return Err(format!("{path}: no recording of that name in the log")),
            }
        }
        chosen
    };

    let mut recordings = Vec::new();
    let mut all_passed = true;
    for entry in chosen {
        let directory = Path::new(&entry.fields.directory);
        let mut checks = match kept_elsewhere(&chain, entry) {
            Some(check) => vec![check],
            None => {
                let mut checks =
                    evidence::verify_recording(directory, &entry.fields.name, &certificates);
                checks.push(logged_hash(directory, entry));
                checks
            }
        };
        let link: Vec<&chain::Break> = breaks.iter().filter(|b| b.seq == entry.seq).collect();
        checks.push(Check {
            name: "chain link".into(),
            passed: link.is_empty(),
            detail: if link.is_empty() {
                format!("entry {} links to the entry before it", entry.seq)
            } else {
                link.iter()
                    .map(|b| b.problem.clone())
                    .collect::<Vec<_>>()
                    .join("; ")
            },
        });
        all_passed &= checks.iter().all(|c| c.passed);
        recordings.push(json!({
            "name": entry.fields.name,
            "chain_position": entry.seq,
            "checks": checks.iter().map(check_json).collect::<Vec<_>>(),
        }));
    }

    let mut chain_checks = vec![
        Check {
            name: "chain".into(),
            passed: breaks.is_empty(),
            detail: if breaks.is_empty() {
                format!("{} entries, every link intact", entries.len())
            } else {
                breaks
                    .iter()
                    .map(|b| format!("entry {}: {}", b.seq, b.problem))
                    .collect::<Vec<_>>()
                    .join("; ")
            },
        },
        head_check(place, &chain),
    ];
    chain_checks.extend(crate::stamp::check_stamps(place, &entries));
    all_passed &= chain_checks.iter().all(|c| c.passed);

    let report = json!({
        "passed": all_passed,
        "recordings": recordings,
        "chain": chain_checks.iter().map(check_json).collect::<Vec<_>>(),
    });
    if all_passed {
        return Ok(report);
    }
    Err(if as_json {
        serde_json::to_string_pretty(&report).unwrap_or_default()
    } else {
        failed_text(&report)
    })
}

/// A recording whose files are gone here by design: deleted after its
/// retention period (a deletion entry says so), or deleted once every
/// remote target confirmed it. Its copies there are checked with
/// `verify.sh` where they are. Files that are merely missing are not this.
fn kept_elsewhere(chain: &Chain, entry: &Entry) -> Option<Check> {
    let directory = Path::new(&entry.fields.directory);
    if entry
        .fields
        .files
        .iter()
        .any(|f| directory.join(f).exists())
    {
        return None;
    }
    if let Ok(Some(deletion)) = chain.deletion_of(&entry.fields.name) {
        return Some(Check {
            name: "deleted".into(),
            passed: true,
            detail: format!("{} (entry {})", deletion.fields.detail, deletion.seq),
        });
    }
    let uploads = chain.uploads_of(&entry.fields.name).ok()?;
    if uploads.is_empty() || uploads.iter().any(|u| u.done.is_none()) {
        return None;
    }
    let targets: Vec<String> = uploads
        .iter()
        .map(|u| format!("{} ({})", u.target, u.done.as_deref().unwrap_or_default()))
        .collect();
    Some(Check {
        name: "kept on the targets".into(),
        passed: true,
        detail: format!(
            "deleted here after every target confirmed it: {}; check the copies there with verify.sh",
            targets.join(", ")
        ),
    })
}

/// The entry a path names: a recording's name, or any of its files.
fn entry_for<'a>(entries: &'a [Entry], path: &str) -> Option<&'a Entry> {
    let file = Path::new(path)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| path.to_string());
    entries
        .iter()
        .rev()
        .filter(|e| e.kind == EntryKind::Recording && !e.fields.name.is_empty())
        .filter(|e| file.starts_with(&e.fields.name))
        .max_by_key(|e| e.fields.name.len())
}

/// The hash file on disk is the one the log entered (an attacker who
/// re-made checksums and could sign would still differ from the log).
fn logged_hash(directory: &Path, entry: &Entry) -> Check {
    let path = directory.join(format!("{}_hash.txt", entry.fields.name));
    let (passed, detail) = match evidence::sha256_file(&path) {
        Ok(digest) if hex::encode(digest) == entry.fields.hash_sha256 => {
            (true, "the hash file is the one in the log".to_string())
        }
        Ok(_) => (
            false,
            "the hash file differs from the one in the log".to_string(),
        ),
        Err(error) => (false, error.to_string()),
    };
    Check {
        name: "log".into(),
        passed,
        detail,
    }
}

/// The head anchored next to the recordings against the log's newest
/// entry: a log whose newest entries were removed is behind its anchor.
fn head_check(place: &Place, chain: &Chain) -> Check {
    let anchored = std::fs::read_to_string(place.head_path())
        .ok()
        .and_then(|text| chain::parse_head(&text));
    let head = chain.head().ok().flatten();
    let (passed, detail) = match (anchored, head) {
        (None, None) => (true, "no entries yet".to_string()),
        (None, Some(head)) => (
            false,
            format!(
                "no anchored head in {} (the log has {} entries)",
                place.head_path().display(),
                head.seq
            ),
        ),
        (Some(anchored), None) => (
            false,
            format!(
                "the log is empty, but {} entries were anchored",
                anchored.seq
            ),
        ),
        (Some(anchored), Some(head)) if anchored == head => {
            (true, format!("head {} matches the anchor", head.seq))
        }
        (Some(anchored), Some(head)) if anchored.seq > head.seq => (
            false,
            format!(
                "the log ends at entry {} but {} entries were anchored: the newest were removed",
                head.seq, anchored.seq
            ),
        ),
        (Some(anchored), Some(head)) => (
            false,
            format!(
                "the log's head {} ({}) differs from the anchor {} ({})",
                head.seq, head.hash, anchored.seq, anchored.hash
            ),
        ),
    };
    Check {
        name: "chain head".into(),
        passed,
        detail,
    }
}

fn check_json(check: &Check) -> serde_json::Value {
    json!({ "check": check.name, "passed": check.passed, "detail": check.detail })
}

/// The failed checks, one line each.
fn failed_text(report: &serde_json::Value) -> String {
    let mut lines = vec!["verification failed:".to_string()];
    let failed = |checks: &serde_json::Value, prefix: &str, lines: &mut Vec<String>| {
        for check in checks.as_array().into_iter().flatten() {
            if check["passed"] == json!(false) {
                lines.push(format!(
                    "{prefix}{}: {}",
                    check["check"].as_str().unwrap_or(""),
                    check["detail"].as_str().unwrap_or("")
                ));
            }
        }
    };
    for recording in report["recordings"].as_array().into_iter().flatten() {
        let name = recording["name"].as_str().unwrap_or("");
        failed(&recording["checks"], &format!("{name}: "), &mut lines);
    }
    failed(&report["chain"], "", &mut lines);
    lines.join("\n")
}
