//! REGISTER: a phone tells where it is (RFC 3261 §10). Authenticated as
//! the user whose address of record it registers; the binding points at
//! the real source of the request.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use rsipstack::sip::prelude::HeadersExt;
use rsipstack::sip::{Header, StatusCode};
use rsipstack::transaction::transaction::Transaction;

use crate::auth::Challenge;
use crate::peer::Peer;
use crate::registrar::{Binding, SignalTransport};
use crate::server::{Severity, Shared};

pub(crate) async fn register(shared: &Shared, mut tx: Transaction, peer: Peer) {
    let contacts = tx.original.typed_contact_headers().unwrap_or_default();
    let star = tx
        .original
        .contact_header()
        .is_ok_and(|h| h.value().trim() == "*");
    let limit = shared.config.limits.contacts_per_register;
    if contacts.len() > limit {
        let why = format!(
            "{} Contacts in one REGISTER (sip.limits.contacts_per_register is {limit})",
            contacts.len()
        );
        shared
            .refuse(
                &mut tx,
                &peer,
                StatusCode::BadRequest,
                Vec::new(),
                Severity::Warn,
                &why,
            )
            .await;
        return;
    }
    let mut contact_uris: Vec<String> = contacts.iter().map(|c| c.uri.to_string()).collect();
    contact_uris.sort();
    let bound = if star {
        "*".to_string()
    } else {
        contact_uris.join(",")
    };
    let Some(user) = shared
        .authenticate(&mut tx, &peer, Challenge::Registrar, Some(&bound))
        .await
    else {
        return;
    };
    // The address of record must be the authenticated user's.
    let aor_user = tx
        .original
        .to_header()
        .ok()
        .and_then(|to| to.uri().ok())
        .and_then(|uri| uri.auth.map(|auth| auth.user));
    if aor_user.as_deref() != Some(user.as_str()) {
        let why = format!(
            "user {user:?} registering the address of {:?}",
            aor_user.as_deref().unwrap_or("nobody")
        );
        shared
            .refuse(
                &mut tx,
                &peer,
                StatusCode::Forbidden,
                Vec::new(),
                Severity::Warn,
                &why,
            )
            .await;
        return;
    }
    let header_expires = tx
        .original
        .expires_header()
        .and_then(|h| h.value().trim().parse::<u32>().ok());
    let call_id = tx
        .original
        .call_id_header()
        .map(|h| h.value().to_string())
        .unwrap_or_default();
    if star {
        if header_expires != Some(0) {
            shared
                .refuse(
                    &mut tx,
                    &peer,
                    StatusCode::BadRequest,
                    Vec::new(),
                    Severity::Info,
                    &"Contact: * needs Expires: 0",
                )
                .await;
            return;
        }
        let devices = shared.live.registrar.clear(&user);
        tracing::info!(user = %user, source = %peer.address, devices, "all devices unregistered");
        if devices > 0 {
            shared.live.changed(&user);
        }
    }
    let asked: Vec<u32> = contacts
        .iter()
        .map(|contact| contact.expires().or(header_expires).unwrap_or(3600))
        .collect();
    if asked
        .iter()
        .any(|&asked| asked > 0 && asked < shared.config.min_expires)
    {
        let min = Header::MinExpires(shared.config.min_expires.to_string().into());
        let why = format!(
            "registration shorter than sip.min_expires ({} s)",
            shared.config.min_expires
        );
        shared
            .refuse(
                &mut tx,
                &peer,
                StatusCode::IntervalTooBrief,
                vec![min],
                Severity::Info,
                &why,
            )
            .await;
        return;
    }
    let adding: Vec<&str> = contact_uris
        .iter()
        .zip(&asked)
        .filter(|(_, &asked)| asked > 0)
        .map(|(uri, _)| uri.as_str())
        .collect();
    if !shared.live.registrar.has_room(&user, &adding) {
        let why = format!(
            "user {user:?} already has {} registered devices (sip.limits.registrations_per_user)",
            shared.config.limits.registrations_per_user
        );
        shared
            .refuse(
                &mut tx,
                &peer,
                StatusCode::Forbidden,
                Vec::new(),
                Severity::Warn,
                &why,
            )
            .await;
        return;
    }
    let was_registered = shared.live.registrar.is_registered(&user);
    for (contact, asked) in contacts.iter().zip(asked) {
        let expires = Duration::from_secs(u64::from(asked.min(shared.config.max_expires)));
        let contact_uri = contact.uri.to_string();
        let change = change_of(
            &shared.live.registrar.bindings(&user),
            &contact_uri,
            &call_id,
            peer.address,
            expires,
            &contact_uris,
        );
        let binding = Binding {
            contact: contact_uri.clone(),
            source: peer.address,
            transport: SignalTransport::of(peer.transport),
            call_id: call_id.clone(),
            expires_at: Instant::now() + expires,
        };
        if let Err(error) = shared.live.registrar.update(&user, binding, expires) {
            // Raced with another REGISTER of the same user.
            tracing::warn!(user = %user, source = %peer.address, %error, "registration refused");
            continue;
        }
        log_change(&user, &contact_uri, peer.address, expires, &change);
    }
    if shared.live.registrar.is_registered(&user) != was_registered {
        shared.live.changed(&user);
    }
    let now = Instant::now();
    let headers: Vec<Header> = shared
        .live
        .registrar
        .bindings(&user)
        .into_iter()
        .map(|b| {
            Header::Contact(
                format!(
                    "<{}>;expires={}",
                    b.contact,
                    b.expires_at.saturating_duration_since(now).as_secs()
                )
                .into(),
            )
        })
        .collect();
    tx.reply_with(StatusCode::OK, headers, None).await.ok();
}

/// What one Contact of a REGISTER changes, for the registrar's log.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Change {
    /// A device the user did not have.
    Registered,
    /// The same device (same Call-ID, RFC 3261 §10.2.4) under a new
    /// Contact, or the same Contact from a new source address.
    ReRegistered {
        previous_contact: Option<String>,
        previous_source: Option<SocketAddr>,
    },
    /// Nothing new: not news.
    Refreshed,
    Unregistered,
    /// Expires 0 for a Contact that was not registered.
    NothingToRemove,
}

fn change_of(
    live: &[Binding],
    contact: &str,
    call_id: &str,
    source: SocketAddr,
    expires: Duration,
    request_contacts: &[String],
) -> Change {
    let same_contact = live.iter().find(|b| b.contact == contact);
    if expires.is_zero() {
        return match same_contact {
            Some(_) => Change::Unregistered,
            None => Change::NothingToRemove,
        };
    }
    match same_contact {
        Some(binding) if binding.source == source => Change::Refreshed,
        Some(binding) => Change::ReRegistered {
            previous_contact: None,
            previous_source: Some(binding.source),
        },
        None => match live
            .iter()
            .find(|b| b.call_id == call_id && !request_contacts.contains(&b.contact))
        {
            Some(previous) => Change::ReRegistered {
                previous_contact: Some(previous.contact.clone()),
                previous_source: (previous.source != source).then_some(previous.source),
            },
            None => Change::Registered,
        },
    }
}

/// One line per registration change (INFO); refreshes at DEBUG.
fn log_change(user: &str, contact: &str, source: SocketAddr, expires: Duration, change: &Change) {
    let expires = format!("{}s", expires.as_secs());
    match change {
        Change::Registered => {
            tracing::info!(user = %user, contact = %contact, %source, %expires, "device registered")
        }
        Change::ReRegistered {
            previous_contact,
            previous_source,
        } => tracing::info!(
            user = %user,
            contact = %contact,
            %source,
            %expires,
            previous_contact = previous_contact.as_deref().map(tracing::field::display),
            previous_source = previous_source.map(tracing::field::display),
            "device re-registered"
        ),
        Change::Refreshed => {
            tracing::debug!(user = %user, contact = %contact, %source, %expires, "registration refreshed")
        }
        Change::Unregistered => {
            tracing::info!(user = %user, contact = %contact, %source, "device unregistered")
        }
        Change::NothingToRemove => {
            tracing::debug!(user = %user, contact = %contact, %source, "unregistering a device that was not registered")
        }
    }
}

/// Logs the registrations that expired (phones that stopped refreshing).
pub(crate) fn log_expired(expired: Vec<(String, Binding)>) {
    for (user, binding) in expired {
        tracing::info!(
            user = %user,
            contact = %binding.contact,
            source = %binding.source,
            "registration expired"
        );
    }
}
