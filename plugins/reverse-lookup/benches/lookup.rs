//! `cargo xtask bench lookup`: the lookup machinery in-process against a
//! local HTTP server (loopback, so the figures are the module's own cost).
//!
//! 1. Time to a display name on a cache hit (p50/p99), against the same
//!    call with the fastest provider answering live: the ratio says what the
//!    cache saves.
//! 2. Eight providers, the fastest answering in 20 ms, one never: time above
//!    the fastest provider's own latency (p50/p99), against one provider
//!    alone (the same 20 ms provider) as the reference run side by side.
//! 3. Lookups per second through the cache, one caller and four at once.

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use axum::{extract::Query, routing::get, Router};
use callhost_plugin_sdk::{
    testing::{context_in, external_de, setup, user},
    Module, Setup,
};
use reverse_lookup::{config::Config, ReverseLookup};

async fn answer(Query(q): Query<HashMap<String, String>>) -> String {
    let ms: u64 = q.get("ms").and_then(|m| m.parse().ok()).unwrap_or(0);
    if ms == 0 {
        std::future::pending::<()>().await;
    }
    tokio::time::sleep(Duration::from_millis(ms)).await;
    format!(r#"<span id="name">Provider {ms}</span>"#)
}

fn provider(base: &str, id: &str, ms: u64) -> String {
    format!(
        r#"
[[providers]]
id = "{id}"
kind = "http"
url = "{base}/answer?ms={ms}&n={{tel}}"
timeout_ms = 650
rules = [{{ name = "n", field = "display", matcher = '<span id="name">([^<]+)</span>' }}]
"#
    )
}

fn instance(toml: &str) -> (ReverseLookup, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let config: Config = toml::from_str(toml).unwrap();
    let rl = ReverseLookup::new(&context_in("bench", dir.path()), config)
        .unwrap_or_else(|e| panic!("{}: {}", e.field, e.message));
    (rl, dir)
}

async fn display_time(rl: &ReverseLookup, number: &str) -> Duration {
    let call = setup(external_de(number), user("anna", "Anna", "201"));
    let started = Instant::now();
    let decision = match rl.call_setup(&call) {
        Setup::Ready(d) => d,
        Setup::Later(f) => f.await,
    };
    let took = started.elapsed();
    assert!(decision.display.is_some(), "no name for {number}");
    took
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn summary(label: &str, mut samples: Vec<Duration>, minus: Duration) -> (f64, f64) {
    samples.sort();
    let p50 = percentile(&samples, 0.5)
        .saturating_sub(minus)
        .as_secs_f64()
        * 1000.0;
    let p99 = percentile(&samples, 0.99)
        .saturating_sub(minus)
        .as_secs_f64()
        * 1000.0;
    println!(
        "{label:<58} p50 {p50:>8.3} ms   p99 {p99:>8.3} ms   (n = {})",
        samples.len()
    );
    (p50, p99)
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move {
            axum::serve(listener, Router::new().route("/answer", get(answer)))
                .await
                .unwrap()
        });
        let fastest = Duration::from_millis(20);
        let rounds = 60;

        // 1. Cache hit against the live fastest provider.
        let (mut cached, _d1) = instance(&format!(
            "max_extension_length = 0\n{}",
            provider(&base, "fast", 20)
        ));
        display_time(&cached, "0301234567").await; // fills the cache
        let mut hits = Vec::new();
        for _ in 0..2000 {
            hits.push(display_time(&cached, "0301234567").await);
        }
        let (live_one, _d2) = instance(&format!(
            "max_extension_length = 0\ncache.enabled = false\n{}",
            provider(&base, "fast", 20)
        ));
        let mut live = Vec::new();
        for _ in 0..rounds {
            live.push(display_time(&live_one, "0301234567").await);
        }
        println!("# reverse lookup, in-process, loopback HTTP providers");
        let (hit50, hit99) = summary("cache hit: time to display", hits, Duration::ZERO);
        let (live50, _) = summary(
            "reference: the 20 ms provider live (no cache)",
            live.clone(),
            Duration::ZERO,
        );
        println!(
            "ratio cache hit / live provider (p50): {:.4}  (p99 hit {hit99:.3} ms)\n",
            hit50 / live50
        );

        // 2. Eight providers: 20 ms fastest, six slower, one never answers.
        let mut eight = String::from("max_extension_length = 0\ncache.enabled = false\n");
        for (i, ms) in [20u64, 40, 60, 80, 120, 160, 240, 0].iter().enumerate() {
            eight.push_str(&provider(&base, &format!("p{i}"), *ms));
        }
        let (race, _d3) = instance(&eight);
        let mut raced = Vec::new();
        for _ in 0..rounds {
            raced.push(display_time(&race, "0301234567").await);
        }
        let (over50, over99) = summary(
            "8 providers: time above the fastest (20 ms)",
            raced,
            fastest,
        );
        let (ref50, ref99) = summary(
            "reference: the 20 ms provider alone, time above 20 ms",
            live,
            fastest,
        );
        println!(
            "ratio 8 providers / 1 provider, overhead p50 {:.2}, p99 {:.2}\n",
            over50 / ref50.max(0.001),
            over99 / ref99.max(0.001)
        );

        // 3. Throughput through the cache.
        for callers in [1usize, 4] {
            let window = Duration::from_secs(2);
            let started = Instant::now();
            let rl = std::sync::Arc::new(cached);
            let mut tasks = Vec::new();
            for _ in 0..callers {
                let rl = rl.clone();
                tasks.push(tokio::spawn(async move {
                    let mut n = 0u64;
                    while started.elapsed() < window {
                        display_time(&rl, "0301234567").await;
                        n += 1;
                    }
                    n
                }));
            }
            let mut total = 0;
            for t in tasks {
                total += t.await.unwrap();
            }
            let rate = total as f64 / started.elapsed().as_secs_f64();
            println!("lookups/s through the cache, {callers} caller(s) at once: {rate:.0}");
            cached = std::sync::Arc::try_unwrap(rl).ok().expect("tasks ended");
        }
    });
    // Background history writes may still be queued; they are not measured.
}
