//! Where each user's phones are: the location service behind REGISTER.
//! Several devices per user; each binding expires on its own.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::RwLock;
use std::time::{Duration, Instant};

/// One registered device.
#[derive(Debug, Clone)]
pub struct Binding {
    /// The Contact URI the phone registered, as text.
    pub contact: String,
    /// Where requests for it are sent: the address the REGISTER came from
    /// (works behind NAT, unlike the Contact's own host).
    pub source: SocketAddr,
    /// `true` for TCP.
    pub reliable: bool,
    pub call_id: String,
    pub expires_at: Instant,
}

#[derive(Default)]
pub struct Registrar {
    bindings: RwLock<HashMap<String, Vec<Binding>>>,
}

impl Registrar {
    /// Adds or refreshes `binding` for `user` (same contact replaces), or
    /// removes it when `expires` is zero.
    pub fn update(&self, user: &str, binding: Binding, expires: Duration) {
        let mut all = self.bindings.write().expect("registrar");
        let list = all.entry(user.to_string()).or_default();
        let now = Instant::now();
        list.retain(|b| b.contact != binding.contact && b.expires_at > now);
        if !expires.is_zero() {
            list.push(binding);
        }
        if list.is_empty() {
            all.remove(user);
        }
    }

    /// Removes every binding of `user` (`Contact: *`).
    pub fn clear(&self, user: &str) {
        self.bindings.write().expect("registrar").remove(user);
    }

    /// The user's live devices.
    pub fn bindings(&self, user: &str) -> Vec<Binding> {
        let now = Instant::now();
        self.bindings
            .read()
            .expect("registrar")
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

    /// Every user with a live device, for `callhost serve`'s status.
    pub fn registered_users(&self) -> Vec<String> {
        let now = Instant::now();
        let mut users: Vec<String> = self
            .bindings
            .read()
            .expect("registrar")
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
            reliable: false,
            call_id: "c".into(),
            expires_at: Instant::now() + Duration::from_secs(seconds),
        }
    }

    #[test]
    fn devices_register_refresh_and_leave() {
        let registrar = Registrar::default();
        registrar.update("anna", binding("sip:a@1", 60), Duration::from_secs(60));
        registrar.update("anna", binding("sip:a@2", 60), Duration::from_secs(60));
        registrar.update("anna", binding("sip:a@1", 60), Duration::from_secs(60));
        assert_eq!(registrar.bindings("anna").len(), 2);
        registrar.update("anna", binding("sip:a@1", 0), Duration::ZERO);
        assert_eq!(registrar.bindings("anna").len(), 1);
        assert!(registrar.is_registered("anna"));
        registrar.update("anna", binding("sip:a@3", 0), Duration::ZERO);
        // Expired bindings do not count.
        registrar.update("bert", binding("sip:b@1", 0), Duration::from_secs(1));
        assert!(!registrar.is_registered("bert"));
        assert_eq!(registrar.registered_users(), vec!["anna".to_string()]);
        registrar.clear("anna");
        assert!(!registrar.is_registered("anna"));
    }
}
