//! The permission table: every gRPC method GridMesh serves, who may call it, and whether the
//! caller's feeder scope applies. This is the only place that decides; the node's auth layer
//! looks every call up here before the service sees it.
//!
//! A method missing from the table is refused for everyone (deny by default), and a test in
//! the node crate checks that every method of the `.proto` files has a row.
//!
//! Open methods (no token needed) are the ones that cannot work with one: `Login` and
//! `Refresh` (they produce tokens), the standard health service (load balancers and
//! orchestrators probe it without credentials; it reveals only serving/not serving) and server
//! reflection (it describes the public API, which is published in the repository anyway; it
//! reveals no data and lets generic tools discover the services).

use crate::role::{Principal, Role};

/// Who may call a method.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Anyone, without a token.
    Open,
    /// Any authenticated principal, whatever its roles.
    AnyUser,
    /// A principal holding at least one of these roles.
    Roles(&'static [Role]),
}

/// Whether a method's answers are limited to the caller's feeders.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// The method does not deal with feeder data (or only admins may call it).
    None,
    /// The service limits requests and answers to the caller's feeders.
    Feeders,
}

/// One row of the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rule {
    /// Full gRPC path, `/package.Service/Method`.
    pub method: &'static str,
    /// Who may call it.
    pub access: Access,
    /// Whether feeder scope applies.
    pub scope: Scope,
}

const ADMIN: &[Role] = &[Role::Admin];
const INGEST: &[Role] = &[Role::Admin, Role::Ingest];
const READ_DATA: &[Role] = &[Role::Admin, Role::Operator, Role::Analyst];
const OPERATE: &[Role] = &[Role::Admin, Role::Operator];
const READ_STATUS: &[Role] = &[Role::Admin, Role::Operator, Role::Analyst, Role::Viewer];

const fn rule(method: &'static str, access: Access, scope: Scope) -> Rule {
    Rule {
        method,
        access,
        scope,
    }
}

/// Services whose every method is open (health and reflection; see the module docs).
pub const OPEN_SERVICES: [&str; 3] = [
    "/grpc.health.v1.Health/",
    "/grpc.reflection.v1.ServerReflection/",
    "/grpc.reflection.v1alpha.ServerReflection/",
];

/// The table.
pub const TABLE: &[Rule] = &[
    // Ingest: head-end systems (role ingest) and admins.
    rule(
        "/gridmesh.v1.IngestService/PushBatch",
        Access::Roles(INGEST),
        Scope::Feeders,
    ),
    rule(
        "/gridmesh.v1.IngestService/Push",
        Access::Roles(INGEST),
        Scope::Feeders,
    ),
    // Registry: reads for every reading role, writes for admins.
    rule(
        "/gridmesh.v1.RegistryService/GetMeter",
        Access::Roles(READ_STATUS),
        Scope::Feeders,
    ),
    rule(
        "/gridmesh.v1.RegistryService/GetFeeder",
        Access::Roles(READ_STATUS),
        Scope::Feeders,
    ),
    rule(
        "/gridmesh.v1.RegistryService/ListFeeders",
        Access::Roles(READ_STATUS),
        Scope::Feeders,
    ),
    rule(
        "/gridmesh.v1.RegistryService/RegisterMeter",
        Access::Roles(ADMIN),
        Scope::None,
    ),
    rule(
        "/gridmesh.v1.RegistryService/RegisterFeeder",
        Access::Roles(ADMIN),
        Scope::None,
    ),
    rule(
        "/gridmesh.v1.RegistryService/ImportTopology",
        Access::Roles(ADMIN),
        Scope::None,
    ),
    // Queries: raw readings and aggregates are data (analysts, operators); status and feeder
    // load are also for viewers.
    rule(
        "/gridmesh.v1.QueryService/GetReadings",
        Access::Roles(READ_DATA),
        Scope::Feeders,
    ),
    rule(
        "/gridmesh.v1.QueryService/GetMeterStatus",
        Access::Roles(READ_STATUS),
        Scope::Feeders,
    ),
    rule(
        "/gridmesh.v1.QueryService/GetFeederLoad",
        Access::Roles(READ_STATUS),
        Scope::Feeders,
    ),
    rule(
        "/gridmesh.v1.QueryService/GetForecast",
        Access::Roles(READ_DATA),
        Scope::Feeders,
    ),
    rule(
        "/gridmesh.v1.QueryService/GetAggregates",
        Access::Roles(READ_DATA),
        Scope::Feeders,
    ),
    rule(
        "/gridmesh.v1.QueryService/GetValidatedIntervals",
        Access::Roles(READ_DATA),
        Scope::Feeders,
    ),
    rule(
        "/gridmesh.v1.QueryService/GetMeterAnomalies",
        Access::Roles(READ_DATA),
        Scope::Feeders,
    ),
    rule(
        "/gridmesh.v1.QueryService/GetReliability",
        Access::Roles(READ_STATUS),
        Scope::Feeders,
    ),
    // Alerts: every reading role sees them; operators (and admins) handle them; notification
    // plumbing is administration.
    rule(
        "/gridmesh.v1.AlertService/ListAlerts",
        Access::Roles(READ_STATUS),
        Scope::Feeders,
    ),
    rule(
        "/gridmesh.v1.AlertService/WatchAlerts",
        Access::Roles(READ_STATUS),
        Scope::Feeders,
    ),
    rule(
        "/gridmesh.v1.AlertService/AcknowledgeAlert",
        Access::Roles(OPERATE),
        Scope::Feeders,
    ),
    rule(
        "/gridmesh.v1.AlertService/ResolveAlert",
        Access::Roles(OPERATE),
        Scope::Feeders,
    ),
    rule(
        "/gridmesh.v1.AlertService/ListDeadLetters",
        Access::Roles(ADMIN),
        Scope::None,
    ),
    rule(
        "/gridmesh.v1.AlertService/ReplayDeadLetters",
        Access::Roles(ADMIN),
        Scope::None,
    ),
    // Cluster administration.
    rule(
        "/gridmesh.v1.AdminService/ListMembers",
        Access::Roles(ADMIN),
        Scope::None,
    ),
    rule(
        "/gridmesh.v1.AdminService/GetShardMap",
        Access::Roles(ADMIN),
        Scope::None,
    ),
    rule(
        "/gridmesh.v1.AdminService/GetNodeStats",
        Access::Roles(ADMIN),
        Scope::None,
    ),
    rule(
        "/gridmesh.v1.AdminService/DrainNode",
        Access::Roles(ADMIN),
        Scope::None,
    ),
    rule(
        "/gridmesh.v1.AdminService/GetReplicaStatus",
        Access::Roles(ADMIN),
        Scope::None,
    ),
    rule(
        "/gridmesh.v1.AdminService/Repair",
        Access::Roles(ADMIN),
        Scope::None,
    ),
    rule(
        "/gridmesh.v1.AdminService/ListActiveMeters",
        Access::Roles(ADMIN),
        Scope::None,
    ),
    // Authentication: tokens come from Login and Refresh; the rest needs one.
    rule("/gridmesh.v1.AuthService/Login", Access::Open, Scope::None),
    rule(
        "/gridmesh.v1.AuthService/Refresh",
        Access::Open,
        Scope::None,
    ),
    rule(
        "/gridmesh.v1.AuthService/Logout",
        Access::AnyUser,
        Scope::None,
    ),
    rule(
        "/gridmesh.v1.AuthService/WhoAmI",
        Access::AnyUser,
        Scope::None,
    ),
    rule(
        "/gridmesh.v1.AuthService/ChangePassword",
        Access::AnyUser,
        Scope::None,
    ),
    rule(
        "/gridmesh.v1.AuthService/CreateUser",
        Access::Roles(ADMIN),
        Scope::None,
    ),
    rule(
        "/gridmesh.v1.AuthService/UpdateUser",
        Access::Roles(ADMIN),
        Scope::None,
    ),
    rule(
        "/gridmesh.v1.AuthService/ListUsers",
        Access::Roles(ADMIN),
        Scope::None,
    ),
    rule(
        "/gridmesh.v1.AuthService/ListSessions",
        Access::Roles(ADMIN),
        Scope::None,
    ),
    rule(
        "/gridmesh.v1.AuthService/RevokeSessions",
        Access::Roles(ADMIN),
        Scope::None,
    ),
    rule(
        "/gridmesh.v1.AuthService/CreateApiToken",
        Access::Roles(ADMIN),
        Scope::None,
    ),
    rule(
        "/gridmesh.v1.AuthService/RevokeApiToken",
        Access::Roles(ADMIN),
        Scope::None,
    ),
    rule(
        "/gridmesh.v1.AuthService/ListAuditEvents",
        Access::Roles(ADMIN),
        Scope::None,
    ),
];

/// The row of `method`, if any. Health and reflection methods are open by service.
pub fn rule_for(method: &str) -> Option<Rule> {
    if let Some(open) = OPEN_SERVICES.iter().find(|s| method.starts_with(*s)) {
        return Some(rule(open, Access::Open, Scope::None));
    }
    TABLE.iter().find(|r| r.method == method).copied()
}

/// The outcome of checking one call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Go ahead.
    Allow,
    /// No (valid) credentials where they are needed: `UNAUTHENTICATED`.
    Unauthenticated,
    /// Valid credentials without the right role, or an unknown method: `PERMISSION_DENIED`.
    Denied,
}

/// Decides a call to `method` by `principal` (`None` when the call carried no valid token).
pub fn check(method: &str, principal: Option<&Principal>) -> Decision {
    let rule = rule_for(method);
    if rule.is_some_and(|r| r.access == Access::Open) {
        return Decision::Allow;
    }
    // Unknown methods are refused like forbidden ones, but only after authentication, so an
    // anonymous caller learns nothing about which methods exist.
    let Some(principal) = principal else {
        return Decision::Unauthenticated;
    };
    match rule.map(|r| r.access) {
        Some(Access::AnyUser) => Decision::Allow,
        Some(Access::Roles(roles)) if roles.iter().any(|r| principal.has(*r)) => Decision::Allow,
        _ => Decision::Denied,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn principal(roles: &[Role]) -> Principal {
        Principal {
            user: "u".into(),
            roles: roles.iter().copied().collect(),
            feeders: Default::default(),
            session_id: "s".into(),
            token_id: "t".into(),
        }
    }

    #[test]
    fn every_method_is_listed_once() {
        let mut methods: Vec<&str> = TABLE.iter().map(|r| r.method).collect();
        methods.sort_unstable();
        let before = methods.len();
        methods.dedup();
        assert_eq!(before, methods.len(), "a method has two rows");
    }

    #[test]
    fn anonymous_callers_reach_only_open_methods() {
        for rule in TABLE {
            let expected = if rule.access == Access::Open {
                Decision::Allow
            } else {
                Decision::Unauthenticated
            };
            assert_eq!(check(rule.method, None), expected, "{}", rule.method);
        }
        assert_eq!(check("/grpc.health.v1.Health/Check", None), Decision::Allow);
        assert_eq!(
            check("/gridmesh.v1.Nope/Nope", None),
            Decision::Unauthenticated
        );
    }

    #[test]
    fn admin_may_call_everything_and_unknown_methods_are_denied() {
        let admin = principal(&[Role::Admin]);
        for rule in TABLE {
            assert_eq!(check(rule.method, Some(&admin)), Decision::Allow);
        }
        assert_eq!(
            check("/gridmesh.v1.Nope/Nope", Some(&admin)),
            Decision::Denied
        );
    }

    #[test]
    fn ingest_may_only_push() {
        let ingest = principal(&[Role::Ingest]);
        for rule in TABLE {
            let allowed = rule.method.starts_with("/gridmesh.v1.IngestService/")
                || !matches!(rule.access, Access::Roles(_));
            let decision = check(rule.method, Some(&ingest));
            assert_eq!(decision == Decision::Allow, allowed, "{}", rule.method);
        }
    }

    #[test]
    fn viewers_see_status_but_not_raw_readings() {
        let viewer = principal(&[Role::Viewer]);
        let get = |m| check(m, Some(&viewer));
        assert_eq!(
            get("/gridmesh.v1.QueryService/GetMeterStatus"),
            Decision::Allow
        );
        assert_eq!(
            get("/gridmesh.v1.QueryService/GetReadings"),
            Decision::Denied
        );
        assert_eq!(
            get("/gridmesh.v1.IngestService/PushBatch"),
            Decision::Denied
        );
    }

    #[test]
    fn any_role_of_several_suffices() {
        let both = principal(&[Role::Viewer, Role::Ingest]);
        assert_eq!(
            check("/gridmesh.v1.IngestService/PushBatch", Some(&both)),
            Decision::Allow
        );
        assert_eq!(
            check("/gridmesh.v1.QueryService/GetFeederLoad", Some(&both)),
            Decision::Allow
        );
    }
}
