//! Seats (TC1, TC2): a pool of floating seats that signed-in users take
//! and give back, and fixed seats of named users that never come from the
//! pool.
//!
//! [`SeatTable`] is the whole accounting as plain state: every operation
//! takes the time and returns the [`SeatChange`]s it made, which the
//! server writes to the instance log and persists ([`SeatsFile`]). A seat
//! is in one of two states ([`SeatState`]):
//!
//! ```text
//!            take ──▶ InUse ──(last client signs out / revoke)──▶ freed
//!                     │  ▲
//!   last client drops │  │ the user signs in again (reconnect)
//!                     ▼  │
//!                     Held ──(grace over / revoke)──▶ freed
//!                      ▲
//!    restored after a restart or upgrade (from the seats file)
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use crate::time::rfc3339;

/// One client connection, numbered by the server.
pub type ConnectionId = u64;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SeatKind {
    /// The user's own seat (`fixed_users`), not from the pool.
    Fixed,
    /// One of the pool's `seats`.
    Floating,
}

impl fmt::Display for SeatKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SeatKind::Fixed => "fixed",
            SeatKind::Floating => "floating",
        })
    }
}

/// A signed-in client as the administrator sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientInfo {
    /// What the client calls itself (`hello.client.name`).
    pub name: String,
    pub version: String,
    /// Its source address and port.
    pub address: String,
    #[serde(with = "crate::time::text")]
    pub since: SystemTime,
}

impl fmt::Display for ClientInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {} from {}", self.name, self.version, self.address)
    }
}

/// The configuration's seat rules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeatRules {
    /// Floating seats in the pool.
    pub pool: usize,
    /// Users with a seat of their own.
    pub fixed_users: BTreeSet<String>,
    /// A user's further clients share the user's seat (otherwise each
    /// client takes a seat of its own). Fixed seats are always shared.
    pub one_seat_per_user: bool,
    /// How long a dropped connection's seat is kept for its reconnect.
    pub grace: Duration,
}

impl SeatRules {
    fn kind_of(&self, user: &str) -> SeatKind {
        if self.fixed_users.contains(user) {
            SeatKind::Fixed
        } else {
            SeatKind::Floating
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SeatState {
    /// Signed-in clients use it.
    InUse {
        clients: BTreeMap<ConnectionId, ClientInfo>,
    },
    /// Nobody uses it, but it is kept for its user until `until`: the
    /// user's connection dropped, or the connector restarted.
    Held {
        until: SystemTime,
        why: HoldReason,
        /// The clients that used it last (for the `seats` action).
        last_clients: Vec<ClientInfo>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HoldReason {
    /// The last client's connection dropped without a sign-out.
    Disconnected,
    /// The connector restarted (a module upgrade, a host restart); the
    /// seat came back from the seats file.
    Restarted,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seat {
    pub user: String,
    pub kind: SeatKind,
    pub since: SystemTime,
    pub state: SeatState,
}

impl Seat {
    pub fn clients(&self) -> Vec<&ClientInfo> {
        match &self.state {
            SeatState::InUse { clients } => clients.values().collect(),
            SeatState::Held { last_clients, .. } => last_clients.iter().collect(),
        }
    }

    fn has_connection(&self, connection: ConnectionId) -> bool {
        matches!(&self.state, SeatState::InUse { clients } if clients.contains_key(&connection))
    }
}

/// How a client leaves its seat.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Leaving {
    /// `sign_out`: the seat is free at once.
    SignedOut,
    /// The connection ended otherwise: the seat is held for the grace period.
    Disconnected,
}

/// Why a seat was given back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FreedBecause {
    SignedOut,
    /// Dropped with no grace period configured.
    Disconnected,
    /// Held, and the user did not come back in time.
    GraceOver,
    Revoked {
        reason: String,
    },
}

impl fmt::Display for FreedBecause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FreedBecause::SignedOut => f.write_str("signed out"),
            FreedBecause::Disconnected => f.write_str("connection dropped (no grace period)"),
            FreedBecause::GraceOver => {
                f.write_str("the user did not come back within the grace period")
            }
            FreedBecause::Revoked { reason } if reason.is_empty() => {
                f.write_str("revoked by an administrator")
            }
            FreedBecause::Revoked { reason } => {
                write!(f, "revoked by an administrator: {reason}")
            }
        }
    }
}

/// One change to the seats, for the instance log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SeatChange {
    Taken {
        user: String,
        kind: SeatKind,
        client: ClientInfo,
        /// The user's seat was in use already: this client shares it.
        shared: bool,
        /// The seat was held for this user (a reconnect).
        reclaimed: bool,
        free: usize,
        pool: usize,
    },
    /// A client of a shared seat left; others still use it.
    ClientLeft {
        user: String,
        client: ClientInfo,
        remaining: usize,
    },
    Held {
        user: String,
        kind: SeatKind,
        until: SystemTime,
        why: HoldReason,
    },
    Freed {
        user: String,
        kind: SeatKind,
        because: FreedBecause,
        free: usize,
        pool: usize,
    },
    Refused {
        user: String,
        pool: usize,
        /// Distinct users holding the pool's seats.
        holders: usize,
    },
    /// A seat changed kind with the configuration (`fixed_users`).
    Reclassified {
        user: String,
        from: SeatKind,
        to: SeatKind,
    },
}

impl fmt::Display for SeatChange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SeatChange::Taken {
                user,
                kind,
                client,
                shared,
                reclaimed,
                free,
                pool,
            } => {
                let how = match (shared, reclaimed) {
                    (true, _) => "shared by another client",
                    (false, true) => "taken back after a reconnect",
                    (false, false) => "taken",
                };
                write!(
                    f,
                    "seat {how}: {user} ({kind}, {client}); {free} of {pool} floating seats free"
                )
            }
            SeatChange::ClientLeft {
                user,
                client,
                remaining,
            } => write!(
                f,
                "client left: {user} ({client}); the seat stays with {remaining} other client(s)"
            ),
            SeatChange::Held {
                user,
                kind,
                until,
                why,
            } => {
                let why = match why {
                    HoldReason::Disconnected => "connection dropped",
                    HoldReason::Restarted => "restored after a restart",
                };
                write!(
                    f,
                    "seat held for {user} ({kind}, {why}) until {} for a reconnect",
                    rfc3339(*until)
                )
            }
            SeatChange::Freed {
                user,
                kind,
                because,
                free,
                pool,
            } => write!(
                f,
                "seat freed: {user} ({kind}): {because}; {free} of {pool} floating seats free"
            ),
            SeatChange::Refused {
                user,
                pool,
                holders,
            } => write!(
                f,
                "seat refused: {user}: all {pool} floating seats are taken (by {holders} user(s))"
            ),
            SeatChange::Reclassified { user, from, to } => {
                write!(
                    f,
                    "seat of {user} is now {to} (was {from}): fixed_users changed"
                )
            }
        }
    }
}

/// What a client got: its seat's kind and since when the user holds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Grant {
    pub kind: SeatKind,
    pub since: SystemTime,
}

/// A sign-in that found no seat.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NoSeat {
    pub user: String,
    pub pool: usize,
    pub holders: usize,
}

impl NoSeat {
    /// The refusal as a seat change, for the log.
    pub fn change(&self) -> SeatChange {
        SeatChange::Refused {
            user: self.user.clone(),
            pool: self.pool,
            holders: self.holders,
        }
    }
}

/// The seats of one connector.
#[derive(Debug, Clone)]
pub struct SeatTable {
    rules: SeatRules,
    seats: Vec<Seat>,
}

impl SeatTable {
    pub fn new(rules: SeatRules) -> SeatTable {
        SeatTable {
            rules,
            seats: Vec::new(),
        }
    }

    pub fn rules(&self) -> &SeatRules {
        &self.rules
    }

    pub fn seats(&self) -> &[Seat] {
        &self.seats
    }

    fn floating_taken(&self) -> usize {
        self.seats
            .iter()
            .filter(|s| s.kind == SeatKind::Floating)
            .count()
    }

    /// Floating seats nobody holds (none while the pool is over-full after
    /// the configuration shrank it).
    pub fn free(&self) -> usize {
        self.rules.pool.saturating_sub(self.floating_taken())
    }

    fn floating_holders(&self) -> usize {
        self.seats
            .iter()
            .filter(|s| s.kind == SeatKind::Floating)
            .map(|s| s.user.as_str())
            .collect::<BTreeSet<_>>()
            .len()
    }

    /// New rules (a reconfiguration): seats stay with their holders (a
    /// smaller pool refuses new users until enough are freed), and seats
    /// follow `fixed_users` into their new kind.
    pub fn reconfigure(&mut self, rules: SeatRules) -> Vec<SeatChange> {
        self.rules = rules;
        let mut changes = Vec::new();
        for seat in &mut self.seats {
            let kind = self.rules.kind_of(&seat.user);
            if kind != seat.kind {
                changes.push(SeatChange::Reclassified {
                    user: seat.user.clone(),
                    from: seat.kind,
                    to: kind,
                });
                seat.kind = kind;
            }
        }
        changes
    }

    /// Gives `connection` of `user` a seat: the user's seat in use (when
    /// shared), the one held for the user, or a new one (fixed, or from the
    /// pool while it has one free).
    pub fn take(
        &mut self,
        user: &str,
        connection: ConnectionId,
        client: ClientInfo,
        now: SystemTime,
    ) -> Result<(Grant, SeatChange), NoSeat> {
        let kind = self.rules.kind_of(user);
        let shares = kind == SeatKind::Fixed || self.rules.one_seat_per_user;
        let in_use = shares
            .then(|| {
                self.seats
                    .iter()
                    .position(|s| s.user == user && matches!(s.state, SeatState::InUse { .. }))
            })
            .flatten();
        let held = || {
            self.seats
                .iter()
                .position(|s| s.user == user && matches!(s.state, SeatState::Held { .. }))
        };
        let (index, shared, reclaimed) = match (in_use, held()) {
            (Some(index), _) => (index, true, false),
            (None, Some(index)) => (index, false, true),
            (None, None) => {
                if kind == SeatKind::Floating && self.floating_taken() >= self.rules.pool {
                    return Err(NoSeat {
                        user: user.to_string(),
                        pool: self.rules.pool,
                        holders: self.floating_holders(),
                    });
                }
                self.seats.push(Seat {
                    user: user.to_string(),
                    kind,
                    since: now,
                    state: SeatState::InUse {
                        clients: BTreeMap::new(),
                    },
                });
                (self.seats.len() - 1, false, false)
            }
        };
        let seat = &mut self.seats[index];
        match &mut seat.state {
            SeatState::InUse { clients } => {
                clients.insert(connection, client.clone());
            }
            SeatState::Held { .. } => {
                seat.state = SeatState::InUse {
                    clients: BTreeMap::from([(connection, client.clone())]),
                };
            }
        }
        let grant = Grant {
            kind: seat.kind,
            since: seat.since,
        };
        let change = SeatChange::Taken {
            user: user.to_string(),
            kind: seat.kind,
            client,
            shared,
            reclaimed,
            free: self.free(),
            pool: self.rules.pool,
        };
        Ok((grant, change))
    }

    /// `connection` leaves its seat. `None` when it held none (revoked
    /// already, say).
    pub fn leave(
        &mut self,
        connection: ConnectionId,
        how: Leaving,
        now: SystemTime,
    ) -> Option<SeatChange> {
        let index = self
            .seats
            .iter()
            .position(|s| s.has_connection(connection))?;
        let seat = &mut self.seats[index];
        let SeatState::InUse { clients } = &mut seat.state else {
            return None;
        };
        let client = clients.remove(&connection)?;
        if !clients.is_empty() {
            return Some(SeatChange::ClientLeft {
                user: seat.user.clone(),
                client,
                remaining: clients.len(),
            });
        }
        match how {
            Leaving::Disconnected if !self.rules.grace.is_zero() => {
                let until = now + self.rules.grace;
                seat.state = SeatState::Held {
                    until,
                    why: HoldReason::Disconnected,
                    last_clients: vec![client],
                };
                Some(SeatChange::Held {
                    user: seat.user.clone(),
                    kind: seat.kind,
                    until,
                    why: HoldReason::Disconnected,
                })
            }
            how => {
                let seat = self.seats.remove(index);
                let because = match how {
                    Leaving::SignedOut => FreedBecause::SignedOut,
                    Leaving::Disconnected => FreedBecause::Disconnected,
                };
                Some(self.freed(seat, because))
            }
        }
    }

    fn freed(&self, seat: Seat, because: FreedBecause) -> SeatChange {
        SeatChange::Freed {
            user: seat.user,
            kind: seat.kind,
            because,
            free: self.free(),
            pool: self.rules.pool,
        }
    }

    /// Takes every seat of `user` away: the connections to close, and the
    /// changes (none when the user held no seat).
    pub fn revoke(&mut self, user: &str, reason: &str) -> (Vec<ConnectionId>, Vec<SeatChange>) {
        let mut connections = Vec::new();
        let mut revoked = Vec::new();
        let mut index = 0;
        while index < self.seats.len() {
            if self.seats[index].user == user {
                let seat = self.seats.remove(index);
                if let SeatState::InUse { clients } = &seat.state {
                    connections.extend(clients.keys().copied());
                }
                revoked.push(seat);
            } else {
                index += 1;
            }
        }
        let changes = revoked
            .into_iter()
            .map(|seat| {
                self.freed(
                    seat,
                    FreedBecause::Revoked {
                        reason: reason.to_string(),
                    },
                )
            })
            .collect();
        (connections, changes)
    }

    /// Frees the held seats whose grace period is over.
    pub fn expire(&mut self, now: SystemTime) -> Vec<SeatChange> {
        let mut changes = Vec::new();
        let mut index = 0;
        while index < self.seats.len() {
            let over =
                matches!(self.seats[index].state, SeatState::Held { until, .. } if until <= now);
            if over {
                let seat = self.seats.remove(index);
                changes.push(self.freed(seat, FreedBecause::GraceOver));
            } else {
                index += 1;
            }
        }
        changes
    }

    /// Whether any seat is held (the expiry needs looking at).
    pub fn any_held(&self) -> bool {
        self.seats
            .iter()
            .any(|s| matches!(s.state, SeatState::Held { .. }))
    }

    /// The connector stops: every seat in use is held for the grace period
    /// (its clients will reconnect to the next connector, which restores
    /// them from the seats file).
    pub fn hold_all(&mut self, now: SystemTime) {
        let until = now + self.rules.grace;
        for seat in &mut self.seats {
            if let SeatState::InUse { clients } = &seat.state {
                seat.state = SeatState::Held {
                    until,
                    why: HoldReason::Restarted,
                    last_clients: clients.values().cloned().collect(),
                };
            }
        }
    }

    /// The seats as the seats file keeps them.
    pub fn snapshot(&self, now: SystemTime) -> SeatsFile {
        SeatsFile {
            format: SeatsFile::FORMAT.to_string(),
            version: SeatsFile::VERSION,
            written: now,
            seats: self
                .seats
                .iter()
                .map(|seat| {
                    let (state, held_until) = match &seat.state {
                        SeatState::InUse { .. } => (RecordedState::InUse, None),
                        SeatState::Held { until, .. } => (RecordedState::Held, Some(*until)),
                    };
                    SeatRecord {
                        user: seat.user.clone(),
                        kind: seat.kind,
                        since: seat.since,
                        state,
                        held_until,
                        clients: seat.clients().into_iter().cloned().collect(),
                    }
                })
                .collect(),
        }
    }

    /// Gives the seats of a previous connector (a module upgrade, a host
    /// restart) back to their users first: each is held for the grace
    /// period (a held one no longer than it was), while the pool allows,
    /// oldest holder first. Seats in use when the file was written count
    /// only if it is recent (`stale_after`: the writer refreshes it while
    /// seats are in use), so a crash long ago holds nothing.
    pub fn restore(
        &mut self,
        file: &SeatsFile,
        now: SystemTime,
        stale_after: Duration,
    ) -> Vec<SeatChange> {
        let mut records: Vec<&SeatRecord> = file.seats.iter().collect();
        records.sort_by_key(|r| r.since);
        let mut changes = Vec::new();
        for record in records {
            let until = match record.state {
                RecordedState::InUse => {
                    let fresh = now
                        .duration_since(file.written)
                        .map_or(true, |age| age <= self.rules.grace + stale_after);
                    fresh.then(|| now + self.rules.grace)
                }
                RecordedState::Held => record
                    .held_until
                    .map(|until| until.min(now + self.rules.grace)),
            };
            let Some(until) = until.filter(|until| *until > now) else {
                continue;
            };
            let kind = self.rules.kind_of(&record.user);
            let shares = kind == SeatKind::Fixed || self.rules.one_seat_per_user;
            if shares && self.seats.iter().any(|s| s.user == record.user) {
                continue;
            }
            if kind == SeatKind::Floating && self.floating_taken() >= self.rules.pool {
                continue;
            }
            self.seats.push(Seat {
                user: record.user.clone(),
                kind,
                since: record.since,
                state: SeatState::Held {
                    until,
                    why: HoldReason::Restarted,
                    last_clients: record.clients.clone(),
                },
            });
            changes.push(SeatChange::Held {
                user: record.user.clone(),
                kind,
                until,
                why: HoldReason::Restarted,
            });
        }
        changes
    }
}

/// The seats file (`seats.json` in the instance's directory): who held a
/// seat, so that the next connector gives it back to them first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SeatsFile {
    pub format: String,
    pub version: u32,
    #[serde(with = "crate::time::text")]
    pub written: SystemTime,
    pub seats: Vec<SeatRecord>,
}

impl SeatsFile {
    pub const NAME: &'static str = "seats.json";
    pub const FORMAT: &'static str = "callhost-api-connector-seats";
    pub const VERSION: u32 = 1;

    /// Reads the file; `Ok(None)` when there is none yet.
    pub fn read(data_dir: &std::path::Path) -> Result<Option<SeatsFile>, String> {
        let path = data_dir.join(Self::NAME);
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(error) => return Err(format!("cannot read {}: {error}", path.display())),
        };
        let file: SeatsFile = serde_json::from_str(&text)
            .map_err(|error| format!("{} is not a seats file: {error}", path.display()))?;
        if file.format != Self::FORMAT || file.version != Self::VERSION {
            return Err(format!(
                "{} is format {} version {}, not {} version {}",
                path.display(),
                file.format,
                file.version,
                Self::FORMAT,
                Self::VERSION
            ));
        }
        Ok(Some(file))
    }

    pub fn write(&self, data_dir: &std::path::Path) -> std::io::Result<()> {
        let text = serde_json::to_vec_pretty(self).map_err(std::io::Error::other)?;
        crate::files::write_atomically(&data_dir.join(Self::NAME), &text)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SeatRecord {
    pub user: String,
    pub kind: SeatKind,
    #[serde(with = "crate::time::text")]
    pub since: SystemTime,
    pub state: RecordedState,
    #[serde(with = "crate::time::optional_text")]
    pub held_until: Option<SystemTime>,
    pub clients: Vec<ClientInfo>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RecordedState {
    InUse,
    Held,
}

#[cfg(test)]
mod tests {
    use super::*;

    const GRACE: Duration = Duration::from_secs(30);

    fn rules(pool: usize, fixed: &[&str], one_seat_per_user: bool) -> SeatRules {
        SeatRules {
            pool,
            fixed_users: fixed.iter().map(|u| u.to_string()).collect(),
            one_seat_per_user,
            grace: GRACE,
        }
    }

    fn t(seconds: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000 + seconds)
    }

    fn client(name: &str) -> ClientInfo {
        ClientInfo {
            name: name.into(),
            version: "1.0".into(),
            address: "127.0.0.1:40000".into(),
            since: t(0),
        }
    }

    fn take(
        table: &mut SeatTable,
        user: &str,
        connection: ConnectionId,
        at: u64,
    ) -> Result<Grant, NoSeat> {
        table
            .take(user, connection, client("CRM"), t(at))
            .map(|(grant, _)| grant)
    }

    #[test]
    fn the_pool_runs_full_and_says_by_how_many_users() {
        let mut table = SeatTable::new(rules(2, &[], true));
        take(&mut table, "anna", 1, 0).unwrap();
        take(&mut table, "bert", 2, 0).unwrap();
        assert_eq!(table.free(), 0);
        let refusal = table.take("carl", 3, client("CRM"), t(1)).unwrap_err();
        assert_eq!(
            refusal,
            NoSeat {
                user: "carl".into(),
                pool: 2,
                holders: 2
            }
        );
        assert_eq!(
            refusal.change().to_string(),
            "seat refused: carl: all 2 floating seats are taken (by 2 user(s))"
        );
        // A sign-out frees one at once.
        let freed = table.leave(1, Leaving::SignedOut, t(2)).unwrap();
        assert!(
            matches!(
                freed,
                SeatChange::Freed {
                    because: FreedBecause::SignedOut,
                    free: 1,
                    ..
                }
            ),
            "{freed:?}"
        );
        assert_eq!(
            take(&mut table, "carl", 3, 3).unwrap().kind,
            SeatKind::Floating
        );
    }

    #[test]
    fn fixed_users_never_take_from_the_pool() {
        let mut table = SeatTable::new(rules(1, &["boss"], true));
        take(&mut table, "anna", 1, 0).unwrap();
        let grant = take(&mut table, "boss", 2, 0).expect("a fixed seat with the pool full");
        assert_eq!(grant.kind, SeatKind::Fixed);
        assert_eq!(table.free(), 0);
        // With no pool at all, fixed users still sign in.
        let mut table = SeatTable::new(rules(0, &["boss"], true));
        assert!(take(&mut table, "anna", 1, 0).is_err());
        assert!(take(&mut table, "boss", 2, 0).is_ok());
    }

    #[test]
    fn a_users_second_client_shares_the_seat() {
        let mut table = SeatTable::new(rules(1, &[], true));
        let first = take(&mut table, "anna", 1, 0).unwrap();
        let second = take(&mut table, "anna", 2, 5).unwrap();
        assert_eq!(first.since, second.since, "one seat, held since the first");
        assert_eq!(table.seats().len(), 1);
        // One client leaving keeps the seat for the other.
        let left = table.leave(1, Leaving::SignedOut, t(6)).unwrap();
        assert!(
            matches!(left, SeatChange::ClientLeft { remaining: 1, .. }),
            "{left:?}"
        );
        assert_eq!(table.free(), 0);
        assert!(matches!(
            table.leave(2, Leaving::SignedOut, t(7)),
            Some(SeatChange::Freed { .. })
        ));
        assert_eq!(table.free(), 1);
    }

    #[test]
    fn without_sharing_each_client_takes_a_seat() {
        let mut table = SeatTable::new(rules(2, &["boss"], false));
        take(&mut table, "anna", 1, 0).unwrap();
        take(&mut table, "anna", 2, 0).unwrap();
        assert_eq!(table.free(), 0);
        assert!(take(&mut table, "anna", 3, 0).is_err());
        // A fixed seat is the user's, whatever the number of clients.
        take(&mut table, "boss", 4, 0).unwrap();
        take(&mut table, "boss", 5, 0).unwrap();
        assert_eq!(
            table
                .seats()
                .iter()
                .filter(|s| s.kind == SeatKind::Fixed)
                .count(),
            1
        );
    }

    #[test]
    fn a_dropped_connection_holds_the_seat_for_the_grace_period() {
        let mut table = SeatTable::new(rules(1, &[], true));
        take(&mut table, "anna", 1, 0).unwrap();
        let held = table.leave(1, Leaving::Disconnected, t(10)).unwrap();
        assert_eq!(
            held,
            SeatChange::Held {
                user: "anna".into(),
                kind: SeatKind::Floating,
                until: t(40),
                why: HoldReason::Disconnected
            }
        );
        // Nobody else gets it meanwhile...
        assert!(take(&mut table, "bert", 2, 20).is_err());
        assert!(table.expire(t(39)).is_empty());
        // ...but anna does, as the same seat.
        let again = table.take("anna", 3, client("CRM"), t(30)).unwrap();
        assert_eq!(again.0.since, t(0));
        assert!(matches!(
            again.1,
            SeatChange::Taken {
                reclaimed: true,
                ..
            }
        ));
        // Dropped again and not back in time: freed.
        table.leave(3, Leaving::Disconnected, t(50)).unwrap();
        let expired = table.expire(t(80));
        assert!(
            matches!(
                &expired[..],
                [SeatChange::Freed {
                    because: FreedBecause::GraceOver,
                    ..
                }]
            ),
            "{expired:?}"
        );
        assert!(take(&mut table, "bert", 2, 81).is_ok());
    }

    #[test]
    fn no_grace_frees_a_dropped_seat_at_once() {
        let mut table = SeatTable::new(SeatRules {
            grace: Duration::ZERO,
            ..rules(1, &[], true)
        });
        take(&mut table, "anna", 1, 0).unwrap();
        assert!(matches!(
            table.leave(1, Leaving::Disconnected, t(1)),
            Some(SeatChange::Freed {
                because: FreedBecause::Disconnected,
                ..
            })
        ));
        assert_eq!(table.free(), 1);
    }

    #[test]
    fn revoking_frees_every_seat_of_the_user_and_names_the_connections() {
        let mut table = SeatTable::new(rules(3, &[], false));
        take(&mut table, "anna", 1, 0).unwrap();
        take(&mut table, "anna", 2, 0).unwrap();
        take(&mut table, "bert", 3, 0).unwrap();
        table.leave(2, Leaving::Disconnected, t(1));
        let (mut connections, changes) = table.revoke("anna", "left the company");
        connections.sort();
        assert_eq!(connections, [1]);
        assert_eq!(changes.len(), 2);
        assert_eq!(
            changes[1].to_string(),
            "seat freed: anna (floating): revoked by an administrator: left the company; 2 of 3 floating seats free"
        );
        assert_eq!(table.free(), 2);
        // The revoked connection leaving later changes nothing.
        assert_eq!(table.leave(1, Leaving::Disconnected, t(2)), None);
        assert!(table.revoke("nobody", "").1.is_empty());
    }

    #[test]
    fn a_smaller_pool_keeps_holders_and_refuses_newcomers() {
        let mut table = SeatTable::new(rules(3, &[], true));
        for (n, user) in ["anna", "bert", "carl"].into_iter().enumerate() {
            take(&mut table, user, n as u64, 0).unwrap();
        }
        table.reconfigure(rules(1, &[], true));
        assert_eq!(table.seats().len(), 3);
        assert_eq!(table.free(), 0);
        assert!(take(&mut table, "dora", 9, 1).is_err());
        table.leave(0, Leaving::SignedOut, t(2));
        assert!(
            take(&mut table, "dora", 9, 3).is_err(),
            "still 2 of 1 taken"
        );
    }

    #[test]
    fn seats_follow_fixed_users_into_their_new_kind() {
        let mut table = SeatTable::new(rules(1, &[], true));
        take(&mut table, "anna", 1, 0).unwrap();
        let changes = table.reconfigure(rules(1, &["anna"], true));
        assert_eq!(
            changes,
            [SeatChange::Reclassified {
                user: "anna".into(),
                from: SeatKind::Floating,
                to: SeatKind::Fixed
            }]
        );
        assert_eq!(table.free(), 1);
        assert!(take(&mut table, "bert", 2, 1).is_ok());
    }

    #[test]
    fn the_seats_file_round_trips_and_gives_seats_back_first() {
        let dir = tempfile::tempdir().unwrap();
        let mut before = SeatTable::new(rules(2, &["boss"], true));
        take(&mut before, "anna", 1, 0).unwrap();
        take(&mut before, "boss", 2, 1).unwrap();
        take(&mut before, "bert", 3, 2).unwrap();
        before.leave(3, Leaving::Disconnected, t(10));
        before.snapshot(t(20)).write(dir.path()).unwrap();
        let file = SeatsFile::read(dir.path()).unwrap().expect("written");
        assert_eq!(file, before.snapshot(t(20)));

        // The next connector (an upgrade) starts shortly after.
        let mut after = SeatTable::new(rules(2, &["boss"], true));
        let restored = after.restore(&file, t(25), Duration::from_secs(15));
        assert_eq!(restored.len(), 3, "{restored:?}");
        assert_eq!(after.free(), 0, "anna's and bert's seats are kept for them");
        assert!(take(&mut after, "carl", 9, 26).is_err());
        let anna = after.take("anna", 11, client("CRM"), t(26)).unwrap();
        assert_eq!(anna.0.since, t(0), "her seat, since she first took it");
        // bert's seat was held until 40 already: it ends then, not later.
        let expired = after.expire(t(41));
        assert!(
            matches!(&expired[..], [SeatChange::Freed { user, .. }] if user == "bert"),
            "{expired:?}"
        );
        // boss's fixed seat is held too, until grace after the restart.
        assert!(after
            .expire(t(56))
            .iter()
            .any(|c| matches!(c, SeatChange::Freed { user, .. } if user == "boss")));
    }

    #[test]
    fn restoring_respects_the_pool_and_the_files_age() {
        let mut before = SeatTable::new(rules(3, &[], true));
        for (n, user) in ["anna", "bert", "carl"].into_iter().enumerate() {
            take(&mut before, user, n as u64, n as u64).unwrap();
        }
        let file = before.snapshot(t(100));
        // The pool shrank: the oldest holders come first.
        let mut smaller = SeatTable::new(rules(2, &[], true));
        smaller.restore(&file, t(101), Duration::from_secs(15));
        let users: Vec<&str> = smaller.seats().iter().map(|s| s.user.as_str()).collect();
        assert_eq!(users, ["anna", "bert"]);
        // A file last written an hour ago (a crash) holds nothing.
        let mut late = SeatTable::new(rules(3, &[], true));
        assert!(late
            .restore(&file, t(3700), Duration::from_secs(15))
            .is_empty());
    }

    #[test]
    fn stopping_holds_every_seat_in_use_for_the_next_connector() {
        let mut table = SeatTable::new(rules(2, &[], true));
        take(&mut table, "anna", 1, 0).unwrap();
        table.hold_all(t(10));
        let file = table.snapshot(t(10));
        assert_eq!(file.seats[0].state, RecordedState::Held);
        assert_eq!(file.seats[0].held_until, Some(t(40)));
        assert_eq!(file.seats[0].clients, [client("CRM")]);
    }

    #[test]
    fn a_foreign_or_newer_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join(SeatsFile::NAME),
            "{\"format\":\"x\",\"version\":1,\"written\":\"2026-01-01T00:00:00Z\",\"seats\":[]}",
        )
        .unwrap();
        assert!(SeatsFile::read(dir.path()).is_err());
        std::fs::write(dir.path().join(SeatsFile::NAME), "not json").unwrap();
        assert!(SeatsFile::read(dir.path()).is_err());
        let empty = tempfile::tempdir().unwrap();
        assert_eq!(SeatsFile::read(empty.path()).unwrap(), None);
    }
}
