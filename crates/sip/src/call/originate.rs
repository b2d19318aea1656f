//! Calls the host places itself (click-to-dial for a client API): the
//! user's own phones ring first, on the caller's side of the relay; the
//! one that answers becomes the call's calling side, and the call goes on
//! as if the user had dialled the number.

use std::sync::{Arc, OnceLock, Weak};

use crate::server::Shared;

/// Places and ends calls for the host's services. Cheap to clone; it does
/// something once `SipServer::serve` runs (before that, and after, every
/// request is refused with [`CallRefusal::NotServing`]).
#[derive(Clone, Default)]
pub struct Telephony {
    serving: Arc<OnceLock<Serving>>,
}

struct Serving {
    shared: Weak<Shared>,
    runtime: tokio::runtime::Handle,
}

/// Why a call was not placed or ended.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallRefusal {
    #[error("no SIP server is running")]
    NotServing,
    #[error("no user {0:?} in the directory")]
    UnknownUser(String),
    #[error("user {0:?} has no phone registered")]
    NotRegistered(String),
    #[error("unknown number {0:?}")]
    UnknownNumber(String),
    #[error("{0}")]
    Refused(String),
    #[error("no call {0:?} in progress")]
    NoSuchCall(String),
    #[error("user {user:?} is not a party of call {call:?}")]
    NotAParty { user: String, call: String },
}

impl Telephony {
    /// Called by `serve` once its shared state exists.
    pub(crate) fn start(&self, shared: &Arc<Shared>) {
        let _ = self.serving.set(Serving {
            shared: Arc::downgrade(shared),
            runtime: tokio::runtime::Handle::current(),
        });
    }

    fn shared(&self) -> Result<(Arc<Shared>, tokio::runtime::Handle), CallRefusal> {
        let serving = self.serving.get().ok_or(CallRefusal::NotServing)?;
        let shared = serving.shared.upgrade().ok_or(CallRefusal::NotServing)?;
        if shared.shutdown.is_cancelled() {
            return Err(CallRefusal::NotServing);
        }
        Ok((shared, serving.runtime.clone()))
    }

    /// Rings `user`'s phones; when one answers, calls `number` for them and
    /// connects both. Returns the call's id while the phones ring. Checked
    /// before anything rings: the user, a registered phone, the number, the
    /// dial policy and the limits, as for a call the user dials.
    pub fn originate(&self, user: &str, number: &str) -> Result<String, CallRefusal> {
        let (shared, runtime) = self.shared()?;
        super::originated(shared, runtime, user, number)
    }

    /// Ends the call `call_id` (the id `originate` returned, or a call's
    /// id in the modules' events) if `user` is one of its parties.
    pub fn hang_up(&self, user: &str, call_id: &str) -> Result<(), CallRefusal> {
        let (shared, _) = self.shared()?;
        super::hang_up(&shared, user, call_id)
    }
}
