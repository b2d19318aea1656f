//! RL9/RL10: query all eligible providers at once; the first success wins.
//!
//! The PBX gives a lookup about 700 ms before the call goes on without a
//! name, so a slow or dead provider must never hold up a call: every attempt
//! runs under its own timeout and the overall budget, the first `Ok(Some(_))`
//! ends the race, and all attempts still running are dropped, which cancels
//! their requests. The address book and the cache (RL10) are asked before
//! this race, by the caller.
//!
//! The attempts are polled concurrently on the calling task
//! ([`FuturesUnordered`]), not spawned, so dropping them is immediate and
//! synchronous: when [`first_success`] returns, every loser is gone. A
//! provider must therefore not block the thread; one that panics is
//! recorded as [`AttemptResult::Panicked`] instead of taking the lookup down.
//!
//! A provider's error is the caller's own type `E`, kept as it is, so the
//! caller tells its kinds of failure apart by type.

use std::any::Any;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::time::Duration;

use futures::stream::{FuturesUnordered, StreamExt};
use futures::FutureExt;
use tokio::time::Instant;

/// A provider's answer: `Ok(Some(_))` found, `Ok(None)` no entry, `Err` failed.
pub type AttemptFuture<T, E> = Pin<Box<dyn Future<Output = Result<Option<T>, E>> + Send>>;

/// One provider's lookup, not yet started.
pub struct Attempt<T, E = String> {
    pub provider: String,
    /// The provider's own limit; the overall budget applies as well.
    pub timeout: Duration,
    pub future: AttemptFuture<T, E>,
}

impl<T, E> Attempt<T, E> {
    /// Box `future` into an attempt.
    pub fn new(
        provider: impl Into<String>,
        timeout: Duration,
        future: impl Future<Output = Result<Option<T>, E>> + Send + 'static,
    ) -> Attempt<T, E> {
        Attempt {
            provider: provider.into(),
            timeout,
            future: Box::pin(future),
        }
    }
}

/// How one attempt ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AttemptResult<E = String> {
    /// The first success: its value is the outcome's winner.
    Won,
    /// The provider has no entry for the number.
    NotFound,
    /// The provider failed, with its own error.
    Error(E),
    /// The provider panicked; the panic's message.
    Panicked(String),
    /// Its own timeout or the overall budget ran out first.
    TimedOut,
    /// Still running when another provider won; dropped.
    Cancelled,
}

/// One attempt's result and when it ended, measured from the race's start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttemptReport<E = String> {
    pub provider: String,
    pub result: AttemptResult<E>,
    pub elapsed: Duration,
}

/// The winning provider and its value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Winner<T> {
    pub provider: String,
    pub value: T,
}

/// The result of a race: the winner, if any, and one report per attempt in
/// the order the attempts were given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RaceOutcome<T, E = String> {
    pub winner: Option<Winner<T>>,
    pub reports: Vec<AttemptReport<E>>,
    /// How long the race took; never more than the budget (plus timer slack).
    pub elapsed: Duration,
}

/// Run `attempts` concurrently; return at the first success, when all have
/// ended, or when `budget` is spent, whichever comes first.
pub async fn first_success<T, E>(
    attempts: Vec<Attempt<T, E>>,
    budget: Duration,
) -> RaceOutcome<T, E> {
    let start = Instant::now();
    let deadline = start + budget;
    let mut results: Vec<Option<(AttemptResult<E>, Duration)>> = std::iter::repeat_with(|| None)
        .take(attempts.len())
        .collect();
    let providers: Vec<String> = attempts.iter().map(|a| a.provider.clone()).collect();

    let mut running: FuturesUnordered<_> = attempts
        .into_iter()
        .enumerate()
        .map(|(i, attempt)| {
            // Deadlines from the common start, not from the first poll.
            let own_deadline = start + attempt.timeout.min(budget);
            let guarded = AssertUnwindSafe(attempt.future).catch_unwind();
            async move { (i, tokio::time::timeout_at(own_deadline, guarded).await) }
        })
        .collect();

    let mut winner = None;
    loop {
        // The per-attempt deadlines already end at the budget; this outer
        // one keeps the promise even if an attempt's timer fires late.
        let next = match tokio::time::timeout_at(deadline, running.next()).await {
            Ok(Some(next)) => next,
            Ok(None) => break,
            Err(_) => {
                let elapsed = start.elapsed();
                for slot in results.iter_mut().filter(|r| r.is_none()) {
                    *slot = Some((AttemptResult::TimedOut, elapsed));
                }
                break;
            }
        };
        let (i, ended) = next;
        let result = match ended {
            Err(_) => AttemptResult::TimedOut,
            Ok(Err(panic)) => AttemptResult::Panicked(panic_message(&*panic).to_string()),
            Ok(Ok(Ok(Some(value)))) => {
                winner = Some(Winner {
                    provider: providers[i].clone(),
                    value,
                });
                AttemptResult::Won
            }
            Ok(Ok(Ok(None))) => AttemptResult::NotFound,
            Ok(Ok(Err(error))) => AttemptResult::Error(error),
        };
        results[i] = Some((result, start.elapsed()));
        if winner.is_some() {
            break;
        }
    }
    // Cancel every attempt still running, before returning.
    drop(running);

    let elapsed = start.elapsed();
    let reports = providers
        .into_iter()
        .zip(results)
        .map(|(provider, result)| {
            let (result, elapsed) = result.unwrap_or((AttemptResult::Cancelled, elapsed));
            AttemptReport {
                provider,
                result,
                elapsed,
            }
        })
        .collect();
    RaceOutcome {
        winner,
        reports,
        elapsed,
    }
}

fn panic_message(payload: &(dyn Any + Send)) -> &str {
    payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(no message)")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    use tokio::time::sleep;

    const MS: Duration = Duration::from_millis(1);
    const BUDGET: Duration = Duration::from_millis(700);
    const LONG: Duration = Duration::from_secs(10);

    /// Sets its flag when dropped: proof that a future was really dropped.
    struct DropGuard(Arc<AtomicBool>);

    impl Drop for DropGuard {
        fn drop(&mut self) {
            self.0.store(true, Ordering::SeqCst);
        }
    }

    fn guard() -> (DropGuard, Arc<AtomicBool>) {
        let flag = Arc::new(AtomicBool::new(false));
        (DropGuard(flag.clone()), flag)
    }

    /// Answers `answer` after `after`.
    fn after(
        provider: &str,
        timeout: Duration,
        after: Duration,
        answer: Result<Option<&'static str>, &'static str>,
    ) -> Attempt<&'static str> {
        Attempt::new(provider, timeout, async move {
            sleep(after).await;
            answer.map_err(String::from)
        })
    }

    /// Never answers; sets the returned flag when dropped.
    fn silent(provider: &str, timeout: Duration) -> (Attempt<&'static str>, Arc<AtomicBool>) {
        let (guard, flag) = guard();
        let attempt = Attempt::new(provider, timeout, async move {
            let _guard = guard;
            std::future::pending::<()>().await;
            Ok(None)
        });
        (attempt, flag)
    }

    fn report(provider: &str, result: AttemptResult, ms: u64) -> AttemptReport {
        AttemptReport {
            provider: provider.into(),
            result,
            elapsed: Duration::from_millis(ms),
        }
    }

    fn winner(provider: &str, value: &'static str) -> Option<Winner<&'static str>> {
        Some(Winner {
            provider: provider.into(),
            value,
        })
    }

    #[tokio::test(start_paused = true)]
    async fn fastest_success_wins_and_the_rest_is_cancelled() {
        let (slow_guard, slow_dropped) = guard();
        let slow = Attempt::new("goyellow", LONG, async move {
            let _guard = slow_guard;
            sleep(90 * MS).await;
            Ok(Some("Slow GmbH"))
        });
        let outcome = first_success(
            vec![slow, after("11880", LONG, 40 * MS, Ok(Some("Fast GmbH")))],
            BUDGET,
        )
        .await;
        assert!(slow_dropped.load(Ordering::SeqCst), "loser still alive");
        assert_eq!(
            outcome,
            RaceOutcome {
                winner: winner("11880", "Fast GmbH"),
                reports: vec![
                    report("goyellow", AttemptResult::Cancelled, 40),
                    report("11880", AttemptResult::Won, 40),
                ],
                elapsed: 40 * MS,
            }
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_provider_does_not_delay_the_winner() {
        let (dead, dead_dropped) = silent("dead", LONG);
        let started = Instant::now();
        let outcome = first_success(
            vec![dead, after("sql", LONG, 30 * MS, Ok(Some("Anna")))],
            BUDGET,
        )
        .await;
        assert_eq!(started.elapsed(), 30 * MS);
        assert!(dead_dropped.load(Ordering::SeqCst));
        assert_eq!(outcome.winner, winner("sql", "Anna"));
        assert_eq!(
            outcome.reports[0],
            report("dead", AttemptResult::Cancelled, 30)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn without_success_the_race_ends_at_the_budget() {
        let (a, a_dropped) = silent("a", LONG);
        let (b, b_dropped) = silent("b", Duration::from_secs(1));
        let started = Instant::now();
        let outcome = first_success(
            vec![
                a,
                b,
                after("c", LONG, 10 * MS, Ok(None)),
                after("d", LONG, 20 * MS, Err("HTTP 503")),
            ],
            BUDGET,
        )
        .await;
        assert_eq!(started.elapsed(), BUDGET);
        assert!(a_dropped.load(Ordering::SeqCst) && b_dropped.load(Ordering::SeqCst));
        assert_eq!(
            outcome,
            RaceOutcome {
                winner: None,
                reports: vec![
                    report("a", AttemptResult::TimedOut, 700),
                    report("b", AttemptResult::TimedOut, 700),
                    report("c", AttemptResult::NotFound, 10),
                    report("d", AttemptResult::Error("HTTP 503".into()), 20),
                ],
                elapsed: BUDGET,
            }
        );
    }

    #[tokio::test(start_paused = true)]
    async fn own_timeouts_and_misses_do_not_stop_the_race() {
        let outcome = first_success(
            vec![
                after("slow", 100 * MS, 300 * MS, Ok(Some("too late"))),
                after("empty", LONG, 10 * MS, Ok(None)),
                after("broken", LONG, 20 * MS, Err("parse error")),
                after("good", 250 * MS, 200 * MS, Ok(Some("Schmidt"))),
            ],
            BUDGET,
        )
        .await;
        assert_eq!(
            outcome,
            RaceOutcome {
                winner: winner("good", "Schmidt"),
                reports: vec![
                    report("slow", AttemptResult::TimedOut, 100),
                    report("empty", AttemptResult::NotFound, 10),
                    report("broken", AttemptResult::Error("parse error".into()), 20),
                    report("good", AttemptResult::Won, 200),
                ],
                elapsed: 200 * MS,
            }
        );
    }

    #[tokio::test(start_paused = true)]
    async fn all_ended_before_the_budget_returns_early() {
        let outcome = first_success(
            vec![
                after("a", LONG, 50 * MS, Ok(None)),
                after("b", 80 * MS, LONG, Ok(Some("never"))),
            ],
            BUDGET,
        )
        .await;
        assert_eq!(outcome.winner, None);
        assert_eq!(outcome.elapsed, 80 * MS);
        assert_eq!(outcome.reports[1], report("b", AttemptResult::TimedOut, 80));
    }

    #[tokio::test(start_paused = true)]
    async fn attempts_run_concurrently() {
        let outcome = first_success(
            vec![
                after("a", LONG, 100 * MS, Ok(None)),
                after("b", LONG, 110 * MS, Ok(None)),
                after("c", LONG, 120 * MS, Ok(Some("C"))),
            ],
            BUDGET,
        )
        .await;
        // One after the other would take 330 ms.
        assert_eq!(outcome.elapsed, 120 * MS);
        assert_eq!(outcome.winner, winner("c", "C"));
    }

    #[tokio::test(start_paused = true)]
    async fn a_timeout_longer_than_the_budget_is_cut_to_it() {
        let outcome = first_success(vec![after("a", LONG, 900 * MS, Ok(Some("A")))], BUDGET).await;
        assert_eq!(outcome.winner, None);
        assert_eq!(outcome.reports, [report("a", AttemptResult::TimedOut, 700)]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_panicking_provider_is_reported_as_a_panic() {
        let boom = Attempt::new("boom", LONG, async {
            sleep(5 * MS).await;
            panic!("parser exploded");
        });
        let outcome = first_success(
            vec![boom, after("ok", LONG, 20 * MS, Ok(Some("OK")))],
            BUDGET,
        )
        .await;
        assert_eq!(
            outcome.reports,
            [
                report("boom", AttemptResult::Panicked("parser exploded".into()), 5),
                report("ok", AttemptResult::Won, 20),
            ]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn no_attempts() {
        let outcome = first_success::<(), String>(Vec::new(), BUDGET).await;
        assert_eq!(
            outcome,
            RaceOutcome {
                winner: None,
                reports: vec![],
                elapsed: Duration::ZERO,
            }
        );
    }

    #[tokio::test(start_paused = true)]
    async fn an_immediate_answer_wins_even_with_zero_budget() {
        let ready = Attempt::new("cache", LONG, async { Ok::<_, String>(Some(1)) });
        let outcome = first_success(vec![ready], Duration::ZERO).await;
        assert_eq!(outcome.winner.map(|w| w.value), Some(1));
    }

    /// The same promise on the real clock: a dead provider is cut at the budget.
    #[tokio::test]
    async fn real_clock_budget() {
        let (dead, dropped) = silent("dead", LONG);
        let started = std::time::Instant::now();
        let outcome = first_success(vec![dead], 50 * MS).await;
        let took = started.elapsed();
        assert!(took >= 50 * MS && took < Duration::from_secs(2), "{took:?}");
        assert!(dropped.load(Ordering::SeqCst));
        assert_eq!(outcome.reports[0].result, AttemptResult::TimedOut);
    }
}
