//! Who may call where: the dial policy for calls from the trunk (no transit
//! by default), outbound permissions of internal users, and the same rules
//! for transfers. Toll fraud is a stranger making the PBX dial out; every
//! path that ends in an INVITE to the trunk passes through here.

use callhost_numbers::Pattern;
use callhost_plugin_abi::{Party, PartyKind};

use crate::config::{OutboundConfig, SipConfig};

/// Why a call or transfer may not go where it was sent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum DialRefusal {
    #[error("a call from the trunk may not go back out to {0} (sip.trunk.allow_transit)")]
    Transit(String),
    #[error("{number} matches the outbound pattern {pattern} denied to user {user:?}")]
    Denied {
        user: String,
        number: String,
        pattern: String,
    },
    #[error(
        "the trunk side may not transfer a call to the outside number {0} (sip.trunk.allow_refer_out)"
    )]
    ReferOut(String),
}

/// Who is placing a call (or transferring one).
#[derive(Debug, Clone, Copy)]
pub(crate) enum Dialler<'a> {
    /// A party on the trunk side (the carrier's caller).
    Trunk,
    /// An authenticated directory user.
    User(&'a str),
}

pub(crate) struct DialPolicy {
    allow_transit: bool,
    allow_refer_out: bool,
    outbound: OutboundConfig,
}

impl DialPolicy {
    pub fn new(config: &SipConfig) -> DialPolicy {
        DialPolicy {
            allow_transit: config.trunk.as_ref().is_some_and(|t| t.allow_transit),
            allow_refer_out: config.trunk.as_ref().is_some_and(|t| t.allow_refer_out),
            outbound: config.outbound.clone(),
        }
    }

    /// A new call from `dialler` to `callee` (dialled as `dialled`).
    /// `emergency`: the number is one of the home country's emergency
    /// numbers, which nobody is ever refused.
    pub fn check_call(
        &self,
        dialler: Dialler<'_>,
        dialled: &str,
        callee: &Party,
        emergency: bool,
    ) -> Result<(), DialRefusal> {
        if callee.kind != PartyKind::External {
            return Ok(());
        }
        match dialler {
            Dialler::Trunk if self.allow_transit => Ok(()),
            Dialler::Trunk => Err(DialRefusal::Transit(dialled.to_string())),
            Dialler::User(_) if emergency => Ok(()),
            Dialler::User(user) => self.check_outbound(user, dialled, callee),
        }
    }

    /// A transfer by `dialler` of a call to `target`.
    pub fn check_transfer(
        &self,
        dialler: Dialler<'_>,
        dialled: &str,
        target: &Party,
    ) -> Result<(), DialRefusal> {
        if target.kind != PartyKind::External {
            return Ok(());
        }
        match dialler {
            Dialler::Trunk if self.allow_refer_out => Ok(()),
            Dialler::Trunk => Err(DialRefusal::ReferOut(dialled.to_string())),
            Dialler::User(user) => self.check_outbound(user, dialled, target),
        }
    }

    fn check_outbound(&self, user: &str, dialled: &str, callee: &Party) -> Result<(), DialRefusal> {
        let forms: Vec<&str> = [
            Some(dialled),
            Some(callee.number.as_str()),
            callee.e164.as_ref().map(|s| s.as_str()).into(),
            callee.national.as_ref().map(|s| s.as_str()).into(),
        ]
        .into_iter()
        .flatten()
        .collect();
        let first_match = |patterns: &[Pattern]| {
            patterns
                .iter()
                .find(|p| forms.iter().any(|form| p.matches(form)))
                .map(|p| p.as_str().to_string())
        };
        if first_match(&self.outbound.always_allow).is_some() {
            return Ok(());
        }
        let own = self.outbound.users.get(user);
        let denied = own
            .and_then(|own| first_match(&own.deny))
            .or_else(|| first_match(&self.outbound.deny));
        let Some(pattern) = denied else {
            return Ok(());
        };
        if own.and_then(|own| first_match(&own.allow)).is_some() {
            return Ok(());
        }
        Err(DialRefusal::Denied {
            user: user.to_string(),
            number: dialled.to_string(),
            pattern,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use abi_stable::std_types::ROption;

    fn external(national: &str, international: &str) -> Party {
        Party {
            international: ROption::RSome(international.into()),
            e164: ROption::RSome(format!("+{}", &international[2..]).as_str().into()),
            national: ROption::RSome(national.into()),
            ..Party::new(PartyKind::External, national)
        }
    }

    fn policy(toml: &str) -> DialPolicy {
        DialPolicy::new(&toml::from_str::<SipConfig>(toml).unwrap())
    }

    #[test]
    fn the_trunk_reaches_inside_only_unless_transit_is_allowed() {
        let closed = policy("[trunk]\npeer = \"192.0.2.1:5060\"\n");
        let premium = external("01901234567", "00491901234567");
        let user = Party::new(PartyKind::User, "201");
        assert!(closed
            .check_call(Dialler::Trunk, "201", &user, false)
            .is_ok());
        assert_eq!(
            closed.check_call(Dialler::Trunk, "00491901234567", &premium, false),
            Err(DialRefusal::Transit("00491901234567".into()))
        );
        let open = policy("[trunk]\npeer = \"192.0.2.1:5060\"\nallow_transit = true\n");
        assert!(open
            .check_call(Dialler::Trunk, "x", &premium, false)
            .is_ok());
        assert!(matches!(
            closed.check_transfer(Dialler::Trunk, "0190", &premium),
            Err(DialRefusal::ReferOut(_))
        ));
    }

    #[test]
    fn outbound_patterns_with_user_exceptions_and_emergency_numbers() {
        let policy = policy(
            "[outbound]\ndeny = [\"0190*\", \"0900*\", \"00*\"]\n\
             [outbound.users.anna]\nallow = [\"0043*\"]\n\
             [outbound.users.bert]\ndeny = [\"0*\"]\n",
        );
        let vienna = external("0043155555", "0043155555");
        let premium = external("01901234567", "00491901234567");
        let berlin = external("030123456", "004930123456");
        let emergency = Party::new(PartyKind::External, "112");
        // `00*` is "abroad" in the national dialling form, not every number.
        assert!(policy
            .check_call(Dialler::User("carl"), "030123456", &berlin, false)
            .is_ok());
        assert!(policy
            .check_call(Dialler::User("carl"), "+4930123456", &berlin, false)
            .is_ok());
        assert!(policy
            .check_call(Dialler::User("anna"), "0043155555", &vienna, false)
            .is_ok());
        assert!(matches!(
            policy.check_call(Dialler::User("carl"), "0043155555", &vienna, false),
            Err(DialRefusal::Denied { .. })
        ));
        assert!(policy
            .check_call(Dialler::User("anna"), "01901234567", &premium, false)
            .is_err());
        assert!(matches!(
            policy.check_call(Dialler::User("bert"), "030123456", &berlin, false),
            Err(DialRefusal::Denied { pattern, .. }) if pattern == "0*"
        ));
        assert!(policy
            .check_call(Dialler::User("bert"), "112", &emergency, true)
            .is_ok());
        assert!(policy
            .check_transfer(Dialler::User("carl"), "01901234567", &premium)
            .is_err());
    }
}
