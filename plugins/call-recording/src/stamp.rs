//! RFC 3161 time stamps of the chain's head (CR15): a chain alone cannot
//! show that its newest entries were removed together with their
//! recordings; a stamp from an outside authority proves the chain had at
//! least that many entries, with those hashes, at that time.
//!
//! Stored next to the recordings, one pair per stamped head:
//!
//! ```text
//! <root>/timestamps/chain-head-00000042.txt   the head as stamped
//! <root>/timestamps/chain-head-00000042.tsr   the TSA's reply (DER)
//! ```
//!
//! checked by hand with
//! `openssl ts -verify -data chain-head-00000042.txt -in chain-head-00000042.tsr -CAfile tsa.pem`,
//! and sent to the targets with the next upload.

use std::path::{Path, PathBuf};
use std::time::Duration;

use callhost_recording::evidence::timestamp;

use crate::chain;
use crate::recording::{write_atomically, Place};

/// A TSA that does not answer in this long is tried again next time.
const TSA_TIMEOUT: Duration = Duration::from_secs(30);

/// One stamped head on disk.
#[derive(Debug, Clone)]
pub struct StampFiles {
    pub seq: i64,
    pub head: PathBuf,
    pub reply: PathBuf,
}

pub fn directory(place: &Place) -> PathBuf {
    place.root.join("timestamps")
}

fn files_for(dir: &Path, seq: i64) -> StampFiles {
    StampFiles {
        seq,
        head: dir.join(format!("chain-head-{seq:08}.txt")),
        reply: dir.join(format!("chain-head-{seq:08}.tsr")),
    }
}

/// Every complete pair, oldest first.
pub fn stamps(place: &Place) -> Vec<StampFiles> {
    let dir = directory(place);
    let mut found: Vec<StampFiles> = std::fs::read_dir(&dir)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .filter_map(|e| {
                    let name = e.file_name().to_string_lossy().into_owned();
                    let seq = name
                        .strip_prefix("chain-head-")?
                        .strip_suffix(".tsr")?
                        .parse()
                        .ok()?;
                    Some(files_for(&dir, seq))
                })
                .filter(|s| s.head.exists())
                .collect()
        })
        .unwrap_or_default();
    found.sort_by_key(|s| s.seq);
    found
}

/// Stamps the current head unless it is stamped already; the new pair,
/// or `None` when there was nothing new.
pub async fn stamp_head(place: &Place, url: &str) -> Result<Option<StampFiles>, String> {
    let head_path = place.head_path();
    let text = match tokio::fs::read_to_string(&head_path).await {
        Ok(text) => text,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(error) => return Err(format!("{}: {error}", head_path.display())),
    };
    let head = chain::parse_head(&text)
        .ok_or_else(|| format!("{} is not a chain head", head_path.display()))?;
    let dir = directory(place);
    let files = files_for(&dir, head.seq);
    if files.reply.exists() {
        return Ok(None);
    }
    let nonce: u64 = rand::random();
    let query = timestamp::request(text.as_bytes(), nonce).map_err(|e| e.to_string())?;
    let client = reqwest::Client::builder()
        .timeout(TSA_TIMEOUT)
        .build()
        .map_err(|e| e.to_string())?;
    let answer = client
        .post(url)
        .header(reqwest::header::CONTENT_TYPE, "application/timestamp-query")
        .body(query)
        .send()
        .await
        .map_err(|e| format!("{url}: {e}"))?;
    let status = answer.status();
    if !status.is_success() {
        return Err(format!("{url}: HTTP {status}"));
    }
    let reply = answer.bytes().await.map_err(|e| format!("{url}: {e}"))?;
    let stamp = timestamp::check_reply(&reply, text.as_bytes(), Some(nonce))
        .map_err(|e| format!("{url}: {e}"))?;
    let written = tokio::task::spawn_blocking({
        let files = files.clone();
        move || {
            std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
            // The head first: a reply without its data is not a stamp.
            write_atomically(&files.head, text.as_bytes())?;
            write_atomically(&files.reply, &reply)
        }
    })
    .await
    .map_err(|e| e.to_string())?;
    written?;
    callhost_plugin_sdk::tracing::info!(seq = head.seq, time = %stamp.time, "chain head time-stamped");
    Ok(Some(files))
}

/// For `verify`, over the chain's `entries`: each stored stamp matches the
/// chain (the entry at its
/// position has the stamped hash) and its reply stamps that text. The
/// reply's signature is for `openssl ts -verify` with the TSA's CA.
pub fn check_stamps(
    place: &Place,
    entries: &[chain::Entry],
) -> Option<callhost_recording::evidence::Check> {
    let stamps = stamps(place);
    let newest = stamps.last()?.seq;
    let mut problems = Vec::new();
    for stamp in &stamps {
        let text = std::fs::read_to_string(&stamp.head).unwrap_or_default();
        let reply = std::fs::read(&stamp.reply).unwrap_or_default();
        let Some(head) = chain::parse_head(&text) else {
            problems.push(format!("{}: not a chain head", stamp.head.display()));
            continue;
        };
        if let Err(error) = timestamp::check_reply(&reply, text.as_bytes(), None) {
            problems.push(format!("{}: {error}", stamp.reply.display()));
        }
        match entries.iter().find(|e| e.seq == head.seq) {
            Some(entry) if entry.hash == head.hash => {}
            Some(_) => problems.push(format!(
                "entry {} is not the one stamped (changed after the stamp)",
                head.seq
            )),
            None => problems.push(format!(
                "entry {} was stamped but is missing from the chain",
                head.seq
            )),
        }
    }
    Some(callhost_recording::evidence::Check {
        name: "time stamps".into(),
        passed: problems.is_empty(),
        detail: if problems.is_empty() {
            format!(
                "{} stamped heads match the chain, the newest at entry {newest}",
                stamps.len()
            )
        } else {
            problems.join("; ")
        },
    })
}
