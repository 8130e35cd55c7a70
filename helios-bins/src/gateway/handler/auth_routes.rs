//! The auth routes served here: `POST /api/v1/auth/register|login|refresh` (no token),
//! `POST /api/v1/auth/logout` and `GET /api/v1/auth/me` (a token). Password changes are
//! in `account.rs`.
//!
//! Invariants: credential bodies are strict (unknown fields refused); bcrypt and writes
//! run on the blocking pool; a login for a name under attack waits a bounded delay,
//! never a lock the right password cannot pass.

use super::problems::auth_error;
use super::support::{blocking, parse};
use crate::app::http::{Body, empty, json, problem};
use crate::gateway::State;
use helios_auth::Claims;
use http::{Response, StatusCode};
use serde::Deserialize;
use std::sync::Arc;
use std::time::Duration;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Credentials {
    username: String,
    password: String,
}

pub(super) async fn register(
    state: &Arc<State>,
    body: &[u8],
) -> Result<Response<Body>, Response<Body>> {
    let c: Credentials = parse(body)?;
    let auth = state.auth.clone();
    let u = blocking(move || auth.register(&c.username, &c.password))
        .await?
        .map_err(auth_error)?;
    Ok(json(
        StatusCode::CREATED,
        &serde_json::json!({"id": u.id, "username": u.username}),
    ))
}

pub(super) async fn login(
    state: &Arc<State>,
    body: &[u8],
    ip: String,
) -> Result<Response<Body>, Response<Body>> {
    let c: Credentials = parse(body)?;
    // A name under attack from many addresses: every attempt waits a bounded delay (never
    // a lock the right password cannot pass), off the blocking pool.
    let delay = state.auth.login_delay_ms(&c.username);
    if delay > 0 {
        tokio::time::sleep(Duration::from_millis(delay)).await;
    }
    let auth = state.auth.clone();
    let pair = blocking(move || auth.login(&c.username, &c.password, &ip))
        .await?
        .map_err(auth_error)?;
    Ok(json(StatusCode::OK, &pair))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RefreshBody {
    refresh_token: String,
}

pub(super) async fn refresh(
    state: &Arc<State>,
    body: &[u8],
) -> Result<Response<Body>, Response<Body>> {
    let b: RefreshBody = parse(body)?;
    let auth = state.auth.clone();
    let pair = blocking(move || auth.refresh(&b.refresh_token))
        .await?
        .map_err(auth_error)?;
    Ok(json(StatusCode::OK, &pair))
}

pub(super) async fn logout(
    state: &Arc<State>,
    claims: Option<Arc<Claims>>,
) -> Result<Response<Body>, Response<Body>> {
    let Some(c) = claims else {
        return Err(problem(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "a Bearer token is required",
        ));
    };
    let auth = state.auth.clone();
    blocking(move || auth.logout(&c))
        .await?
        .map_err(auth_error)?;
    Ok(empty(StatusCode::NO_CONTENT))
}

pub(super) fn me(
    state: &State,
    claims: Option<Arc<Claims>>,
) -> Result<Response<Body>, Response<Body>> {
    let sub = claims.map(|c| c.sub.clone()).unwrap_or_default();
    let u = state
        .auth
        .user(&sub)
        .ok_or_else(|| problem(StatusCode::NOT_FOUND, "not-found", "user not found"))?;
    Ok(json(
        StatusCode::OK,
        &serde_json::json!({"id": u.id, "username": u.username, "roles": u.roles}),
    ))
}
