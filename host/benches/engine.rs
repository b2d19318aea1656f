//! `cargo xtask bench engine`: what the engine and the module boundary cost.
//!
//! Every figure is printed beside a reference measured in the same run, so
//! the ratio means something on a noisy machine:
//! - simulated calls per second through the engine with the three shipped
//!   modules active (breakthrough, redirect-display, reverse-lookup
//!   answering from the address book; real release libraries, real
//!   dispatcher), against the same calls with no modules;
//! - one breakthrough hook call across the ABI (instance trait object,
//!   FFI-safe future polled once) against the same module called in-process.

use std::{
    future::Future,
    hint::black_box,
    sync::Arc,
    task::{Context, Poll, Waker},
    time::{Duration, Instant},
};

use abi_stable::std_types::{ROption, RVec};
use callhost::{
    dispatch::Dispatcher,
    instances::{EngineSlot, Instances},
    Host,
};
use callhost_pbx::{
    directory::{Directory, DirectoryIndex},
    engine::{CallRequest, Engine, Hooks, NoHooks, Via},
};
use callhost_plugin_abi::{CallSetup, Decision, Direction, InstanceBox, UserState};
use callhost_plugin_sdk::{testing, Module, Setup};

/// Rounds of the one-hook-call comparison (median).
const ROUNDS: usize = 5;
/// Rounds of simulated calls, each with modules and without.
const PAIRS: usize = 41;

fn main() {
    let modules = std::env::var_os("CALLHOST_BENCH_MODULES")
        .map(std::path::PathBuf::from)
        .expect("run with `cargo xtask bench` (CALLHOST_BENCH_MODULES names the packages)");
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let data = tempdir();
    let host = Host::open(&data).expect("open host");
    callhost::library::trust(&host.data, &modules.join("signing-key.pub")).expect("trust");
    for package in [
        "breakthrough-0.1.0.cmod",
        "redirect-display-0.1.0.cmod",
        "reverse-lookup-0.1.0.cmod",
    ] {
        callhost::commands::module_install(&host, &modules.join(package), false).expect("install");
    }
    for (module, name, config) in [
        (
            "breakthrough",
            "bt",
            Some("examples/demo-breakthrough.toml"),
        ),
        (
            "redirect-display",
            "rd",
            Some("examples/redirect-display.toml"),
        ),
        // No providers: outside callers are named from the address book.
        ("reverse-lookup", "rl", None),
    ] {
        let path = config.map(|config| root.join(config));
        callhost::commands::instance_create(&host, module, name, path.as_deref(), None, false)
            .expect("create instance");
    }
    let office = std::fs::read_to_string(root.join("examples/office.toml")).unwrap();
    let directory = Directory::from_toml_str(&office).unwrap();
    let engine = Arc::new(Engine::new(
        Arc::new(DirectoryIndex::new(directory).unwrap()),
        host.config.engine(),
    ));
    let dispatcher = Arc::new(Dispatcher::new(
        EngineSlot::default(),
        host.config.hook_reserve(),
    ));
    dispatcher.engine.store(Some(engine.clone()));
    dispatcher
        .refresh(&host.data, &host.db, &host.loader)
        .unwrap();
    assert_eq!(
        dispatcher.current().len(),
        3,
        "the three instances are live"
    );

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let calls = demo_calls();
    // This machine's speed drifts by a quarter within seconds (a shared
    // VM): short rounds taken in pairs, each pair's ratio, the median of
    // those. The order within a pair alternates.
    let per_round = 4_000;
    let mut with_modules = Vec::new();
    let mut without = Vec::new();
    let mut ratios = Vec::new();
    for pair in 0..PAIRS {
        let modules_round =
            || calls_per_second(&runtime, &engine, dispatcher.as_ref(), &calls, per_round);
        let reference_round = || calls_per_second(&runtime, &engine, &NoHooks, &calls, per_round);
        let (with, reference) = if pair % 2 == 0 {
            let with = modules_round();
            (with, reference_round())
        } else {
            let reference = reference_round();
            (modules_round(), reference)
        };
        with_modules.push(with);
        without.push(reference);
        ratios.push(with / reference);
    }
    let with_modules = median(with_modules);
    let without = median(without);
    let ratio = median(ratios);
    // A quick hook slower than the limit runs on a thread from then on,
    // which changes what the figure measures: say so.
    let demoted: Vec<String> = dispatcher
        .current()
        .iter()
        .filter(|live| !live.is_quick())
        .map(|live| live.name.clone())
        .collect();

    // One hook call: across the ABI and in-process, same module, same setup.
    let row = host.db.instance("bt").unwrap();
    let live = Instances::new(&host.data, &host.db, &host.loader)
        .live(&row, &EngineSlot::default())
        .unwrap();
    let config_text =
        std::fs::read_to_string(root.join("examples/demo-breakthrough.toml")).unwrap();
    let config = toml::from_str(&config_text).unwrap();
    let direct = breakthrough::Breakthrough::new(&testing::context("bench"), config).unwrap();
    let setup = lead_calls_dev(&engine);
    let expected = abi_decision(&live.instance, &setup);
    assert!(
        expected.bypass_dnd,
        "the rule matches: the bench measures a real decision"
    );
    assert_eq!(
        direct_decision(&direct, &setup),
        expected,
        "both paths decide the same"
    );
    let iterations = 200_000;
    let mut abi = Vec::new();
    let mut inproc = Vec::new();
    for _ in 0..ROUNDS {
        abi.push(time_per_call(iterations, || {
            abi_decision(&live.instance, &setup)
        }));
        inproc.push(time_per_call(iterations, || {
            direct_decision(&direct, &setup)
        }));
    }
    let abi = median(abi);
    let inproc = median(inproc);

    println!("callhost engine benchmark (release build)");
    println!();
    println!("| measure | value | reference | ratio |");
    println!("|---|---|---|---|");
    println!(
        "| calls/s through the engine: bt + rd + rl active vs no modules (medians; ratio: median of {PAIRS} pairs) | {with_modules:.0} | {without:.0} | {ratio:.2} |"
    );
    println!(
        "| one hook call in ns: ABI (trait object + FfiFuture) vs in-process | {:.0} | {:.0} | {:.2} |",
        abi.as_nanos() as f64,
        inproc.as_nanos() as f64,
        abi.as_secs_f64() / inproc.as_secs_f64()
    );
    println!(
        "quick hooks moved to threads during the run: {}",
        if demoted.is_empty() {
            "none".to_string()
        } else {
            demoted.join(", ")
        }
    );
    drop(live);
    runtime.shutdown_background();
    let _ = std::fs::remove_dir_all(&data);
}

fn tempdir() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("callhost-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The demo scenario's calls: forwards, breakthroughs, transfers, groups.
fn demo_calls() -> Vec<CallRequest> {
    let call = |from: &str, to: &str, via: Via, by: Option<&str>| CallRequest {
        call_id: String::new(),
        from: from.into(),
        to: to.into(),
        via,
        by: by.map(str::to_string),
        no_answer: false,
        external_caller: false,
    };
    vec![
        call("203", "201", Via::Direct, None),
        call("202", "201", Via::Direct, None),
        call("+49891234567", "+4930123456201", Via::Direct, None),
        call("+49891234567", "201", Via::AttendedTransfer, Some("sec")),
        call("+49891234567", "201", Via::BlindTransfer, Some("sec")),
        call("203", "204", Via::Direct, None),
        call("210", "204", Via::Direct, None),
        call("+49891234567", "+4930123456300", Via::Direct, None),
    ]
}

fn calls_per_second(
    runtime: &tokio::runtime::Runtime,
    engine: &Engine,
    hooks: &dyn Hooks,
    calls: &[CallRequest],
    count: usize,
) -> f64 {
    let started = Instant::now();
    runtime.block_on(async {
        for n in 0..count {
            let outcome = engine.place(&calls[n % calls.len()], hooks).await;
            black_box(outcome);
        }
    });
    count as f64 / started.elapsed().as_secs_f64()
}

fn lead_calls_dev(engine: &Engine) -> CallSetup {
    CallSetup {
        call_id: "bench".into(),
        direction: Direction::Internal,
        caller: engine.party("210"),
        callee: engine.party("204"),
        dialled: "204".into(),
        transfer: ROption::RNone,
        callee_state: ROption::RSome(UserState {
            dnd: true,
            call_waiting: true,
            ..Default::default()
        }),
        pending_forward: ROption::RNone,
        forwarded: RVec::new(),
        prior: Decision::default(),
    }
}

fn abi_decision(instance: &InstanceBox, setup: &CallSetup) -> Decision {
    let mut future = instance.call_setup(setup);
    let mut context = Context::from_waker(Waker::noop());
    match std::pin::Pin::new(&mut future).poll(&mut context) {
        Poll::Ready(result) => result.unwrap(),
        Poll::Pending => panic!("breakthrough answers at once"),
    }
}

fn direct_decision(module: &breakthrough::Breakthrough, setup: &CallSetup) -> Decision {
    match module.call_setup(setup) {
        Setup::Ready(decision) => decision,
        Setup::Later(_) => panic!("breakthrough answers at once"),
    }
}

fn time_per_call<T>(iterations: u32, mut call: impl FnMut() -> T) -> Duration {
    let started = Instant::now();
    for _ in 0..iterations {
        black_box(call());
    }
    started.elapsed() / iterations
}

fn median<T: PartialOrd + Copy>(mut values: Vec<T>) -> T {
    values.sort_by(|a, b| a.partial_cmp(b).unwrap());
    values[values.len() / 2]
}
