//! Where each user's phones are: the location service behind REGISTER.
//! Several devices per user, up to a limit; each binding expires on its own.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::RwLock;
use std::time::{Duration, Instant};

/// One registered device.
#[derive(Debug, Clone)]
pub struct Binding {
    /// The Contact URI the phone registered, as text.
    pub contact: String,
    /// Where requests for it are sent: the real address the REGISTER came
    /// from (works behind NAT, unlike the Contact's own host; never a
    /// header the phone wrote).
    pub source: SocketAddr,
    /// The transport the REGISTER came over; requests go back on it (on
    /// TCP and TLS, over the phone's own connection).
    pub transport: SignalTransport,
    pub call_id: String,
    pub expires_at: Instant,
}

/// The transports SIP arrives on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignalTransport {
    Udp,
    Tcp,
    Tls,
}

impl SignalTransport {
    pub(crate) fn of(transport: rsipstack::sip::Transport) -> SignalTransport {
        match transport {
            rsipstack::sip::Transport::Tcp => SignalTransport::Tcp,
            rsipstack::sip::Transport::Tls => SignalTransport::Tls,
            _ => SignalTransport::Udp,
        }
    }

    pub(crate) fn stack(self) -> rsipstack::sip::Transport {
        match self {
            SignalTransport::Udp => rsipstack::sip::Transport::Udp,
            SignalTransport::Tcp => rsipstack::sip::Transport::Tcp,
            SignalTransport::Tls => rsipstack::sip::Transport::Tls,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("user already has {limit} registered devices")]
pub struct TooManyBindings {
    pub limit: usize,
}

pub struct Registrar {
    max_per_user: usize,
    bindings: RwLock<HashMap<String, Vec<Binding>>>,
}

impl Default for Registrar {
    fn default() -> Self {
        Registrar::new(usize::MAX)
    }
}

impl Registrar {
    pub fn new(max_per_user: usize) -> Registrar {
        Registrar {
            max_per_user,
            bindings: RwLock::default(),
        }
    }

    /// Adds or refreshes `binding` for `user` (same contact replaces), or
    /// removes it when `expires` is zero. A new device beyond the limit is
    /// refused; refreshing or removing one never is. Other bindings that
    /// expired stay until [`Registrar::sweep`] takes them (and says so).
    pub fn update(
        &self,
        user: &str,
        binding: Binding,
        expires: Duration,
    ) -> Result<(), TooManyBindings> {
        let mut all = self.bindings.write().unwrap_or_else(|p| p.into_inner());
        let list = all.entry(user.to_string()).or_default();
        let now = Instant::now();
        let live = |b: &&Binding| b.expires_at > now;
        let known = list
            .iter()
            .filter(live)
            .any(|b| b.contact == binding.contact);
        let others = list
            .iter()
            .filter(live)
            .filter(|b| b.contact != binding.contact)
            .count();
        let result = if !expires.is_zero() && !known && others >= self.max_per_user {
            Err(TooManyBindings {
                limit: self.max_per_user,
            })
        } else {
            list.retain(|b| b.contact != binding.contact);
            if !expires.is_zero() {
                list.push(binding);
            }
            Ok(())
        };
        if list.is_empty() {
            all.remove(user);
        }
        result
    }

    /// Removes every binding that expired; returns them with their users.
    pub fn sweep(&self) -> Vec<(String, Binding)> {
        let now = Instant::now();
        let mut all = self.bindings.write().unwrap_or_else(|p| p.into_inner());
        let mut expired = Vec::new();
        all.retain(|user, list| {
            list.retain(|b| {
                let live = b.expires_at > now;
                if !live {
                    expired.push((user.clone(), b.clone()));
                }
                live
            });
            !list.is_empty()
        });
        expired
    }

    /// Whether `update` would take this many new contacts for `user`.
    pub fn has_room(&self, user: &str, new_contacts: &[&str]) -> bool {
        let now = Instant::now();
        let all = self.bindings.read().unwrap_or_else(|p| p.into_inner());
        let live: Vec<&Binding> = all
            .get(user)
            .map(|list| list.iter().filter(|b| b.expires_at > now).collect())
            .unwrap_or_default();
        let added = new_contacts
            .iter()
            .filter(|contact| !live.iter().any(|b| b.contact == **contact))
            .count();
        live.len() + added <= self.max_per_user
    }

    /// Removes every binding of `user` (`Contact: *`); how many were live.
    pub fn clear(&self, user: &str) -> usize {
        let now = Instant::now();
        self.bindings
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(user)
            .map_or(0, |list| list.iter().filter(|b| b.expires_at > now).count())
    }

    /// The user's live devices.
    pub fn bindings(&self, user: &str) -> Vec<Binding> {
        let now = Instant::now();
        self.bindings
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(user)
            .map(|list| {
                list.iter()
                    .filter(|b| b.expires_at > now)
                    .cloned()
                    .collect()
            })
            .unwrap_or_default()
    }

    pub fn is_registered(&self, user: &str) -> bool {
        !self.bindings(user).is_empty()
    }

    /// `user` has a live device registered from exactly `source`.
    pub fn is_registered_at(&self, user: &str, source: SocketAddr) -> bool {
        let now = Instant::now();
        self.bindings
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(user)
            .is_some_and(|list| {
                list.iter()
                    .any(|b| b.source == source && b.expires_at > now)
            })
    }

    /// Every user with a live device, for `callhost serve`'s status.
    pub fn registered_users(&self) -> Vec<String> {
        let now = Instant::now();
        let mut users: Vec<String> = self
            .bindings
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter(|(_, list)| list.iter().any(|b| b.expires_at > now))
            .map(|(user, _)| user.clone())
            .collect();
        users.sort();
        users
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn binding(contact: &str, seconds: u64) -> Binding {
        Binding {
            contact: contact.into(),
            source: "127.0.0.1:5070".parse().unwrap(),
            transport: SignalTransport::Udp,
            call_id: "c".into(),
            expires_at: Instant::now() + Duration::from_secs(seconds),
        }
    }

    fn update(registrar: &Registrar, user: &str, contact: &str, seconds: u64) {
        registrar
            .update(
                user,
                binding(contact, seconds),
                Duration::from_secs(seconds),
            )
            .unwrap();
    }

    #[test]
    fn devices_register_refresh_and_leave() {
        let registrar = Registrar::default();
        update(&registrar, "anna", "sip:a@1", 60);
        update(&registrar, "anna", "sip:a@2", 60);
        update(&registrar, "anna", "sip:a@1", 60);
        assert_eq!(registrar.bindings("anna").len(), 2);
        update(&registrar, "anna", "sip:a@1", 0);
        assert_eq!(registrar.bindings("anna").len(), 1);
        assert!(registrar.is_registered("anna"));
        assert!(registrar.is_registered_at("anna", "127.0.0.1:5070".parse().unwrap()));
        assert!(!registrar.is_registered_at("anna", "127.0.0.1:5071".parse().unwrap()));
        update(&registrar, "anna", "sip:a@3", 0);
        // Expired bindings do not count.
        registrar
            .update("bert", binding("sip:b@1", 0), Duration::from_secs(1))
            .unwrap();
        assert!(!registrar.is_registered("bert"));
        assert_eq!(registrar.registered_users(), vec!["anna".to_string()]);
        assert_eq!(registrar.clear("anna"), 1);
        assert!(!registrar.is_registered("anna"));
    }

    #[test]
    fn expired_bindings_are_swept_once() {
        let registrar = Registrar::default();
        update(&registrar, "anna", "sip:a@1", 60);
        registrar
            .update("anna", binding("sip:a@2", 0), Duration::from_secs(1))
            .unwrap();
        registrar
            .update("bert", binding("sip:b@1", 0), Duration::from_secs(1))
            .unwrap();
        // An expired device neither counts nor rings, until it is swept.
        assert_eq!(registrar.bindings("anna").len(), 1);
        assert!(!registrar.is_registered("bert"));
        let mut swept: Vec<(String, String)> = registrar
            .sweep()
            .into_iter()
            .map(|(user, b)| (user, b.contact))
            .collect();
        swept.sort();
        assert_eq!(
            swept,
            [
                ("anna".to_string(), "sip:a@2".to_string()),
                ("bert".to_string(), "sip:b@1".to_string())
            ]
        );
        assert!(registrar.sweep().is_empty());
        assert_eq!(registrar.registered_users(), vec!["anna".to_string()]);
    }

    #[test]
    fn a_user_has_at_most_the_limit_of_devices() {
        let registrar = Registrar::new(2);
        update(&registrar, "anna", "sip:a@1", 60);
        update(&registrar, "anna", "sip:a@2", 60);
        assert!(!registrar.has_room("anna", &["sip:a@3"]));
        assert!(registrar.has_room("anna", &["sip:a@1"]));
        let refused = registrar.update("anna", binding("sip:a@3", 60), Duration::from_secs(60));
        assert_eq!(refused, Err(TooManyBindings { limit: 2 }));
        // Refreshing a known one is fine.
        update(&registrar, "anna", "sip:a@2", 60);
        assert_eq!(registrar.bindings("anna").len(), 2);
    }
}
