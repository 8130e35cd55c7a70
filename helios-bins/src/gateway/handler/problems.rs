//! Problem mapping: the auth and store cores' errors as RFC 9457 problem+json responses
//! (status, problem type, a detail fit for the caller).
//!
//! Invariants: internal details (I/O errors, paths) go to the log, never to the caller;
//! a lockout and a store that cannot write answer with `Retry-After`.

use crate::app::http::{Body, problem};
use helios_atlas::AtlasError;
use helios_auth::AuthError;
use http::{HeaderValue, Response, StatusCode, header};

pub(in crate::gateway) fn auth_error(e: AuthError) -> Response<Body> {
    match e {
        AuthError::InvalidCredentials => problem(
            StatusCode::UNAUTHORIZED,
            "invalid-credentials",
            "invalid username or password",
        ),
        AuthError::LockedOut { retry_after_ms } => {
            let mut r = problem(
                StatusCode::TOO_MANY_REQUESTS,
                "locked-out",
                "too many failed logins",
            );
            if let Ok(v) = HeaderValue::from_str(&retry_after_ms.div_ceil(1000).to_string()) {
                r.headers_mut().insert(header::RETRY_AFTER, v);
            }
            r
        }
        AuthError::Disabled => problem(
            StatusCode::FORBIDDEN,
            "account-disabled",
            "account is disabled",
        ),
        AuthError::UsernameTaken(u) => problem(
            StatusCode::CONFLICT,
            "username-taken",
            format!("username {u:?} is taken"),
        ),
        AuthError::Invalid { field, reason } => problem(
            StatusCode::BAD_REQUEST,
            "invalid-field",
            format!("{field}: {reason}"),
        ),
        AuthError::RegistrationClosed => problem(
            StatusCode::FORBIDDEN,
            "registration-closed",
            "self-registration is disabled",
        ),
        AuthError::RefreshReuse => problem(
            StatusCode::UNAUTHORIZED,
            "refresh-reuse",
            "refresh token reuse detected; the session is revoked",
        ),
        AuthError::InvalidToken { .. } => problem(
            StatusCode::UNAUTHORIZED,
            "invalid-token",
            "the token is not valid",
        ),
        AuthError::TokenExpired => problem(
            StatusCode::UNAUTHORIZED,
            "token-expired",
            "the access token has expired: renew it with POST /api/v1/auth/refresh",
        ),
        AuthError::Store(e) => store_error(e),
        other => {
            tracing::error!(error = %other, "auth failure");
            problem(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "internal error",
            )
        }
    }
}

pub(in crate::gateway) fn store_error(e: AtlasError) -> Response<Body> {
    match e {
        AtlasError::MemoryLimit { .. } => problem(
            StatusCode::INSUFFICIENT_STORAGE,
            "memory-limit",
            "the store is at its memory limit; deletes still work",
        ),
        AtlasError::KeyInvalid { .. }
        | AtlasError::ValueTooLarge { .. }
        | AtlasError::InvalidArgument { .. }
        | AtlasError::BatchTooLarge { .. } => {
            problem(StatusCode::BAD_REQUEST, "invalid-field", e.to_string())
        }
        AtlasError::PreconditionFailed { .. } => problem(
            StatusCode::PRECONDITION_FAILED,
            "precondition-failed",
            "the precondition does not hold",
        ),
        other => {
            tracing::error!(error = %other, "store refused a write");
            let mut r = problem(
                StatusCode::SERVICE_UNAVAILABLE,
                "store-unavailable",
                "the store cannot take writes now; reads still work",
            );
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
            r
        }
    }
}
