//! A client of the gateway's HTTP API, for the binaries that call it: the proxy's
//! `--control` follower and the worker. Owns the credentials' rules (a token from the
//! environment, or a username and password to log in with, again whenever the token is
//! refused) and the JSON call with its timeout.
//!
//! Invariant: a password never appears in a `Debug` or log line; a refused login names the
//! user and the gateway's answer, never the password.

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use parking_lot::Mutex;
use serde_json::Value;
use std::time::Duration;

/// How a client proves who it is to the gateway.
#[derive(Clone)]
pub enum Credentials {
    /// A bearer token, used as is.
    Token(String),
    /// A user to log in as (again whenever the token is refused or a stream ends).
    Login {
        /// The username.
        username: String,
        /// The password.
        password: String,
    },
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Credentials::Token(_) => f.write_str("Token(..)"),
            Credentials::Login { username, .. } => write!(f, "Login({username:?}, ..)"),
        }
    }
}

impl Credentials {
    /// From the environment: `{prefix}_TOKEN`, else `{prefix}_USERNAME` and
    /// `{prefix}_PASSWORD` (`prefix` is `HELIOS_PROXY`, `HELIOS_WORKER`). The error says
    /// which variables are missing, what needs them (`needed_by`) and the permission the
    /// user must hold.
    pub fn from_env(
        env: &[(String, String)],
        prefix: &str,
        needed_by: &str,
        permission: &str,
    ) -> Result<Self, String> {
        let get = |k: &str| {
            env.iter()
                .find(|(n, _)| n == k)
                .map(|(_, v)| v.clone())
                .filter(|v| !v.is_empty())
        };
        if let Some(t) = get(&format!("{prefix}_TOKEN")) {
            return Ok(Credentials::Token(t));
        }
        match (
            get(&format!("{prefix}_USERNAME")),
            get(&format!("{prefix}_PASSWORD")),
        ) {
            (Some(username), Some(password)) => Ok(Credentials::Login { username, password }),
            _ => Err(format!(
                "{needed_by} needs {prefix}_TOKEN, or {prefix}_USERNAME and \
                 {prefix}_PASSWORD of a user holding {permission}"
            )),
        }
    }
}

/// The pooled HTTP/1.1 client the gateway clients share.
pub type HttpClient = Client<HttpConnector, Full<Bytes>>;

/// A pooled keep-alive client with a connect timeout of `connect`.
pub fn http_client(connect: Duration) -> HttpClient {
    let mut connector = HttpConnector::new();
    connector.set_connect_timeout(Some(connect));
    connector.set_nodelay(true);
    Client::builder(TokioExecutor::new())
        .pool_timer(TokioTimer::new())
        .pool_idle_timeout(Duration::from_secs(30))
        .build(connector)
}

/// Logs in at the gateway `base` (`http://host:port`) and returns an access token (a
/// [`Credentials::Token`] as is).
pub async fn login(client: &HttpClient, base: &str, creds: &Credentials) -> Result<String, String> {
    login_answer(client, base, creds)
        .await
        .map_err(|(_, message)| message)
}

/// [`login`], telling a refusal (the gateway answered: its status) from no answer.
async fn login_answer(
    client: &HttpClient,
    base: &str,
    creds: &Credentials,
) -> Result<String, (Option<StatusCode>, String)> {
    let (username, password) = match creds {
        Credentials::Token(t) => return Ok(t.clone()),
        Credentials::Login { username, password } => (username, password),
    };
    let none = |e: String| (None, e);
    let body = serde_json::json!({"username": username, "password": password}).to_string();
    let req = Request::builder()
        .method(Method::POST)
        .uri(format!("{base}/api/v1/auth/login"))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body)))
        .map_err(|e| none(e.to_string()))?;
    let resp = client
        .request(req)
        .await
        .map_err(|e| none(format!("login: {}", chain(&e))))?;
    let status = resp.status();
    let bytes = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| none(e.to_string()))?
        .to_bytes();
    if status != StatusCode::OK {
        return Err((
            Some(status),
            format!(
                "login as {username:?}: {status} {}",
                String::from_utf8_lossy(&bytes).trim()
            ),
        ));
    }
    let v: Value = serde_json::from_slice(&bytes).map_err(|e| (Some(status), e.to_string()))?;
    v["access_token"]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| {
            (
                Some(status),
                "login: no access_token in the answer".to_owned(),
            )
        })
}

/// An error with its sources, on one line (hyper's errors say little at the top).
pub fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

/// Why a call did not get an answer.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// The gateway could not be reached, or the call timed out or broke off.
    #[error("gateway {base} unreachable: {reason}")]
    Unreachable {
        /// The gateway.
        base: String,
        /// What failed.
        reason: String,
    },
    /// The gateway refused the login (its answer), or a fresh token.
    #[error("{0}")]
    Login(String),
}

/// A gateway, its credentials and the token in use.
pub struct Gateway {
    client: HttpClient,
    base: String,
    creds: Credentials,
    token: Mutex<Option<String>>,
}

impl std::fmt::Debug for Gateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gateway")
            .field("base", &self.base)
            .field("creds", &self.creds)
            .finish_non_exhaustive()
    }
}

impl Gateway {
    /// A client of the gateway at `base` (`http://host:port`, a trailing `/` ignored).
    pub fn new(base: &str, creds: Credentials) -> Self {
        Gateway {
            client: http_client(Duration::from_secs(5)),
            base: base.trim_end_matches('/').to_owned(),
            creds,
            token: Mutex::new(None),
        }
    }

    /// The gateway's base URL.
    pub fn base(&self) -> &str {
        &self.base
    }

    async fn token(&self) -> Result<String, CallError> {
        if let Some(t) = self.token.lock().clone() {
            return Ok(t);
        }
        let t = tokio::time::timeout(
            Duration::from_secs(30),
            login_answer(&self.client, &self.base, &self.creds),
        )
        .await
        .map_err(|_| self.unreachable("login: no answer within 30 s".to_owned()))?
        .map_err(|(status, message)| match status {
            // The gateway answered, and said no (or nonsense).
            Some(_) => CallError::Login(message),
            None => self.unreachable(message),
        })?;
        *self.token.lock() = Some(t.clone());
        Ok(t)
    }

    /// `method path` with `body` as JSON (none: an empty body), within `timeout`; the
    /// answer's status and body. A 401 with login credentials logs in again and retries
    /// once (the token expired); a 401 for a given token is [`CallError::Login`] (it cannot
    /// be renewed), and so is a 403 `account-disabled` (no credentials help until an
    /// administrator acts); other statuses are the caller's to judge.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        timeout: Duration,
    ) -> Result<(StatusCode, Bytes), CallError> {
        let payload = body.map(|b| Bytes::from(b.to_string())).unwrap_or_default();
        for attempt in 0..2 {
            let token = self.token().await?;
            let mut req = Request::builder()
                .method(method.clone())
                .uri(format!("{}{path}", self.base))
                .header("authorization", format!("Bearer {token}"));
            if body.is_some() {
                req = req.header("content-type", "application/json");
            }
            let req = req
                .body(Full::new(payload.clone()))
                .map_err(|e| self.unreachable(e.to_string()))?;
            let exchange = async {
                let resp = self
                    .client
                    .request(req)
                    .await
                    .map_err(|e| self.unreachable(chain(&e)))?;
                let status = resp.status();
                let bytes = resp
                    .into_body()
                    .collect()
                    .await
                    .map_err(|e| self.unreachable(chain(&e)))?
                    .to_bytes();
                Ok::<_, CallError>((status, bytes))
            };
            let (status, bytes) = tokio::time::timeout(timeout, exchange)
                .await
                .map_err(|_| self.unreachable(format!("no answer within {timeout:?}")))??;
            if status == StatusCode::UNAUTHORIZED {
                match self.creds {
                    Credentials::Login { .. } if attempt == 0 => {
                        *self.token.lock() = None;
                        continue;
                    }
                    // No way to a fresh one: the caller must stop or say so.
                    Credentials::Token(_) => {
                        return Err(CallError::Login(format!(
                            "the gateway refused the token ({status}: expired or revoked): {}",
                            String::from_utf8_lossy(&bytes).trim()
                        )));
                    }
                    Credentials::Login { .. } => {}
                }
            }
            if status == StatusCode::FORBIDDEN && is_problem(&bytes, "account-disabled") {
                // No token or login can help until an administrator enables the account.
                return Err(CallError::Login(format!(
                    "the gateway refused the account (403 account-disabled): {}",
                    String::from_utf8_lossy(&bytes).trim()
                )));
            }
            return Ok((status, bytes));
        }
        Err(CallError::Login(
            "the gateway refused a fresh token (401)".to_owned(),
        ))
    }

    fn unreachable(&self, reason: String) -> CallError {
        CallError::Unreachable {
            base: self.base.clone(),
            reason,
        }
    }
}

/// Whether `body` is a problem document of type `slug` (under the gateway's
/// [`crate::app::http::PROBLEM_BASE`]).
fn is_problem(body: &[u8], slug: &str) -> bool {
    serde_json::from_slice::<Value>(body).is_ok_and(|v| {
        v["type"]
            .as_str()
            .and_then(|t| t.strip_prefix(crate::app::http::PROBLEM_BASE))
            == Some(slug)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_come_from_the_prefixed_variables() {
        let env = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect()
        };
        let missing = Credentials::from_env(&env(&[]), "HELIOS_WORKER", "the worker", "jobs:work")
            .unwrap_err();
        assert!(
            missing.contains("HELIOS_WORKER_TOKEN") && missing.contains("jobs:work"),
            "{missing}"
        );
        let t = Credentials::from_env(
            &env(&[("HELIOS_WORKER_TOKEN", "t"), ("HELIOS_PROXY_TOKEN", "p")]),
            "HELIOS_WORKER",
            "",
            "",
        )
        .unwrap();
        assert!(matches!(t, Credentials::Token(ref s) if s == "t"));
        let l = Credentials::from_env(
            &env(&[
                ("HELIOS_WORKER_USERNAME", "u"),
                ("HELIOS_WORKER_PASSWORD", "secret"),
            ]),
            "HELIOS_WORKER",
            "",
            "",
        )
        .unwrap();
        assert!(!format!("{l:?}").contains("secret"));
    }
}
