//! The admin routes (`/admin/...`): store stats, snapshot, AOF rewrite and backup, users and their
//! roles, roles, rate limits, login lockouts. Permission `admin:*` for the store,
//! `users:admin` for the rest (RBAC runs before these handlers).
//!
//! Changes to roles and accounts act as the caller (`actor`, the token's `sub`): helios-auth
//! refuses what the caller does not hold itself (`403` `privilege-escalation`) and what
//! would leave no enabled admin (`403` `last-admin`).

// Handlers return `Err(response)` to answer early (see handler.rs).
#![allow(clippy::result_large_err)]

use super::State;
use super::handler::{auth_error, blocking, parse, percent_decode, store_error};
use crate::app::http::{Body, empty, json, problem};
use helios_atlas::AtlasError;
use helios_auth::rbac::perms;
use helios_auth::{AuthError, RateLimitConfig};
use http::{Method, Response, StatusCode};
use serde::Deserialize;
use serde_json::json as j;
use std::sync::Arc;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RoleBody {
    role: String,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct BackupBody {
    name: Option<String>,
}

/// A backup's name: one path component of safe characters.
fn backup_name(name: &str) -> Result<(), Response<Body>> {
    let ok = (1..=64).contains(&name.len())
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(problem(
            StatusCode::BAD_REQUEST,
            "invalid-field",
            "name: 1 to 64 of A-Z a-z 0-9 - _ . (not starting with a dot)",
        ))
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PermissionsBody {
    permissions: Vec<String>,
}

fn decoded(raw: Option<String>, what: &str) -> Result<String, Response<Body>> {
    raw.as_deref()
        .and_then(percent_decode)
        .filter(|s| !s.is_empty())
        .ok_or_else(|| {
            problem(
                StatusCode::BAD_REQUEST,
                "invalid-field",
                format!("{what}: missing"),
            )
        })
}

/// Every limit of a `PUT /admin/rate-limits` body, naming the first bad field
/// (`default`, `roles.{role}`, `clients.{client}`): a `400`, never a `500`.
fn check_limits(cfg: &RateLimitConfig) -> Result<(), Response<Body>> {
    let bad = |field: &str, e: &dyn std::fmt::Display| {
        problem(
            StatusCode::BAD_REQUEST,
            "invalid-field",
            format!("{field}: {e}"),
        )
    };
    cfg.default.validate().map_err(|e| bad("default", &e))?;
    for (name, c) in &cfg.roles {
        c.validate()
            .map_err(|e| bad(&format!("roles.{name}"), &e))?;
    }
    for (name, c) in &cfg.clients {
        c.validate()
            .map_err(|e| bad(&format!("clients.{name}"), &e))?;
    }
    Ok(())
}

/// Serves one admin route; `pattern` is the route's pattern, `second` the second path
/// parameter (`{role}`, `{name}` or `{action}`), `actor` the caller's user id.
pub(super) async fn handle(
    state: &Arc<State>,
    pattern: &str,
    method: &Method,
    first: Option<String>,
    second: Option<String>,
    body: &[u8],
    actor: &str,
) -> Result<Response<Body>, Response<Body>> {
    let actor = actor.to_owned();
    match (pattern, method) {
        ("/admin/stats", _) => {
            let s = state.atlas.stats();
            Ok(json(
                StatusCode::OK,
                &j!({
                    "key_count": s.key_count,
                    "memory_size": s.memory_size,
                    "memory_limit_size": s.memory_limit_size,
                    "last_seq": s.last_seq,
                    "records_written_count": s.records_written_count,
                    "fsync_count": s.fsync_count,
                    "fsync_last_ok_age_ms": s.fsync_last_ok_age_ms,
                    "fsync_lag_stall_count": s.fsync_lag_stall_count,
                    "aof_segment_count": s.aof_segment_count,
                    "aof_current_size": s.aof_current_size,
                    "snapshot_last_seq": s.snapshot_last_seq,
                    "expired_count": s.expired_count,
                    "write_error": s.write_error,
                }),
            ))
        }
        ("/admin/snapshot", _) | ("/admin/aof/rewrite", _) => {
            let atlas = state.atlas.clone();
            let rewrite = pattern == "/admin/aof/rewrite";
            let seq = blocking(move || {
                if rewrite {
                    atlas.rewrite_aof()
                } else {
                    atlas.snapshot()
                }
            })
            .await?
            .map_err(store_error)?;
            Ok(json(StatusCode::OK, &j!({"seq": seq})))
        }
        ("/admin/backup", _) => {
            let b: BackupBody = if body.iter().all(u8::is_ascii_whitespace) {
                BackupBody::default()
            } else {
                parse(body)?
            };
            let name = b
                .name
                .unwrap_or_else(|| format!("backup-{}", state.clock.now_ms()));
            backup_name(&name)?;
            let dir = state.config.backup_dir.join(&name);
            let exists = || {
                problem(
                    StatusCode::CONFLICT,
                    "backup-exists",
                    format!("a backup named {name} exists; pick another name"),
                )
            };
            if dir.exists() {
                return Err(exists());
            }
            let atlas = state.atlas.clone();
            let to = dir.clone();
            let manifest = blocking(move || atlas.backup(&to))
                .await?
                .map_err(|e| match e {
                    AtlasError::BackupInvalid { .. } => exists(),
                    AtlasError::Io { .. } | AtlasError::Corrupt { .. } => {
                        tracing::error!(error = %e, "backup failed");
                        problem(
                            StatusCode::INTERNAL_SERVER_ERROR,
                            "backup-failed",
                            format!("the backup failed: {e}"),
                        )
                    }
                    other => store_error(other),
                })?;
            tracing::info!(actor = %actor, name = %name, last_seq = manifest.last_seq, "backup taken");
            Ok(json(
                StatusCode::CREATED,
                &j!({
                    "name": name,
                    "dir": dir.display().to_string(),
                    "last_seq": manifest.last_seq,
                    "files": manifest.files,
                }),
            ))
        }
        ("/admin/users", _) => Ok(json(StatusCode::OK, &j!({"users": state.auth.users()}))),
        ("/admin/users/{id}/roles", _) => {
            let id = decoded(first, "id")?;
            let b: RoleBody = parse(body)?;
            let auth = state.auth.clone();
            blocking(move || auth.assign_role_as(&actor, &id, &b.role))
                .await?
                .map_err(not_found_or)?;
            Ok(empty(StatusCode::NO_CONTENT))
        }
        ("/admin/users/{id}/roles/{role}", _) => {
            let id = decoded(first, "id")?;
            let role = decoded(second, "role")?;
            let auth = state.auth.clone();
            blocking(move || auth.revoke_role_as(&actor, &id, &role))
                .await?
                .map_err(not_found_or)?;
            Ok(empty(StatusCode::NO_CONTENT))
        }
        ("/admin/users/{id}/{action}", _) => {
            let id = decoded(first, "id")?;
            let disabled = match second.as_deref() {
                Some("disable") => true,
                Some("enable") => false,
                other => {
                    return Err(problem(
                        StatusCode::NOT_FOUND,
                        "not-found",
                        format!("no user action {other:?}; use disable or enable"),
                    ));
                }
            };
            let auth = state.auth.clone();
            blocking(move || auth.set_disabled_as(&actor, &id, disabled))
                .await?
                .map_err(not_found_or)?;
            Ok(empty(StatusCode::NO_CONTENT))
        }
        ("/admin/roles", _) => Ok(json(StatusCode::OK, &j!({"roles": state.auth.roles()}))),
        ("/admin/roles/{name}", &Method::PUT) => {
            let name = decoded(second, "name")?;
            let b: PermissionsBody = parse(body)?;
            let auth = state.auth.clone();
            blocking(move || auth.put_role_as(&actor, &name, b.permissions))
                .await?
                .map_err(not_found_or)?;
            Ok(empty(StatusCode::NO_CONTENT))
        }
        ("/admin/roles/{name}", _) => {
            let name = decoded(second, "name")?;
            let auth = state.auth.clone();
            blocking(move || auth.delete_role_as(&actor, &name))
                .await?
                .map_err(not_found_or)?;
            Ok(empty(StatusCode::NO_CONTENT))
        }
        ("/admin/rate-limits", &Method::PUT) => {
            let mut cfg: RateLimitConfig = parse(body)?;
            let current = state.limiter.config();
            // Only the limits are set here; memory bounds stay as configured.
            cfg.idle_ms = current.idle_ms;
            cfg.clients_max = current.clients_max;
            cfg.persist_interval_ms = current.persist_interval_ms;
            check_limits(&cfg)?;
            state.limiter.set_config(cfg).map_err(not_found_or)?;
            Ok(empty(StatusCode::NO_CONTENT))
        }
        ("/admin/lockouts", _) => Ok(json(
            StatusCode::OK,
            &j!({"lockouts": state.auth.lockouts()}),
        )),
        ("/admin/lockouts/{username}", _) => {
            let who = decoded(first, "username")?;
            // Lifting a lock that protects an admin (the admin's name, a pair on it) or
            // every account (an address) needs admin:* itself: a `users:admin` holder
            // must not be able to clear the throttle on the account it would escalate to.
            if !state.auth.authorize(&actor, perms::ADMIN_ALL) && protects_an_admin(state, &who) {
                return Err(problem(
                    StatusCode::FORBIDDEN,
                    "privilege-escalation",
                    format!("lifting {who:?} needs {}", perms::ADMIN_ALL),
                ));
            }
            if state.auth.lift_lockout(&who) == 0 {
                return Err(problem(
                    StatusCode::NOT_FOUND,
                    "not-found",
                    format!("no lockout for {who:?}"),
                ));
            }
            Ok(empty(StatusCode::NO_CONTENT))
        }
        _ => {
            let c = state.limiter.config();
            Ok(json(
                StatusCode::OK,
                &j!({"default": c.default, "roles": c.roles, "clients": c.clients}),
            ))
        }
    }
}

/// Whether the throttle key or username `who` guards an `admin:*` holder's account, or
/// every account (an address's key).
fn protects_an_admin(state: &State, who: &str) -> bool {
    let name = match who.split_once(':') {
        None => who,
        Some(("user", name)) => name,
        Some(("pair", rest)) => rest.split_once('@').map_or(rest, |(name, _)| name),
        // `client:{address}` and anything unknown.
        Some(_) => return true,
    };
    state
        .auth
        .user_view_by_name(name)
        .is_some_and(|u| state.auth.authorize(&u.id, perms::ADMIN_ALL))
}

fn not_found_or(e: AuthError) -> Response<Body> {
    match e {
        AuthError::UserNotFound(id) => {
            problem(StatusCode::NOT_FOUND, "not-found", format!("no user {id}"))
        }
        AuthError::RoleNotFound(r) => {
            problem(StatusCode::NOT_FOUND, "not-found", format!("no role {r:?}"))
        }
        e @ AuthError::PrivilegeEscalation { .. } => {
            problem(StatusCode::FORBIDDEN, "privilege-escalation", e.to_string())
        }
        e @ AuthError::LastAdmin => problem(StatusCode::FORBIDDEN, "last-admin", e.to_string()),
        AuthError::Config { key, reason } => problem(
            StatusCode::BAD_REQUEST,
            "invalid-field",
            format!(
                "{}: {reason}",
                key.strip_prefix("rate_limit.").unwrap_or(key)
            ),
        ),
        other => auth_error(other),
    }
}
