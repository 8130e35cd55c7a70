//! The caller's own account: `POST /api/v1/auth/password`.
//!
//! Needs a valid token and no permission (a user with no role may still change its
//! password). The current password is checked and throttled like a login from the
//! caller's address (the name's bounded delay is served first, off the blocking pool); the
//! new one must pass the password rules (field `new_password`). Every session of the user
//! ends (its session epoch moves: other refresh families and every access token issued
//! before are refused); the answer is a fresh token pair for the caller.
//!
//! A wrong current password answers `403` `invalid-credentials`, not `401`: the caller's
//! token is fine, and a `401` would tell clients to drop or renew it.

// Handlers return `Err(response)` to answer early (see handler.rs).
#![allow(clippy::result_large_err)]

use super::State;
use super::handler::{auth_error, blocking, parse};
use crate::app::http::{Body, json, problem};
use helios_auth::{AuthError, Claims};
use http::{Response, StatusCode};
use serde::Deserialize;
use std::sync::Arc;
use std::time::Duration;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PasswordChange {
    current_password: String,
    new_password: String,
}

/// `POST /api/v1/auth/password`: checks `current_password`, sets `new_password`, ends
/// every other session and answers with the caller's new token pair.
pub(super) async fn change_password(
    state: &Arc<State>,
    claims: Option<Arc<Claims>>,
    body: &[u8],
    client: String,
) -> Result<Response<Body>, Response<Body>> {
    let Some(claims) = claims else {
        return Err(problem(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "a Bearer token is required",
        ));
    };
    let b: PasswordChange = parse(body)?;
    let username = state
        .auth
        .user(&claims.sub)
        .map(|u| u.username)
        .unwrap_or_default();
    let delay = state.auth.login_delay_ms(&username);
    if delay > 0 {
        tokio::time::sleep(Duration::from_millis(delay)).await;
    }
    let auth = state.auth.clone();
    let pair = blocking(move || {
        auth.change_password(&claims.sub, &b.current_password, &b.new_password, &client)
    })
    .await?
    .map_err(|e| match e {
        AuthError::InvalidCredentials => problem(
            StatusCode::FORBIDDEN,
            "invalid-credentials",
            "current_password is wrong",
        ),
        AuthError::UserNotFound(_) => problem(
            StatusCode::UNAUTHORIZED,
            "invalid-token",
            "the token is not valid",
        ),
        other => auth_error(other),
    })?;
    Ok(json(StatusCode::OK, &pair))
}
