//! The ATLAS keyspace schema of `DESIGN.md`, in one place: prefixes, builders and a parser.
//!
//! ```text
//! auth:user:{userId}  auth:username:{username}  auth:token:{tokenHash}
//! rbac:role:{role}    rbac:user_roles:{userId}
//! kv:{key}            rate:{clientId}
//! job:{jobId}         job:dedup:{dedupId}       job:schedule:{scheduleId}
//! job:state:{jobId}
//! proxy:backend:{id}  proxy:route:{id}          worker:{workerId}
//! meta:{name}
//! ```
//!
//! `job:schedule:` holds helios-queue's cron schedules (one record per schedule, by its
//! 32-hex-digit id; [`job_schedule`]). `job:state:` holds the changing part of a job
//! (its state, attempts, lease, ...) once it has moved past its enqueue: every transition
//! after the first rewrites that small record, never the job's whole record under
//! `job:{jobId}` ([`job_state_hex`]).
//!
//! `meta:` holds store-wide layout records (today `meta:kv_layout`, the version of the
//! layout under `kv:`).
//!
//! # Under `kv:`: namespaces
//!
//! ```text
//! kv:u:{userId}:{key}      a user's own namespace (the gateway's /api/v1/kv)
//! kv:ns:{namespace}:{key}  a shared namespace, [a-z0-9_-]{1,64} (/api/v1/ns/{ns}/kv)
//! ```
//!
//! Every key under `kv:` belongs to exactly one namespace ([`KvSpace`]): the prefix of a
//! namespace ends in `':'`, and neither user ids nor namespace names contain `':'`, so no
//! namespace's prefix is a prefix of another's, and a scan of one namespace's prefix never
//! sees another's keys. A user key (after the namespace prefix) is any non-empty UTF-8.
//! Keys written before namespaces existed (`kv:{key}`, layout 1) are moved into the shared
//! namespace [`KV_LEGACY_NAMESPACE`] by the gateway at its first start on layout 2
//! (recorded in `meta:kv_layout`).
//!
//! Every crate builds the keys it writes with the builder functions here (`job_hex` and
//! `rate_client` are the infallible ones for ids valid by construction); a prefix
//! constant outside this file only starts a scan. `scripts/check_invariants.sh` (CI)
//! fails on a key joined anywhere else. Keys
//! are read back with [`parse`], so the schema cannot drift between crates. Within a
//! family a crate may namespace its ids (helios-auth keeps revoked token ids under
//! `auth:token:jti.{jti}` and revoked sessions under `auth:token:fam.{family}` beside the
//! refresh-token hashes; helios-auth stores `rate:` ids that are not plain as `h.{sha256}`).
//!
//! # Invariants
//!
//! - Every id is non-empty.
//! - Ids of every family except `kv:` contain no `':'`. That keeps families apart even where
//!   one prefix extends another (`job:` and `job:dedup:` or `job:schedule:`): `job:dedup:x`
//!   can only be the dedup id `x`, because a job id cannot contain `':'`.
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
/// Prefix of cron schedules: `job:schedule:{scheduleId}`.
pub const JOB_SCHEDULE_PREFIX: &str = "job:schedule:";
/// Prefix of jobs' state records: `job:state:{jobId}`.
pub const JOB_STATE_PREFIX: &str = "job:state:";
/// Prefix of proxy backends: `proxy:backend:{id}`.
pub const PROXY_BACKEND_PREFIX: &str = "proxy:backend:";
/// Prefix of proxy routes: `proxy:route:{id}`.
pub const PROXY_ROUTE_PREFIX: &str = "proxy:route:";
/// Prefix of registered workers: `worker:{workerId}`.
pub const WORKER_PREFIX: &str = "worker:";
/// Prefix of store-wide layout records: `meta:{name}`.
pub const META_PREFIX: &str = "meta:";

/// Prefix of the per-user KV namespaces: `kv:u:{userId}:{key}`.
pub const KV_USER_PREFIX: &str = "kv:u:";
/// Prefix of the shared KV namespaces: `kv:ns:{namespace}:{key}`.
pub const KV_SHARED_PREFIX: &str = "kv:ns:";
/// The shared namespace that holds the keys written before namespaces existed.
pub const KV_LEGACY_NAMESPACE: &str = "legacy";
/// Name of the `meta:` record holding the layout version under `kv:`.
pub const META_KV_LAYOUT: &str = "kv_layout";
/// The layout under `kv:` that this code writes: namespaces.
pub const KV_LAYOUT_VERSION: u32 = 2;
/// The longest shared namespace name.
pub const KV_NAMESPACE_SIZE_MAX: usize = 64;

/// The longest characters of a rejected key kept in a [`KeyError::UnknownFamily`], so an
/// error from a huge garbage key stays small in logs.
pub const ERROR_KEY_CHARS_MAX: usize = 64;

/// Which crate writes each family (the only writer; others may read). A test keeps this
/// table and [`KeyFamily::ALL`] equal.
pub const FAMILY_OWNERS: [(KeyFamily, &str); 15] = [
    (KeyFamily::AuthUser, "helios-auth"),
    (KeyFamily::AuthUsername, "helios-auth"),
    (KeyFamily::AuthToken, "helios-auth"),
    (KeyFamily::RbacRole, "helios-auth"),
    (KeyFamily::RbacUserRoles, "helios-auth"),
    (KeyFamily::Kv, "helios-bins (gateway kv, atlasd)"),
    (KeyFamily::Rate, "helios-auth (rate limiter)"),
    (KeyFamily::Job, "helios-queue"),
    (KeyFamily::JobDedup, "helios-queue"),
    (KeyFamily::JobSchedule, "helios-queue (cron schedules)"),
    (KeyFamily::JobState, "helios-queue (job state records)"),
    (KeyFamily::ProxyBackend, "helios-proxy (not yet written)"),
    (KeyFamily::ProxyRoute, "helios-proxy (not yet written)"),
    (KeyFamily::Worker, "helios-queue (worker registry)"),
    (KeyFamily::Meta, "helios-bins (gateway: kv layout)"),
];

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
    /// `job:schedule:{scheduleId}`
    JobSchedule,
    /// `job:state:{jobId}`
    JobState,
    /// `proxy:backend:{id}`
    ProxyBackend,
    /// `proxy:route:{id}`
    ProxyRoute,
    /// `worker:{workerId}`
    Worker,
    /// `meta:{name}`
    Meta,
}

impl KeyFamily {
    /// Every family, longest prefix first among those that share a start (`job:dedup:`
    /// before `job:`): the order [`parse`] tries them in.
    pub const ALL: [KeyFamily; 15] = [
        KeyFamily::AuthUsername,
        KeyFamily::AuthUser,
        KeyFamily::AuthToken,
        KeyFamily::RbacRole,
        KeyFamily::RbacUserRoles,
        KeyFamily::Kv,
        KeyFamily::Rate,
        KeyFamily::JobDedup,
        KeyFamily::JobSchedule,
        KeyFamily::JobState,
        KeyFamily::Job,
        KeyFamily::ProxyBackend,
        KeyFamily::ProxyRoute,
        KeyFamily::Worker,
        KeyFamily::Meta,
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
            KeyFamily::JobSchedule => JOB_SCHEDULE_PREFIX,
            KeyFamily::JobState => JOB_STATE_PREFIX,
            KeyFamily::ProxyBackend => PROXY_BACKEND_PREFIX,
            KeyFamily::ProxyRoute => PROXY_ROUTE_PREFIX,
            KeyFamily::Worker => WORKER_PREFIX,
            KeyFamily::Meta => META_PREFIX,
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
            KeyFamily::JobSchedule => Key::JobSchedule(id),
            KeyFamily::JobState => Key::JobState(id),
            KeyFamily::ProxyBackend => Key::ProxyBackend(id),
            KeyFamily::ProxyRoute => Key::ProxyRoute(id),
            KeyFamily::Worker => Key::Worker(id),
            KeyFamily::Meta => Key::Meta(id),
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
        "key {key:?} starts with no known prefix (auth:, rbac:, kv:, rate:, job:, proxy:, worker:, meta:)"
    )]
    UnknownFamily {
        /// The key, cut to its first [`ERROR_KEY_CHARS_MAX`] characters.
        key: String,
    },
    /// A shared KV namespace name is not `[a-z0-9_-]{1,64}`.
    #[error("namespace {namespace:?} is not 1..=64 of [a-z0-9_-]")]
    InvalidNamespace {
        /// The name, cut to its first [`ERROR_KEY_CHARS_MAX`] characters.
        namespace: String,
    },
    /// A `kv:` key is in no namespace (`kv:u:{userId}:` or `kv:ns:{namespace}:`).
    #[error("kv key {key:?} is in no namespace (kv:u:{{userId}}:... or kv:ns:{{namespace}}:...)")]
    NotNamespaced {
        /// The key, cut to its first [`ERROR_KEY_CHARS_MAX`] characters.
        key: String,
    },
    /// A part of a scoped dedup id (`job:dedup:{queue}/{owner}/{dedupId}`) is empty, or the
    /// queue or owner contains `'/'` (the separator).
    #[error("job dedup key: the {part} {value:?} is empty or contains '/'")]
    BadDedupScope {
        /// `queue`, `owner` or `dedup id`.
        part: &'static str,
        /// The part, cut to its first [`ERROR_KEY_CHARS_MAX`] characters.
        value: String,
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
    /// `job:schedule:{scheduleId}`
    JobSchedule(&'a str),
    /// `job:state:{jobId}`
    JobState(&'a str),
    /// `proxy:backend:{id}`
    ProxyBackend(&'a str),
    /// `proxy:route:{id}`
    ProxyRoute(&'a str),
    /// `worker:{workerId}`
    Worker(&'a str),
    /// `meta:{name}`
    Meta(&'a str),
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
            Key::JobSchedule(_) => KeyFamily::JobSchedule,
            Key::JobState(_) => KeyFamily::JobState,
            Key::ProxyBackend(_) => KeyFamily::ProxyBackend,
            Key::ProxyRoute(_) => KeyFamily::ProxyRoute,
            Key::Worker(_) => KeyFamily::Worker,
            Key::Meta(_) => KeyFamily::Meta,
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
            | Key::JobSchedule(id)
            | Key::JobState(id)
            | Key::ProxyBackend(id)
            | Key::ProxyRoute(id)
            | Key::Worker(id)
            | Key::Meta(id) => id,
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

/// `auth:token:jti.{jti}`: an access token revoked before its expiry, by its `jti` claim
/// (helios-auth's id space inside the token family).
pub fn auth_token_jti(jti: &str) -> Result<String, KeyError> {
    KeyFamily::AuthToken.key(&format!("jti.{jti}"))
}

/// `auth:token:fam.{family}`: a revoked login session (a refresh-token family), by its id.
pub fn auth_token_family(family: &str) -> Result<String, KeyError> {
    KeyFamily::AuthToken.key(&format!("fam.{family}"))
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

/// `rate:{client}` for a client id that is plain (`[A-Za-z0-9._-]{1,128}`), and
/// `rate:h.{digest(client)}` for any other (a `':'`, a space, a long id): `digest` is a hex
/// hash (helios-auth passes SHA-256), so every client gets a valid key of bounded size
/// and a plain id can never collide with a hashed one (`'h.'` + 64 hex digits is not a
/// plain id an address or a user id makes; the limiter's ids are `ip.`, `user.`, ...).
pub fn rate_client(client: &str, digest: impl FnOnce(&str) -> String) -> String {
    let plain = !client.is_empty()
        && client.len() <= 128
        && client
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    let mut key = String::with_capacity(RATE_PREFIX.len() + 130);
    key.push_str(RATE_PREFIX);
    if plain {
        key.push_str(client);
    } else {
        key.push_str("h.");
        key.push_str(&digest(client));
    }
    key
}

/// `job:{job_id}`: a job.
pub fn job(job_id: &str) -> Result<String, KeyError> {
    KeyFamily::Job.key(job_id)
}

/// `job:{hex}` for a job id given as its 32 lowercase hex digits (helios-queue's `JobId`):
/// valid by construction (never empty, never a `':'`), so no check and one allocation on
/// the queue's hot path.
pub fn job_hex(hex: &[u8; 32]) -> String {
    hex_key(JOB_PREFIX, hex)
}

/// `{prefix}{hex}` for a job id's 32 hex digits, unchecked (see [`job_hex`]).
fn hex_key(prefix: &str, hex: &[u8; 32]) -> String {
    debug_assert!(hex.iter().all(u8::is_ascii_hexdigit), "a job id is hex");
    let mut key = String::with_capacity(prefix.len() + hex.len());
    key.push_str(prefix);
    key.extend(hex.iter().map(|&b| char::from(b)));
    key
}

/// `job:state:{hex}`: the state record of the job with these 32 lowercase hex digits
/// (its changing fields once it has moved past its enqueue); valid by construction, as
/// [`job_hex`].
pub fn job_state_hex(hex: &[u8; 32]) -> String {
    hex_key(JOB_STATE_PREFIX, hex)
}

/// `job:state:{job_id}`: a job's state record.
pub fn job_state(job_id: &str) -> Result<String, KeyError> {
    KeyFamily::JobState.key(job_id)
}

/// `job:dedup:{dedup_id}`: a dedup record suppressing duplicate enqueues, in the layout
/// before dedup ids were scoped (one scope for every queue and owner). helios-queue still
/// reads such records; it writes [`job_dedup_scoped`] ones.
pub fn job_dedup(dedup_id: &str) -> Result<String, KeyError> {
    KeyFamily::JobDedup.key(dedup_id)
}

/// `job:dedup:{queue}/{owner}/{dedup_id}`: a dedup record scoped to one owner and one queue,
/// so two owners (or two queues) using the same dedup id never meet. A job without an
/// owner has an empty owner part: `job:dedup:{queue}//{dedup_id}`.
///
/// The queue and the owner may not contain `'/'` and the dedup id, last, may; so the id
/// splits back at its first two `'/'` ([`parse_job_dedup_scoped`]) and distinct scopes
/// give distinct keys. No part may contain `':'` (the family rule) or be empty.
pub fn job_dedup_scoped(
    owner: Option<&str>,
    queue: &str,
    dedup_id: &str,
) -> Result<String, KeyError> {
    let bad = |part: &'static str, value: &str| KeyError::BadDedupScope {
        part,
        value: value.chars().take(ERROR_KEY_CHARS_MAX).collect(),
    };
    if queue.is_empty() || queue.contains('/') {
        return Err(bad("queue", queue));
    }
    if let Some(o) = owner
        && (o.is_empty() || o.contains('/'))
    {
        return Err(bad("owner", o));
    }
    if dedup_id.is_empty() {
        return Err(bad("dedup id", dedup_id));
    }
    let owner = owner.unwrap_or("");
    let mut id = String::with_capacity(queue.len() + owner.len() + dedup_id.len() + 2);
    id.push_str(queue);
    id.push('/');
    id.push_str(owner);
    id.push('/');
    id.push_str(dedup_id);
    KeyFamily::JobDedup.key(&id)
}

/// The `(owner, queue, dedup id)` of a dedup id in the [`job_dedup_scoped`] layout (the
/// part after `job:dedup:`), or `None` when it does not split into one. An old-layout dedup
/// id may split too (it may hold '/'), so the layout of a stored record is told by its
/// value, not by this.
pub fn parse_job_dedup_scoped(id: &str) -> Option<(Option<&str>, &str, &str)> {
    let (queue, rest) = id.split_once('/')?;
    let (owner, dedup_id) = rest.split_once('/')?;
    if queue.is_empty() || dedup_id.is_empty() || id.contains(':') {
        return None;
    }
    Some(((!owner.is_empty()).then_some(owner), queue, dedup_id))
}

/// `job:schedule:{schedule_id}`: a cron schedule of helios-queue (its id is 32 hex digits,
/// like a job's, but any id valid in the family is accepted here).
pub fn job_schedule(schedule_id: &str) -> Result<String, KeyError> {
    KeyFamily::JobSchedule.key(schedule_id)
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

/// `worker:{owner}/`: the prefix of one owner's registered workers (`worker:/` for the
/// workers without an owner). The registry scopes worker ids by owner: `{owner}/{id}`.
pub fn worker_scope(owner: Option<&str>) -> Result<String, KeyError> {
    let mut scope = owner.unwrap_or("").to_owned();
    scope.push('/');
    KeyFamily::Worker.key(&scope)
}

/// `worker:{owner}/{id}`: `owner`'s worker `id` (see [`worker_scope`]).
pub fn owned_worker(owner: Option<&str>, id: &str) -> Result<String, KeyError> {
    let mut key = worker_scope(owner)?;
    KeyFamily::Worker.check_id(id)?;
    key.push_str(id);
    Ok(key)
}

/// `meta:{name}`: a store-wide layout record.
pub fn meta(name: &str) -> Result<String, KeyError> {
    KeyFamily::Meta.key(name)
}

/// A namespace under `kv:` (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum KvSpace<'a> {
    /// The user's own namespace, by user id: `kv:u:{userId}:`.
    User(&'a str),
    /// A shared namespace, by name: `kv:ns:{namespace}:`.
    Shared(&'a str),
}

/// Checks a shared namespace name: `[a-z0-9_-]{1,64}`.
pub fn check_namespace(namespace: &str) -> Result<(), KeyError> {
    let ok = !namespace.is_empty()
        && namespace.len() <= KV_NAMESPACE_SIZE_MAX
        && namespace
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(KeyError::InvalidNamespace {
            namespace: namespace.chars().take(ERROR_KEY_CHARS_MAX).collect(),
        })
    }
}

impl KvSpace<'_> {
    /// Checks the user id (non-empty, no `':'`) or the namespace name.
    pub fn validate(&self) -> Result<(), KeyError> {
        match *self {
            KvSpace::User(id) => {
                if id.is_empty() {
                    return Err(KeyError::EmptyId {
                        family: KeyFamily::Kv,
                    });
                }
                match id.find(':') {
                    Some(index) => Err(KeyError::ColonInId {
                        family: KeyFamily::Kv,
                        id: id.to_owned(),
                        index,
                    }),
                    None => Ok(()),
                }
            }
            KvSpace::Shared(ns) => check_namespace(ns),
        }
    }

    /// The namespace's prefix, ending in `':'`: every key of the namespace starts with it
    /// and no key of another namespace does.
    pub fn prefix(&self) -> Result<String, KeyError> {
        self.validate()?;
        let (family, id) = match *self {
            KvSpace::User(id) => (KV_USER_PREFIX, id),
            KvSpace::Shared(ns) => (KV_SHARED_PREFIX, ns),
        };
        let mut p = String::with_capacity(family.len() + id.len() + 1);
        p.push_str(family);
        p.push_str(id);
        p.push(':');
        Ok(p)
    }

    /// The full ATLAS key of `key` in this namespace. `key` is any non-empty UTF-8.
    pub fn key(&self, key: &str) -> Result<String, KeyError> {
        let mut full = self.prefix_for(key.as_bytes())?;
        full.push_str(key);
        Ok(full)
    }

    /// As [`KvSpace::key`] for a key of any bytes (helios-atlasd's keys are binary-safe,
    /// as Redis's; the namespace part stays text).
    pub fn key_bytes(&self, key: &[u8]) -> Result<Vec<u8>, KeyError> {
        let mut full = self.prefix_for(key)?.into_bytes();
        full.extend_from_slice(key);
        Ok(full)
    }

    /// The prefix, once `key` is known not to be empty.
    fn prefix_for(&self, key: &[u8]) -> Result<String, KeyError> {
        if key.is_empty() {
            return Err(KeyError::EmptyId {
                family: KeyFamily::Kv,
            });
        }
        self.prefix()
    }
}

/// As [`parse_kv`] for a key of any bytes: the namespace part must be text, the user key
/// may be any non-empty bytes.
pub fn parse_kv_bytes(full: &[u8]) -> Result<(KvSpace<'_>, &[u8]), KeyError> {
    let not_namespaced = || KeyError::NotNamespaced {
        key: String::from_utf8_lossy(full)
            .chars()
            .take(ERROR_KEY_CHARS_MAX)
            .collect(),
    };
    let (rest, user) = if let Some(rest) = full.strip_prefix(KV_USER_PREFIX.as_bytes()) {
        (rest, true)
    } else if let Some(rest) = full.strip_prefix(KV_SHARED_PREFIX.as_bytes()) {
        (rest, false)
    } else {
        return Err(not_namespaced());
    };
    let colon = rest
        .iter()
        .position(|&b| b == b':')
        .ok_or_else(not_namespaced)?;
    let id = std::str::from_utf8(&rest[..colon]).map_err(|_| not_namespaced())?;
    let space = if user {
        KvSpace::User(id)
    } else {
        KvSpace::Shared(id)
    };
    space.validate()?;
    let key = &rest[colon + 1..];
    if key.is_empty() {
        return Err(KeyError::EmptyId {
            family: KeyFamily::Kv,
        });
    }
    Ok((space, key))
}

/// Splits a full `kv:` key into its namespace and the user key within it.
pub fn parse_kv(full: &str) -> Result<(KvSpace<'_>, &str), KeyError> {
    let (space, key) = parse_kv_bytes(full.as_bytes())?;
    // The key is the tail of `full` after an ASCII ':', so a whole `str` of its own.
    Ok((space, &full[full.len() - key.len()..]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn every_family_has_one_owner() {
        let owned: Vec<KeyFamily> = FAMILY_OWNERS.iter().map(|(f, _)| *f).collect();
        let mut sorted = owned.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted.len(), owned.len(), "a family listed twice");
        let mut all = KeyFamily::ALL.to_vec();
        all.sort();
        assert_eq!(sorted, all, "FAMILY_OWNERS and KeyFamily::ALL differ");
    }

    #[test]
    fn the_token_id_spaces_and_rate_and_job_builders_stay_in_their_families() {
        let jti = auth_token_jti("abc").unwrap();
        let fam = auth_token_family("def").unwrap();
        assert_eq!(
            (jti.as_str(), fam.as_str()),
            ("auth:token:jti.abc", "auth:token:fam.def")
        );
        assert_eq!(parse(&jti).unwrap().family(), KeyFamily::AuthToken);
        assert!(auth_token_jti("a:b").is_err(), "no ':' in an id");
        let digest = |_: &str| "0".repeat(64);
        assert_eq!(rate_client("ip.10.0.0.1", digest), "rate:ip.10.0.0.1");
        let hashed = rate_client("user:x y", digest);
        assert_eq!(hashed, format!("rate:h.{}", "0".repeat(64)));
        assert_eq!(rate_client(&"a".repeat(129), digest), hashed);
        for k in [rate_client("ip.1", digest), hashed] {
            assert_eq!(parse(&k).unwrap().family(), KeyFamily::Rate);
        }
        let j = job_hex(b"0123456789abcdef0123456789abcdef");
        assert_eq!(j, "job:0123456789abcdef0123456789abcdef");
        assert_eq!(parse(&j).unwrap().family(), KeyFamily::Job);
        let st = job_state_hex(b"0123456789abcdef0123456789abcdef");
        assert_eq!(st, "job:state:0123456789abcdef0123456789abcdef");
        assert_eq!(
            parse(&st).unwrap(),
            Key::JobState("0123456789abcdef0123456789abcdef")
        );
    }

    type Builder = fn(&str) -> Result<String, KeyError>;

    /// Every builder with its family, so tests cover them all.
    const BUILDERS: [(Builder, KeyFamily); 15] = [
        (auth_user, KeyFamily::AuthUser),
        (auth_username, KeyFamily::AuthUsername),
        (auth_token, KeyFamily::AuthToken),
        (rbac_role, KeyFamily::RbacRole),
        (rbac_user_roles, KeyFamily::RbacUserRoles),
        (kv, KeyFamily::Kv),
        (rate, KeyFamily::Rate),
        (job, KeyFamily::Job),
        (job_dedup, KeyFamily::JobDedup),
        (job_schedule, KeyFamily::JobSchedule),
        (job_state, KeyFamily::JobState),
        (proxy_backend, KeyFamily::ProxyBackend),
        (proxy_route, KeyFamily::ProxyRoute),
        (worker, KeyFamily::Worker),
        (meta, KeyFamily::Meta),
    ];

    /// Shows every builder spells the schema of DESIGN.md.
    #[test]
    fn builders_spell_the_schema() {
        let cases: [(Result<String, KeyError>, &str); 19] = [
            (auth_user("u1"), "auth:user:u1"),
            (auth_username("alice"), "auth:username:alice"),
            (auth_token("ab12"), "auth:token:ab12"),
            (rbac_role("admin"), "rbac:role:admin"),
            (rbac_user_roles("u1"), "rbac:user_roles:u1"),
            (kv("a:b:c"), "kv:a:b:c"),
            (rate("client-7"), "rate:client-7"),
            (job("j1"), "job:j1"),
            (job_dedup("d1"), "job:dedup:d1"),
            (job_schedule("s1"), "job:schedule:s1"),
            (job_state("j1"), "job:state:j1"),
            (proxy_backend("b1"), "proxy:backend:b1"),
            (proxy_route("r1"), "proxy:route:r1"),
            (worker("w1"), "worker:w1"),
            (worker_scope(Some("alice")), "worker:alice/"),
            (worker_scope(None), "worker:/"),
            (owned_worker(Some("alice"), "w1"), "worker:alice/w1"),
            (owned_worker(None, "w1"), "worker:/w1"),
            (meta("kv_layout"), "meta:kv_layout"),
        ];
        for (built, expected) in cases {
            assert_eq!(built.unwrap(), expected);
        }
    }

    /// Shows the scoped dedup layout: each (owner, queue, dedup id) its own key, parsed back;
    /// a '/' in the queue or owner, an empty part or a ':' anywhere is refused.
    #[test]
    fn job_dedup_scoped_layout() {
        let cases = [
            (
                Some("alice"),
                "emails",
                "order-17",
                "job:dedup:emails/alice/order-17",
            ),
            (
                Some("bob"),
                "emails",
                "order-17",
                "job:dedup:emails/bob/order-17",
            ),
            (None, "emails", "a/b", "job:dedup:emails//a/b"),
        ];
        for (owner, queue, dedup, want) in cases {
            let key = job_dedup_scoped(owner, queue, dedup).unwrap();
            assert_eq!(key, want);
            let Key::JobDedup(id) = parse(&key).unwrap() else {
                panic!("{key} is a dedup key");
            };
            assert_eq!(parse_job_dedup_scoped(id), Some((owner, queue, dedup)));
        }
        let bad = |part, value: &str| KeyError::BadDedupScope {
            part,
            value: value.to_owned(),
        };
        assert_eq!(job_dedup_scoped(None, "a/b", "d"), Err(bad("queue", "a/b")));
        assert_eq!(job_dedup_scoped(None, "", "d"), Err(bad("queue", "")));
        assert_eq!(
            job_dedup_scoped(Some("u/1"), "q", "d"),
            Err(bad("owner", "u/1"))
        );
        assert_eq!(job_dedup_scoped(Some(""), "q", "d"), Err(bad("owner", "")));
        assert_eq!(job_dedup_scoped(None, "q", ""), Err(bad("dedup id", "")));
        assert!(matches!(
            job_dedup_scoped(Some("u"), "q", "a:b"),
            Err(KeyError::ColonInId { .. })
        ));
        assert_eq!(parse_job_dedup_scoped("order-17"), None);
        assert_eq!(parse_job_dedup_scoped("q/"), None);
        assert_eq!(parse_job_dedup_scoped("/o/d"), None);
    }

    proptest! {
        /// Distinct scopes give distinct keys, and every key parses back to its scope.
        #[test]
        fn job_dedup_scoped_round_trips(
            owner in proptest::option::of("[^:/]{1,8}"),
            queue in "[A-Za-z0-9_.-]{1,8}",
            dedup in "[^:]{1,12}",
        ) {
            let key = job_dedup_scoped(owner.as_deref(), &queue, &dedup).unwrap();
            let id = key.strip_prefix(JOB_DEDUP_PREFIX).unwrap();
            prop_assert_eq!(parse(&key).unwrap(), Key::JobDedup(id));
            prop_assert_eq!(
                parse_job_dedup_scoped(id),
                Some((owner.as_deref(), queue.as_str(), dedup.as_str()))
            );
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
            ("job:schedule:s1", Key::JobSchedule("s1")),
            // Without the trailing ':' it is a job id, as for `job:dedup`.
            ("job:schedule", Key::Job("schedule")),
            ("job:state:j1", Key::JobState("j1")),
            ("job:state", Key::Job("state")),
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
            ("job:schedule:a:b", colon(KeyFamily::JobSchedule, "a:b", 1)),
            ("job:state:a:b", colon(KeyFamily::JobState, "a:b", 1)),
            (
                "job:schedule:",
                KeyError::EmptyId {
                    family: KeyFamily::JobSchedule,
                },
            ),
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

    /// Shows the namespace layout under `kv:`: prefixes, keys, and the parse back.
    #[test]
    fn kv_namespaces() {
        assert_eq!(KvSpace::User("u1").prefix().unwrap(), "kv:u:u1:");
        assert_eq!(
            KvSpace::Shared("team-a").key("x:y").unwrap(),
            "kv:ns:team-a:x:y"
        );
        assert_eq!(
            KvSpace::Shared(KV_LEGACY_NAMESPACE).key("old").unwrap(),
            "kv:ns:legacy:old"
        );
        assert_eq!(
            parse_kv("kv:u:u1:a:b").unwrap(),
            (KvSpace::User("u1"), "a:b")
        );
        assert_eq!(
            parse_kv("kv:ns:team:k").unwrap(),
            (KvSpace::Shared("team"), "k")
        );
        for bad in [
            "kv:x",
            "kv:u:",
            "kv:u:u1",
            "kv:u:u1:",
            "kv:ns:Team:k",
            "kv:ns::k",
            "job:x",
        ] {
            assert!(parse_kv(bad).is_err(), "{bad}");
        }
        for bad in ["", "Team", "a:b", "a b", &"x".repeat(65)] {
            assert!(check_namespace(bad).is_err(), "{bad:?}");
            assert!(KvSpace::Shared(bad).key("k").is_err());
        }
        assert!(check_namespace(&"x".repeat(64)).is_ok());
        assert!(KvSpace::User("a:b").prefix().is_err());
        assert!(KvSpace::User("").prefix().is_err());
        assert!(KvSpace::User("u").key("").is_err());
        assert_eq!(
            check_namespace("A").unwrap_err().to_string(),
            "namespace \"A\" is not 1..=64 of [a-z0-9_-]"
        );
        // Every namespaced key is a valid kv key.
        assert_eq!(parse("kv:u:u1:k").unwrap(), Key::Kv("u:u1:k"));
    }

    #[test]
    fn kv_keys_of_any_bytes() {
        let full = KvSpace::User("u1").key_bytes(b"a:\xff").unwrap();
        assert_eq!(full, b"kv:u:u1:a:\xff");
        assert_eq!(
            parse_kv_bytes(&full).unwrap(),
            (KvSpace::User("u1"), &b"a:\xff"[..])
        );
        assert_eq!(
            parse_kv_bytes(b"kv:ns:team:\x00").unwrap(),
            (KvSpace::Shared("team"), &b"\x00"[..])
        );
        assert!(KvSpace::User("u1").key_bytes(b"").is_err());
        for bad in [
            &b"kv:u:u1:"[..],
            b"kv:u:u1",
            b"kv:u:\xff:k",
            b"kv:ns:Team:k",
            b"job:x",
        ] {
            assert!(parse_kv_bytes(bad).is_err(), "{bad:?}");
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

        /// Namespaces are disjoint: a key built in one space parses back to that space and
        /// key, and starts with no other space's prefix.
        #[test]
        fn kv_spaces_are_disjoint(
            a_user in any::<bool>(),
            a_id in "[a-z0-9_-]{1,8}",
            b_user in any::<bool>(),
            b_id in "[a-z0-9_-]{1,8}",
            key in "\\PC{1,16}",
        ) {
            fn space(user: bool, id: &str) -> KvSpace<'_> {
                if user { KvSpace::User(id) } else { KvSpace::Shared(id) }
            }
            let (a, b) = (space(a_user, &a_id), space(b_user, &b_id));
            let full = a.key(&key).unwrap();
            prop_assert_eq!(parse_kv(&full).unwrap(), (a, key.as_str()));
            let bytes = a.key_bytes(key.as_bytes()).unwrap();
            prop_assert_eq!(&bytes, full.as_bytes());
            prop_assert_eq!(parse_kv_bytes(&bytes).unwrap(), (a, key.as_bytes()));
            if a != b {
                prop_assert!(!full.starts_with(&b.prefix().unwrap()));
            }
        }

        /// Any string: parse never panics, and whatever parses prints back to itself.
        #[test]
        fn parse_any_string(text in "\\PC{0,40}|(auth|rbac|kv|rate|job|proxy|worker|meta)[:a-z_]{0,16}\\PC{0,8}") {
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
