//! Shared test harness: a fresh data directory and the real `callhost`
//! binary, with module packages built by `cargo xtask test`.

use std::{
    path::{Path, PathBuf},
    process::{Command, Output},
};

use serde_json::Value;

/// Where `cargo xtask test` put the packages.
pub fn modules_dir() -> PathBuf {
    match std::env::var_os("CALLHOST_TEST_MODULES") {
        Some(dir) => PathBuf::from(dir),
        None => panic!(
            "CALLHOST_TEST_MODULES is not set: run the tests with `cargo xtask test`, \
             which builds and packages the modules they load"
        ),
    }
}

pub fn package(file: &str) -> PathBuf {
    let path = modules_dir().join(file);
    assert!(
        path.exists(),
        "{} is missing: run `cargo xtask test`",
        path.display()
    );
    path
}

pub struct Harness {
    pub dir: tempfile::TempDir,
}

impl Harness {
    /// A data directory that trusts the packaging key.
    pub fn new() -> Harness {
        let harness = Harness {
            dir: tempfile::tempdir().expect("tempdir"),
        };
        let key = package("signing-key.pub");
        harness.ok(&["trust", "add", key.to_str().unwrap()]);
        harness
    }

    pub fn data(&self) -> &Path {
        self.dir.path()
    }

    pub fn run(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_callhost"))
            .arg("--data")
            .arg(self.data())
            .args(args)
            .env_remove("CALLHOST_DATA")
            .output()
            .expect("run callhost")
    }

    /// Runs and expects success; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let output = self.run(args);
        assert!(
            output.status.success(),
            "callhost {args:?} failed:\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout).expect("utf-8 output")
    }

    /// Runs and expects failure; returns stderr.
    pub fn fails(&self, args: &[&str]) -> String {
        let output = self.run(args);
        assert!(
            !output.status.success(),
            "callhost {args:?} should have failed, printed:\n{}",
            String::from_utf8_lossy(&output.stdout)
        );
        String::from_utf8(output.stderr).expect("utf-8 output")
    }

    pub fn install(&self, file: &str) -> String {
        self.ok(&["module", "install", package(file).to_str().unwrap()])
    }

    /// Writes `text` to a file in the data directory's parent and returns its path.
    pub fn file(&self, name: &str, text: &str) -> PathBuf {
        let path = self.data().join(name);
        std::fs::write(&path, text).expect("write file");
        path
    }

    pub fn create(&self, module: &str, name: &str, config: &str) {
        let path = self.file(&format!("{name}.toml"), config);
        self.ok(&[
            "instance",
            "create",
            module,
            name,
            "--config",
            path.to_str().unwrap(),
        ]);
    }

    /// Stores the office directory (examples/office.toml).
    pub fn load_office(&self) {
        let office = self.file("office.toml", OFFICE);
        self.ok(&["directory", "load", office.to_str().unwrap()]);
    }

    /// Runs a scenario in the background; after `after` lines have come
    /// out, runs `during` while the calls go on, then collects every line.
    pub fn simulate_while(
        &self,
        scenario: &str,
        after: usize,
        during: impl FnOnce(),
    ) -> Vec<Value> {
        use std::io::{BufRead, BufReader};
        let path = self.file("traffic.toml", scenario);
        let mut child = Command::new(env!("CARGO_BIN_EXE_callhost"))
            .arg("--data")
            .arg(self.data())
            .args(["simulate", path.to_str().unwrap()])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("start simulation");
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let mut values: Vec<Value> = Vec::new();
        while values.len() < after {
            let line = lines.next().expect("simulation ended early").unwrap();
            values.push(serde_json::from_str(&line).unwrap());
        }
        during();
        for line in lines {
            values.push(serde_json::from_str(&line.unwrap()).unwrap());
        }
        assert!(child.wait().unwrap().success(), "simulation failed");
        values
    }

    /// Runs a scenario; one JSON value per call.
    pub fn simulate(&self, scenario: &str) -> Vec<Value> {
        let path = self.file("scenario.toml", scenario);
        let out = self.ok(&["simulate", path.to_str().unwrap()]);
        out.lines()
            .map(|line| serde_json::from_str(line).expect("JSON line"))
            .collect()
    }

    pub fn instances(&self) -> Vec<Value> {
        serde_json::from_str(&self.ok(&["instance", "list", "--json"])).expect("JSON")
    }

    pub fn instance(&self, name: &str) -> Value {
        self.instances()
            .into_iter()
            .find(|i| i["name"] == name)
            .unwrap_or_else(|| panic!("no instance {name}"))
    }
}

/// The office directory every scenario test starts from.
pub const OFFICE: &str = include_str!("../../../examples/office.toml");

/// Every entry of a zip (a `.cmod`), in order: for tests that take a
/// package apart.
pub fn zip_entries(path: &Path) -> Vec<(String, Vec<u8>)> {
    use std::io::Read;
    let mut archive = zip::ZipArchive::new(std::fs::File::open(path).unwrap()).unwrap();
    (0..archive.len())
        .map(|i| {
            let mut file = archive.by_index(i).unwrap();
            let mut bytes = Vec::new();
            file.read_to_end(&mut bytes).unwrap();
            (file.name().to_string(), bytes)
        })
        .collect()
}
