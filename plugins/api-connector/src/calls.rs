//! Which users a call concerns and what each of their clients is told
//! about it (TC5): the hops' merged decisions (`call_decided`), the call's
//! events (`call_event`) and the call-list entries it made
//! (`call_listed`, delivered before the call's hangup) become `call`
//! events for the caller and every user that rang.
//!
//! Plain state: [`CallTracker::handle`] takes one observation and returns
//! the messages to deliver, per user. It remembers at most
//! [`CallTracker::MAX_CALLS`] calls, each for at most
//! [`CallTracker::MAX_AGE`] (the simulator's calls never hang up), and
//! forgets a call at its hangup.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::time::{Duration, Instant};

use callhost_plugin_sdk::{
    CallEvent, CallListDirection, CallListItem, CallSetup, Decision, Direction, EventKind, Party,
    PartyKind,
};
use serde_json::{json, Map, Value};

/// One side of a call, owned (the ABI's `Party` is borrowed in the hooks).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartyInfo {
    pub kind: PartyKind,
    pub number: String,
    pub name: Option<String>,
    /// The directory id of a user or group.
    pub id: Option<String>,
}

impl PartyInfo {
    pub fn of(party: &Party) -> PartyInfo {
        PartyInfo {
            kind: party.kind,
            number: party.number.to_string(),
            name: party.known_name().map(str::to_string),
            id: party.id.as_ref().into_option().map(|id| id.to_string()),
        }
    }

    fn unknown() -> PartyInfo {
        PartyInfo {
            kind: PartyKind::Unknown,
            number: String::new(),
            name: None,
            id: None,
        }
    }

    /// The user id, for a party that is a directory user.
    fn user(&self) -> Option<&str> {
        (self.kind == PartyKind::User)
            .then_some(self.id.as_deref())
            .flatten()
    }

    fn json(&self) -> Value {
        json!({
            "number": self.number,
            "name": self.name,
            "user": self.user(),
        })
    }
}

/// What the modules decided a hop shows.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Shown {
    pub display: Option<String>,
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    pub company: Option<String>,
    pub flag: Option<String>,
    /// The called party's name for the calling user (outgoing calls).
    pub callee_name: Option<String>,
}

impl Shown {
    pub fn of(decision: &Decision) -> Shown {
        let text = |field: &abi_stable::std_types::ROption<abi_stable::std_types::RString>| {
            field.as_ref().into_option().map(|t| t.to_string())
        };
        Shown {
            display: text(&decision.display).or_else(|| decision.display_name()),
            first_name: text(&decision.first_name),
            last_name: text(&decision.last_name),
            company: text(&decision.company),
            flag: text(&decision.flag),
            callee_name: text(&decision.callee_name),
        }
    }
}

/// An observation of a call, owned, as the hooks hand it over.
#[derive(Debug, Clone)]
pub enum Observation {
    Decided {
        call_id: String,
        direction: Direction,
        caller: PartyInfo,
        callee: PartyInfo,
        shown: Shown,
    },
    Event {
        call_id: String,
        kind: EventKind,
        party: Option<PartyInfo>,
        detail: String,
    },
    Listed(ListedEntry),
}

impl Observation {
    pub fn decided(setup: &CallSetup, decision: &Decision) -> Observation {
        Observation::Decided {
            call_id: setup.call_id.to_string(),
            direction: setup.direction,
            caller: PartyInfo::of(&setup.caller),
            callee: PartyInfo::of(&setup.callee),
            shown: Shown::of(decision),
        }
    }

    pub fn event(event: &CallEvent) -> Observation {
        Observation::Event {
            call_id: event.call_id.to_string(),
            kind: event.kind,
            party: event.party.as_ref().into_option().map(PartyInfo::of),
            detail: event.detail.to_string(),
        }
    }

    pub fn listed(entry: &CallListItem) -> Observation {
        Observation::Listed(ListedEntry {
            user: entry.user.to_string(),
            call_id: entry.call_id.to_string(),
            json: crate::protocol::call_list_entry_json(entry),
            direction: entry.direction,
        })
    }
}

/// A call-list entry a call made, for its `ended` event.
#[derive(Debug, Clone)]
pub struct ListedEntry {
    pub user: String,
    pub call_id: String,
    pub json: Value,
    pub direction: CallListDirection,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Caller,
    Callee,
}

#[derive(Debug)]
struct Call {
    direction: Direction,
    caller: PartyInfo,
    /// Every hop decided so far, first first (bounded).
    hops: Vec<(PartyInfo, Shown)>,
    involved: BTreeMap<String, Role>,
    told_ringing: BTreeSet<String>,
    entries: BTreeMap<String, Value>,
    seen: Instant,
}

impl Call {
    fn new(direction: Direction, caller: PartyInfo, now: Instant) -> Call {
        let mut involved = BTreeMap::new();
        if let Some(user) = caller.user() {
            involved.insert(user.to_string(), Role::Caller);
        }
        Call {
            direction,
            caller,
            hops: Vec::new(),
            involved,
            told_ringing: BTreeSet::new(),
            entries: BTreeMap::new(),
            seen: now,
        }
    }

    /// The hop that concerns `user`: the one that called them, else the
    /// latest (a group's hop rings its members).
    fn hop_for(&self, user: &str) -> Option<&(PartyInfo, Shown)> {
        self.hops
            .iter()
            .rev()
            .find(|(callee, _)| callee.user() == Some(user))
            .or_else(|| self.hops.last())
    }

    fn involve(&mut self, user: &str, role: Role) {
        self.involved.entry(user.to_string()).or_insert(role);
    }

    /// A `call` event for `user`, with `extra` fields.
    fn message(&self, call_id: &str, event: &str, user: &str, extra: Map<String, Value>) -> String {
        let role = self.involved.get(user).copied().unwrap_or(Role::Callee);
        let hop = self.hop_for(user);
        let callee = hop.map_or_else(PartyInfo::unknown, |(callee, _)| callee.clone());
        let shown = hop.map(|(_, shown)| shown.clone()).unwrap_or_default();
        let mut callee_json = callee.json();
        if let (Some(name), Value::Object(fields)) = (&shown.callee_name, &mut callee_json) {
            if callee.name.is_none() {
                fields.insert("name".into(), json!(name));
            }
        }
        // What to show this user about the other side: for the called
        // user what the modules decided, for the caller whom they call.
        let (display, first_name, last_name, company) = match role {
            Role::Callee => (
                shown
                    .display
                    .clone()
                    .or_else(|| self.caller.name.clone())
                    .or_else(|| Some(self.caller.number.clone()).filter(|n| !n.is_empty())),
                shown.first_name.clone(),
                shown.last_name.clone(),
                shown.company.clone(),
            ),
            Role::Caller => (
                shown
                    .callee_name
                    .clone()
                    .or_else(|| callee.name.clone())
                    .or_else(|| Some(callee.number.clone()).filter(|n| !n.is_empty())),
                None,
                None,
                None,
            ),
        };
        let mut message = json!({
            "type": "call",
            "event": event,
            "call_id": call_id,
            "direction": match self.direction {
                Direction::Internal => "internal",
                Direction::Incoming => "incoming",
                Direction::Outgoing => "outgoing",
            },
            "role": match role { Role::Caller => "caller", Role::Callee => "callee" },
            "caller": self.caller.json(),
            "callee": callee_json,
            "display": display,
            "first_name": first_name,
            "last_name": last_name,
            "company": company,
            "flag": shown.flag,
        });
        if let Value::Object(fields) = &mut message {
            fields.extend(extra);
        }
        message.to_string()
    }
}

/// Messages to deliver: (user, text).
pub type Deliveries = Vec<(String, String)>;

#[derive(Debug, Default)]
pub struct CallTracker {
    calls: HashMap<String, Call>,
    /// Call ids in the order first seen, for forgetting the oldest.
    order: VecDeque<String>,
}

impl CallTracker {
    pub const MAX_CALLS: usize = 10_000;
    pub const MAX_AGE: Duration = Duration::from_secs(12 * 3600);
    /// Hops remembered per call (a forward loop is cut off by the engine;
    /// this only bounds memory).
    const MAX_HOPS: usize = 32;

    pub fn tracked(&self) -> usize {
        self.calls.len()
    }

    fn call(&mut self, call_id: &str, new: impl FnOnce() -> Call, now: Instant) -> &mut Call {
        if !self.calls.contains_key(call_id) {
            self.make_room(now);
            self.order.push_back(call_id.to_string());
            self.calls.insert(call_id.to_string(), new());
        }
        let call = self
            .calls
            .get_mut(call_id)
            .unwrap_or_else(|| unreachable!("inserted above"));
        call.seen = now;
        call
    }

    fn make_room(&mut self, now: Instant) {
        while let Some(oldest) = self.order.front() {
            let stale = match self.calls.get(oldest) {
                None => true,
                Some(call) => {
                    self.calls.len() >= Self::MAX_CALLS
                        || now.saturating_duration_since(call.seen) > Self::MAX_AGE
                }
            };
            if !stale {
                break;
            }
            if let Some(oldest) = self.order.pop_front() {
                self.calls.remove(&oldest);
            }
        }
        if self.order.len() > 2 * Self::MAX_CALLS {
            let calls = &self.calls;
            self.order.retain(|id| calls.contains_key(id));
        }
    }

    pub fn handle(&mut self, observation: Observation, now: Instant) -> Deliveries {
        match observation {
            Observation::Decided {
                call_id,
                direction,
                caller,
                callee,
                shown,
            } => {
                let call = self.call(&call_id, || Call::new(direction, caller.clone(), now), now);
                if call.hops.len() < Self::MAX_HOPS {
                    call.hops.push((callee, shown));
                }
                Vec::new()
            }
            Observation::Listed(entry) => {
                if let Some(call) = self.calls.get_mut(&entry.call_id) {
                    let role = match entry.direction {
                        CallListDirection::Out => Role::Caller,
                        CallListDirection::In => Role::Callee,
                    };
                    call.involve(&entry.user, role);
                    call.entries.insert(entry.user, entry.json);
                }
                Vec::new()
            }
            Observation::Event {
                call_id,
                kind,
                party,
                detail,
            } => self.event(call_id, kind, party, detail, now),
        }
    }

    fn event(
        &mut self,
        call_id: String,
        kind: EventKind,
        party: Option<PartyInfo>,
        detail: String,
        now: Instant,
    ) -> Deliveries {
        let mut deliveries = Vec::new();
        let party_user = party.as_ref().and_then(|p| p.user().map(str::to_string));
        match kind {
            EventKind::RINGING => {
                // A call whose decisions were not seen (evicted, or a host
                // without call details) is still announced.
                let call = self.call(
                    &call_id,
                    || Call::new(Direction::Incoming, PartyInfo::unknown(), now),
                    now,
                );
                if let Some(user) = &party_user {
                    call.involve(user, Role::Callee);
                }
                let callers: Vec<String> = call
                    .involved
                    .iter()
                    .filter(|(_, role)| **role == Role::Caller)
                    .map(|(user, _)| user.clone())
                    .collect();
                for user in party_user.iter().chain(callers.iter()) {
                    if call.told_ringing.insert(user.clone()) {
                        let extra = party
                            .iter()
                            .map(|p| ("ringing".to_string(), p.json()))
                            .collect();
                        deliveries
                            .push((user.clone(), call.message(&call_id, "ringing", user, extra)));
                    }
                }
            }
            EventKind::ANSWERED | EventKind::TRANSFERRED => {
                let Some(call) = self.calls.get_mut(&call_id) else {
                    return deliveries;
                };
                call.seen = now;
                let (event, field) = if kind == EventKind::ANSWERED {
                    ("answered", "answered_by")
                } else {
                    ("transferred", "party")
                };
                if kind == EventKind::TRANSFERRED {
                    if let Some(user) = &party_user {
                        call.involve(user, Role::Callee);
                    }
                }
                for user in call.involved.keys() {
                    let mut extra = Map::new();
                    extra.insert(
                        field.into(),
                        party.as_ref().map_or(Value::Null, PartyInfo::json),
                    );
                    if kind == EventKind::TRANSFERRED {
                        extra.insert("transfer".into(), json!(detail));
                    }
                    deliveries.push((user.clone(), call.message(&call_id, event, user, extra)));
                }
            }
            EventKind::FORWARDED => {
                if let Some(call) = self.calls.get_mut(&call_id) {
                    call.seen = now;
                }
            }
            EventKind::HANGUP | EventKind::REJECTED => {
                let Some(call) = self.calls.remove(&call_id) else {
                    return deliveries;
                };
                for user in call.involved.keys() {
                    let mut extra = Map::new();
                    extra.insert("reason".into(), json!(detail));
                    if let Some(entry) = call.entries.get(user) {
                        extra.insert("entry".into(), entry.clone());
                    }
                    deliveries.push((user.clone(), call.message(&call_id, "ended", user, extra)));
                }
            }
            _ => {}
        }
        deliveries
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use abi_stable::std_types::ROption;
    use callhost_plugin_sdk::testing;

    fn decided(call_id: &str, caller: &Party, callee: &Party, decision: Decision) -> Observation {
        let mut setup = testing::setup(caller.clone(), callee.clone());
        setup.call_id = call_id.into();
        Observation::decided(&setup, &decision)
    }

    fn event(call_id: &str, kind: EventKind, party: Option<&Party>, detail: &str) -> Observation {
        Observation::event(&CallEvent {
            call_id: call_id.into(),
            kind,
            party: party.cloned().into(),
            detail: detail.into(),
        })
    }

    fn parse(deliveries: &Deliveries) -> Vec<(String, Value)> {
        deliveries
            .iter()
            .map(|(user, text)| (user.clone(), serde_json::from_str(text).unwrap()))
            .collect()
    }

    #[test]
    fn an_incoming_call_rings_answers_and_ends_with_the_entry() {
        let mut tracker = CallTracker::default();
        let now = Instant::now();
        let caller = testing::external_de("0301234567");
        let anna = testing::user("anna", "Anna Albers", "201");
        let decision = Decision {
            first_name: ROption::RSome("Max".into()),
            last_name: ROption::RSome("Kunde".into()),
            company: ROption::RSome("Kunde GmbH".into()),
            flag: ROption::RSome("spam?".into()),
            ..Decision::default()
        };
        assert!(tracker
            .handle(decided("c1", &caller, &anna, decision), now)
            .is_empty());
        let ringing = parse(&tracker.handle(
            event("c1", EventKind::RINGING, Some(&anna), "Max Kunde"),
            now,
        ));
        assert_eq!(ringing.len(), 1);
        let (user, message) = &ringing[0];
        assert_eq!(user, "anna");
        assert_eq!(message["type"], "call");
        assert_eq!(message["event"], "ringing");
        assert_eq!(message["direction"], "incoming");
        assert_eq!(message["role"], "callee");
        assert_eq!(message["caller"]["number"], "0301234567");
        assert_eq!(message["callee"]["user"], "anna");
        assert_eq!(message["display"], "Max Kunde");
        assert_eq!(message["company"], "Kunde GmbH");
        assert_eq!(message["flag"], "spam?");
        // A second phone of anna's rings: she is told once.
        assert!(tracker
            .handle(event("c1", EventKind::RINGING, Some(&anna), ""), now)
            .is_empty());
        let answered =
            parse(&tracker.handle(event("c1", EventKind::ANSWERED, Some(&anna), ""), now));
        assert_eq!(answered[0].1["event"], "answered");
        assert_eq!(answered[0].1["answered_by"]["user"], "anna");
        let entry = CallListItem {
            user: "anna".into(),
            time: "2026-12-06T09:30:00Z".into(),
            direction: CallListDirection::In,
            number: "0301234567".into(),
            name: ROption::RSome("Max Kunde".into()),
            call_id: "c1".into(),
        };
        assert!(tracker.handle(Observation::listed(&entry), now).is_empty());
        let ended = parse(&tracker.handle(event("c1", EventKind::HANGUP, None, "caller"), now));
        assert_eq!(ended[0].1["event"], "ended");
        assert_eq!(ended[0].1["reason"], "caller");
        assert_eq!(ended[0].1["entry"]["name"], "Max Kunde");
        assert_eq!(ended[0].1["entry"]["direction"], "in");
        assert_eq!(tracker.tracked(), 0, "forgotten at hangup");
    }

    #[test]
    fn an_internal_call_tells_caller_and_callee_each_their_side() {
        let mut tracker = CallTracker::default();
        let now = Instant::now();
        let bert = testing::user("bert", "Bert Berg", "202");
        let anna = testing::user("anna", "Anna Albers", "201");
        tracker.handle(decided("c2", &bert, &anna, Decision::default()), now);
        let ringing = parse(&tracker.handle(event("c2", EventKind::RINGING, Some(&anna), ""), now));
        let users: Vec<&str> = ringing.iter().map(|(u, _)| u.as_str()).collect();
        assert_eq!(users, ["anna", "bert"]);
        let for_anna = &ringing[0].1;
        assert_eq!(
            (for_anna["role"].as_str(), for_anna["display"].as_str()),
            (Some("callee"), Some("Bert Berg"))
        );
        let for_bert = &ringing[1].1;
        assert_eq!(
            (for_bert["role"].as_str(), for_bert["display"].as_str()),
            (Some("caller"), Some("Anna Albers"))
        );
        let ended = parse(&tracker.handle(event("c2", EventKind::REJECTED, None, "busy"), now));
        assert_eq!(ended.len(), 2);
    }

    #[test]
    fn a_group_hop_rings_its_members_with_the_groups_decision() {
        let mut tracker = CallTracker::default();
        let now = Instant::now();
        let caller = testing::external_de("0401111");
        let mut sales = testing::party(PartyKind::Group, "600");
        sales.id = ROption::RSome("sales".into());
        let decision = Decision {
            display: ROption::RSome("Sales: 0401111".into()),
            ..Decision::default()
        };
        tracker.handle(decided("c3", &caller, &sales, decision), now);
        let carl = testing::user("carl", "Carl", "203");
        let dora = testing::user("dora", "Dora", "204");
        let first = parse(&tracker.handle(event("c3", EventKind::RINGING, Some(&carl), ""), now));
        let second = parse(&tracker.handle(event("c3", EventKind::RINGING, Some(&dora), ""), now));
        assert_eq!(first[0].1["display"], "Sales: 0401111");
        assert_eq!(second[0].0, "dora");
        let ended = parse(&tracker.handle(event("c3", EventKind::HANGUP, None, "caller"), now));
        assert_eq!(ended.len(), 2, "both members hear of the end");
    }

    #[test]
    fn a_transfer_joins_the_target() {
        let mut tracker = CallTracker::default();
        let now = Instant::now();
        let caller = testing::external_de("0401111");
        let anna = testing::user("anna", "Anna", "201");
        let bert = testing::user("bert", "Bert", "202");
        tracker.handle(decided("c4", &caller, &anna, Decision::default()), now);
        tracker.handle(event("c4", EventKind::RINGING, Some(&anna), ""), now);
        let transferred = parse(&tracker.handle(
            event("c4", EventKind::TRANSFERRED, Some(&bert), "blind"),
            now,
        ));
        let users: Vec<&str> = transferred.iter().map(|(u, _)| u.as_str()).collect();
        assert_eq!(users, ["anna", "bert"]);
        assert_eq!(transferred[0].1["transfer"], "blind");
        assert_eq!(transferred[0].1["party"]["user"], "bert");
    }

    #[test]
    fn events_of_unknown_calls_are_harmless() {
        let mut tracker = CallTracker::default();
        let now = Instant::now();
        assert!(tracker
            .handle(event("x", EventKind::HANGUP, None, ""), now)
            .is_empty());
        assert!(tracker
            .handle(event("x", EventKind::ANSWERED, None, ""), now)
            .is_empty());
        assert!(tracker
            .handle(event("x", EventKind::DTMF, None, "5"), now)
            .is_empty());
        let anna = testing::user("anna", "Anna", "201");
        let ringing = tracker.handle(event("y", EventKind::RINGING, Some(&anna), ""), now);
        assert_eq!(ringing.len(), 1, "announced without its decisions");
    }

    #[test]
    fn the_tracker_stays_bounded_and_forgets_old_calls() {
        let mut tracker = CallTracker::default();
        let start = Instant::now();
        let caller = testing::external_de("0401111");
        let anna = testing::user("anna", "Anna", "201");
        for n in 0..(CallTracker::MAX_CALLS + 500) {
            tracker.handle(
                decided(&format!("c{n}"), &caller, &anna, Decision::default()),
                start,
            );
        }
        assert!(tracker.tracked() <= CallTracker::MAX_CALLS);
        assert!(tracker.order.len() <= 2 * CallTracker::MAX_CALLS + 1);
        let later = start + CallTracker::MAX_AGE + Duration::from_secs(1);
        tracker.handle(decided("new", &caller, &anna, Decision::default()), later);
        assert_eq!(
            tracker.tracked(),
            1,
            "calls that never hung up are forgotten"
        );
    }
}
