//! `cargo xtask bench sip`: the same SIPp load against `callhost serve`
//! (without modules, and with every shipped module active) and against
//! Kamailio as the reference, side by side, alternating at every step.
//!
//! The reference is configured to reach its real capacity: Kamailio 5.6 as
//! a stateful record-routing relay (`bench/kamailio.cfg`) with 1 GiB of
//! shared memory (`-m 1024`, tm keeps every transaction there), 16 MiB
//! private (`-M 16`) and 4 UDP workers. A "direct" run (SIPp caller to SIPp
//! callee, no server between) shows what SIPp itself does on this machine,
//! so that no ratio is SIPp's limit in disguise.
//!
//! Measured:
//! - calls per second: SIPp `uac`/`uas` without media, [`STEP_SECONDS`] s
//!   per step at a fixed rate, each call held [`HOLD_MS`] ms. A step passes
//!   only if every call completed and both SIPps counted 0 retransmissions
//!   and 0 timeouts; the rate of the highest passing step is the result.
//!   Steps go up until a server fails one; the servers take turns at each
//!   step.
//! - INVITE→200 latency from a packet capture of both SIPps' ports
//!   (tcpdump, microsecond timestamps; SIPp's own response times come in
//!   4 ms steps): p50, p99 and max over a [`LATENCY_SECONDS`] s run at 100
//!   calls/s and at half of each server's ceiling. "Added" is the server's
//!   p99 minus the direct run's, from separate runs, so the machine's
//!   drift between them is in it; "inside the server" is measured per
//!   call on one capture (INVITE in → INVITE out plus 200 in → 200 out)
//!   and is what the latency target is judged by.
//! - the media relay (`bench_media.rs`): concurrent G.711 calls with RTP
//!   both ways from a generator of our own, loss and gaps over 60 ms.
//! - SRTP against RTP (`bench_media.rs`): the same concurrent calls with
//!   SRTP terminated on both legs and with plain RTP, callhost's CPU of
//!   each and their ratio.
//! - TLS against UDP (`bench_tls.rs`): calls set up from the trunk over
//!   one TLS connection and over UDP at the same rate, setup time and CPU.
//!
//! callhost runs without modules and with every shipped module active
//! ("callhost+modules": breakthrough, redirect-display, reverse-lookup, and
//! call-recording recording every call; the calls carry no RTP, so each
//! is entered as "no media", and the run ends by counting the entries).
//!
//! Every server's CPU is read from /proc over each step (process tree, %
//! of one core). Before each step the bench waits until no server uses
//! more than 5 % of a core, so that work one server left from its step
//! (call lists, recordings being entered) does not run in another's.

use std::{
    collections::HashMap,
    fs,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _, Result};

use crate::{cargo, package, target_dir, PackageOptions};

pub(crate) const KAMAILIO_MODULES: &str = "/usr/lib/x86_64-linux-gnu/kamailio/modules";
pub(crate) const LOOPBACK: &str = "127.0.0.1";
/// The SIPp UAS (the called user); Kamailio relays to it, callhost rings it.
const UAS_PORT: u16 = 5070;
/// The SIPp UAC; callhost's trunk peer.
pub(crate) const UAC_PORT: u16 = 5061;
const UAC_MEDIA_PORT: u16 = 6000;
const UAS_MEDIA_PORT: u16 = 6100;
const KAMAILIO_PORT: u16 = 5090;
const CALLHOST_PORT: u16 = 5080;
const CALLHOST_MODULES_PORT: u16 = 5082;
/// The called number (callhost: user `bench`).
pub(crate) const SERVICE: &str = "100";
/// The caller: in the bench directory's address book, so reverse-lookup
/// names it from there.
pub(crate) const CALLER: &str = "+49891234567";

const RATES: &[u32] = &[
    100, 200, 400, 600, 800, 1000, 1200, 1400, 1600, 1800, 2000, 2400,
];
const STEP_SECONDS: u32 = 20;
const HOLD_MS: u32 = 1000;
const LATENCY_SECONDS: u32 = 20;
const LATENCY_RATE: u32 = 100;

/// What `bench sip` runs, from its options.
struct Options {
    only: Vec<String>,
    rates: Vec<u32>,
    step_seconds: u32,
    media_calls: u32,
    skip: Vec<String>,
}

impl Options {
    fn parse(args: &[String]) -> Result<Options> {
        let mut options = Options {
            only: Vec::new(),
            rates: RATES.to_vec(),
            step_seconds: STEP_SECONDS,
            media_calls: crate::bench_media::MEDIA_CALLS,
            skip: Vec::new(),
        };
        let mut args = args.iter();
        while let Some(arg) = args.next() {
            let mut value = |what: &str| {
                args.next()
                    .cloned()
                    .with_context(|| format!("{arg} needs {what}"))
            };
            match arg.as_str() {
                "--only" => options.only.push(value("a server name")?),
                "--rates" => {
                    options.rates = value("rates, e.g. 100,200,400")?
                        .split(',')
                        .map(|r| r.trim().parse().context("--rates: not a number"))
                        .collect::<Result<_>>()?
                }
                "--step-seconds" => {
                    options.step_seconds = value("seconds")?.parse().context("--step-seconds")?
                }
                "--media-calls" => {
                    options.media_calls = value("a number")?.parse().context("--media-calls")?
                }
                "--skip" => options.skip.push(value("cps, latency, media, srtp or tls")?),
                other => bail!(
                    "unknown `bench sip` option `{other}` (known: --only direct|kamailio|callhost|callhost+modules, --rates A,B,…, --step-seconds N, --media-calls N, --skip cps|latency|media|srtp|tls)"
                ),
            }
        }
        if options.step_seconds < 20 {
            eprintln!(
                "note: steps of {} s are shorter than the 20 s the figures in ARCHITECTURE use",
                options.step_seconds
            );
        }
        Ok(options)
    }

    fn wanted(&self, name: &str) -> bool {
        self.only.is_empty() || self.only.iter().any(|only| only == name)
    }

    fn runs(&self, part: &str) -> bool {
        !self.skip.iter().any(|skip| skip == part)
    }
}

pub fn bench_sip(root: &Path, args: &[String]) -> Result<()> {
    let options = Options::parse(args)?;
    crate::prerequisites::ensure(crate::prerequisites::BENCH_SIP_DEBIAN, &[])?;
    let work = target_dir(root).join("bench-sip");
    if work.exists() {
        fs::remove_dir_all(&work)?;
    }
    fs::create_dir_all(&work)?;
    let scenarios = Scenarios::prepare(root, &work)?;
    let binary = build_callhost(root)?;

    let mut servers: Vec<Server> = Vec::new();
    if options.wanted("direct") {
        servers.push(Server::direct());
    }
    if options.wanted("kamailio") {
        servers.push(Server::kamailio(root, &work)?);
    }
    if options.wanted("callhost") {
        servers.push(Server::callhost(
            root,
            &work,
            &binary,
            &scenarios,
            Flavour::Plain,
        )?);
    }
    if options.wanted("callhost+modules") {
        servers.push(Server::callhost(
            root,
            &work,
            &binary,
            &scenarios,
            Flavour::Modules,
        )?);
    }
    let mut figures: Vec<Figures> = servers
        .iter()
        .map(|server| Figures {
            name: server.name,
            ..Default::default()
        })
        .collect();

    if options.runs("cps") {
        println!(
            "== calls per second: {} s per step, calls held {HOLD_MS} ms, servers take turns",
            options.step_seconds
        );
        let mut failed: Vec<bool> = vec![false; servers.len()];
        for &rate in &options.rates {
            for (index, server) in servers.iter().enumerate() {
                if failed[index] {
                    continue;
                }
                wait_until_idle(&servers);
                let step = run_step(
                    server,
                    &work,
                    &scenarios,
                    rate,
                    options.step_seconds,
                    HOLD_MS,
                    false,
                )?;
                println!("   {:<17} {rate:>5}/s: {}", server.name, step.summary());
                figures[index].completed += step.uac.successful;
                if step.passed() {
                    figures[index].cps = Some(rate);
                    figures[index].cps_cpu = Some(step.cpu_percent);
                } else {
                    failed[index] = true;
                    figures[index].cps_limit = Some(format!("{rate}/s: {}", step.summary()));
                }
            }
            if failed.iter().all(|f| *f) {
                break;
            }
        }
    }

    if options.runs("latency") {
        println!("== INVITE→200 latency, {LATENCY_SECONDS} s at each rate");
        for (index, server) in servers.iter().enumerate() {
            let mut rates = vec![LATENCY_RATE];
            if let Some(cps) = figures[index].cps {
                rates.push((cps / 2).max(LATENCY_RATE));
            }
            rates.dedup();
            for rate in rates {
                wait_until_idle(&servers);
                let step = run_step(
                    server,
                    &work,
                    &scenarios,
                    rate,
                    LATENCY_SECONDS,
                    HOLD_MS,
                    true,
                )?;
                let latency = step.latency.clone().unwrap_or_default();
                let inside = latency.inside.map_or(String::new(), |inside| {
                    format!("; inside the server {}", inside.spoken())
                });
                println!(
                    "   {:<17} {rate:>5}/s: {}{inside} ({} samples; {})",
                    server.name,
                    latency.end_to_end.spoken(),
                    latency.samples,
                    step.summary()
                );
                figures[index].completed += step.uac.successful;
                figures[index].latency.push((rate, latency, step.passed()));
            }
        }
    }

    drop(servers);
    let media = if options.runs("media") && options.wanted("callhost") {
        Some(crate::bench_media::run_sizes(
            root,
            &work,
            &binary,
            options.media_calls,
        )?)
    } else {
        None
    };
    let tls = if options.runs("tls") && options.wanted("callhost") {
        Some(crate::bench_tls::run_comparison(root, &work, &binary)?)
    } else {
        None
    };
    let srtp = if options.runs("srtp") && options.wanted("callhost") {
        Some(crate::bench_media::run_srtp_comparison(
            root,
            &work,
            &binary,
            crate::bench_media::SRTP_CALLS,
        )?)
    } else {
        None
    };

    print_table(&figures);
    if let Some(modules) = figures.iter().find(|f| f.name == "callhost+modules") {
        // Stopped by now, so every recording is finalised and logged.
        let log = work.join("callhost-modules-data/instances/rec/instance.log");
        let text = fs::read_to_string(&log).unwrap_or_default();
        let count = |what: &str| text.lines().filter(|l| l.contains(what)).count();
        // These calls carry no RTP, so each is entered as failed ("no
        // media"): the module's per-call work (tap, metadata, signature,
        // chain entry) without audio; `bench recording` has the audio.
        println!(
            "callhost+modules: call-recording entered {} recordings ({} of them as failed, no media) for {} completed calls",
            count("recording entered") + count("entered as failed"),
            count("entered as failed"),
            modules.completed
        );
    }
    if let Some(media) = media {
        crate::bench_media::print(&media);
    }
    if let Some(srtp) = srtp {
        crate::bench_media::print_srtp(&srtp);
    }
    if let Some(tls) = tls {
        crate::bench_tls::print(&tls);
    }
    println!("\nlogs and SIPp traces: {}", work.display());
    Ok(())
}

/// Waits (up to a minute) until no server uses more than 5 % of a core:
/// work a server left from its step (call records, recordings being
/// entered) must not run during the next server's step, where it would
/// take that server's CPU and make the comparison unfair.
fn wait_until_idle(servers: &[Server]) {
    let ticks_per_second = clock_ticks_per_second();
    let window = Duration::from_millis(500);
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(60) {
        let before: Vec<u64> = servers.iter().map(Server::cpu_ticks).collect();
        thread::sleep(window);
        let busy = servers.iter().zip(&before).find(|(server, before)| {
            let used = server.cpu_ticks().saturating_sub(**before) as f64 / ticks_per_second;
            used / window.as_secs_f64() > 0.05
        });
        match busy {
            None => {
                if started.elapsed() > Duration::from_secs(2) {
                    println!(
                        "   (waited {:.0} s for the servers to be idle)",
                        started.elapsed().as_secs_f64()
                    );
                }
                return;
            }
            Some(_) => continue,
        }
    }
    println!("   (a server stayed busy for a minute; the step runs anyway)");
}

/// `cargo build --release -p callhost` once; the binary is run directly.
pub(crate) fn build_callhost(root: &Path) -> Result<PathBuf> {
    let built = cargo()
        .args(["build", "--release", "-p", "callhost"])
        .status()
        .context("running cargo build")?;
    if !built.success() {
        bail!("`cargo build --release -p callhost` failed");
    }
    Ok(target_dir(root).join("release/callhost"))
}

/// Scenario files: the repository's, without RTP and with a calling number
/// the bench directory's address book knows.
struct Scenarios {
    uac: PathBuf,
    uas: PathBuf,
    register: PathBuf,
    users: PathBuf,
}

impl Scenarios {
    fn prepare(root: &Path, work: &Path) -> Result<Scenarios> {
        let dir = root.join("tests/sipp");
        let derive = |name: &str, edits: &[(&str, &str)]| -> Result<PathBuf> {
            let mut text = fs::read_to_string(dir.join(name))?;
            for (from, to) in edits {
                if !text.contains(from) {
                    bail!(
                        "tests/sipp/{name} no longer contains {from:?}, which this bench replaces"
                    );
                }
                text = text.replace(from, to);
            }
            let out = work.join(name.replace(".xml", "_bench.xml"));
            fs::write(&out, text)?;
            Ok(out)
        };
        let play = "<exec play_pcap_audio=\"/usr/share/sip-tester/g711a.pcap\"/>";
        let no_media = "<log message=\"no media\"/>";
        let caller = format!("<sip:{CALLER}@");
        Ok(Scenarios {
            uac: derive("uac.xml", &[(play, no_media), ("<sip:sipp@", &caller)])?,
            uas: derive("uas.xml", &[(play, no_media)])?,
            register: dir.join("register.xml"),
            users: dir.join("users.csv"),
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Flavour {
    Plain,
    /// Every shipped module active: breakthrough, redirect-display,
    /// reverse-lookup and call-recording recording every call.
    Modules,
    /// Every package installed, only the call-recording instance `rec`.
    Recording,
}

/// A server under test, stopped (SIGTERM, then kill) when dropped.
struct Server {
    name: &'static str,
    /// Where the UAC sends its INVITEs.
    port: u16,
    child: Option<Child>,
}

impl Server {
    /// No server: SIPp to SIPp, to show SIPp's own limits.
    fn direct() -> Server {
        Server {
            name: "direct",
            port: UAS_PORT,
            child: None,
        }
    }

    fn kamailio(root: &Path, work: &Path) -> Result<Server> {
        let run = work.join("kamailio");
        fs::create_dir_all(&run)?;
        let log = fs::File::create(run.join("kamailio.log"))?;
        let child = Command::new("kamailio")
            .arg("-f")
            .arg(root.join("bench/kamailio.cfg"))
            // 1 GiB shared (tm's transactions), 16 MiB per worker, 4 workers:
            // with less, tm runs out of memory under load and the
            // reference fails early (what the old bench's -m 64 did).
            .args([
                "-DD",
                "-E",
                "-L",
                KAMAILIO_MODULES,
                "-m",
                "1024",
                "-M",
                "16",
            ])
            .arg("-Y")
            .arg(&run)
            .arg("-P")
            .arg(run.join("kamailio.pid"))
            .args(["-A", "CHILDREN=4"])
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
            child: Some(child),
        };
        server.settle(&run.join("kamailio.log"))?;
        Ok(server)
    }

    fn callhost(
        root: &Path,
        work: &Path,
        binary: &Path,
        scenarios: &Scenarios,
        flavour: Flavour,
    ) -> Result<Server> {
        let (name, port, dir, rtp) = match flavour {
            Flavour::Plain => ("callhost", CALLHOST_PORT, "callhost-data", "30000-39999"),
            // The SIP steps run every shipped module, recording included.
            Flavour::Modules | Flavour::Recording => (
                "callhost+modules",
                CALLHOST_MODULES_PORT,
                "callhost-modules-data",
                "40000-49999",
            ),
        };
        let data = work.join(dir);
        prepare_callhost_data(root, work, binary, &data, flavour)?;
        fs::write(
            data.join("callhost.toml"),
            format!(
                "[sip]\nlisten = \"{LOOPBACK}:{port}\"\n\
                 [sip.limits]\nmax_calls = 20000\nmax_setups = 2000\n\
                 [sip.trunk]\npeer = \"{LOOPBACK}:{UAC_PORT}\"\n\
                 [media]\naddress = \"{LOOPBACK}\"\nrtp_ports = \"{rtp}\"\n\
                 [http]\nlisten = \"{LOOPBACK}:0\"\n"
            ),
        )?;
        let log_path = work.join(format!("{name}.log"));
        let log = fs::File::create(&log_path)?;
        let child = Command::new(binary)
            .arg("--data")
            .arg(&data)
            .arg("serve")
            .env("CALLHOST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting callhost serve")?;
        let mut server = Server {
            name,
            port,
            child: Some(child),
        };
        server.settle(&log_path)?;
        register(work, scenarios, port, name)
            .with_context(|| format!("registering the UAS with {name}"))?;
        Ok(server)
    }

    /// Gives the server a moment to bind; fails if it exited.
    fn settle(&mut self, log: &Path) -> Result<()> {
        thread::sleep(Duration::from_millis(1500));
        let Some(child) = self.child.as_mut() else {
            return Ok(());
        };
        if let Some(status) = child.try_wait()? {
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

    /// utime+stime of the server's process tree (Kamailio forks workers).
    fn cpu_ticks(&self) -> u64 {
        self.child
            .as_ref()
            .map_or(0, |child| process_tree_ticks(child.id()))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            terminate(child);
        }
    }
}

/// The bench directory (user `bench`, number 100, and the caller in the
/// address book), loaded into `data`; with every shipped module installed
/// and a call-recording instance for [`Flavour::Recording`], and an
/// instance of each shipped module for [`Flavour::Modules`].
pub(crate) fn prepare_callhost_data(
    root: &Path,
    work: &Path,
    binary: &Path,
    data: &Path,
    flavour: Flavour,
) -> Result<()> {
    fs::create_dir_all(data)?;
    let callhost = |args: &[&str]| callhost_quietly(binary, data, args);
    let directory = work.join("bench-directory.toml");
    fs::write(
        &directory,
        format!(
            "# The benchmark's callee: SIPp's UAS registers as this user.\n\
             home_country = \"DE\"\n\
             [[users]]\nid = \"bench\"\nname = \"Bench Callee\"\n\
             numbers = [\"{SERVICE}\"]\npassword = \"bench-secret\"\n\
             [[contacts]]\nfirst_name = \"Max\"\nlast_name = \"Kunde\"\n\
             numbers = [\"{CALLER}\"]\n"
        ),
    )?;
    callhost(&["directory", "load", path_str(&directory)?])?;
    if flavour != Flavour::Plain {
        let packages = package(root, &PackageOptions::default())?;
        let key = target_dir(root).join("modules/signing-key.pub");
        callhost(&["trust", "add", path_str(&key)?])?;
        for package in &packages {
            callhost(&["module", "install", path_str(package)?])?;
        }
    }
    if flavour != Flavour::Plain {
        // One call-recording instance `rec` that records every call to the
        // user `bench` (stereo, local target in the data directory).
        let config = work.join("bench-recording.toml");
        fs::write(&config, "users = [\"bench\"]\nchannels = \"stereo\"\n")?;
        callhost(&[
            "instance",
            "create",
            "call-recording",
            "rec",
            "--config",
            path_str(&config)?,
        ])?;
        // "recording entered" lines carry the finalisation time.
        callhost(&["instance", "set-level", "rec", "info"])?;
    }
    if flavour == Flavour::Modules {
        let breakthrough = root.join("examples/demo-breakthrough.toml");
        let redirect = root.join("examples/redirect-display.toml");
        callhost(&[
            "instance",
            "create",
            "breakthrough",
            "bt",
            "--config",
            path_str(&breakthrough)?,
        ])?;
        callhost(&[
            "instance",
            "create",
            "redirect-display",
            "rd",
            "--config",
            path_str(&redirect)?,
        ])?;
        // No providers: the caller is named from the address book.
        callhost(&["instance", "create", "reverse-lookup", "rl"])?;
    }
    Ok(())
}

/// Runs `callhost --data DATA ARGS…` with its output thrown away; an
/// error if it fails.
pub(crate) fn callhost_quietly(binary: &Path, data: &Path, args: &[&str]) -> Result<()> {
    let status = Command::new(binary)
        .arg("--data")
        .arg(data)
        .args(args)
        .stdout(Stdio::null())
        .status()?;
    if !status.success() {
        bail!("`callhost {}` failed", args.join(" "));
    }
    Ok(())
}

fn path_str(path: &Path) -> Result<&str> {
    path.to_str()
        .with_context(|| format!("{} is not UTF-8", path.display()))
}

/// Registers the UAS's address as user `bench` with the callhost at `port`.
fn register(work: &Path, scenarios: &Scenarios, port: u16, name: &str) -> Result<()> {
    let dir = fresh_dir(work, &format!("{name}-register"))?;
    let mut args = vec![
        "-sf".to_string(),
        scenarios.register.display().to_string(),
        format!("{LOOPBACK}:{port}"),
        "-p".into(),
        UAS_PORT.to_string(),
        "-inf".into(),
        scenarios.users.display().to_string(),
        "-m".into(),
        "1".into(),
    ];
    args.extend(common_args());
    args.extend(["-timeout".into(), "10s".into(), "-timeout_error".into()]);
    let outcome = sipp_run(&dir, &args)?;
    if outcome.failed > 0 || outcome.successful != 1 {
        bail!("register.xml: {outcome:?}; see {}", dir.display());
    }
    Ok(())
}

fn common_args() -> Vec<String> {
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
        // A provisional response overtaken by the 200 (Kamailio's workers
        // forward in parallel) is not a failed call.
        "-default_behaviors",
        "all,-abortunexp",
    ]
    .map(String::from)
    .to_vec()
}

/// `callhost serve` on `data`, logging with `filter` to `log_path`; back
/// once it had 1.5 s to bind (an exit meanwhile is the error).
pub(crate) fn start_serve(
    binary: &Path,
    data: &Path,
    log_path: &Path,
    filter: &str,
) -> Result<Child> {
    let log = fs::File::create(log_path)?;
    let mut child = Command::new(binary)
        .arg("--data")
        .arg(data)
        .arg("serve")
        .env("CALLHOST_LOG", filter)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .context("starting callhost serve")?;
    thread::sleep(Duration::from_millis(1500));
    if let Some(status) = child.try_wait()? {
        bail!(
            "callhost serve exited at start ({status}); see {}",
            log_path.display()
        );
    }
    Ok(child)
}

pub(crate) fn terminate(child: &mut Child) {
    if let Ok(Some(_)) = child.try_wait() {
        return;
    }
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let deadline = Instant::now() + Duration::from_secs(8);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// What SIPp's statistics say about a run.
#[derive(Debug, Default, Clone)]
pub(crate) struct Outcome {
    pub(crate) successful: u64,
    pub(crate) failed: u64,
    retransmissions: u64,
    timeouts: u64,
    exit_ok: bool,
}

/// One step: a fixed rate for a while against one server.
#[derive(Debug, Default)]
struct Step {
    calls: u64,
    uac: Outcome,
    uas: Outcome,
    cpu_percent: f64,
    latency: Option<Latency>,
}

impl Step {
    /// Every call completed, nothing retransmitted, nothing timed out.
    fn passed(&self) -> bool {
        self.uac.exit_ok
            && self.uac.successful == self.calls
            && self.uac.failed == 0
            && self.uas.successful == self.calls
            && self.uac.retransmissions == 0
            && self.uas.retransmissions == 0
            && self.uac.timeouts == 0
            && self.uas.timeouts == 0
    }

    fn summary(&self) -> String {
        format!(
            "{}/{} ok, {} failed, {} retransmissions (uac {}, uas {}), {} timeouts, CPU {:.0} %{}",
            self.uac.successful,
            self.calls,
            self.uac.failed,
            self.uac.retransmissions + self.uas.retransmissions,
            self.uac.retransmissions,
            self.uas.retransmissions,
            self.uac.timeouts + self.uas.timeouts,
            self.cpu_percent,
            if self.passed() { "" } else { "  <- fails" }
        )
    }
}

/// INVITE→200 times in milliseconds (0.1 ms resolution from the capture).
#[derive(Debug, Default, Clone)]
struct Latency {
    samples: usize,
    /// The caller's INVITE to the 200 it received.
    end_to_end: Spread,
    /// Per call, the time the server itself held the call's setup: INVITE
    /// in → INVITE out plus 200 in → 200 out, both legs on one capture.
    /// What the server adds, free of the UAS's and the machine's drift
    /// between separate runs. None for the direct run.
    inside: Option<Spread>,
}

/// p50 / p99 / max of some times in ms.
#[derive(Debug, Default, Clone, Copy)]
struct Spread {
    p50: f64,
    p99: f64,
    max: f64,
}

impl Spread {
    /// "p50 p99 max" as the console prints it.
    fn spoken(&self) -> String {
        format!(
            "p50 {:.1} p99 {:.1} max {:.1} ms",
            self.p50, self.p99, self.max
        )
    }

    /// "p50 / p99 / max" for a table cell.
    fn cell(&self) -> String {
        format!("{:.1} / {:.1} / {:.1}", self.p50, self.p99, self.max)
    }

    fn of(mut times: Vec<f64>) -> Spread {
        times.sort_by(f64::total_cmp);
        Spread {
            p50: percentile(&times, 50.0).unwrap_or(0.0),
            p99: percentile(&times, 99.0).unwrap_or(0.0),
            max: times.last().copied().unwrap_or(0.0),
        }
    }
}

/// One step: a fresh UAS, the UAC at `rate` for `seconds`, both SIPps'
/// statistics, the server's CPU.
fn run_step(
    server: &Server,
    work: &Path,
    scenarios: &Scenarios,
    rate: u32,
    seconds: u32,
    hold_ms: u32,
    rtt: bool,
) -> Result<Step> {
    let label = format!(
        "{}-{}-{rate}",
        server.name,
        if rtt { "latency" } else { "cps" }
    );
    let uas_dir = fresh_dir(work, &format!("{label}-uas"))?;
    let mut uas_args = vec![
        "-sf".to_string(),
        scenarios.uas.display().to_string(),
        "-p".into(),
        UAS_PORT.to_string(),
        "-mp".into(),
        UAS_MEDIA_PORT.to_string(),
    ];
    uas_args.extend(common_args());
    let mut uas = Command::new("sipp")
        .current_dir(&uas_dir)
        .args(&uas_args)
        .stdin(Stdio::null())
        .stdout(fs::File::create(uas_dir.join("screen.txt"))?)
        .stderr(fs::File::create(uas_dir.join("stderr.txt"))?)
        .spawn()
        .context("starting the SIPp UAS")?;
    thread::sleep(Duration::from_millis(500));

    let calls = u64::from(rate * seconds);
    let dir = fresh_dir(work, &label)?;
    let mut args = vec![
        "-sf".to_string(),
        scenarios.uac.display().to_string(),
        format!("{LOOPBACK}:{}", server.port),
        "-s".into(),
        SERVICE.into(),
        "-p".into(),
        UAC_PORT.to_string(),
        "-mp".into(),
        UAC_MEDIA_PORT.to_string(),
        "-r".into(),
        rate.to_string(),
        "-m".into(),
        calls.to_string(),
        "-l".into(),
        (calls.min(u64::from(rate) * 10 + 1000)).to_string(),
        "-d".into(),
        hold_ms.to_string(),
        "-timeout".into(),
        format!("{}s", seconds + 60),
        "-timeout_error".into(),
    ];
    args.extend(common_args());
    let capture = if rtt {
        Some(Capture::start(&dir, server.port)?)
    } else {
        None
    };
    let ticks_per_second = clock_ticks_per_second();
    let start_ticks = server.cpu_ticks();
    let started = Instant::now();
    let uac = sipp_run(&dir, &args)?;
    let elapsed = started.elapsed().as_secs_f64();
    let used = server.cpu_ticks().saturating_sub(start_ticks) as f64 / ticks_per_second;
    // The UAS's last statistics: its calls end 2 s after their BYE.
    thread::sleep(Duration::from_millis(2500 + u64::from(hold_ms)));
    let _ = uas.kill();
    let _ = uas.wait();
    let uas = read_stats(&uas_dir).unwrap_or_default();
    let latency = match capture {
        Some(capture) => {
            let times = capture.setup_times()?;
            Some(Latency {
                samples: times.end_to_end.len(),
                end_to_end: Spread::of(times.end_to_end),
                inside: (!times.inside.is_empty()).then(|| Spread::of(times.inside)),
            })
        }
        None => None,
    };
    Ok(Step {
        calls,
        uac,
        uas,
        cpu_percent: 100.0 * used / elapsed,
        latency,
    })
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
    let mut outcome = read_stats(dir)?;
    outcome.exit_ok = status.success();
    Ok(outcome)
}

/// The last row of SIPp's `stat.csv` in `dir`.
pub(crate) fn read_stats(dir: &Path) -> Result<Outcome> {
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
        retransmissions: column("Retransmissions(C)")?,
        timeouts: column("FailedTimeoutOnRecv(C)")?
            + column("FailedTimeoutOnSend(C)")?
            + column("FailedMaxUDPRetrans(C)")?,
        exit_ok: true,
    })
}

pub(crate) fn fresh_dir(work: &Path, name: &str) -> Result<PathBuf> {
    let dir = work.join(name);
    if dir.exists() {
        fs::remove_dir_all(&dir)?;
    }
    fs::create_dir_all(&dir)?;
    Ok(dir)
}

/// tcpdump on the caller's port while a latency step runs.
struct Capture {
    child: Child,
    file: PathBuf,
    server_port: u16,
}

impl Capture {
    /// Captures the caller's and the callee's ports: both legs of every
    /// call through `server_port` (the direct run has one leg).
    fn start(dir: &Path, server_port: u16) -> Result<Capture> {
        let file = dir.join("calls.pcap");
        let child = Command::new("tcpdump")
            .args(["-i", "lo", "-n", "-s", "2048", "-B", "65536", "-w"])
            .arg(&file)
            .args([
                "udp",
                "port",
                &UAC_PORT.to_string(),
                "or",
                "udp",
                "port",
                &UAS_PORT.to_string(),
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(fs::File::create(dir.join("tcpdump.txt"))?)
            .spawn()
            .context("starting tcpdump")?;
        // tcpdump needs a moment before it captures.
        thread::sleep(Duration::from_millis(1000));
        Ok(Capture {
            child,
            file,
            server_port,
        })
    }

    /// Per call, in ms: the caller's first INVITE to the first 200 for it;
    /// and the time inside the server. A B2BUA gives the callee's leg a
    /// Call-ID of its own, so the legs are paired in order: the k-th INVITE
    /// the server received with the k-th it sent, likewise the 200s (a
    /// passing step has no retransmission, so each list holds one entry
    /// per call, and at these rates calls do not overtake each other).
    fn setup_times(mut self) -> Result<SetupTimes> {
        thread::sleep(Duration::from_millis(500));
        let _ = Command::new("kill")
            .args(["-INT", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
        let reader = pcap_file::pcap::PcapReader::new(fs::File::open(&self.file)?)
            .with_context(|| format!("reading {}", self.file.display()))?;
        let link = reader.header().datalink;
        let mut reader = reader;
        let server = self.server_port;
        // First sighting per (leg, Call-ID) of each message that matters.
        let mut seen: std::collections::HashSet<(u8, String)> = Default::default();
        let mut invites: HashMap<String, Duration> = HashMap::new();
        let mut end_to_end = Vec::new();
        let [mut invite_in, mut invite_out, mut answer_in, mut answer_out] =
            [(); 4].map(|()| Vec::new());
        while let Some(packet) = reader.next_packet() {
            let packet = packet?;
            let Some((source, destination, payload)) = udp_payload(link, &packet.data) else {
                continue;
            };
            let text = String::from_utf8_lossy(payload);
            let Some(call_id) = sip_header(&text, "Call-ID") else {
                continue;
            };
            let invite = text.starts_with("INVITE ");
            let answer = text.starts_with("SIP/2.0 200")
                && sip_header(&text, "CSeq").is_some_and(|cseq| cseq.contains("INVITE"));
            let at = packet.timestamp;
            let mut first = |leg: u8| seen.insert((leg, call_id.clone()));
            if invite && source == UAC_PORT {
                invites.entry(call_id.clone()).or_insert(at);
                if destination == server && first(0) {
                    invite_in.push(at);
                }
            } else if invite && source == server && destination == UAS_PORT && first(1) {
                invite_out.push(at);
            } else if answer && source == UAS_PORT && destination == server && first(2) {
                answer_in.push(at);
            }
            if answer && destination == UAC_PORT && first(3) {
                if source == server {
                    answer_out.push(at);
                }
                if let Some(sent) = invites.get(&call_id) {
                    end_to_end.push(ms(at.saturating_sub(*sent)));
                }
            }
        }
        let inside = if server == UAS_PORT {
            Vec::new()
        } else {
            invite_in
                .iter()
                .zip(&invite_out)
                .zip(answer_in.iter().zip(&answer_out))
                .map(|((i_in, i_out), (a_in, a_out))| {
                    ms(i_out.saturating_sub(*i_in) + a_out.saturating_sub(*a_in))
                })
                .collect()
        };
        Ok(SetupTimes { end_to_end, inside })
    }
}

/// What one capture says about call setup, in ms per call.
struct SetupTimes {
    end_to_end: Vec<f64>,
    inside: Vec<f64>,
}

/// A duration in ms, to the 0.1 ms the capture's timestamps carry.
fn ms(duration: Duration) -> f64 {
    (duration.as_secs_f64() * 10_000.0).round() / 10.0
}

/// Source port, destination port and payload of a UDP/IPv4 packet as
/// tcpdump captured it on loopback.
fn udp_payload(link: pcap_file::DataLink, data: &[u8]) -> Option<(u16, u16, &[u8])> {
    let ip = match link {
        pcap_file::DataLink::ETHERNET => data.get(14..)?,
        pcap_file::DataLink::LINUX_SLL => data.get(16..)?,
        pcap_file::DataLink::NULL | pcap_file::DataLink::LOOP => data.get(4..)?,
        _ => data,
    };
    if ip.first()? >> 4 != 4 || *ip.get(9)? != 17 {
        return None;
    }
    let udp = ip.get(usize::from(ip[0] & 0x0F) * 4..)?;
    let source = u16::from_be_bytes([*udp.first()?, *udp.get(1)?]);
    let destination = u16::from_be_bytes([*udp.get(2)?, *udp.get(3)?]);
    Some((source, destination, udp.get(8..)?))
}

fn sip_header(message: &str, name: &str) -> Option<String> {
    message
        .split("\r\n\r\n")
        .next()?
        .lines()
        .skip(1)
        .find_map(|line| {
            let (key, value) = line.split_once(':')?;
            key.trim()
                .eq_ignore_ascii_case(name)
                .then(|| value.trim().to_string())
        })
}

/// Nearest-rank percentile of sorted values.
pub(crate) fn percentile<T: Copy>(sorted: &[T], p: f64) -> Option<T> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

pub(crate) fn clock_ticks_per_second() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|out| String::from_utf8(out.stdout).ok())
        .and_then(|text| text.trim().parse().ok())
        .unwrap_or(100.0)
}

/// utime+stime (clock ticks) of `root` and all its descendants.
pub(crate) fn process_tree_ticks(root: u32) -> u64 {
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

#[derive(Debug, Default)]
struct Figures {
    name: &'static str,
    /// Highest passing rate; None if the lowest failed.
    cps: Option<u32>,
    /// CPU at that rate.
    cps_cpu: Option<f64>,
    /// The first failing step.
    cps_limit: Option<String>,
    /// (rate, latency, whether the step passed).
    latency: Vec<(u32, Latency, bool)>,
    /// Calls the caller saw completed, over every step.
    completed: u64,
}

fn print_table(figures: &[Figures]) {
    println!("\n| server | calls/s (every call, 0 retransmissions) | CPU at that rate | first failing step |");
    println!("|---|---|---|---|");
    for f in figures {
        println!(
            "| {} | {} | {} | {} |",
            f.name,
            f.cps
                .map_or("below the first step".to_string(), |c| c.to_string()),
            f.cps_cpu.map_or("-".to_string(), |c| format!("{c:.0} %")),
            f.cps_limit
                .as_deref()
                .unwrap_or("none (highest step passed)")
        );
    }
    let direct = figures.iter().find(|f| f.name == "direct");
    println!("\n| server | rate | INVITE→200 p50 / p99 / max (ms) | p99 added over direct | inside the server p50 / p99 / max (ms) |");
    println!("|---|---|---|---|---|");
    for f in figures {
        for (rate, latency, passed) in &f.latency {
            let added = direct
                .and_then(|d| d.latency.iter().find(|(r, ..)| r == rate))
                .map_or("-".to_string(), |(_, d, _)| {
                    format!("{:.1} ms", latency.end_to_end.p99 - d.end_to_end.p99)
                });
            let inside = latency
                .inside
                .map_or("-".to_string(), |inside| inside.cell());
            println!(
                "| {} | {rate}/s{} | {} | {added} | {inside} |",
                f.name,
                if *passed { "" } else { " (step failed)" },
                latency.end_to_end.cell()
            );
        }
    }
    let cps = |name: &str| figures.iter().find(|f| f.name == name).and_then(|f| f.cps);
    if let Some(kamailio) = cps("kamailio") {
        for name in ["callhost", "callhost+modules"] {
            if let Some(ours) = cps(name) {
                println!(
                    "ratio {name} / kamailio calls/s: {:.2} ({ours} / {kamailio})",
                    f64::from(ours) / f64::from(kamailio)
                );
            }
        }
    }
    println!(
        "Kamailio relays signalling only; callhost is a B2BUA (two dialogs per call, and it anchors RTP, none in these steps)."
    );
}
