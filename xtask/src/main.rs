//! `cargo xtask`: build, package, test, bench, demo.
//!
//! - `package [--debug] [--examples] [--only CRATE]… [--version-override V]
//!   [--out DIR]`: builds module libraries and writes signed `.cmod` files to
//!   `target/modules/` (`target/modules/debug/` with `--debug`), with the
//!   crate's `assets/` and `verify.sh` when present.
//! - `test`: installs the servers and peers the tests use when missing
//!   (`prerequisites.rs`), packages what the tests load (debug, with a "v2"
//!   of the hello module for the upgrade test), then runs every test of the
//!   workspace, the ignored ones included.
//! - `bench [engine]`: release packages, then the benchmarks.
//! - `bench sip`: SIPp load against `callhost serve` and Kamailio
//!   (`bench_sip.rs`).
//! - `bench recording [--calls N]`: recorded calls with RTP
//!   (`bench_recording.rs`).
//! - `bench connector [--clients N] [--rate R] [--seconds S]`: signed-in
//!   api-connector clients and the events they get while SIPp calls,
//!   against a bare WebSocket fan-out (`bench_connector.rs`).
//! - `demo`: the README's main command: a fresh data directory, both
//!   modules, the office directory and a scenario showing what they do,
//!   then `callhost serve` on 127.0.0.1:5060 for real softphones.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{bail, Context as _, Result};
use callhost_package::{Manifest, PackageBuilder, SigningKey};

mod bench_connector;
mod bench_media;
mod bench_recording;
mod bench_sip;
mod bench_tls;
mod prerequisites;

/// Crates packaged as modules: (crate name, directory).
const PLUGINS: &[(&str, &str)] = &[
    ("breakthrough", "plugins/breakthrough"),
    ("redirect-display", "plugins/redirect-display"),
    ("reverse-lookup", "plugins/reverse-lookup"),
    ("call-recording", "plugins/call-recording"),
    ("api-connector", "plugins/api-connector"),
];
/// Modules only tests and the author guide use.
const EXAMPLES: &[(&str, &str)] = &[
    ("hello-module", "examples/hello-module"),
    ("fault-module", "examples/fault-module"),
];

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let root = workspace_root();
    std::env::set_current_dir(&root)?;
    match args.first().map(String::as_str) {
        Some("package") => {
            let options = PackageOptions::parse(&args[1..])?;
            for path in package(&root, &options)? {
                println!("{}", path.display());
            }
            Ok(())
        }
        Some("test") => test(&root, &args[1..]),
        Some("bench") => bench(&root, &args[1..]),
        Some("demo") => demo(&root),
        _ => {
            eprintln!(
                "usage: cargo xtask <package [--debug] [--examples] [--only CRATE] [--version-override V] [--out DIR] | test [cargo test args…] | bench [engine|lookup|sip|recording|connector] | demo>"
            );
            std::process::exit(2);
        }
    }
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace")
        .to_path_buf()
}

#[derive(Default)]
struct PackageOptions {
    debug: bool,
    examples: bool,
    only: Vec<String>,
    version_override: Option<String>,
    out: Option<PathBuf>,
}

impl PackageOptions {
    fn parse(args: &[String]) -> Result<PackageOptions> {
        let mut options = PackageOptions::default();
        let mut args = args.iter();
        while let Some(arg) = args.next() {
            match arg.as_str() {
                "--debug" => options.debug = true,
                "--examples" => options.examples = true,
                "--only" => options
                    .only
                    .push(args.next().context("--only needs a crate name")?.clone()),
                "--version-override" => {
                    options.version_override = Some(
                        args.next()
                            .context("--version-override needs a version")?
                            .clone(),
                    )
                }
                "--out" => {
                    options.out = Some(args.next().context("--out needs a directory")?.into())
                }
                other => bail!("unknown package option `{other}`"),
            }
        }
        Ok(options)
    }
}

fn cargo() -> Command {
    Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
}

fn run(command: &mut Command) -> Result<()> {
    let status = command
        .status()
        .with_context(|| format!("running {command:?}"))?;
    if !status.success() {
        bail!("{command:?} failed with {status}");
    }
    Ok(())
}

fn host_triple() -> Result<String> {
    let output = Command::new("rustc").arg("-vV").output()?;
    let text = String::from_utf8(output.stdout)?;
    text.lines()
        .find_map(|line| line.strip_prefix("host: "))
        .map(str::to_string)
        .context("rustc -vV printed no host triple")
}

/// The signing key lives outside the repository; created on first use.
fn signing_key() -> Result<SigningKey> {
    let path = match std::env::var_os("CALLHOST_SIGNING_KEY") {
        Some(path) => PathBuf::from(path),
        None => PathBuf::from(std::env::var("HOME").context("HOME is not set")?)
            .join(".config/callhost/signing-key.pem"),
    };
    let (key, created) = SigningKey::load_or_create(&path)?;
    if created {
        eprintln!(
            "created signing key {} (keep it out of the repository)",
            path.display()
        );
    }
    Ok(key)
}

fn package(root: &Path, options: &PackageOptions) -> Result<Vec<PathBuf>> {
    let mut crates: Vec<(&str, &str)> = PLUGINS.to_vec();
    if options.examples {
        crates.extend_from_slice(EXAMPLES);
    }
    if !options.only.is_empty() {
        crates.retain(|(name, _)| options.only.iter().any(|only| only == name));
    }
    let mut build = cargo();
    build.arg("build").arg("--lib");
    if !options.debug {
        build.arg("--release");
    }
    for (name, _) in &crates {
        build.args(["-p", name]);
    }
    match &options.version_override {
        Some(version) => build.env("CALLHOST_MODULE_VERSION", version),
        None => build.env_remove("CALLHOST_MODULE_VERSION"),
    };
    run(&mut build)?;

    let profile = if options.debug { "debug" } else { "release" };
    let target_dir = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"));
    let out_dir = options.out.clone().unwrap_or_else(|| {
        let modules = target_dir.join("modules");
        if options.debug {
            modules.join("debug")
        } else {
            modules
        }
    });
    std::fs::create_dir_all(&out_dir)?;
    let triple = host_triple()?;
    let key = signing_key()?;
    std::fs::write(out_dir.join("signing-key.pub"), key.public().to_file_text())?;
    let staging = target_dir.join("modules-staging");
    std::fs::create_dir_all(&staging)?;
    let loader = callhost::loader::Loader::default();

    let mut written = Vec::new();
    for (name, dir) in &crates {
        let file_name = format!("lib{}.so", name.replace('-', "_"));
        let built = target_dir.join(profile).join(&file_name);
        let bytes =
            std::fs::read(&built).with_context(|| format!("reading {}", built.display()))?;
        // The manifest comes from the library itself: one source of truth.
        // Loaded from a unique copy, as a loaded path is never reloaded.
        let copy = staging.join(format!(
            "{}-{}.so",
            name,
            callhost_package::sha256_hex(&bytes)
        ));
        if !copy.exists() {
            std::fs::write(&copy, &bytes)?;
        }
        let library = loader.load(&copy, &callhost_package::sha256_hex(&bytes))?;
        let found = &library.manifest;
        let manifest = Manifest {
            id: found.id.to_string(),
            name: found.name.to_string(),
            version: semver::Version::parse(found.version.as_str())
                .with_context(|| format!("{name}: version `{}` is not semver", found.version))?,
            abi_version: found.abi_version,
            host_version: semver::VersionReq::parse(found.host_version_req.as_str())?,
            description: found.description.to_string(),
            target: triple.clone(),
            library: format!("lib/{triple}/{file_name}"),
        };
        let mut builder = PackageBuilder::new(manifest.clone()).library(bytes);
        let assets = root.join(dir).join("assets");
        if assets.is_dir() {
            for entry in std::fs::read_dir(&assets)? {
                let entry = entry?;
                if entry.file_type()?.is_file() {
                    let asset = format!("assets/{}", entry.file_name().to_string_lossy());
                    builder = builder.asset(&asset, std::fs::read(entry.path())?);
                }
            }
        }
        let verify = root.join(dir).join("verify.sh");
        if verify.is_file() {
            builder = builder.asset("verify.sh", std::fs::read(&verify)?);
        }
        let out = out_dir.join(format!("{}-{}.cmod", manifest.id, manifest.version));
        builder.write(&out, Some(&key))?;
        written.push(out);
    }
    Ok(written)
}

fn test(root: &Path, extra: &[String]) -> Result<()> {
    prerequisites::ensure(prerequisites::TEST_DEBIAN, prerequisites::TEST_PYPI)?;
    prerequisites::ensure_npm(root, prerequisites::TEST_NPM_DIR)?;
    // A "v2" of the hello, fault and api-connector modules for the
    // upgrade tests, then the normal set.
    package(
        root,
        &PackageOptions {
            debug: true,
            examples: true,
            only: vec![
                "hello-module".into(),
                "fault-module".into(),
                "api-connector".into(),
            ],
            version_override: Some("0.2.0".into()),
            ..Default::default()
        },
    )?;
    package(
        root,
        &PackageOptions {
            debug: true,
            examples: true,
            ..Default::default()
        },
    )?;
    let modules = target_dir(root).join("modules/debug");
    let mut test = cargo();
    test.args(["test", "--workspace"]).args(extra);
    // A test that must be optional is `#[ignore]`d with a reason; the
    // suite runs it anyway, so nothing passes by not running.
    if !extra.iter().any(|arg| arg == "--") {
        test.arg("--");
    }
    test.arg("--include-ignored")
        .env("CALLHOST_TEST_MODULES", &modules);
    run(&mut test)
}

fn target_dir(root: &Path) -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"))
}

fn bench(root: &Path, args: &[String]) -> Result<()> {
    let which = args.first().map(String::as_str).unwrap_or("engine");
    match which {
        "engine" => {
            package(
                root,
                &PackageOptions {
                    examples: false,
                    ..Default::default()
                },
            )?;
            let mut bench = cargo();
            bench
                .args(["bench", "-p", "callhost", "--bench", "engine"])
                .env("CALLHOST_BENCH_MODULES", target_dir(root).join("modules"));
            run(&mut bench)
        }
        // In-process: the lookup machinery against local HTTP providers.
        "lookup" => run(cargo().args(["bench", "-p", "reverse-lookup", "--bench", "lookup"])),
        // SIPp load: `callhost serve` against Kamailio as the reference.
        "sip" => bench_sip::bench_sip(root, &args[1..]),
        // Recorded calls with RTP: dropped frames, finalisation, verify.
        "recording" => bench_recording::bench_recording(root, &args[1..]),
        // Signed-in api-connector clients and the events they get.
        "connector" => bench_connector::bench_connector(root, &args[1..]),
        "connector-reference" => bench_connector::reference(&args[1..]),
        other => {
            bail!("unknown benchmark `{other}` (known: engine, lookup, sip, recording, connector)")
        }
    }
}

fn demo(root: &Path) -> Result<()> {
    let packages = package(root, &PackageOptions::default())?;
    let data = target_dir(root).join("demo-data");
    if data.exists() {
        std::fs::remove_dir_all(&data)?;
    }
    // Built once; every step runs the binary itself. (`cargo run` per step
    // resolved features apart from the package build and rebuilt callhost.)
    run(cargo().args(["build", "--quiet", "--release", "-p", "callhost"]))?;
    let binary = target_dir(root).join("release/callhost");
    let callhost = |args: &[&str]| -> Result<()> {
        let mut command = Command::new(&binary);
        command.arg("--data").arg(&data).args(args);
        run(&mut command)
    };
    let key = target_dir(root).join("modules/signing-key.pub");
    callhost(&["trust", "add", key.to_str().context("path")?])?;
    for package in &packages {
        callhost(&["module", "install", package.to_str().context("path")?])?;
    }
    callhost(&["directory", "load", "examples/office.toml"])?;
    callhost(&[
        "instance",
        "create",
        "breakthrough",
        "bt-management",
        "--config",
        "examples/demo-breakthrough.toml",
        "--description",
        "The team lead may always get through",
    ])?;
    callhost(&[
        "instance",
        "create",
        "redirect-display",
        "rd",
        "--config",
        "examples/redirect-display.toml",
        "--description",
        "Secretariat calls through; forwarded calls say for whom",
    ])?;
    callhost(&["instance", "list"])?;
    // An administrator for the web UI, with a password made for this run.
    let admin_password = format!("demo-{:016x}", rand_u64()?);
    {
        use std::io::Write as _;
        let mut add = Command::new(&binary)
            .arg("--data")
            .arg(&data)
            .args(["admin", "add", "admin"])
            .stdin(std::process::Stdio::piped())
            .spawn()?;
        writeln!(add.stdin.take().context("stdin")?, "{admin_password}")?;
        if !add.wait()?.success() {
            bail!("callhost admin add failed");
        }
    }
    println!("\n# examples/demo.toml — one JSON line per call:");
    callhost(&["simulate", "examples/demo.toml"])?;
    println!("\ndata directory: {}", data.display());
    println!(
        r#"
# Now the same PBX on SIP: `callhost serve` below listens on 127.0.0.1:5060,
# UDP and TCP. Register two or three softphones there (any SIP phone, e.g.
# baresip, Linphone, MicroSIP), realm "callhost", with these users from
# examples/office.toml:
#   user boss  password boss-secret-201   number 201 (forwards to 202)
#   user sec   password sec-secret-202    number 202
#   user clerk password clerk-secret-203  number 203
#   user dev   password dev-secret-204    number 204 (do not disturb)
#   user lead  password lead-secret-210   number 210
# With baresip: one directory per phone. `baresip -f DIR` writes DIR/config
# and DIR/accounts the first time; quit it (q) and edit both. In DIR/config
# give it a SIP port of its own, since callhost holds 5060 and baresip
# listens on 5060 too by default:
#   sip_listen 127.0.0.1:5070
# baresip also opens a TLS listener on that port + 1 (here 5071), so a
# second baresip on this machine needs a port two further on (5072, then
# 5074). DIR/accounts holds the user's line, one of:
#   <sip:boss@127.0.0.1:5060;transport=udp>;auth_pass=boss-secret-201;regint=60
#   <sip:sec@127.0.0.1:5060;transport=udp>;auth_pass=sec-secret-202;regint=60
#   <sip:clerk@127.0.0.1:5060;transport=udp>;auth_pass=clerk-secret-203;regint=60
#   <sip:dev@127.0.0.1:5060;transport=udp>;auth_pass=dev-secret-204;regint=60
#   <sip:lead@127.0.0.1:5060;transport=udp>;auth_pass=lead-secret-210;regint=60
# Start it again with `baresip -f DIR`.
# Then dial:
#   from clerk, 201: sec's phone rings and shows that the call was for
#     the boss (redirect-display);
#   from sec, 201: the boss's phone rings, the secretariat calls through;
#   from clerk, 204: busy (dev is in do-not-disturb);
#   from lead, 204: dev's phone rings anyway (breakthrough).
# The web administration is on http://127.0.0.1:8080/ while it runs: log in
# as admin, password {admin_password}
# Stop with Ctrl-C: calls in progress are ended with BYE."#
    );
    callhost(&["serve"])?;
    Ok(())
}

/// 64 random bits from the kernel (the demo's admin password).
fn rand_u64() -> Result<u64> {
    use std::io::Read as _;
    let mut bytes = [0u8; 8];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut random| random.read_exact(&mut bytes))
        .context("reading /dev/urandom")?;
    Ok(u64::from_le_bytes(bytes))
}
