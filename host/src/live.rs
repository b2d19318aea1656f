//! What `callhost serve` knows right now, for the dashboard: registrations
//! (the registrar), calls in progress with what each module decided, and
//! the calls that ended last. Kept in memory; a call's task only clones
//! what it has and inserts or removes it under a lock held for nothing
//! else; JSON is made when the dashboard asks.

use std::{
    collections::{HashMap, VecDeque},
    sync::{Arc, Mutex},
    time::{Duration, Instant, SystemTime},
};

use callhost_pbx::engine::{CallOutcome, CallRequest, ReportedDecision, Ring};
use callhost_sip::{CallRecord, LiveCalls};
use serde_json::{json, Value};

/// Ended calls the dashboard shows.
const RECENT_CALLS: usize = 50;
/// Calls in progress it tracks (far above what one host carries).
const MAX_TRACKED: usize = 10_000;

/// A call in progress as it was placed; made JSON only when the dashboard
/// asks (the call's task only clones).
struct ActiveCall {
    since: SystemTime,
    started: Instant,
    request: CallRequest,
    caller_name: Option<String>,
    rang: Vec<Ring>,
    decisions: Vec<ReportedDecision>,
}

impl ActiveCall {
    fn summary(&self) -> Value {
        json!({
            "call_id": self.request.call_id,
            "from": self.request.from,
            "to": self.request.to,
            "external_caller": self.request.external_caller,
            "caller_name": self.caller_name,
            "ringing": self
                .rang
                .iter()
                .map(|ring| json!({ "user": ring.user, "number": ring.number, "display": ring.display }))
                .collect::<Vec<_>>(),
            "decisions": self.decisions,
            "since": callhost_pbx::store::rfc3339_utc(self.since),
        })
    }
}

/// A call that ended, kept as recorded.
struct EndedCall {
    record: CallRecord,
    lasted: Option<Duration>,
    ended: SystemTime,
}

impl EndedCall {
    fn summary(&self) -> Value {
        let record = &self.record;
        json!({
            "call_id": record.request.call_id,
            "from": record.request.from,
            "to": record.request.to,
            "outcome": record.outcome.outcome,
            "reason": record.outcome.reason,
            "caller_name": record.outcome.caller_name,
            "answered_by": record.answered_by,
            "talked_seconds": record.answered_for.map(|talked| talked.as_secs()),
            "lasted_seconds": self.lasted.map(|lasted| lasted.as_secs()),
            "ended": callhost_pbx::store::rfc3339_utc(self.ended),
            "decisions": record.outcome.decisions,
        })
    }
}

/// The live state behind the dashboard.
pub struct LiveState {
    presence: Arc<LiveCalls>,
    active: Mutex<HashMap<String, Arc<ActiveCall>>>,
    recent: Mutex<VecDeque<Arc<EndedCall>>>,
}

impl LiveState {
    pub fn new(presence: Arc<LiveCalls>) -> LiveState {
        LiveState {
            presence,
            active: Mutex::default(),
            recent: Mutex::default(),
        }
    }

    /// A call rings.
    pub fn started(&self, request: &CallRequest, outcome: &CallOutcome) {
        let mut active = self.active.lock().unwrap_or_else(|p| p.into_inner());
        if active.len() < MAX_TRACKED {
            active.insert(
                request.call_id.clone(),
                Arc::new(ActiveCall {
                    since: SystemTime::now(),
                    started: Instant::now(),
                    request: request.clone(),
                    caller_name: outcome.caller_name.clone(),
                    rang: outcome.rang.clone(),
                    decisions: outcome.decisions.clone(),
                }),
            );
        }
    }

    /// A call ended (whether or not it rang).
    pub fn ended(&self, record: &CallRecord) {
        let started = self
            .active
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&record.request.call_id);
        let ended = Arc::new(EndedCall {
            record: record.clone(),
            lasted: started.map(|call| call.started.elapsed()),
            ended: SystemTime::now(),
        });
        let mut recent = self.recent.lock().unwrap_or_else(|p| p.into_inner());
        if recent.len() == RECENT_CALLS {
            recent.pop_back();
        }
        recent.push_front(ended);
    }
}

impl crate::http::LiveView for LiveState {
    fn snapshot(&self) -> Value {
        let registrar = &self.presence.registrar;
        let now = Instant::now();
        let registrations: Vec<Value> = registrar
            .registered_users()
            .into_iter()
            .flat_map(|user| {
                let in_calls = self.presence.calls_of(&user);
                registrar.bindings(&user).into_iter().map(move |binding| {
                    json!({
                        "user": user,
                        "contact": binding.contact,
                        "source": binding.source.to_string(),
                        "transport": format!("{:?}", binding.transport).to_ascii_uppercase(),
                        "expires_in": binding.expires_at.saturating_duration_since(now).as_secs(),
                        "calls": in_calls,
                    })
                })
            })
            .collect();
        // Taken under the locks, made JSON outside them: calls never wait
        // for the page.
        let active: Vec<Arc<ActiveCall>> = self
            .active
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect();
        let ended: Vec<Arc<EndedCall>> = self
            .recent
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .cloned()
            .collect();
        let calls: Vec<Value> = active.iter().map(|call| call.summary()).collect();
        let recent: Vec<Value> = ended.iter().map(|call| call.summary()).collect();
        json!({
            "registrations": registrations,
            "calls": calls,
            "recent_calls": recent,
        })
    }
}
