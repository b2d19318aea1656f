//! `cargo xtask bench sip`: the same SIPp load against a target SIP server
//! (`callhost serve`) and against Kamailio as the reference
//! (`bench/kamailio.cfg`, a stateful record-routing relay), side by side.
//!
//! Measured for each server:
//! - calls per second with zero failed calls: SIPp's `tests/sipp/uac.xml`
//!   (without media) at stepped rates, [`STEP_SECONDS`] of calls per step;
//!   the highest rate whose step has no failed call;
//! - call setup latency (INVITE sent to 200 received) p50/p99 at
//!   [`LATENCY_RATE`] calls/s (`start_rtd`/`rtd` in the scenario,
//!   `-trace_rtt`; SIPp reports whole milliseconds);
//! - [`CONCURRENT`] calls at once for [`CALL_MS`], each side playing
//!   g711a.pcap as RTP: failed calls and the server's CPU (utime+stime of
//!   its process tree from /proc, as % of one core over the window).
//!
//! Kamailio relays signalling only (RTP flows SIPp to SIPp), callhost
//! anchors the RTP: the CPU row compares different work.
//!
//! Callhost's side: a data directory with user `bench` (number 100,
//! password bench-secret), `callhost.toml` with `[sip] listen`,
//! `[sip.trunk] peer` (the UAC's address: calls from it are not
//! challenged) and `[media]`; `callhost --data DIR serve` until SIGTERM. The
//! UAS registers as `bench` from its own port first. Skipped with a message
//! when callhost cannot be built or has no `serve` command.

use std::{
    collections::HashMap,
    fs,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _, Result};

use crate::{cargo, target_dir};

const KAMAILIO_MODULES: &str = "/usr/lib/x86_64-linux-gnu/kamailio/modules";
const LOOPBACK: &str = "127.0.0.1";
/// The SIPp UAS (the called user); Kamailio relays to it.
const UAS_PORT: u16 = 5070;
/// The SIPp UAC; callhost's trunk peer.
const UAC_PORT: u16 = 5061;
const UAC_MEDIA_PORT: u16 = 6000;
const UAS_MEDIA_PORT: u16 = 6100;
const KAMAILIO_PORT: u16 = 5090;
const CALLHOST_PORT: u16 = 5080;
/// The called number (callhost: user `bench`).
const SERVICE: &str = "100";

const RATES: &[u32] = &[50, 100, 200, 400, 800, 1600];
const STEP_SECONDS: u32 = 3;
const LATENCY_RATE: u32 = 100;
const LATENCY_CALLS: u32 = 500;
const CONCURRENT: u32 = 50;
const CALL_MS: u32 = 10_000;

pub fn bench_sip(root: &Path, args: &[String]) -> Result<()> {
    let mut only: Option<String> = None;
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--only" => {
                only = Some(
                    args.next()
                        .context("--only needs callhost or kamailio")?
                        .clone(),
                )
            }
            other => {
                bail!("unknown `bench sip` option `{other}` (known: --only callhost|kamailio)")
            }
        }
    }
    let wanted = |name: &str| only.as_deref().is_none_or(|only| only == name);
    for tool in ["sipp", "kamailio"] {
        if Command::new(tool)
            .arg("-v")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_err()
        {
            bail!("`{tool}` is not installed (Debian: apt-get install sip-tester kamailio)");
        }
    }
    let work = target_dir(root).join("bench-sip");
    if work.exists() {
        fs::remove_dir_all(&work)?;
    }
    fs::create_dir_all(&work)?;
    let scenarios = Scenarios::prepare(root, &work)?;

    let mut columns: Vec<Figures> = Vec::new();
    if wanted("callhost") {
        match Server::callhost(root, &work, &scenarios)? {
            Ok(server) => columns.push(measure(server, &work, &scenarios)?),
            Err(reason) => bail!("callhost: {reason}"),
        }
    }
    if wanted("kamailio") {
        let server = Server::kamailio(root, &work)?;
        columns.push(measure(server, &work, &scenarios)?);
    }
    print_table(&columns);
    println!("\nlogs and SIPp traces: {}", work.display());
    Ok(())
}

/// Scenario files: the repository's, plus copies without RTP for the
/// signalling-only runs.
struct Scenarios {
    uac: PathBuf,
    uas: PathBuf,
    uac_no_media: PathBuf,
    uas_no_media: PathBuf,
    register: PathBuf,
    users: PathBuf,
}

impl Scenarios {
    fn prepare(root: &Path, work: &Path) -> Result<Scenarios> {
        let dir = root.join("tests/sipp");
        let strip = |name: &str| -> Result<PathBuf> {
            let text = fs::read_to_string(dir.join(name))?;
            let play = "<exec play_pcap_audio=\"/usr/share/sip-tester/g711a.pcap\"/>";
            if !text.contains(play) {
                bail!("tests/sipp/{name} no longer plays g711a.pcap as this bench expects");
            }
            let out = work.join(name.replace(".xml", "_no_media.xml"));
            fs::write(&out, text.replace(play, "<log message=\"no media\"/>"))?;
            Ok(out)
        };
        Ok(Scenarios {
            uac: dir.join("uac.xml"),
            uas: dir.join("uas.xml"),
            uac_no_media: strip("uac.xml")?,
            uas_no_media: strip("uas.xml")?,
            register: dir.join("register.xml"),
            users: dir.join("users.csv"),
        })
    }
}

/// A server under test, stopped (SIGTERM, then kill) when dropped.
struct Server {
    name: &'static str,
    port: u16,
    child: Child,
    /// Before each UAS start (callhost: register the UAS's address).
    register: Option<(PathBuf, PathBuf)>,
    /// The server's log, when it reports per-call relay counters.
    log: Option<PathBuf>,
}

impl Server {
    fn kamailio(root: &Path, work: &Path) -> Result<Server> {
        let run = work.join("kamailio");
        fs::create_dir_all(&run)?;
        let log = fs::File::create(run.join("kamailio.log"))?;
        let child = Command::new("kamailio")
            .arg("-f")
            .arg(root.join("bench/kamailio.cfg"))
            .args(["-DD", "-E", "-L", KAMAILIO_MODULES, "-m", "64", "-M", "8"])
            .arg("-Y")
            .arg(&run)
            .arg("-P")
            .arg(run.join("kamailio.pid"))
            .arg("-A")
            .arg(format!("LISTEN=udp:{LOOPBACK}:{KAMAILIO_PORT}"))
            .arg("-A")
            .arg(format!("DEST=\"sip:{LOOPBACK}:{UAS_PORT}\""))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting kamailio")?;
        let mut server = Server {
            name: "kamailio",
            port: KAMAILIO_PORT,
            child,
            register: None,
            log: None,
        };
        server.settle(&run.join("kamailio.log"))?;
        Ok(server)
    }

    /// `Ok(Err(reason))` when callhost is not (yet) able to serve SIP.
    fn callhost(
        root: &Path,
        work: &Path,
        scenarios: &Scenarios,
    ) -> Result<std::result::Result<Server, String>> {
        let built = cargo()
            .args(["build", "--release", "-p", "callhost"])
            .status()
            .context("running cargo build")?;
        if !built.success() {
            return Ok(Err("`cargo build --release -p callhost` failed".into()));
        }
        let binary = target_dir(root).join("release/callhost");
        let serve_help = Command::new(&binary)
            .args(["serve", "--help"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .with_context(|| format!("running {}", binary.display()))?;
        if !serve_help.success() {
            return Ok(Err(format!(
                "{} has no `serve` command yet",
                binary.display()
            )));
        }
        let data = work.join("callhost-data");
        fs::create_dir_all(&data)?;
        let directory = work.join("bench-directory.toml");
        fs::write(
            &directory,
            "# The benchmark's callee: SIPp's UAS registers as this user.\n\
             home_country = \"DE\"\n\
             [[users]]\nid = \"bench\"\nname = \"Bench Callee\"\n\
             numbers = [\"100\"]\npassword = \"bench-secret\"\n",
        )?;
        let loaded = Command::new(&binary)
            .arg("--data")
            .arg(&data)
            .args(["directory", "load"])
            .arg(&directory)
            .status()?;
        if !loaded.success() {
            return Ok(Err("`callhost directory load` failed".into()));
        }
        fs::write(
            data.join("callhost.toml"),
            format!(
                "[sip]\nlisten = \"{LOOPBACK}:{CALLHOST_PORT}\"\n\
                 [sip.limits]\nmax_calls = 20000\n\
                 [sip.trunk]\npeer = \"{LOOPBACK}:{UAC_PORT}\"\n\
                 [media]\naddress = \"{LOOPBACK}\"\nrtp_ports = \"30000-39999\"\n"
            ),
        )?;
        let log_path = work.join("callhost.log");
        let log = fs::File::create(&log_path)?;
        let child = Command::new(&binary)
            .arg("--data")
            .arg(&data)
            .arg("serve")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting callhost serve")?;
        let mut server = Server {
            name: "callhost",
            port: CALLHOST_PORT,
            child,
            register: Some((scenarios.register.clone(), scenarios.users.clone())),
            log: Some(log_path.clone()),
        };
        if let Err(error) = server.settle(&log_path) {
            return Ok(Err(format!("{error:#}")));
        }
        // One registration up front: a clear message when it fails.
        if let Err(error) = server.register_uas(work) {
            return Ok(Err(format!("registering the UAS failed: {error:#}")));
        }
        Ok(Ok(server))
    }

    /// Gives the server a moment to bind; fails if it exited.
    fn settle(&mut self, log: &Path) -> Result<()> {
        thread::sleep(Duration::from_millis(1500));
        if let Some(status) = self.child.try_wait()? {
            let tail = fs::read_to_string(log).unwrap_or_default();
            let tail: Vec<&str> = tail.lines().rev().take(10).collect();
            bail!(
                "{} exited at start ({status}); last lines of {}:\n{}",
                self.name,
                log.display(),
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            );
        }
        Ok(())
    }

    fn register_uas(&self, work: &Path) -> Result<()> {
        let Some((scenario, users)) = &self.register else {
            return Ok(());
        };
        let dir = fresh_dir(work, &format!("{}-register", self.name))?;
        let mut args = base_args(scenario, self.port, UAS_PORT);
        args.extend([
            "-inf".into(),
            users.display().to_string(),
            "-m".into(),
            "1".into(),
        ]);
        args.extend(["-timeout".into(), "10s".into(), "-timeout_error".into()]);
        let outcome = sipp_run(&dir, &args)?;
        if outcome.failed > 0 || outcome.successful != 1 {
            bail!("register.xml: {outcome:?}; see {}", dir.display());
        }
        Ok(())
    }

    /// The server's process tree (Kamailio forks its workers).
    fn cpu_ticks(&self) -> u64 {
        process_tree_ticks(self.child.id())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        terminate(&mut self.child);
    }
}

fn terminate(child: &mut Child) {
    if let Ok(Some(_)) = child.try_wait() {
        return;
    }
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// The SIPp UAS, killed when dropped.
struct Uas(Child);

impl Uas {
    fn start(server: &Server, work: &Path, scenario: &Path, label: &str) -> Result<Uas> {
        server.register_uas(work)?;
        let dir = fresh_dir(work, &format!("{}-uas-{label}", server.name))?;
        let mut args = vec!["-sf".to_string(), scenario.display().to_string()];
        args.extend(["-i", LOOPBACK, "-mi", LOOPBACK, "-nostdin", "-trace_err"].map(String::from));
        args.extend([
            "-p".into(),
            UAS_PORT.to_string(),
            "-mp".into(),
            UAS_MEDIA_PORT.to_string(),
        ]);
        let child = Command::new("sipp")
            .current_dir(&dir)
            .args(&args)
            .stdin(Stdio::null())
            .stdout(fs::File::create(dir.join("screen.txt"))?)
            .stderr(fs::File::create(dir.join("stderr.txt"))?)
            .spawn()
            .context("starting the SIPp UAS")?;
        thread::sleep(Duration::from_millis(500));
        Ok(Uas(child))
    }
}

impl Drop for Uas {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[derive(Debug, Default)]
struct Outcome {
    successful: u64,
    failed: u64,
    exit_ok: bool,
}

/// The UAC's and registration's common arguments.
fn base_args(scenario: &Path, server_port: u16, local_port: u16) -> Vec<String> {
    let mut args = vec![
        "-sf".to_string(),
        scenario.display().to_string(),
        format!("{LOOPBACK}:{server_port}"),
        "-s".into(),
        SERVICE.into(),
        "-p".into(),
        local_port.to_string(),
        "-mp".into(),
        UAC_MEDIA_PORT.to_string(),
    ];
    args.extend(
        [
            "-i",
            LOOPBACK,
            "-mi",
            LOOPBACK,
            "-nostdin",
            "-trace_err",
            "-trace_stat",
            "-stf",
            "stat.csv",
            "-fd",
            "1",
            // A provisional response overtaken by the 200 (Kamailio's
            // workers forward in parallel) is not a failed call.
            "-default_behaviors",
            "all,-abortunexp",
        ]
        .map(String::from),
    );
    args
}

/// Runs SIPp to completion in `dir`; the outcome from its statistics file.
fn sipp_run(dir: &Path, args: &[String]) -> Result<Outcome> {
    let status = Command::new("sipp")
        .current_dir(dir)
        .args(args)
        .stdin(Stdio::null())
        .stdout(fs::File::create(dir.join("screen.txt"))?)
        .stderr(fs::File::create(dir.join("stderr.txt"))?)
        .status()
        .context("running sipp")?;
    let stat = fs::read_to_string(dir.join("stat.csv"))
        .with_context(|| format!("SIPp wrote no statistics in {}", dir.display()))?;
    let lines: Vec<&str> = stat
        .lines()
        .filter(|line| !line.trim().is_empty())
        .collect();
    let mut lines = lines.into_iter();
    let header: Vec<&str> = lines.next().context("empty stat.csv")?.split(';').collect();
    let last: Vec<&str> = lines
        .next_back()
        .context("stat.csv has no rows")?
        .split(';')
        .collect();
    let column = |name: &str| -> Result<u64> {
        let index = header
            .iter()
            .position(|h| *h == name)
            .with_context(|| format!("stat.csv has no column {name}"))?;
        Ok(last
            .get(index)
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0))
    };
    Ok(Outcome {
        successful: column("SuccessfulCall(C)")?,
        failed: column("FailedCall(C)")?,
        exit_ok: status.success(),
    })
}

fn fresh_dir(work: &Path, name: &str) -> Result<PathBuf> {
    let dir = work.join(name);
    if dir.exists() {
        fs::remove_dir_all(&dir)?;
    }
    fs::create_dir_all(&dir)?;
    Ok(dir)
}

#[derive(Debug, Default)]
struct Figures {
    name: &'static str,
    /// Highest stepped rate without failed calls; None if the lowest failed.
    cps: Option<u32>,
    /// The step that failed first, as "rate: failed/calls".
    cps_limit: Option<String>,
    p50_ms: Option<f64>,
    p99_ms: Option<f64>,
    latency_failed: u64,
    concurrent_failed: u64,
    cpu_percent: f64,
    /// RTP through the relay in the concurrent run: (received, lost).
    rtp: Option<(u64, u64)>,
}

fn measure(server: Server, work: &Path, scenarios: &Scenarios) -> Result<Figures> {
    let name = server.name;
    let mut figures = Figures {
        name,
        ..Default::default()
    };
    println!("== {name}: calls per second (steps {RATES:?}, {STEP_SECONDS} s each)");
    {
        let _uas = Uas::start(&server, work, &scenarios.uas_no_media, "cps")?;
        for &rate in RATES {
            let calls = rate * STEP_SECONDS;
            let dir = fresh_dir(work, &format!("{name}-cps-{rate}"))?;
            let mut args = base_args(&scenarios.uac_no_media, server.port, UAC_PORT);
            args.extend(uac_load(rate, calls, 0, calls, STEP_SECONDS + 30));
            let outcome = sipp_run(&dir, &args)?;
            let ok = outcome.exit_ok && outcome.failed == 0 && outcome.successful == calls as u64;
            println!(
                "   {rate:>4}/s: {} ok, {} failed{}",
                outcome.successful,
                outcome.failed,
                if ok { "" } else { "  <- limit" }
            );
            if !ok {
                figures.cps_limit = Some(format!(
                    "{rate}/s: {}/{calls} failed",
                    calls as u64 - outcome.successful.min(calls as u64)
                ));
                break;
            }
            figures.cps = Some(rate);
            // Let the UAS's closing calls drain.
            thread::sleep(Duration::from_secs(2));
        }
    }

    println!("== {name}: setup latency ({LATENCY_CALLS} calls at {LATENCY_RATE}/s)");
    {
        let _uas = Uas::start(&server, work, &scenarios.uas_no_media, "latency")?;
        let dir = fresh_dir(work, &format!("{name}-latency"))?;
        let mut args = base_args(&scenarios.uac_no_media, server.port, UAC_PORT);
        args.extend(uac_load(
            LATENCY_RATE,
            LATENCY_CALLS,
            0,
            LATENCY_CALLS,
            LATENCY_CALLS / LATENCY_RATE + 30,
        ));
        args.extend(["-trace_rtt", "-rtt_freq", "1"].map(String::from));
        let outcome = sipp_run(&dir, &args)?;
        figures.latency_failed = outcome.failed;
        let mut times = read_rtt(&dir)?;
        times.sort_by(f64::total_cmp);
        figures.p50_ms = percentile(&times, 50.0);
        figures.p99_ms = percentile(&times, 99.0);
        println!(
            "   {} samples, {} failed calls",
            times.len(),
            outcome.failed
        );
    }

    println!(
        "== {name}: {CONCURRENT} concurrent calls of {} s with RTP both ways",
        CALL_MS / 1000
    );
    {
        let _uas = Uas::start(&server, work, &scenarios.uas, "media")?;
        let dir = fresh_dir(work, &format!("{name}-concurrent"))?;
        let mut args = base_args(&scenarios.uac, server.port, UAC_PORT);
        args.extend(uac_load(
            CONCURRENT,
            CONCURRENT,
            CALL_MS,
            CONCURRENT,
            CALL_MS / 1000 + 30,
        ));
        let log_offset = server
            .log
            .as_ref()
            .map(|log| fs::metadata(log).map(|m| m.len()).unwrap_or(0));
        let ticks_per_second = clock_ticks_per_second();
        let start_ticks = server.cpu_ticks();
        let started = Instant::now();
        let outcome = sipp_run(&dir, &args)?;
        let elapsed = started.elapsed().as_secs_f64();
        let used = server.cpu_ticks().saturating_sub(start_ticks) as f64 / ticks_per_second;
        figures.concurrent_failed = outcome.failed
            + (CONCURRENT as u64).saturating_sub(outcome.successful + outcome.failed);
        figures.cpu_percent = 100.0 * used / elapsed;
        if let (Some(log), Some(offset)) = (&server.log, log_offset) {
            // The calls' "call ended" lines carry the relay's counters.
            thread::sleep(Duration::from_secs(1));
            let text = fs::read(log)?;
            let text = String::from_utf8_lossy(&text[(offset as usize).min(text.len())..]);
            figures.rtp = Some(relay_counters(&text));
        }
        println!(
            "   {} ok, {} failed, {:.2} s CPU over {:.1} s",
            outcome.successful, outcome.failed, used, elapsed
        );
    }
    drop(server);
    Ok(figures)
}

/// Sums `packets_in` and `packets_lost` over every leg of every "call
/// ended" line in callhost's log.
fn relay_counters(log: &str) -> (u64, u64) {
    let field = |leg: &str, name: &str| -> u64 {
        leg.find(&format!("{name}: "))
            .and_then(|at| {
                leg[at + name.len() + 2..]
                    .split(|c: char| !c.is_ascii_digit() && c != '-')
                    .next()?
                    .parse::<i64>()
                    .ok()
            })
            .map_or(0, |value| value.max(0) as u64)
    };
    log.lines()
        .filter(|line| line.contains("call ended"))
        .flat_map(|line| line.split("LegStats {").skip(1))
        .fold((0, 0), |(received, lost), leg| {
            (
                received + field(leg, "packets_in"),
                lost + field(leg, "packets_lost"),
            )
        })
}

/// Rate, call count, call duration (ms), concurrency limit, global timeout (s).
fn uac_load(rate: u32, calls: u32, duration_ms: u32, limit: u32, timeout_s: u32) -> Vec<String> {
    vec![
        "-r".into(),
        rate.to_string(),
        "-m".into(),
        calls.to_string(),
        "-l".into(),
        limit.to_string(),
        "-d".into(),
        duration_ms.to_string(),
        "-timeout".into(),
        format!("{timeout_s}s"),
        "-timeout_error".into(),
    ]
}

/// Response times (ms) of `-trace_rtt`'s `<scenario>_<pid>_rtt.csv`.
fn read_rtt(dir: &Path) -> Result<Vec<f64>> {
    let mut times = Vec::new();
    for entry in fs::read_dir(dir)? {
        let path = entry?.path();
        if !path.to_string_lossy().ends_with("_rtt.csv") {
            continue;
        }
        for line in fs::read_to_string(&path)?.lines().skip(1) {
            let fields: Vec<&str> = line.split(';').collect();
            if fields.get(2).map(|f| f.trim()) == Some("setup") {
                if let Some(ms) = fields.get(1).and_then(|f| f.trim().parse::<f64>().ok()) {
                    times.push(ms);
                }
            }
        }
    }
    Ok(times)
}

/// Nearest-rank percentile of sorted values.
fn percentile(sorted: &[f64], p: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

fn clock_ticks_per_second() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|out| String::from_utf8(out.stdout).ok())
        .and_then(|text| text.trim().parse().ok())
        .unwrap_or(100.0)
}

/// utime+stime (clock ticks) of `root` and all its descendants.
fn process_tree_ticks(root: u32) -> u64 {
    let mut parent_of: HashMap<u32, u32> = HashMap::new();
    let mut ticks: HashMap<u32, u64> = HashMap::new();
    let Ok(entries) = fs::read_dir("/proc") else {
        return 0;
    };
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(stat) = fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // After the command name in parentheses: state ppid … utime stime.
        let Some(rest) = stat.rfind(')').map(|at| &stat[at + 1..]) else {
            continue;
        };
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let field = |i: usize| {
            fields
                .get(i)
                .and_then(|f| f.parse::<u64>().ok())
                .unwrap_or(0)
        };
        parent_of.insert(pid, field(1) as u32);
        ticks.insert(pid, field(11) + field(12));
    }
    let mut total = 0;
    let mut stack = vec![root];
    while let Some(pid) = stack.pop() {
        total += ticks.get(&pid).copied().unwrap_or(0);
        stack.extend(
            parent_of
                .iter()
                .filter(|(_, parent)| **parent == pid)
                .map(|(child, _)| *child),
        );
    }
    total
}

fn print_table(columns: &[Figures]) {
    let fmt_ms = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.0}"));
    let rows: Vec<(String, Vec<String>, Vec<Option<f64>>)> = vec![
        (
            format!(
                "calls/s, 0 failed (steps {}..{})",
                RATES[0],
                RATES[RATES.len() - 1]
            ),
            columns
                .iter()
                .map(|c| match (c.cps, RATES.last()) {
                    (Some(cps), Some(&max)) if cps == max && c.cps_limit.is_none() => {
                        format!(">={cps}")
                    }
                    (Some(cps), _) => cps.to_string(),
                    (None, _) => format!("<{}", RATES[0]),
                })
                .collect(),
            columns.iter().map(|c| c.cps.map(f64::from)).collect(),
        ),
        (
            format!("setup p50 ms ({LATENCY_RATE}/s)"),
            columns.iter().map(|c| fmt_ms(c.p50_ms)).collect(),
            columns.iter().map(|c| c.p50_ms).collect(),
        ),
        (
            format!("setup p99 ms ({LATENCY_RATE}/s)"),
            columns.iter().map(|c| fmt_ms(c.p99_ms)).collect(),
            columns.iter().map(|c| c.p99_ms).collect(),
        ),
        (
            "  failed calls in latency run".into(),
            columns
                .iter()
                .map(|c| c.latency_failed.to_string())
                .collect(),
            columns.iter().map(|_| None).collect(),
        ),
        (
            format!("{CONCURRENT} calls + RTP: failed"),
            columns
                .iter()
                .map(|c| c.concurrent_failed.to_string())
                .collect(),
            columns.iter().map(|_| None).collect(),
        ),
        (
            format!("{CONCURRENT} calls + RTP: CPU % of 1 core"),
            columns
                .iter()
                .map(|c| format!("{:.1}", c.cpu_percent))
                .collect(),
            columns.iter().map(|c| Some(c.cpu_percent)).collect(),
        ),
        (
            "RTP loss through the relay".into(),
            columns
                .iter()
                .map(|c| match c.rtp {
                    Some((received, lost)) => format!(
                        "{:.2}% of {}",
                        100.0 * lost as f64 / (received + lost).max(1) as f64,
                        received + lost
                    ),
                    None => "n/a".to_string(),
                })
                .collect(),
            columns.iter().map(|_| None).collect(),
        ),
    ];
    println!();
    print!("{:<38}", "");
    for column in columns {
        print!("{:>12}", column.name);
    }
    let ratio = columns.len() == 2;
    if ratio {
        print!("{:>10}", "ratio");
    }
    println!();
    for (label, values, numbers) in rows {
        print!("{label:<38}");
        for value in &values {
            print!("{value:>12}");
        }
        if ratio {
            match (numbers[0], numbers[1]) {
                (Some(a), Some(b)) if b > 0.0 => print!("{:>10}", format!("{:.2}x", a / b)),
                _ => print!("{:>10}", "-"),
            }
        }
        println!();
    }
    if ratio {
        println!("(ratio: {} / {})", columns[0].name, columns[1].name);
    }
    for column in columns {
        if let Some(limit) = &column.cps_limit {
            println!("{}: first failing step {limit}", column.name);
        }
    }
    println!(
        "RTP loss: the relay's own counters (RFC 3550 loss per leg, summed over the calls' \"call ended\" lines); SIPp's play_pcap_audio reports nothing received, so Kamailio's direct RTP has no figure."
    );
    println!(
        "Kamailio relays signalling only (RTP goes SIPp to SIPp); callhost anchors the RTP, so its CPU row includes the media relay."
    );
}
