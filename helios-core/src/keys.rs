//! The ATLAS keyspace schema of `DESIGN.md`, in one place: prefixes, builders and a parser.
//!
//! ```text
//! auth:user:{userId}  auth:username:{username}  auth:token:{tokenHash}
//! rbac:role:{role}    rbac:user_roles:{userId}
//! kv:{key}            rate:{clientId}
//! job:{jobId}         job:dedup:{dedupId}
//! proxy:backend:{id}  proxy:route:{id}          worker:{workerId}
//! ```
//!
//! Every crate builds its keys from the families here: with the builder functions, or, on
//! hot paths where the id is valid by construction (a hex job id, a hex hash), by joining
//! the family's prefix constant and the id; never with a prefix spelled out elsewhere. Keys
//! are read back with [`parse`], so the schema cannot drift between crates. Within a
//! family a crate may namespace its ids (helios-auth keeps revoked token ids under
//! `auth:token:jti.{jti}` and revoked sessions under `auth:token:fam.{family}` beside the
//! refresh-token hashes; helios-auth stores `rate:` ids that are not plain as `h.{sha256}`).
//!
//! # Invariants
//!
//! - Every id is non-empty.
//! - Ids of every family except `kv:` contain no `':'`. That keeps families apart even where
//!   one prefix extends another (`job:` and `job:dedup:`): `job:dedup:x` can only be the dedup
//!   id `x`, because a job id cannot contain `':'`.
//! - `kv:{key}` accepts any non-empty UTF-8 user key, `':'` included: `kv:` is the whole
//!   family, so nothing after it is ever read as another prefix.
//! - Round trip: for every valid [`Key`], `parse(&key.to_key_string()) == Ok(key)`, and for
//!   every string `s` that parses, `parse(s)?.to_key_string() == s`.
//! - [`parse`] never panics and never allocates on success.
//!
//! Not here: key size limits (ATLAS enforces its own `KEY_SIZE_MAX` on every key), and what
//! the values under each key hold (each owning crate documents its own).

use std::fmt;

/// Prefix of user records: `auth:user:{userId}`.
pub const AUTH_USER_PREFIX: &str = "auth:user:";
/// Prefix of the username index: `auth:username:{username}` holds the user id.
pub const AUTH_USERNAME_PREFIX: &str = "auth:username:";
/// Prefix of issued or revoked tokens, by hash: `auth:token:{tokenHash}`.
pub const AUTH_TOKEN_PREFIX: &str = "auth:token:";
/// Prefix of role definitions: `rbac:role:{role}`.
pub const RBAC_ROLE_PREFIX: &str = "rbac:role:";
/// Prefix of the roles a user holds: `rbac:user_roles:{userId}`.
pub const RBAC_USER_ROLES_PREFIX: &str = "rbac:user_roles:";
/// Prefix of user key-value data: `kv:{key}`; the user key may contain `':'`.
pub const KV_PREFIX: &str = "kv:";
/// Prefix of per-client rate-limit buckets: `rate:{clientId}`.
pub const RATE_PREFIX: &str = "rate:";
/// Prefix of jobs: `job:{jobId}`. Note that `job:dedup:` keys also start with it.
pub const JOB_PREFIX: &str = "job:";
/// Prefix of job dedup records: `job:dedup:{dedupId}`.
pub const JOB_DEDUP_PREFIX: &str = "job:dedup:";
/// Prefix of proxy backends: `proxy:backend:{id}`.
pub const PROXY_BACKEND_PREFIX: &str = "proxy:backend:";
/// Prefix of proxy routes: `proxy:route:{id}`.
pub const PROXY_ROUTE_PREFIX: &str = "proxy:route:";
/// Prefix of registered workers: `worker:{workerId}`.
pub const WORKER_PREFIX: &str = "worker:";

/// The longest characters of a rejected key kept in a [`KeyError::UnknownFamily`], so an
/// error from a huge garbage key stays small in logs.
pub const ERROR_KEY_CHARS_MAX: usize = 64;

/// A family of keys: one line of the schema, with its prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum KeyFamily {
    /// `auth:user:{userId}`
    AuthUser,
    /// `auth:username:{username}`
    AuthUsername,
    /// `auth:token:{tokenHash}`
    AuthToken,
    /// `rbac:role:{role}`
    RbacRole,
    /// `rbac:user_roles:{userId}`
    RbacUserRoles,
    /// `kv:{key}`
    Kv,
    /// `rate:{clientId}`
    Rate,
    /// `job:{jobId}`
    Job,
    /// `job:dedup:{dedupId}`
    JobDedup,
    /// `proxy:backend:{id}`
    ProxyBackend,
    /// `proxy:route:{id}`
    ProxyRoute,
    /// `worker:{workerId}`
    Worker,
}

impl KeyFamily {
    /// Every family, longest prefix first among those that share a start (`job:dedup:`
    /// before `job:`): the order [`parse`] tries them in.
    pub const ALL: [KeyFamily; 12] = [
        KeyFamily::AuthUsername,
        KeyFamily::AuthUser,
        KeyFamily::AuthToken,
        KeyFamily::RbacRole,
        KeyFamily::RbacUserRoles,
        KeyFamily::Kv,
        KeyFamily::Rate,
        KeyFamily::JobDedup,
        KeyFamily::Job,
        KeyFamily::ProxyBackend,
        KeyFamily::ProxyRoute,
        KeyFamily::Worker,
    ];

    /// The family's prefix, ending in `':'` (e.g. `"kv:"`).
    pub const fn prefix(self) -> &'static str {
        match self {
            KeyFamily::AuthUser => AUTH_USER_PREFIX,
            KeyFamily::AuthUsername => AUTH_USERNAME_PREFIX,
            KeyFamily::AuthToken => AUTH_TOKEN_PREFIX,
            KeyFamily::RbacRole => RBAC_ROLE_PREFIX,
            KeyFamily::RbacUserRoles => RBAC_USER_ROLES_PREFIX,
            KeyFamily::Kv => KV_PREFIX,
            KeyFamily::Rate => RATE_PREFIX,
            KeyFamily::Job => JOB_PREFIX,
            KeyFamily::JobDedup => JOB_DEDUP_PREFIX,
            KeyFamily::ProxyBackend => PROXY_BACKEND_PREFIX,
            KeyFamily::ProxyRoute => PROXY_ROUTE_PREFIX,
            KeyFamily::Worker => WORKER_PREFIX,
        }
    }

    /// Whether the family's ids may contain `':'` (only `kv:`).
    pub const fn allows_colon(self) -> bool {
        matches!(self, KeyFamily::Kv)
    }

    /// Checks `id` against the family's rules: non-empty, and no `':'` unless the family
    /// allows it.
    pub fn check_id(self, id: &str) -> Result<(), KeyError> {
        if id.is_empty() {
            return Err(KeyError::EmptyId { family: self });
        }
        if !self.allows_colon()
            && let Some(index) = id.find(':')
        {
            return Err(KeyError::ColonInId {
                family: self,
                id: id.to_owned(),
                index,
            });
        }
        Ok(())
    }

    /// The key `{prefix}{id}`, after checking `id`.
    pub fn key(self, id: &str) -> Result<String, KeyError> {
        self.check_id(id)?;
        let prefix = self.prefix();
        let mut key = String::with_capacity(prefix.len() + id.len());
        key.push_str(prefix);
        key.push_str(id);
        Ok(key)
    }

    /// Wraps an id of this family as a [`Key`], without checking it.
    fn wrap(self, id: &str) -> Key<'_> {
        match self {
            KeyFamily::AuthUser => Key::AuthUser(id),
            KeyFamily::AuthUsername => Key::AuthUsername(id),
            KeyFamily::AuthToken => Key::AuthToken(id),
            KeyFamily::RbacRole => Key::RbacRole(id),
            KeyFamily::RbacUserRoles => Key::RbacUserRoles(id),
            KeyFamily::Kv => Key::Kv(id),
            KeyFamily::Rate => Key::Rate(id),
            KeyFamily::Job => Key::Job(id),
            KeyFamily::JobDedup => Key::JobDedup(id),
            KeyFamily::ProxyBackend => Key::ProxyBackend(id),
            KeyFamily::ProxyRoute => Key::ProxyRoute(id),
            KeyFamily::Worker => Key::Worker(id),
        }
    }
}

impl fmt::Display for KeyFamily {
    /// The prefix without its trailing `':'`, e.g. `auth:user`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let prefix = self.prefix();
        f.write_str(prefix.strip_suffix(':').unwrap_or(prefix))
    }
}

/// Why a key or an id was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// The id after the prefix is empty.
    #[error("{family} key: the id is empty")]
    EmptyId {
        /// The family whose id was empty.
        family: KeyFamily,
    },
    /// The id contains `':'`, which only `kv:` user keys may.
    #[error("{family} key: the id {id:?} contains ':' at byte {index}; only kv keys may")]
    ColonInId {
        /// The family whose rules were broken.
        family: KeyFamily,
        /// The offending id.
        id: String,
        /// Byte index of the first `':'` in `id`.
        index: usize,
    },
    /// The key starts with no known prefix.
    #[error(
        "key {key:?} starts with no known prefix (auth:, rbac:, kv:, rate:, job:, proxy:, worker:)"
    )]
    UnknownFamily {
        /// The key, cut to its first [`ERROR_KEY_CHARS_MAX`] characters.
        key: String,
    },
}

/// A parsed key: its family and its id, borrowed from the key string.
///
/// Values returned by [`parse`] are valid. A `Key` built by hand is not checked until
/// [`Key::validate`]; [`Key::to_key_string`] of an invalid one does not parse back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Key<'a> {
    /// `auth:user:{userId}`
    AuthUser(&'a str),
    /// `auth:username:{username}`
    AuthUsername(&'a str),
    /// `auth:token:{tokenHash}`
    AuthToken(&'a str),
    /// `rbac:role:{role}`
    RbacRole(&'a str),
    /// `rbac:user_roles:{userId}`
    RbacUserRoles(&'a str),
    /// `kv:{key}`; the user key may contain `':'`.
    Kv(&'a str),
    /// `rate:{clientId}`
    Rate(&'a str),
    /// `job:{jobId}`
    Job(&'a str),
    /// `job:dedup:{dedupId}`
    JobDedup(&'a str),
    /// `proxy:backend:{id}`
    ProxyBackend(&'a str),
    /// `proxy:route:{id}`
    ProxyRoute(&'a str),
    /// `worker:{workerId}`
    Worker(&'a str),
}

impl<'a> Key<'a> {
    /// The key's family.
    pub fn family(&self) -> KeyFamily {
        match self {
            Key::AuthUser(_) => KeyFamily::AuthUser,
            Key::AuthUsername(_) => KeyFamily::AuthUsername,
            Key::AuthToken(_) => KeyFamily::AuthToken,
            Key::RbacRole(_) => KeyFamily::RbacRole,
            Key::RbacUserRoles(_) => KeyFamily::RbacUserRoles,
            Key::Kv(_) => KeyFamily::Kv,
            Key::Rate(_) => KeyFamily::Rate,
            Key::Job(_) => KeyFamily::Job,
            Key::JobDedup(_) => KeyFamily::JobDedup,
            Key::ProxyBackend(_) => KeyFamily::ProxyBackend,
            Key::ProxyRoute(_) => KeyFamily::ProxyRoute,
            Key::Worker(_) => KeyFamily::Worker,
        }
    }

    /// The id after the prefix.
    pub fn id(&self) -> &'a str {
        match *self {
            Key::AuthUser(id)
            | Key::AuthUsername(id)
            | Key::AuthToken(id)
            | Key::RbacRole(id)
            | Key::RbacUserRoles(id)
            | Key::Kv(id)
            | Key::Rate(id)
            | Key::Job(id)
            | Key::JobDedup(id)
            | Key::ProxyBackend(id)
            | Key::ProxyRoute(id)
            | Key::Worker(id) => id,
        }
    }

    /// Checks the id against its family's rules (needed only for a hand-built `Key`).
    pub fn validate(&self) -> Result<(), KeyError> {
        self.family().check_id(self.id())
    }

    /// The full key string, `{prefix}{id}`.
    pub fn to_key_string(&self) -> String {
        let prefix = self.family().prefix();
        let id = self.id();
        let mut key = String::with_capacity(prefix.len() + id.len());
        key.push_str(prefix);
        key.push_str(id);
        key
    }
}

impl fmt::Display for Key<'_> {
    /// The full key string, as [`Key::to_key_string`].
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.family().prefix())?;
        f.write_str(self.id())
    }
}

impl<'a> TryFrom<&'a str> for Key<'a> {
    type Error = KeyError;

    fn try_from(key: &'a str) -> Result<Self, Self::Error> {
        parse(key)
    }
}

/// Parses a key string into its family and id.
///
/// Prefixes are tried longest first where one extends another (`job:dedup:` before `job:`);
/// `auth:username:` and `auth:user:` differ at their tenth byte, so neither is mistaken for
/// the other. Errors say which family and why; nothing here panics.
pub fn parse(key: &str) -> Result<Key<'_>, KeyError> {
    for family in KeyFamily::ALL {
        if let Some(id) = key.strip_prefix(family.prefix()) {
            family.check_id(id)?;
            return Ok(family.wrap(id));
        }
    }
    Err(KeyError::UnknownFamily {
        key: key.chars().take(ERROR_KEY_CHARS_MAX).collect(),
    })
}

/// `auth:user:{user_id}`: a user record.
pub fn auth_user(user_id: &str) -> Result<String, KeyError> {
    KeyFamily::AuthUser.key(user_id)
}

/// `auth:username:{name}`: the username index, holding the user id.
pub fn auth_username(name: &str) -> Result<String, KeyError> {
    KeyFamily::AuthUsername.key(name)
}

/// `auth:token:{token_hash}`: a token, by hash (never the token itself).
pub fn auth_token(token_hash: &str) -> Result<String, KeyError> {
    KeyFamily::AuthToken.key(token_hash)
}

/// `rbac:role:{role}`: a role definition.
pub fn rbac_role(role: &str) -> Result<String, KeyError> {
    KeyFamily::RbacRole.key(role)
}

/// `rbac:user_roles:{user_id}`: the roles a user holds.
pub fn rbac_user_roles(user_id: &str) -> Result<String, KeyError> {
    KeyFamily::RbacUserRoles.key(user_id)
}

/// `kv:{key}`: user key-value data. `key` may be any non-empty UTF-8, `':'` included.
pub fn kv(key: &str) -> Result<String, KeyError> {
    KeyFamily::Kv.key(key)
}

/// `rate:{client_id}`: a client's rate-limit bucket.
pub fn rate(client_id: &str) -> Result<String, KeyError> {
    KeyFamily::Rate.key(client_id)
}

/// `job:{job_id}`: a job.
pub fn job(job_id: &str) -> Result<String, KeyError> {
    KeyFamily::Job.key(job_id)
}

/// `job:dedup:{dedup_id}`: a dedup record suppressing duplicate enqueues.
pub fn job_dedup(dedup_id: &str) -> Result<String, KeyError> {
    KeyFamily::JobDedup.key(dedup_id)
}

/// `proxy:backend:{id}`: a proxy backend.
pub fn proxy_backend(id: &str) -> Result<String, KeyError> {
    KeyFamily::ProxyBackend.key(id)
}

/// `proxy:route:{id}`: a proxy route.
pub fn proxy_route(id: &str) -> Result<String, KeyError> {
    KeyFamily::ProxyRoute.key(id)
}

/// `worker:{worker_id}`: a registered worker.
pub fn worker(worker_id: &str) -> Result<String, KeyError> {
    KeyFamily::Worker.key(worker_id)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    type Builder = fn(&str) -> Result<String, KeyError>;

    /// Every builder with its family, so tests cover them all.
    const BUILDERS: [(Builder, KeyFamily); 12] = [
        (auth_user, KeyFamily::AuthUser),
        (auth_username, KeyFamily::AuthUsername),
        (auth_token, KeyFamily::AuthToken),
        (rbac_role, KeyFamily::RbacRole),
        (rbac_user_roles, KeyFamily::RbacUserRoles),
        (kv, KeyFamily::Kv),
        (rate, KeyFamily::Rate),
        (job, KeyFamily::Job),
        (job_dedup, KeyFamily::JobDedup),
        (proxy_backend, KeyFamily::ProxyBackend),
        (proxy_route, KeyFamily::ProxyRoute),
        (worker, KeyFamily::Worker),
    ];

    /// Shows every builder spells the schema of DESIGN.md.
    #[test]
    fn builders_spell_the_schema() {
        let cases: [(Result<String, KeyError>, &str); 12] = [
            (auth_user("u1"), "auth:user:u1"),
            (auth_username("alice"), "auth:username:alice"),
            (auth_token("ab12"), "auth:token:ab12"),
            (rbac_role("admin"), "rbac:role:admin"),
            (rbac_user_roles("u1"), "rbac:user_roles:u1"),
            (kv("a:b:c"), "kv:a:b:c"),
            (rate("client-7"), "rate:client-7"),
            (job("j1"), "job:j1"),
            (job_dedup("d1"), "job:dedup:d1"),
            (proxy_backend("b1"), "proxy:backend:b1"),
            (proxy_route("r1"), "proxy:route:r1"),
            (worker("w1"), "worker:w1"),
        ];
        for (built, expected) in cases {
            assert_eq!(built.unwrap(), expected);
        }
    }

    /// Shows the builders' rules: empty ids fail everywhere; ':' fails except in kv.
    #[test]
    fn builders_check_ids() {
        for (build, family) in BUILDERS {
            assert_eq!(build(""), Err(KeyError::EmptyId { family }));
            let colon = build("a:b");
            if family == KeyFamily::Kv {
                assert_eq!(colon.unwrap(), "kv:a:b");
            } else {
                assert_eq!(
                    colon,
                    Err(KeyError::ColonInId {
                        family,
                        id: "a:b".to_owned(),
                        index: 1
                    })
                );
            }
        }
        let err = job(":x").unwrap_err();
        assert_eq!(
            err.to_string(),
            "job key: the id \":x\" contains ':' at byte 0; only kv keys may"
        );
        assert_eq!(
            rate("").unwrap_err().to_string(),
            "rate key: the id is empty"
        );
    }

    /// Shows parse on valid keys, including the near-collisions of prefixes.
    #[test]
    fn parse_table() {
        let cases = [
            ("auth:user:u1", Key::AuthUser("u1")),
            ("auth:username:alice", Key::AuthUsername("alice")),
            // A username that looks like the other family's prefix.
            ("auth:username:user", Key::AuthUsername("user")),
            ("auth:user:name", Key::AuthUser("name")),
            ("auth:token:ff00", Key::AuthToken("ff00")),
            ("rbac:role:admin", Key::RbacRole("admin")),
            ("rbac:user_roles:u1", Key::RbacUserRoles("u1")),
            ("kv:x", Key::Kv("x")),
            ("kv::", Key::Kv(":")),
            ("kv:job:dedup:x", Key::Kv("job:dedup:x")),
            ("kv:kv:", Key::Kv("kv:")),
            ("rate:10.0.0.1", Key::Rate("10.0.0.1")),
            ("job:j1", Key::Job("j1")),
            // A job id "dedup" (no trailing ':') is a job, not a dedup record.
            ("job:dedup", Key::Job("dedup")),
            ("job:dedup:d1", Key::JobDedup("d1")),
            ("job:dedupe", Key::Job("dedupe")),
            ("proxy:backend:b1", Key::ProxyBackend("b1")),
            ("proxy:route:r1", Key::ProxyRoute("r1")),
            ("worker:w1", Key::Worker("w1")),
            ("worker:é😀", Key::Worker("é😀")),
        ];
        for (text, expected) in cases {
            let key = parse(text).unwrap();
            assert_eq!(key, expected, "{text}");
            assert_eq!(key.to_key_string(), text);
            assert_eq!(key.to_string(), text);
            assert_eq!(Key::try_from(text), Ok(expected));
            assert_eq!(key.validate(), Ok(()));
        }
    }

    /// Shows garbage keys give errors naming the family and reason, never a panic.
    #[test]
    fn parse_errors() {
        let unknown = |k: &str| KeyError::UnknownFamily { key: k.to_owned() };
        let colon = |family, id: &str, index| KeyError::ColonInId {
            family,
            id: id.to_owned(),
            index,
        };
        let cases = [
            ("", unknown("")),
            (":", unknown(":")),
            ("kv", unknown("kv")),
            ("KV:x", unknown("KV:x")),
            ("auth:", unknown("auth:")),
            ("auth:users:x", unknown("auth:users:x")),
            ("auth:user", unknown("auth:user")),
            ("proxy:x", unknown("proxy:x")),
            (" kv:x", unknown(" kv:x")),
            (
                "kv:",
                KeyError::EmptyId {
                    family: KeyFamily::Kv,
                },
            ),
            (
                "auth:user:",
                KeyError::EmptyId {
                    family: KeyFamily::AuthUser,
                },
            ),
            (
                "auth:username:",
                KeyError::EmptyId {
                    family: KeyFamily::AuthUsername,
                },
            ),
            (
                "job:",
                KeyError::EmptyId {
                    family: KeyFamily::Job,
                },
            ),
            (
                "job:dedup:",
                KeyError::EmptyId {
                    family: KeyFamily::JobDedup,
                },
            ),
            ("auth:user:a:b", colon(KeyFamily::AuthUser, "a:b", 1)),
            ("auth:username:a:", colon(KeyFamily::AuthUsername, "a:", 1)),
            ("job:dedup:a:b", colon(KeyFamily::JobDedup, "a:b", 1)),
            ("job:a:b", colon(KeyFamily::Job, "a:b", 1)),
            ("worker::", colon(KeyFamily::Worker, ":", 0)),
        ];
        for (text, expected) in cases {
            assert_eq!(parse(text), Err(expected), "{text:?}");
        }
        // A huge garbage key is cut in the error.
        let huge = "x".repeat(10_000);
        let KeyError::UnknownFamily { key } = parse(&huge).unwrap_err() else {
            panic!("expected UnknownFamily");
        };
        assert_eq!(key.chars().count(), ERROR_KEY_CHARS_MAX);
    }

    /// Shows the hand-built-key check and the family metadata.
    #[test]
    fn key_accessors() {
        assert_eq!(
            Key::Job("a:b").validate(),
            Err(KeyError::ColonInId {
                family: KeyFamily::Job,
                id: "a:b".to_owned(),
                index: 1
            })
        );
        assert_eq!(Key::JobDedup("d").family(), KeyFamily::JobDedup);
        assert_eq!(Key::Kv("a:b").id(), "a:b");
        assert_eq!(KeyFamily::RbacUserRoles.to_string(), "rbac:user_roles");
        for family in KeyFamily::ALL {
            assert!(family.prefix().ends_with(':'));
            assert_eq!(family.wrap("x").family(), family);
        }
        // ALL lists each family once, and a prefix that extends another comes first.
        for (i, a) in KeyFamily::ALL.iter().enumerate() {
            for b in &KeyFamily::ALL[i + 1..] {
                assert_ne!(a, b);
                assert!(
                    !b.prefix().starts_with(a.prefix()),
                    "{b} must be tried before {a}"
                );
            }
        }
    }

    fn family_strategy() -> impl Strategy<Value = KeyFamily> {
        proptest::sample::select(KeyFamily::ALL.to_vec())
    }

    proptest! {
        /// Build -> parse gives back the same family and id, for any valid id.
        #[test]
        fn build_parse_round_trip(
            family in family_strategy(),
            id in "[^:]{1,24}",
            kv_id in ".{1,24}",
        ) {
            let id = if family == KeyFamily::Kv { kv_id } else { id };
            let built = BUILDERS.iter().find(|(_, f)| *f == family).unwrap().0(&id).unwrap();
            prop_assert_eq!(&built, &family.key(&id).unwrap());
            let key = parse(&built).unwrap();
            prop_assert_eq!(key.family(), family);
            prop_assert_eq!(key.id(), id.as_str());
            prop_assert_eq!(key.to_key_string(), built);
        }

        /// Any string: parse never panics, and whatever parses prints back to itself.
        #[test]
        fn parse_any_string(text in "\\PC{0,40}|(auth|rbac|kv|rate|job|proxy|worker)[:a-z_]{0,16}\\PC{0,8}") {
            if let Ok(key) = parse(&text) {
                prop_assert_eq!(key.to_key_string(), text.clone());
                prop_assert_eq!(key.validate(), Ok(()));
            }
        }

        /// Arbitrary bytes made UTF-8: parse never panics.
        #[test]
        fn parse_any_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let text = String::from_utf8_lossy(&bytes);
            let _ = parse(&text);
        }

        /// Non-kv ids containing ':' are refused by the builders and by parse.
        #[test]
        fn colon_ids_refused(
            family in family_strategy(),
            head in "[^:]{0,8}",
            tail in "\\PC{0,8}",
        ) {
            prop_assume!(family != KeyFamily::Kv);
            let id = format!("{head}:{tail}");
            let err = family.key(&id).unwrap_err();
            let is_colon_error = matches!(err, KeyError::ColonInId { .. });
            prop_assert!(is_colon_error);
            // The raw string never parses as this family and id (it may parse as another
            // family: `job:` + `dedup:x` is the dedup record `x`).
            let raw = format!("{}{id}", family.prefix());
            let parsed = parse(&raw).ok().map(|k| (k.family(), k.id()));
            prop_assert_ne!(parsed, Some((family, id.as_str())));
        }
    }
}
