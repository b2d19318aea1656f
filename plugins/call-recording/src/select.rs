//! Which calls an instance records (CR1–CR4, CR19–CR21): a pure function
//! of one hop's setup and the configuration, so every rule has a unit test.

use callhost_numbers::any_matches;
use callhost_plugin_sdk::{CallSetup, Direction, Party, PartyKind};

use crate::config::{Config, DirectionFilter};

/// Why a hop is recorded (for the log and the metadata).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reason {
    /// The called user is configured.
    CalledUser(String),
    /// The call is to a configured group.
    CalledGroup(String),
    /// Dialled straight to a user logged in to a configured group.
    CalledGroupMember { user: String, group: String },
    /// The calling user is configured.
    CallingUser(String),
    /// The calling user is logged in to a configured group.
    CallingGroupMember { user: String, group: String },
    /// A party's number matches a pattern.
    Number(String),
}

impl Reason {
    pub fn describe(&self) -> String {
        match self {
            Reason::CalledUser(user) => format!("call to user {user}"),
            Reason::CalledGroup(group) => format!("call to group {group}"),
            Reason::CalledGroupMember { user, group } => {
                format!("direct call to {user}, logged in to group {group}")
            }
            Reason::CallingUser(user) => format!("call from user {user}"),
            Reason::CallingGroupMember { user, group } => {
                format!("call from {user}, logged in to group {group}")
            }
            Reason::Number(pattern) => format!("number matches {pattern}"),
        }
    }
}

/// Whether this hop's call is one the configuration records, and why.
pub fn selects(config: &Config, setup: &CallSetup) -> Option<Reason> {
    // Star codes are features, not conversations (CR21).
    if setup.dialled.contains('*') || setup.callee.number.contains('*') {
        return None;
    }
    let incoming = matches!(setup.direction, Direction::Incoming | Direction::Internal);
    let outgoing = matches!(setup.direction, Direction::Outgoing | Direction::Internal);
    let wants_incoming = config.direction != DirectionFilter::Outgoing;
    let wants_outgoing = config.direction != DirectionFilter::Incoming;
    if incoming && wants_incoming {
        if let Some(reason) = called(config, &setup.callee) {
            return Some(reason);
        }
    }
    if outgoing && wants_outgoing {
        if let Some(reason) = calling(config, &setup.caller) {
            return Some(reason);
        }
    }
    let number_side = |party: &Party| any_matches(&config.numbers, party.number_forms());
    let wanted = (incoming && wants_incoming) || (outgoing && wants_outgoing);
    let by_number = wanted && (number_side(&setup.caller) || number_side(&setup.callee));
    if by_number {
        let pattern = config
            .numbers
            .iter()
            .find(|p| {
                [&setup.caller, &setup.callee]
                    .iter()
                    .any(|party| party.number_forms().any(|form| p.matches(form)))
            })
            .map(|p| p.as_str().to_string())
            .unwrap_or_default();
        return Some(Reason::Number(pattern));
    }
    None
}

/// The called side: a configured user or group, or (optionally) a user
/// logged in to a configured group.
fn called(config: &Config, callee: &Party) -> Option<Reason> {
    let id = callee.id.as_ref().into_option()?.as_str();
    match callee.kind {
        PartyKind::User if config.users.iter().any(|u| u == id) => {
            Some(Reason::CalledUser(id.to_string()))
        }
        PartyKind::Group if config.groups.iter().any(|g| g == id) => {
            Some(Reason::CalledGroup(id.to_string()))
        }
        PartyKind::User if config.record_direct_calls_to_group_members => {
            active_group(config, callee).map(|group| Reason::CalledGroupMember {
                user: id.to_string(),
                group,
            })
        }
        _ => None,
    }
}

/// The calling side: a configured user, or a user while logged in to a
/// configured group (logging out stops future recording, CR3).
fn calling(config: &Config, caller: &Party) -> Option<Reason> {
    if caller.kind != PartyKind::User {
        return None;
    }
    let id = caller.id.as_ref().into_option()?.as_str();
    if config.users.iter().any(|u| u == id) {
        return Some(Reason::CallingUser(id.to_string()));
    }
    active_group(config, caller).map(|group| Reason::CallingGroupMember {
        user: id.to_string(),
        group,
    })
}

fn active_group(config: &Config, user: &Party) -> Option<String> {
    user.active_groups
        .iter()
        .find(|group| config.groups.iter().any(|g| g == group.as_str()))
        .map(|group| group.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use callhost_numbers::Pattern;
    use callhost_plugin_sdk::abi_stable::std_types::{ROption, RString, RVec};
    use callhost_plugin_sdk::testing::{external_de, setup, user};

    fn group(id: &str, number: &str) -> Party {
        Party {
            id: ROption::RSome(RString::from(id)),
            ..Party::new(PartyKind::Group, number)
        }
    }

    fn member(id: &str, number: &str, active: &[&str], all: &[&str]) -> Party {
        let mut party = user(id, id, number);
        party.active_groups = active
            .iter()
            .map(|g| RString::from(*g))
            .collect::<RVec<_>>();
        party.groups = all.iter().map(|g| RString::from(*g)).collect::<RVec<_>>();
        party
    }

    fn config(text: &str) -> Config {
        toml::from_str(text).unwrap()
    }

    #[test]
    fn calls_to_configured_users_and_groups_are_recorded() {
        let c = config("users = [\"anna\"]\ngroups = [\"sales\"]\n");
        let outside = external_de("0301234567");
        assert_eq!(
            selects(&c, &setup(outside.clone(), user("anna", "Anna", "201"))),
            Some(Reason::CalledUser("anna".into()))
        );
        assert_eq!(
            selects(&c, &setup(outside.clone(), group("sales", "600"))),
            Some(Reason::CalledGroup("sales".into()))
        );
        assert_eq!(
            selects(&c, &setup(outside, user("bert", "Bert", "202"))),
            None
        );
    }

    #[test]
    fn group_members_are_recorded_outgoing_only_while_logged_in() {
        let c = config("groups = [\"sales\"]\n");
        let outside = external_de("0301234567");
        let logged_in = member("carl", "203", &["sales"], &["sales"]);
        let logged_out = member("carl", "203", &[], &["sales"]);
        assert_eq!(
            selects(&c, &setup(logged_in.clone(), outside.clone())),
            Some(Reason::CallingGroupMember {
                user: "carl".into(),
                group: "sales".into()
            })
        );
        assert_eq!(selects(&c, &setup(logged_out, outside.clone())), None);
        // A direct call to a member is not a call to the group…
        assert_eq!(
            selects(&c, &setup(outside.clone(), logged_in.clone())),
            None
        );
        // …unless the option says so.
        let c = config("groups = [\"sales\"]\nrecord_direct_calls_to_group_members = true\n");
        assert!(matches!(
            selects(&c, &setup(outside, logged_in)),
            Some(Reason::CalledGroupMember { .. })
        ));
    }

    #[test]
    fn direction_filters_incoming_and_outgoing() {
        let outside = external_de("0301234567");
        let anna = user("anna", "Anna", "201");
        let incoming_only = config("users = [\"anna\"]\ndirection = \"incoming\"\n");
        assert!(selects(&incoming_only, &setup(outside.clone(), anna.clone())).is_some());
        assert!(selects(&incoming_only, &setup(anna.clone(), outside.clone())).is_none());
        let outgoing_only = config("users = [\"anna\"]\ndirection = \"outgoing\"\n");
        assert!(selects(&outgoing_only, &setup(outside.clone(), anna.clone())).is_none());
        assert!(selects(&outgoing_only, &setup(anna.clone(), outside)).is_some());
        // Between two users: anna calling counts as her outgoing call.
        let bert = user("bert", "Bert", "202");
        assert_eq!(
            selects(&outgoing_only, &setup(anna.clone(), bert.clone())),
            Some(Reason::CallingUser("anna".into()))
        );
        assert_eq!(selects(&incoming_only, &setup(anna, bert)), None);
    }

    #[test]
    fn number_patterns_match_either_party() {
        let c = Config {
            numbers: vec![Pattern::parse("+4930*").unwrap()],
            ..Config::default()
        };
        let berlin = external_de("0301234567");
        let munich = external_de("0891234567");
        let bert = user("bert", "Bert", "202");
        assert!(selects(&c, &setup(berlin.clone(), bert.clone())).is_some());
        assert!(selects(&c, &setup(bert.clone(), berlin)).is_some());
        assert!(selects(&c, &setup(munich, bert)).is_none());
    }

    #[test]
    fn star_codes_are_never_recorded() {
        let c = config("users = [\"anna\"]\n");
        let anna = user("anna", "Anna", "201");
        let mut feature = setup(anna, Party::new(PartyKind::Unknown, "*21#"));
        feature.dialled = "*21#".into();
        assert_eq!(selects(&c, &feature), None);
    }

    #[test]
    fn an_unconfigured_instance_records_nothing() {
        let c = Config::default();
        let outside = external_de("0301234567");
        assert_eq!(
            selects(&c, &setup(outside, user("anna", "Anna", "201"))),
            None
        );
    }
}
