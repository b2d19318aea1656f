//! The simulator's JSON output is a public interface (docs/simulator.md):
//! each scenario in `host/tests/golden/` (and the demo's) is run against the
//! office directory with the demo's instances, and its output must equal the
//! `.jsonl` file beside it, line by line, with the measured times (fields
//! ending in `_ms` or `_micros`) replaced by `"<time>"`. After an intended change, rewrite
//! them with `CALLHOST_UPDATE_GOLDEN=1 cargo xtask test --test it simulate::`
//! and review the diff.

use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::common;

/// The output with every measured time replaced: what stays is what the
/// interface promises.
fn without_times(output: &str) -> String {
    fn scrub(value: &mut Value) {
        match value {
            Value::Object(map) => {
                for (key, field) in map.iter_mut() {
                    if key.ends_with("_ms") || key.ends_with("_micros") {
                        *field = Value::String("<time>".into());
                    } else {
                        scrub(field);
                    }
                }
            }
            Value::Array(items) => items.iter_mut().for_each(scrub),
            _ => {}
        }
    }
    output
        .lines()
        .map(|line| {
            let mut value: Value = serde_json::from_str(line).expect("a JSON line");
            scrub(&mut value);
            format!("{value}\n")
        })
        .collect()
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The demo's set-up: office directory, breakthrough and redirect-display.
fn demo_host() -> common::Harness {
    let h = common::Harness::new();
    h.install("breakthrough-0.1.0.cmod");
    h.install("redirect-display-0.1.0.cmod");
    h.load_office();
    for (module, name, config) in [
        ("breakthrough", "bt", "examples/demo-breakthrough.toml"),
        ("redirect-display", "rd", "examples/redirect-display.toml"),
    ] {
        let config = root().join(config);
        h.ok(&[
            "instance",
            "create",
            module,
            name,
            "--config",
            config.to_str().unwrap(),
        ]);
    }
    h
}

fn scenarios() -> Vec<(PathBuf, PathBuf)> {
    let golden = root().join("host/tests/golden");
    let mut cases = vec![(root().join("examples/demo.toml"), golden.join("demo.jsonl"))];
    let mut own: Vec<PathBuf> = std::fs::read_dir(&golden)
        .expect("host/tests/golden")
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|e| e == "toml"))
        .collect();
    own.sort();
    cases.extend(own.into_iter().map(|s| {
        let expected = s.with_extension("jsonl");
        (s, expected)
    }));
    cases
}

#[test]
fn simulator_output_matches_the_golden_files() {
    let update = std::env::var_os("CALLHOST_UPDATE_GOLDEN").is_some();
    let h = demo_host();
    let mut differing = Vec::new();
    for (scenario, expected_path) in scenarios() {
        let output = without_times(&h.ok(&["simulate", scenario.to_str().unwrap()]));
        if update {
            std::fs::write(&expected_path, &output).unwrap();
            continue;
        }
        let expected = std::fs::read_to_string(&expected_path)
            .unwrap_or_else(|e| panic!("{}: {e}", expected_path.display()));
        if output != expected {
            differing.push(format!(
                "{} (expected {}):\n{output}",
                scenario.display(),
                expected_path.display()
            ));
        }
    }
    assert!(
        differing.is_empty(),
        "simulator output changed; if intended, run with CALLHOST_UPDATE_GOLDEN=1 and review the diff:\n{}",
        differing.join("\n")
    );
    assert!(
        !update,
        "golden files rewritten; run again without CALLHOST_UPDATE_GOLDEN"
    );
}
