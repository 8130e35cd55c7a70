//! Which requests are security events, and their lines in the audit log
//! (`crate::app::audit`).
//!
//! Audited: register, login (success, bad password, locked out, disabled), refresh,
//! logout (token revocation) and password change; every admin action that changes
//! something (user disable/enable, role assignment and revocation, role definitions,
//! rate limits, lockouts lifted, snapshots, AOF rewrites, backups, DLQ redrives, proxy
//! routes and backends) and an admin's reads of a user's KV data. An audited route's
//! refusal by RBAC is audited too, as `denied`, when the caller's token verified (a refusal
//! of no token or a bad one, or by the rate limiter, names nobody and would let anyone
//! roll the log's history away: it stays in the operational log only). Reads that touch no user's data (stats,
//! listings of users, roles, lockouts, routes) are not.
//!
//! Invariant: the decision is made from the route and method (and the user action),
//! never from the body; the body is read only for a login's or registration's username
//! and an assigned role's name, and nothing secret (password, token) is written.

use super::router::Route;
use crate::app::audit::AuditEvent;
use crate::app::http::{Body, ProblemSlug};
use crate::gateway::State;
use http::{Method, Response};
use std::net::IpAddr;

/// The event name of `route` under `method` (with the user `action`), if it is audited.
pub(super) fn event_of(
    route: Route,
    method: &Method,
    action: Option<&str>,
) -> Option<&'static str> {
    let write = *method != Method::GET;
    Some(match route {
        Route::Register => "user.register",
        Route::Login => "auth.login",
        Route::Refresh => "auth.refresh",
        Route::Logout => "auth.logout",
        Route::Password => "auth.password_change",
        Route::AdminUserRoles => "user.role_assign",
        Route::AdminUserRole => "user.role_revoke",
        Route::AdminUserAction => match action {
            Some("disable") => "user.disable",
            Some("enable") => "user.enable",
            _ => "user.action",
        },
        Route::AdminRole if *method == Method::PUT => "role.put",
        Route::AdminRole => "role.delete",
        Route::AdminRateLimits if write => "config.rate_limits",
        Route::AdminLockout => "lockout.clear",
        Route::AdminSnapshot => "admin.snapshot",
        Route::AdminRewrite => "admin.aof_rewrite",
        Route::AdminBackup => "admin.backup",
        Route::DlqRedrive => "admin.dlq_redrive",
        Route::AdminProxyRouteItem if *method == Method::PUT => "config.proxy_route.put",
        Route::AdminProxyRouteItem if write => "config.proxy_route.delete",
        Route::AdminProxyBackendItem if *method == Method::PUT => "config.proxy_backend.put",
        Route::AdminProxyBackendItem if write => "config.proxy_backend.delete",
        Route::AdminUserKvItem if *method == Method::PUT => "admin.user_kv.put",
        Route::AdminUserKvItem if write => "admin.user_kv.delete",
        Route::AdminUserKvItem | Route::AdminUserKvList => "admin.user_kv.read",
        _ => return None,
    })
}

/// Longest `target` and `username` written, in characters.
const TARGET_CHARS_MAX: usize = 256;

/// An audited request in progress: what is known before its handler runs.
pub(super) struct Pending {
    pub event: &'static str,
    /// The object acted on (path parameters, joined with `/`).
    pub target: Option<String>,
}

impl Pending {
    /// The pending event of a request, if its route is audited.
    pub fn of(
        route: Route,
        method: &Method,
        parts: [Option<&str>; 3],
        action: Option<&str>,
    ) -> Option<Self> {
        let event = event_of(route, method, action)?;
        let mut joined: Vec<&str> = parts.into_iter().flatten().collect();
        // A user's KV list has its id as both the scope and the key parameter.
        joined.dedup();
        // Path parameters are the caller's text: bounded, as the username is.
        let target: String = joined.join("/").chars().take(TARGET_CHARS_MAX).collect();
        Some(Pending {
            event,
            target: (!target.is_empty()).then_some(target),
        })
    }

    /// Writes the event with its outcome, read from `resp`: 2xx `success`; a lockout
    /// `locked_out`; a refused token or permission `denied` (a login's wrong password is a
    /// `failure`); 5xx `error`; any other refusal `failure`.
    pub fn finish(
        self,
        state: &State,
        actor: Option<&str>,
        body: &[u8],
        peer: IpAddr,
        request_id: &str,
        resp: &Response<Body>,
    ) {
        let Some(log) = &state.audit else {
            return;
        };
        let status = resp.status();
        let slug = resp.extensions().get::<ProblemSlug>().map(|p| p.0.as_str());
        let outcome = if status.is_success() || status.is_redirection() {
            "success"
        } else if slug == Some("locked-out") {
            "locked_out"
        } else if status.is_server_error() {
            "error"
        } else if self.event == "auth.login" && status == http::StatusCode::UNAUTHORIZED {
            "failure"
        } else if status == http::StatusCode::UNAUTHORIZED || status == http::StatusCode::FORBIDDEN
        {
            "denied"
        } else {
            "failure"
        };
        // Names from the body: the login's or registration's username, an assigned role.
        let field = |name: &str| -> Option<String> {
            serde_json::from_slice::<serde_json::Value>(body)
                .ok()?
                .get(name)?
                .as_str()
                .map(|s| s.chars().take(TARGET_CHARS_MAX).collect())
        };
        let username = match self.event {
            "auth.login" | "user.register" => field("username"),
            _ => None,
        };
        let target = match (self.event, self.target) {
            ("user.role_assign", Some(user)) => match field("role") {
                Some(role) => Some(format!("{user}/{role}")),
                None => Some(user),
            },
            (_, t) => t,
        };
        // A login names no token: its actor is the user it logged in as.
        let found = match (actor, self.event, outcome, &username) {
            (None, "auth.login", "success", Some(name)) => {
                state.auth.user_view_by_name(name).map(|u| u.id)
            }
            _ => None,
        };
        let actor = actor.or(found.as_deref());
        let client = peer.to_string();
        log.record(
            state.clock.now_ms(),
            &AuditEvent {
                event: self.event,
                outcome,
                status: status.as_u16(),
                actor,
                username: username.as_deref(),
                client: &client,
                request_id,
                target: target.as_deref(),
            },
        );
    }
}
