//! Roles and principals.

use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;

/// What a user may do, by kind of work. A user holds one or more roles; a call is allowed when
/// any of them allows it (see [`crate::permissions`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    /// Everything: users, roles, cluster administration, registry changes.
    Admin,
    /// Watches the grid: reads everything in scope (and handles alerts once they exist).
    Operator,
    /// Queries readings, aggregates and forecasts in scope.
    Analyst,
    /// Read-only view of status, feeder load and the registry in scope; no raw readings.
    Viewer,
    /// Pushes readings only (head-end systems, usually a service account with an API token).
    Ingest,
}

impl Role {
    /// Every role, in order.
    pub const ALL: [Role; 5] = [
        Role::Admin,
        Role::Operator,
        Role::Analyst,
        Role::Viewer,
        Role::Ingest,
    ];

    /// The role's name as stored and shown (`admin`, `operator`, ...).
    pub fn name(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Operator => "operator",
            Role::Analyst => "analyst",
            Role::Viewer => "viewer",
            Role::Ingest => "ingest",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A role name that is not one of the five.
#[derive(Debug, Clone, thiserror::Error)]
#[error("unknown role {0:?}; roles are admin, operator, analyst, viewer, ingest")]
pub struct UnknownRole(pub String);

impl FromStr for Role {
    type Err = UnknownRole;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Role::ALL
            .into_iter()
            .find(|r| r.name() == s)
            .ok_or_else(|| UnknownRole(s.to_owned()))
    }
}

/// Parses role names; fails on the first unknown one.
pub fn parse_roles<S: AsRef<str>>(names: &[S]) -> Result<BTreeSet<Role>, UnknownRole> {
    names.iter().map(|n| n.as_ref().parse()).collect()
}

/// Who is calling, once the token is validated and the user record looked up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// User name (`sub`).
    pub user: String,
    /// Current roles (from the user record, so role changes apply to live tokens at once).
    pub roles: BTreeSet<Role>,
    /// Feeders the user is limited to; empty means every feeder.
    pub feeders: BTreeSet<String>,
    /// Login session id; empty for API tokens.
    pub session_id: String,
    /// Token id (`jti`).
    pub token_id: String,
}

impl Principal {
    /// Whether the principal holds `role`.
    pub fn has(&self, role: Role) -> bool {
        self.roles.contains(&role)
    }

    /// Whether the principal is limited to a set of feeders. Admins never are.
    pub fn is_scoped(&self) -> bool {
        !self.feeders.is_empty() && !self.has(Role::Admin)
    }

    /// Whether `feeder` is inside the principal's scope.
    pub fn may_see_feeder(&self, feeder: &str) -> bool {
        !self.is_scoped() || self.feeders.contains(feeder)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for role in Role::ALL {
            assert_eq!(role.name().parse::<Role>().unwrap(), role);
        }
        assert!("root".parse::<Role>().is_err());
        assert!("Admin".parse::<Role>().is_err());
    }

    #[test]
    fn admins_are_never_scoped() {
        let mut p = Principal {
            user: "a".into(),
            roles: [Role::Admin].into(),
            feeders: ["F1".to_owned()].into(),
            session_id: String::new(),
            token_id: String::new(),
        };
        assert!(!p.is_scoped());
        assert!(p.may_see_feeder("F2"));
        p.roles = [Role::Analyst].into();
        assert!(p.is_scoped());
        assert!(p.may_see_feeder("F1"));
        assert!(!p.may_see_feeder("F2"));
    }
}
