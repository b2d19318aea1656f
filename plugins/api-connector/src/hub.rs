//! The signed-in clients and what they are sent: their own calls and
//! presence, and the presence of the users they subscribed to.
//!
//! The hooks only push an [`Observation`] or a presence into the hub's
//! channel (bounded: a flood of events drops events, never blocks a call);
//! one task applies them here. Every client has an [`Outbox`]: a bounded
//! queue to its writer. A client whose queue is full does not read what
//! it is sent, and is disconnected as too slow, so a client can never
//! make the connector's memory grow.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use callhost_plugin_sdk::UserPresence;
use tokio::sync::{mpsc, watch};
use tokio_tungstenite::tungstenite::Utf8Bytes;

use crate::calls::{CallTracker, Observation};
use crate::protocol::{self, Ending, MAX_SUBSCRIPTIONS};
use crate::seats::ConnectionId;

/// Messages queued for one client at most.
pub const OUTGOING_QUEUE: usize = 256;
/// Bytes queued for one client at most (a message is taken while less is
/// queued). The count alone would let a client that reads slowly keep
/// 256 of the largest answers (call lists, subscriptions: a few hundred
/// kilobytes each) waiting, tens of megabytes per connection.
pub const OUTGOING_BYTES: usize = 1 << 20;

/// How a connection is to end, and what it is told last.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Farewell {
    pub ending: Ending,
    /// A last message before the close frame (`revoked`, an `error`).
    pub last_words: Option<String>,
}

impl Farewell {
    pub fn new(ending: Ending) -> Farewell {
        Farewell {
            ending,
            last_words: None,
        }
    }

    pub fn saying(ending: Ending, last_words: String) -> Farewell {
        Farewell {
            ending,
            last_words: Some(last_words),
        }
    }
}

/// The way to one client's writer, and to its end.
#[derive(Debug, Clone)]
pub struct Outbox {
    queue: mpsc::Sender<Utf8Bytes>,
    /// Bytes of the messages in `queue` (added before a message goes in,
    /// taken off by the writer when it takes the message out).
    queued_bytes: Arc<AtomicUsize>,
    end: watch::Sender<Option<Farewell>>,
}

impl Outbox {
    pub fn new(queue: mpsc::Sender<Utf8Bytes>, end: watch::Sender<Option<Farewell>>) -> Outbox {
        Outbox {
            queue,
            queued_bytes: Arc::new(AtomicUsize::new(0)),
            end,
        }
    }

    /// Queues `text`; a client whose queue is full (in messages or bytes)
    /// is ended as too slow.
    pub fn send(&self, text: impl Into<Utf8Bytes>) {
        let text = text.into();
        let size = text.len();
        let before = self.queued_bytes.fetch_add(size, Ordering::SeqCst);
        if before >= OUTGOING_BYTES {
            self.queued_bytes.fetch_sub(size, Ordering::SeqCst);
            self.finish(Farewell::new(Ending::TooSlow));
            return;
        }
        match self.queue.try_send(text) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.queued_bytes.fetch_sub(size, Ordering::SeqCst);
                self.finish(Farewell::new(Ending::TooSlow));
            }
            // The connection is ending already.
            Err(mpsc::error::TrySendError::Closed(_)) => {
                self.queued_bytes.fetch_sub(size, Ordering::SeqCst);
            }
        }
    }

    /// The writer took `text` out of the queue.
    pub fn taken(&self, text: &Utf8Bytes) {
        self.queued_bytes.fetch_sub(text.len(), Ordering::SeqCst);
    }

    /// Bytes waiting in the queue.
    pub fn queued_bytes(&self) -> usize {
        self.queued_bytes.load(Ordering::SeqCst)
    }

    /// Ends the connection with `farewell`, unless it is ending already.
    pub fn finish(&self, farewell: Farewell) {
        self.end.send_if_modified(|current| {
            if current.is_some() {
                return false;
            }
            *current = Some(farewell);
            true
        });
    }

    /// Messages waiting in the queue.
    pub fn queued(&self) -> usize {
        OUTGOING_QUEUE - self.queue.capacity()
    }
}

/// What the hooks hand the hub.
#[derive(Debug, Clone)]
pub enum HubEvent {
    Call(Observation),
    Presence(UserPresence),
}

#[derive(Debug)]
struct Session {
    user: String,
    outbox: Outbox,
    watching: BTreeSet<String>,
}

#[derive(Debug, Default)]
pub struct Hub {
    sessions: HashMap<ConnectionId, Session>,
    by_user: HashMap<String, BTreeSet<ConnectionId>>,
    watchers: HashMap<String, BTreeSet<ConnectionId>>,
    calls: CallTracker,
    closed: bool,
}

impl Hub {
    /// Adds a signed-in client; false once the hub is closed (the
    /// connector stops), and the client is to go.
    pub fn register(&mut self, connection: ConnectionId, user: &str, outbox: Outbox) -> bool {
        if self.closed {
            return false;
        }
        self.sessions.insert(
            connection,
            Session {
                user: user.to_string(),
                outbox,
                watching: BTreeSet::new(),
            },
        );
        self.by_user
            .entry(user.to_string())
            .or_default()
            .insert(connection);
        true
    }

    pub fn unregister(&mut self, connection: ConnectionId) {
        let Some(session) = self.sessions.remove(&connection) else {
            return;
        };
        remove(&mut self.by_user, &session.user, connection);
        for watched in &session.watching {
            remove(&mut self.watchers, watched, connection);
        }
    }

    /// Adds `users` to what `connection` watches; refused (nothing added)
    /// past [`MAX_SUBSCRIPTIONS`].
    pub fn subscribe(&mut self, connection: ConnectionId, users: &[String]) -> Result<(), String> {
        let Some(session) = self.sessions.get_mut(&connection) else {
            return Err("signed out".into());
        };
        let new = users
            .iter()
            .filter(|u| !session.watching.contains(*u))
            .count();
        if session.watching.len() + new > MAX_SUBSCRIPTIONS {
            return Err(format!(
                "a client watches at most {MAX_SUBSCRIPTIONS} users; it watches {} already",
                session.watching.len()
            ));
        }
        for user in users {
            if session.watching.insert(user.clone()) {
                self.watchers
                    .entry(user.clone())
                    .or_default()
                    .insert(connection);
            }
        }
        Ok(())
    }

    /// Removes `users` from what `connection` watches; what it still watches.
    pub fn unsubscribe(&mut self, connection: ConnectionId, users: &[String]) -> Vec<String> {
        let Some(session) = self.sessions.get_mut(&connection) else {
            return Vec::new();
        };
        for user in users {
            if session.watching.remove(user) {
                remove(&mut self.watchers, user, connection);
            }
        }
        session.watching.iter().cloned().collect()
    }

    /// Ends the connections of `user` with `farewell`; how many.
    pub fn finish_user(&mut self, user: &str, farewell: &Farewell) -> usize {
        let connections: Vec<ConnectionId> = self
            .by_user
            .get(user)
            .map(|c| c.iter().copied().collect())
            .unwrap_or_default();
        for connection in &connections {
            self.finish(*connection, farewell.clone());
        }
        connections.len()
    }

    pub fn finish(&self, connection: ConnectionId, farewell: Farewell) {
        if let Some(session) = self.sessions.get(&connection) {
            session.outbox.finish(farewell);
        }
    }

    /// The connector stops: every client is told to go, and no new one
    /// is taken.
    pub fn close(&mut self, farewell: Farewell) {
        self.closed = true;
        for session in self.sessions.values() {
            session.outbox.finish(farewell.clone());
        }
    }

    pub fn clients(&self) -> usize {
        self.sessions.len()
    }

    /// The longest queue of any client (for the tests and the `seats`
    /// action's statistics).
    pub fn longest_queue(&self) -> usize {
        self.sessions
            .values()
            .map(|s| s.outbox.queued())
            .max()
            .unwrap_or(0)
    }

    pub fn tracked_calls(&self) -> usize {
        self.calls.tracked()
    }

    pub fn handle(&mut self, event: HubEvent, now: Instant) {
        match event {
            HubEvent::Call(observation) => {
                for (user, text) in self.calls.handle(observation, now) {
                    let Some(connections) = self.by_user.get(&user) else {
                        continue;
                    };
                    let text = Utf8Bytes::from(text);
                    for connection in connections {
                        if let Some(session) = self.sessions.get(connection) {
                            session.outbox.send(text.clone());
                        }
                    }
                }
            }
            HubEvent::Presence(presence) => self.presence(&presence),
        }
    }

    /// A presence change goes to the user's own clients and to those that
    /// watch the user, once each.
    fn presence(&self, presence: &UserPresence) {
        let user = presence.user.as_str();
        let mut targets: BTreeSet<ConnectionId> = BTreeSet::new();
        for index in [&self.by_user, &self.watchers] {
            if let Some(connections) = index.get(user) {
                targets.extend(connections);
            }
        }
        if targets.is_empty() {
            return;
        }
        let text = Utf8Bytes::from(protocol::presence_event(&protocol::presence_json(presence)));
        for connection in targets {
            if let Some(session) = self.sessions.get(&connection) {
                session.outbox.send(text.clone());
            }
        }
    }
}

fn remove(
    index: &mut HashMap<String, BTreeSet<ConnectionId>>,
    key: &str,
    connection: ConnectionId,
) {
    if let Some(connections) = index.get_mut(key) {
        connections.remove(&connection);
        if connections.is_empty() {
            index.remove(key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use callhost_plugin_sdk::testing::TestHost;

    fn client() -> (
        Outbox,
        mpsc::Receiver<Utf8Bytes>,
        watch::Receiver<Option<Farewell>>,
    ) {
        let (queue, receiver) = mpsc::channel(OUTGOING_QUEUE);
        let (end, ended) = watch::channel(None);
        (Outbox::new(queue, end), receiver, ended)
    }

    fn presence(user: &str) -> UserPresence {
        let host = TestHost::new();
        host.add_user(user, user, "200", None);
        host.presence(user).unwrap()
    }

    #[test]
    fn presence_goes_to_the_user_and_to_watchers_once_each() {
        let mut hub = Hub::default();
        let (anna, mut anna_queue, _) = client();
        let (bert, mut bert_queue, _) = client();
        assert!(hub.register(1, "anna", anna));
        assert!(hub.register(2, "bert", bert));
        hub.subscribe(2, &["anna".into()]).unwrap();
        hub.subscribe(1, &["anna".into()]).unwrap();
        hub.handle(HubEvent::Presence(presence("anna")), Instant::now());
        assert!(anna_queue
            .try_recv()
            .unwrap()
            .as_str()
            .contains("\"presence\""));
        assert!(
            anna_queue.try_recv().is_err(),
            "once, though she watches herself"
        );
        assert!(bert_queue.try_recv().is_ok());
        assert_eq!(hub.unsubscribe(2, &["anna".into()]), Vec::<String>::new());
        hub.handle(HubEvent::Presence(presence("anna")), Instant::now());
        assert!(bert_queue.try_recv().is_err());
        hub.unregister(1);
        hub.unregister(2);
        assert!(hub.watchers.is_empty() && hub.by_user.is_empty());
    }

    #[test]
    fn subscriptions_are_capped() {
        let mut hub = Hub::default();
        let (anna, _queue, _) = client();
        hub.register(1, "anna", anna);
        let first: Vec<String> = (0..150).map(|n| format!("u{n}")).collect();
        hub.subscribe(1, &first).unwrap();
        let more: Vec<String> = (100..251).map(|n| format!("u{n}")).collect();
        assert!(hub.subscribe(1, &more).is_err(), "151 → 251 is over 200");
        let some: Vec<String> = (100..200).map(|n| format!("u{n}")).collect();
        hub.subscribe(1, &some).unwrap();
        assert_eq!(hub.sessions[&1].watching.len(), 200);
    }

    #[test]
    fn a_client_that_does_not_read_is_ended_as_too_slow() {
        let mut hub = Hub::default();
        let (anna, queue, ended) = client();
        hub.register(1, "anna", anna);
        for _ in 0..OUTGOING_QUEUE {
            hub.handle(HubEvent::Presence(presence("anna")), Instant::now());
        }
        assert_eq!(*ended.borrow(), None);
        assert_eq!(hub.longest_queue(), OUTGOING_QUEUE);
        hub.handle(HubEvent::Presence(presence("anna")), Instant::now());
        assert_eq!(*ended.borrow(), Some(Farewell::new(Ending::TooSlow)));
        drop(queue);
    }

    #[test]
    fn a_client_that_lets_a_megabyte_wait_is_ended_as_too_slow() {
        // A few large answers (call lists, subscriptions) it does not read:
        // far fewer than the queue's 256 messages, but a megabyte.
        let (anna, mut queue, ended) = client();
        let large = "x".repeat(300 * 1024);
        for _ in 0..4 {
            anna.send(large.clone());
        }
        assert_eq!(
            *ended.borrow(),
            None,
            "1.2 MB was let in: under 1 MiB before the last"
        );
        anna.send(large.clone());
        assert_eq!(*ended.borrow(), Some(Farewell::new(Ending::TooSlow)));
        assert_eq!(
            anna.queued_bytes(),
            4 * large.len(),
            "the refused one is not counted"
        );
        // What the writer takes out is no longer counted.
        while let Ok(text) = queue.try_recv() {
            anna.taken(&text);
        }
        assert_eq!(anna.queued_bytes(), 0);
    }

    #[test]
    fn the_first_farewell_stands_and_a_closed_hub_takes_nobody() {
        let mut hub = Hub::default();
        let (anna, _queue, ended) = client();
        hub.register(1, "anna", anna);
        assert_eq!(hub.finish_user("anna", &Farewell::new(Ending::Revoked)), 1);
        hub.close(Farewell::new(Ending::Stopping));
        assert_eq!(
            ended.borrow().as_ref().map(|f| f.ending.clone()),
            Some(Ending::Revoked)
        );
        let (bert, _q, _) = client();
        assert!(!hub.register(2, "bert", bert));
    }
}
