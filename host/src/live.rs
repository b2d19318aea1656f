//! What `callhost serve` knows right now, for the dashboard: registrations
//! (the registrar), calls in progress with what each module decided, and
//! the calls that ended last. Kept in memory; every update is a map insert
//! or removal under a lock held for nothing else.

use std::{
    collections::{HashMap, VecDeque},
    sync::{Arc, Mutex},
    time::{Instant, SystemTime},
};

use callhost_pbx::engine::{CallOutcome, CallRequest};
use callhost_sip::{CallRecord, LiveCalls};
use serde_json::{json, Value};

/// Ended calls the dashboard shows.
const RECENT_CALLS: usize = 50;
/// Calls in progress it tracks (far above what one host carries).
const MAX_TRACKED: usize = 10_000;

struct ActiveCall {
    since: SystemTime,
    started: Instant,
    summary: Value,
}

/// The live state behind the dashboard.
pub struct LiveState {
    presence: Arc<LiveCalls>,
    active: Mutex<HashMap<String, ActiveCall>>,
    recent: Mutex<VecDeque<Value>>,
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
        let summary = json!({
            "call_id": request.call_id,
            "from": request.from,
            "to": request.to,
            "external_caller": request.external_caller,
            "caller_name": outcome.caller_name,
            "ringing": outcome
                .rang
                .iter()
                .map(|ring| json!({ "user": ring.user, "number": ring.number, "display": ring.display }))
                .collect::<Vec<_>>(),
            "decisions": outcome.decisions,
        });
        let mut active = self.active.lock().unwrap_or_else(|p| p.into_inner());
        if active.len() < MAX_TRACKED {
            active.insert(
                request.call_id.clone(),
                ActiveCall {
                    since: SystemTime::now(),
                    started: Instant::now(),
                    summary,
                },
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
        let entry = json!({
            "call_id": record.request.call_id,
            "from": record.request.from,
            "to": record.request.to,
            "outcome": record.outcome.outcome,
            "reason": record.outcome.reason,
            "caller_name": record.outcome.caller_name,
            "answered_by": record.answered_by,
            "talked_seconds": record.answered_for.map(|talked| talked.as_secs()),
            "lasted_seconds": started.map(|call| call.started.elapsed().as_secs()),
            "ended": callhost_pbx::store::rfc3339_utc(SystemTime::now()),
            "decisions": record.outcome.decisions,
        });
        let mut recent = self.recent.lock().unwrap_or_else(|p| p.into_inner());
        if recent.len() == RECENT_CALLS {
            recent.pop_back();
        }
        recent.push_front(entry);
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
        let calls: Vec<Value> = self
            .active
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .map(|call| {
                let mut summary = call.summary.clone();
                summary["since"] = Value::String(callhost_pbx::store::rfc3339_utc(call.since));
                summary
            })
            .collect();
        let recent: Vec<Value> = self
            .recent
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .cloned()
            .collect();
        json!({
            "registrations": registrations,
            "calls": calls,
            "recent_calls": recent,
        })
    }
}
