//! `cargo xtask bench recording [--calls N]`: concurrent recorded calls
//! with RTP at 50 packets/s per direction (the media step's generator,
//! `bench_media.rs`) through `callhost serve` with a call-recording
//! instance that records every call, then:
//! - frames dropped anywhere on the way to the files (the per-leg
//!   `dropped` of every recording's metadata, which counts the relay's tap
//!   and the host's queue), RTP loss, late frames, CPU, disk bytes per
//!   minute of call;
//! - finalisation time per recording (hash, sign, chain), from the
//!   instance log;
//! - `verify` of every recording against `sha256sum -c` of the same hash
//!   files, side by side (the ratio: what the signature, certificate and
//!   chain checks cost on top of the checksums).
//!
//! The aim (issue 11): 500 concurrent recorded calls with 0 dropped frames.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};

use crate::bench_media;
use crate::bench_sip::{build_callhost, Flavour};
use crate::target_dir;

const DEFAULT_CALLS: u32 = 500;

pub fn bench_recording(root: &Path, args: &[String]) -> Result<()> {
    let mut calls = DEFAULT_CALLS;
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--calls" => {
                calls = args
                    .next()
                    .context("--calls needs a number")?
                    .parse()
                    .context("--calls needs a number")?
            }
            other => bail!("unknown option `{other}` (known: --calls N)"),
        }
    }
    let work = target_dir(root).join("bench-recording");
    if work.exists() {
        std::fs::remove_dir_all(&work)?;
    }
    std::fs::create_dir_all(&work)?;
    let binary = build_callhost(root)?;
    let data = work.join("data");
    let figures = bench_media::run(
        root,
        &work,
        &binary,
        calls,
        Flavour::Recording,
        bench_media::Protection::Rtp,
        &data,
    )?;
    bench_media::print(std::slice::from_ref(&figures));

    let callhost = |args: &[&str]| -> Result<std::process::Output> {
        Command::new(&binary)
            .arg("--data")
            .arg(&data)
            .args(args)
            .output()
            .context("running callhost")
    };
    // The recordings are finalised after the server stopped taking calls;
    // the server is stopped, so what is in the log is what there is.
    let listed = callhost(&["instance", "action", "rec", "recordings", "--json"])?;
    let entries: Vec<serde_json::Value> = serde_json::from_slice(&listed.stdout)
        .with_context(|| String::from_utf8_lossy(&listed.stderr).into_owned())?;
    let mut totals = Legs::default();
    let mut audio_bytes = 0u64;
    let mut seconds = 0.0;
    let mut hash_files: Vec<PathBuf> = Vec::new();
    for entry in &entries {
        let files: Vec<PathBuf> = entry["files"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|f| f.as_str().map(PathBuf::from))
            .collect();
        for file in &files {
            let name = file.to_string_lossy();
            if name.ends_with(".wav") {
                audio_bytes += std::fs::metadata(file).map(|m| m.len()).unwrap_or(0);
            }
            if name.ends_with("_hash.txt") {
                hash_files.push(file.clone());
            }
            if name.ends_with("_info.txt") {
                let info = std::fs::read_to_string(file).unwrap_or_default();
                totals.add(&info);
                seconds += info
                    .lines()
                    .find_map(|l| l.strip_prefix("Duration: "))
                    .and_then(|d| d.trim_end_matches(" s").parse::<f64>().ok())
                    .unwrap_or(0.0);
            }
        }
    }
    let finalise_ms = finalisation_times(&data.join("instances/rec/instance.log"));
    let (verify_time, sha_time) = verify_against_sha256sum(&binary, &data, &hash_files)?;

    println!(
        "\n| recording: {} calls | recordings | frames dropped on the way | RTP lost | late | disk per minute of call | finalisation p50 / p99 / max | verify all / sha256sum -c (ratio) |",
        figures.calls()
    );
    println!("|---|---|---|---|---|---|---|---|");
    let (p50, p99, max) = spread(&finalise_ms);
    println!(
        "| {} | {} | {} | {} | {} | {:.2} MB | {p50:.1} / {p99:.1} / {max:.1} ms | {:.2} s / {:.2} s ({:.1}) |",
        figures.calls(),
        entries.len(),
        totals.dropped,
        totals.lost,
        totals.late,
        if seconds > 0.0 {
            audio_bytes as f64 / 1e6 / (seconds / 60.0)
        } else {
            0.0
        },
        verify_time.as_secs_f64(),
        sha_time.as_secs_f64(),
        verify_time.as_secs_f64() / sha_time.as_secs_f64().max(1e-9),
    );
    if totals.dropped > 0 {
        println!(
            "FAILED: {} frames were dropped on the way to the recordings",
            totals.dropped
        );
    }
    Ok(())
}

/// Per-leg counters summed over every recording's metadata.
#[derive(Default)]
struct Legs {
    dropped: u64,
    lost: u64,
    late: u64,
}

impl Legs {
    fn add(&mut self, info: &str) {
        for line in info.lines().filter(|l| l.starts_with("Leg ")) {
            for field in line.split_whitespace() {
                let mut parts = field.splitn(2, '=');
                let (Some(key), Some(value)) = (parts.next(), parts.next()) else {
                    continue;
                };
                let Ok(value) = value.parse::<u64>() else {
                    continue;
                };
                match key {
                    "dropped" => self.dropped += value,
                    "lost" => self.lost += value,
                    "late" => self.late += value,
                    _ => {}
                }
            }
        }
    }
}

/// `finalise_ms=` of every "recording entered" line.
fn finalisation_times(log: &Path) -> Vec<f64> {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let mut times: Vec<f64> = text
        .lines()
        .filter(|l| l.contains("recording entered"))
        .filter_map(|l| {
            l.split("finalise_ms=")
                .nth(1)?
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        })
        .collect();
    times.sort_by(f64::total_cmp);
    times
}

fn spread(sorted: &[f64]) -> (f64, f64, f64) {
    let at = |p: f64| crate::bench_sip::percentile(sorted, p).unwrap_or(0.0);
    (at(0.5), at(0.99), sorted.last().copied().unwrap_or(0.0))
}

/// The module's `verify` over everything against `sha256sum -c` over the
/// same hash files (run in their directories).
fn verify_against_sha256sum(
    binary: &Path,
    data: &Path,
    hash_files: &[PathBuf],
) -> Result<(Duration, Duration)> {
    let started = Instant::now();
    let verify = Command::new(binary)
        .arg("--data")
        .arg(data)
        .args(["instance", "action", "rec", "verify"])
        .output()?;
    let verify_time = started.elapsed();
    if !verify.status.success() {
        println!(
            "verify FAILED:\n{}",
            String::from_utf8_lossy(&verify.stderr)
        );
    }
    let mut by_dir: std::collections::BTreeMap<PathBuf, Vec<String>> = Default::default();
    for file in hash_files {
        if let (Some(dir), Some(name)) = (file.parent(), file.file_name()) {
            by_dir
                .entry(dir.to_path_buf())
                .or_default()
                .push(name.to_string_lossy().into_owned());
        }
    }
    let started = Instant::now();
    for (dir, names) in &by_dir {
        let status = Command::new("sha256sum")
            .arg("--quiet")
            .arg("-c")
            .args(names)
            .current_dir(dir)
            .status()?;
        if !status.success() {
            println!("sha256sum -c FAILED in {}", dir.display());
        }
    }
    Ok((verify_time, started.elapsed()))
}
