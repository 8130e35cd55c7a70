//! Access tokens: JWTs signed by a ring of keys identified by `kid`.
//!
//! - The algorithm is pinned by config (HS256 by default; RS256 and EdDSA supported); a
//!   token whose header names any other algorithm, or `none`, is refused before any key
//!   is used.
//! - New tokens are signed with the active key; other keys verify until retired; a retired
//!   or unknown `kid` is refused.
//! - `exp`, `nbf`, `iat`, `iss`, `aud`, `sub` and `jti` are required; `exp`/`nbf` are
//!   checked here against the injected clock (jsonwebtoken would read the system clock),
//!   with a configurable leeway; a claim of the wrong JSON type fails to decode.

use crate::error::{AuthError, Result};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

/// The claims of a HELIOS access token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Claims {
    /// The user id.
    pub sub: String,
    /// The user's roles when the token was issued (authorization re-reads current roles).
    pub roles: Vec<String>,
    /// Issued at (s since the epoch).
    pub iat: u64,
    /// Not before (s).
    pub nbf: u64,
    /// Expires at (s).
    pub exp: u64,
    /// Issuer.
    pub iss: String,
    /// Audience.
    pub aud: String,
    /// Token id (for revocation).
    pub jti: String,
    /// The user's session epoch: a password change bumps it and so ends every session.
    pub sep: u64,
    /// The refresh-token family this token was issued with.
    pub fam: String,
}

/// Whether a key may sign, only verify, or nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KeyState {
    /// Signs new tokens (exactly one key) and verifies.
    Active,
    /// Verifies tokens it signed earlier.
    Verifying,
    /// Refused.
    Retired,
}

/// Key material of one signing key, as configured.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyConfig {
    /// The key id put in the token header.
    pub kid: String,
    /// Its state.
    pub state: KeyState,
    /// HS256: the shared secret (at least 32 bytes).
    #[serde(default)]
    pub secret: Option<String>,
    /// RS256 / EdDSA: the private key, PEM (needed for the active key).
    #[serde(default)]
    pub private_pem: Option<String>,
    /// RS256 / EdDSA: the public key, PEM.
    #[serde(default)]
    pub public_pem: Option<String>,
}

/// JWT settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JwtConfig {
    /// The one algorithm accepted.
    pub algorithm: Algorithm,
    /// `iss` of issued tokens, and the only one accepted.
    pub issuer: String,
    /// `aud` of issued tokens, and the only one accepted.
    pub audience: String,
    /// Access-token lifetime, s (default 900).
    pub access_ttl_s: u64,
    /// Clock skew tolerated on `exp`/`nbf`, s (default 30, at most 300).
    pub leeway_s: u64,
    /// The key ring.
    pub keys: Vec<KeyConfig>,
}

struct Key {
    state: KeyState,
    encoding: Option<EncodingKey>,
    decoding: DecodingKey,
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Key")
            .field("state", &self.state)
            .finish_non_exhaustive()
    }
}

/// The loaded key ring.
#[derive(Debug)]
pub struct KeyRing {
    config: JwtConfig,
    keys: HashMap<String, Key>,
    active_kid: String,
    validation: Validation,
}

fn config_err(key: &'static str, reason: impl Into<String>) -> AuthError {
    AuthError::Config {
        key,
        reason: reason.into(),
    }
}

impl KeyRing {
    /// Loads and checks the key ring.
    pub fn new(config: JwtConfig) -> Result<Self> {
        if !matches!(
            config.algorithm,
            Algorithm::HS256 | Algorithm::RS256 | Algorithm::EdDSA
        ) {
            return Err(config_err("jwt.algorithm", "use HS256, RS256 or EdDSA"));
        }
        if config.leeway_s > 300 {
            return Err(config_err("jwt.leeway_s", "at most 300"));
        }
        if config.access_ttl_s == 0 || config.access_ttl_s > 24 * 3600 {
            return Err(config_err("jwt.access_ttl_s", "must be in 1..=86400"));
        }
        if config.issuer.is_empty() || config.audience.is_empty() {
            return Err(config_err("jwt.issuer", "issuer and audience must be set"));
        }
        let mut keys = HashMap::new();
        let mut active = None;
        for k in &config.keys {
            if k.kid.is_empty() || keys.contains_key(&k.kid) {
                return Err(config_err(
                    "jwt.keys.kid",
                    format!("{:?} is empty or repeated", k.kid),
                ));
            }
            let (encoding, decoding) = match config.algorithm {
                Algorithm::HS256 => {
                    let s = k.secret.as_deref().ok_or_else(|| {
                        config_err("jwt.keys.secret", format!("key {} needs a secret", k.kid))
                    })?;
                    if s.len() < 32 {
                        return Err(config_err(
                            "jwt.keys.secret",
                            format!("key {}: at least 32 bytes", k.kid),
                        ));
                    }
                    (
                        Some(EncodingKey::from_secret(s.as_bytes())),
                        DecodingKey::from_secret(s.as_bytes()),
                    )
                }
                alg => {
                    let public = k.public_pem.as_deref().ok_or_else(|| {
                        config_err("jwt.keys.public_pem", format!("key {} needs one", k.kid))
                    })?;
                    let bad = |e: jsonwebtoken::errors::Error| {
                        config_err("jwt.keys", format!("key {}: {e}", k.kid))
                    };
                    let (enc, dec) = if alg == Algorithm::RS256 {
                        (
                            k.private_pem
                                .as_deref()
                                .map(|p| EncodingKey::from_rsa_pem(p.as_bytes()))
                                .transpose()
                                .map_err(bad)?,
                            DecodingKey::from_rsa_pem(public.as_bytes()).map_err(bad)?,
                        )
                    } else {
                        (
                            k.private_pem
                                .as_deref()
                                .map(|p| EncodingKey::from_ed_pem(p.as_bytes()))
                                .transpose()
                                .map_err(bad)?,
                            DecodingKey::from_ed_pem(public.as_bytes()).map_err(bad)?,
                        )
                    };
                    (enc, dec)
                }
            };
            if k.state == KeyState::Active {
                if active.is_some() {
                    return Err(config_err("jwt.keys.state", "exactly one key is active"));
                }
                if encoding.is_none() {
                    return Err(config_err(
                        "jwt.keys.private_pem",
                        format!("the active key {} needs its private key", k.kid),
                    ));
                }
                active = Some(k.kid.clone());
            }
            keys.insert(
                k.kid.clone(),
                Key {
                    state: k.state,
                    encoding,
                    decoding,
                },
            );
        }
        let active_kid = active.ok_or_else(|| config_err("jwt.keys.state", "no active key"))?;
        let mut validation = Validation::new(config.algorithm);
        validation.set_required_spec_claims(&["exp", "nbf", "iss", "aud", "sub"]);
        validation.set_issuer(&[config.issuer.as_str()]);
        validation.set_audience(&[config.audience.as_str()]);
        // Time is checked against the injected clock below, not jsonwebtoken's.
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.leeway = 0;
        Ok(Self {
            config,
            keys,
            active_kid,
            validation,
        })
    }

    /// The settings.
    pub fn config(&self) -> &JwtConfig {
        &self.config
    }

    /// Signs `claims` with the active key.
    pub fn sign(&self, claims: &Claims) -> Result<String> {
        let key = self
            .keys
            .get(&self.active_kid)
            .and_then(|k| k.encoding.as_ref())
            .ok_or_else(|| config_err("jwt.keys", "the active key cannot sign"))?;
        let mut header = Header::new(self.config.algorithm);
        header.kid = Some(self.active_kid.clone());
        jsonwebtoken::encode(&header, claims, key).map_err(|e| AuthError::InvalidToken {
            reason: format!("signing failed: {e}"),
        })
    }

    /// Checks the time claims (`exp`, `nbf`, `iat`) at `now_s`, with the leeway.
    pub fn check_times(&self, c: &Claims, now_s: u64) -> Result<()> {
        let invalid = |reason: &str| AuthError::InvalidToken {
            reason: reason.to_owned(),
        };
        let leeway = self.config.leeway_s;
        if c.exp.saturating_add(leeway) <= now_s {
            return Err(AuthError::TokenExpired);
        }
        if c.nbf > now_s.saturating_add(leeway) {
            return Err(invalid("not yet valid"));
        }
        if c.iat > now_s.saturating_add(leeway) {
            return Err(invalid("issued in the future"));
        }
        Ok(())
    }

    /// Verifies a token's header, signature and claims at `now_s`.
    pub fn verify(&self, token: &str, now_s: u64) -> Result<Claims> {
        let invalid = |reason: String| AuthError::InvalidToken { reason };
        if token.len() > 8192 {
            return Err(invalid("token longer than 8 KiB".into()));
        }
        let header =
            jsonwebtoken::decode_header(token).map_err(|e| invalid(format!("bad header: {e}")))?;
        if header.alg != self.config.algorithm {
            return Err(invalid(format!(
                "algorithm {:?} is not accepted",
                header.alg
            )));
        }
        let kid = header.kid.ok_or_else(|| invalid("no kid".into()))?;
        let key = self
            .keys
            .get(&kid)
            .ok_or_else(|| invalid(format!("unknown kid {kid:?}")))?;
        if key.state == KeyState::Retired {
            return Err(invalid(format!("key {kid:?} is retired")));
        }
        let data = jsonwebtoken::decode::<Claims>(token, &key.decoding, &self.validation)
            .map_err(|e| invalid(e.to_string()))?;
        let c = data.claims;
        self.check_times(&c, now_s)?;
        Ok(c)
    }
}
