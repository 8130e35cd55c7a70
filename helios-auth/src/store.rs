//! [`Auth`]: users, sessions and roles over ATLAS.
//!
//! Keys (schema of `helios_core::keys`):
//! - `auth:user:{id}`: the user record (JSON: username, bcrypt hash, disabled, session epoch);
//! - `auth:username:{lowercased name}`: the user id (case-insensitive uniqueness, enforced
//!   by a batch precondition, so two concurrent registrations cannot both win);
//! - `rbac:role:{name}`: a role's permission patterns; `rbac:user_roles:{id}`: a user's roles;
//! - `auth:token:{sha256 of the refresh token}`: a refresh token (only its hash is stored),
//!   with a TTL at its expiry;
//! - `auth:token:jti.{jti}`: a revoked access token, with a TTL at the token's expiry (so the
//!   revocation list cannot grow without bound); `auth:token:fam.{family}`: a revoked
//!   refresh-token family, with a TTL past the last possible refresh token of the family.
//!
//! Only this module writes these keys, so the in-memory indexes it keeps (users' session
//! epochs, disabled flags and roles; roles' permissions) are exact: a role or user change
//! applies to the very next request. Verification needs no write and no fsync.
//!
//! Timing: a login for an unknown user verifies the password against a dummy hash of the
//! same cost, so it costs the same time as a wrong password for a known user; a login to a
//! disabled account runs the same check and answers exactly like a wrong password (the
//! right password is not counted as a failure, so its owner is not throttled).
//!
//! Throttling ([`crate::throttle`]): failures lock the (username, client) pair and the
//! client; a username's failures from anywhere only add a bounded delay
//! ([`Auth::login_delay_ms`], served by the caller before [`Auth::login`]), so nobody can
//! lock somebody else out.
//!
//! Sessions: every access and refresh token carries the user's session epoch
//! (`session_epoch` in the user record). A password change or a disable bumps it, so every
//! earlier token (access and refresh, every family) is refused for good, also after a
//! re-enable, and also when the access token's signature check was cached.
//!
//! Privilege (the `*_as` methods take the acting user's id): granting, taking, editing or
//! deleting a role needs every permission the role grants (before and after an edit);
//! only an `admin:*` holder may disable, delete or change the roles of a user who holds
//! `admin:*`. Whatever the actor (the methods without `_as` act as the system: bootstrap,
//! tools, tests), no change may leave a store that has an enabled `admin:*` holder without
//! one. Each check runs under the write lock with the write it guards.

use crate::error::{AuthError, Result};
use crate::jwt::{Claims, JwtConfig, KeyRing};
use crate::password;
use crate::random::{Randomness, hex_token, sha256_hex};
use crate::rbac::{self, Role};
use crate::throttle::{Lockout, LoginKeys, Throttle, ThrottleConfig};
use base64::Engine as _;
use helios_atlas::{Atlas, Expiry, Precondition, WriteBatch};
use helios_core::Clock;
use helios_core::keys;
use parking_lot::{Mutex, RwLock};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::Arc;

/// Settings of [`Auth`].
#[derive(Debug, Clone)]
pub struct AuthConfig {
    /// bcrypt cost (default 12; 4..=31).
    pub bcrypt_cost: u32,
    /// Shortest password, in characters (default 10).
    pub password_len_min: usize,
    /// Whether anyone may register (default true); otherwise admins create users.
    pub registration_open: bool,
    /// Refresh-token lifetime, ms (default 30 days).
    pub refresh_ttl_ms: u64,
    /// Access tokens.
    pub jwt: JwtConfig,
    /// Login throttling.
    pub throttle: ThrottleConfig,
}

/// A user, as stored under `auth:user:{id}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    /// The id (32 hex digits).
    pub id: String,
    /// The username as registered.
    pub username: String,
    /// The bcrypt hash.
    pub password_hash: String,
    /// Disabled users cannot log in, and their tokens stop working.
    pub disabled: bool,
    /// Bumped by a password change and by a disable: every earlier session ends for good.
    pub session_epoch: u64,
    /// Registration time, ms.
    pub created_at_ms: u64,
}

/// A user as shown to clients and admins (no hash).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserView {
    /// The id.
    pub id: String,
    /// The username.
    pub username: String,
    /// The roles.
    pub roles: Vec<String>,
    /// Whether disabled.
    pub disabled: bool,
}

/// What a login or refresh returns.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TokenPair {
    /// The JWT access token.
    pub access_token: String,
    /// The opaque refresh token (single use).
    pub refresh_token: String,
    /// Always "Bearer".
    pub token_type: &'static str,
    /// Access-token lifetime, s.
    pub expires_in: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct RefreshRecord {
    user: String,
    family: String,
    epoch: u64,
    expires_at_ms: u64,
    rotated: bool,
}

#[derive(Debug, Clone)]
struct Session {
    username: String,
    epoch: u64,
    disabled: bool,
    roles: Vec<String>,
}

#[derive(Debug, Default)]
struct Index {
    users: HashMap<String, Session>,
    roles: HashMap<String, Vec<String>>,
}

/// Who asks for a change: a user, checked against its own permissions, or the system
/// (bootstrap, tools, tests), which is not.
#[derive(Debug, Clone, Copy)]
enum Actor<'a> {
    System,
    User(&'a str),
}

impl Index {
    /// Whether `roles` grant `permission`, whatever the user's state.
    fn roles_grant(&self, roles: &[String], permission: &str) -> bool {
        roles.iter().any(|r| {
            self.roles
                .get(r)
                .is_some_and(|ps| rbac::authorize(ps.iter().map(String::as_str), permission))
        })
    }

    /// Whether user `id` holds `admin:*` through its roles (enabled or not).
    fn holds_admin(&self, id: &str) -> bool {
        self.users
            .get(id)
            .is_some_and(|s| self.roles_grant(&s.roles, rbac::perms::ADMIN_ALL))
    }

    /// The permission patterns an enabled user holds (none for a missing or disabled one).
    fn held(&self, id: &str) -> Vec<&str> {
        match self.users.get(id) {
            Some(s) if !s.disabled => s
                .roles
                .iter()
                .filter_map(|r| self.roles.get(r))
                .flatten()
                .map(String::as_str)
                .collect(),
            _ => Vec::new(),
        }
    }

    /// The actor must hold every pattern of `granted` (a role being granted, taken,
    /// edited or deleted).
    fn check_covers(&self, actor: Actor<'_>, granted: &[String], what: &str) -> Result<()> {
        let Actor::User(id) = actor else {
            return Ok(());
        };
        let held = self.held(id);
        match granted
            .iter()
            .find(|p| !rbac::covers(held.iter().copied(), p))
        {
            Some(p) => Err(AuthError::PrivilegeEscalation {
                reason: format!("{what} needs {p}, which you do not hold"),
            }),
            None => Ok(()),
        }
    }

    /// Only an `admin:*` holder may change the account or roles of one.
    fn check_admin_target(&self, actor: Actor<'_>, target: &str) -> Result<()> {
        let Actor::User(id) = actor else {
            return Ok(());
        };
        if self.holds_admin(target) && !rbac::covers(self.held(id), rbac::perms::ADMIN_ALL) {
            return Err(AuthError::PrivilegeEscalation {
                reason: "only an admin:* holder may change the account or roles of a user \
                         who holds admin:*"
                    .to_owned(),
            });
        }
        Ok(())
    }

    /// Whether an enabled user holds `admin:*` once `user` (`None`: deleted) replaces
    /// that user's session and `role` (`None`: deleted) replaces that role's patterns.
    fn any_admin_with(
        &self,
        user: Option<(&str, Option<&Session>)>,
        role: Option<(&str, Option<&[String]>)>,
    ) -> bool {
        let grants_admin = |roles: &[String]| {
            roles.iter().any(|r| {
                let patterns = match role {
                    Some((name, changed)) if name == r => changed,
                    _ => self.roles.get(r).map(Vec::as_slice),
                };
                patterns.is_some_and(|ps| {
                    rbac::authorize(ps.iter().map(String::as_str), rbac::perms::ADMIN_ALL)
                })
            })
        };
        self.users.iter().any(|(id, s)| {
            let s = match user {
                Some((changed_id, changed)) if changed_id == id => match changed {
                    Some(c) => c,
                    None => return false,
                },
                _ => s,
            };
            !s.disabled && grants_admin(&s.roles)
        })
    }

    /// Refuses a change that would leave a store with an enabled admin without one.
    fn check_last_admin(
        &self,
        user: Option<(&str, Option<&Session>)>,
        role: Option<(&str, Option<&[String]>)>,
    ) -> Result<()> {
        if self.any_admin_with(None, None) && !self.any_admin_with(user, role) {
            return Err(AuthError::LastAdmin);
        }
        Ok(())
    }
}

/// Users, passwords, tokens and roles. `Send + Sync`.
#[derive(Debug)]
pub struct Auth {
    atlas: Atlas,
    config: AuthConfig,
    clock: Arc<dyn Clock>,
    rng: Arc<dyn Randomness>,
    keys: RwLock<KeyRing>,
    // Readers (verify, authorize) take it shared and briefly; it is never held across an
    // ATLAS write, so a write's fsync never stalls them.
    index: RwLock<Index>,
    // Serializes the changes to users and roles from their ATLAS write to their index
    // update, so the index follows ATLAS's order.
    writes: Mutex<()>,
    throttle: Throttle,
    dummy_hash: String,
    // Tokens whose signature and claims were verified with the current key ring: the
    // same bytes always verify the same way, so a hit skips the signature check (the
    // time, revocation and session checks still run). Bounded; emptied when full and on
    // key rotation.
    verified: RwLock<HashMap<String, Arc<Claims>>>,
}

/// Most verified tokens remembered (see `Auth::verified`).
const VERIFIED_CACHE_COUNT_MAX: usize = 16_384;

/// An id that failed its family's rules (ids here are generated or validated before they
/// get this far, so this names a bug, not bad input).
fn key_error(field: &'static str) -> impl FnOnce(keys::KeyError) -> AuthError {
    move |e| AuthError::Invalid {
        field,
        reason: e.to_string(),
    }
}

fn refresh_key(token: &str) -> Result<String, AuthError> {
    keys::auth_token(&sha256_hex(token)).map_err(key_error("refresh token"))
}

fn jti_key(jti: &str) -> Result<String, AuthError> {
    keys::auth_token_jti(jti).map_err(key_error("jti"))
}

fn family_key(fam: &str) -> Result<String, AuthError> {
    keys::auth_token_family(fam).map_err(key_error("token family"))
}

fn user_key(id: &str) -> Result<String, AuthError> {
    keys::auth_user(id).map_err(key_error("user id"))
}

fn username_key(lower: &str) -> Result<String, AuthError> {
    keys::auth_username(lower).map_err(key_error("username"))
}

fn role_key(name: &str) -> Result<String, AuthError> {
    keys::rbac_role(name).map_err(key_error("role"))
}

fn user_roles_key(id: &str) -> Result<String, AuthError> {
    keys::rbac_user_roles(id).map_err(key_error("user id"))
}

fn corrupt(key: &str, e: impl std::fmt::Display) -> AuthError {
    AuthError::CorruptRecord {
        key: key.to_owned(),
        reason: e.to_string(),
    }
}

fn json<T: Serialize>(v: &T) -> Vec<u8> {
    // Our records are plain structs of strings and integers: encoding cannot fail.
    serde_json::to_vec(v).unwrap_or_default()
}

/// Checks a username: 3..=32 of `[A-Za-z0-9_.-]`, starting with a letter or digit.
pub fn check_username(name: &str) -> Result<()> {
    let ok = (3..=32).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
        && name.as_bytes()[0].is_ascii_alphanumeric();
    if ok {
        Ok(())
    } else {
        Err(AuthError::Invalid {
            field: "username",
            reason: "3 to 32 of [A-Za-z0-9_.-], starting with a letter or digit".to_owned(),
        })
    }
}

impl Auth {
    /// Opens auth over `atlas`: loads users and roles, and creates the default roles on a
    /// fresh store.
    pub fn open(
        atlas: Atlas,
        config: AuthConfig,
        clock: Arc<dyn Clock>,
        rng: Arc<dyn Randomness>,
    ) -> Result<Auth> {
        if !(4..=31).contains(&config.bcrypt_cost) {
            return Err(AuthError::Config {
                key: "auth.bcrypt_cost",
                reason: "must be in 4..=31".to_owned(),
            });
        }
        if config.password_len_min < 8 {
            return Err(AuthError::Config {
                key: "auth.password_len_min",
                reason: "must be at least 8".to_owned(),
            });
        }
        let keys = KeyRing::new(config.jwt.clone())?;
        let mut salt = [0u8; 16];
        rng.fill(&mut salt);
        let dummy_hash = password::hash("dummy password for timing", config.bcrypt_cost, salt)?;
        let auth = Auth {
            throttle: Throttle::new(config.throttle.clone())?,
            atlas,
            config,
            clock,
            rng,
            keys: RwLock::new(keys),
            index: RwLock::new(Index::default()),
            writes: Mutex::new(()),
            verified: RwLock::new(HashMap::new()),
            dummy_hash,
        };
        auth.load()?;
        // Default roles a store lacks (all of them on a fresh store; on an older one, those
        // added since, such as `worker`) are created in one batch: a crash never leaves
        // half of them. Existing roles, edited or not, are left as they are.
        let missing: Vec<rbac::Role> = {
            let idx = auth.index.read();
            rbac::default_roles()
                .into_iter()
                .filter(|r| !idx.roles.contains_key(&r.name))
                .collect()
        };
        if !missing.is_empty() {
            let mut b = WriteBatch::new();
            for role in &missing {
                b.set(role_key(&role.name)?, json(role), Expiry::Never);
            }
            auth.atlas.write_batch(b)?;
            let mut idx = auth.index.write();
            for role in missing {
                tracing::info!(role = %role.name, "created a default role");
                idx.roles.insert(role.name, role.permissions);
            }
        }
        Ok(auth)
    }

    fn scan_all(&self, prefix: &str, mut f: impl FnMut(&str, &[u8]) -> Result<()>) -> Result<()> {
        let mut cursor: Option<helios_atlas::Key> = None;
        loop {
            let page = self.atlas.scan(prefix, cursor.as_deref(), 10_000)?;
            for (k, v) in &page.entries {
                // This crate writes text keys only: another under its prefixes is damage.
                let Some(k) = k.as_str() else {
                    return Err(AuthError::CorruptRecord {
                        key: k.to_string(),
                        reason: "the key is not UTF-8".to_owned(),
                    });
                };
                f(k, v)?;
            }
            match page.next_cursor {
                Some(c) => cursor = Some(c),
                None => return Ok(()),
            }
        }
    }

    fn load(&self) -> Result<()> {
        let mut index = Index::default();
        self.scan_all(keys::RBAC_ROLE_PREFIX, |k, v| {
            let role: Role = serde_json::from_slice(v).map_err(|e| corrupt(k, e))?;
            index.roles.insert(role.name, role.permissions);
            Ok(())
        })?;
        self.scan_all(keys::AUTH_USER_PREFIX, |k, v| {
            let user: User = serde_json::from_slice(v).map_err(|e| corrupt(k, e))?;
            let rk = user_roles_key(&user.id)?;
            let roles: Vec<String> = match self.atlas.get(&rk) {
                Some(b) => serde_json::from_slice(&b).map_err(|e| corrupt(&rk, e))?,
                None => Vec::new(),
            };
            index.users.insert(
                user.id.clone(),
                Session {
                    username: user.username,
                    epoch: user.session_epoch,
                    disabled: user.disabled,
                    roles,
                },
            );
            Ok(())
        })?;
        *self.index.write() = index;
        Ok(())
    }

    fn now_ms(&self) -> u64 {
        self.clock.now_ms()
    }

    /// The settings.
    pub fn config(&self) -> &AuthConfig {
        &self.config
    }

    fn user_record(&self, id: &str) -> Result<User> {
        let k = user_key(id)?;
        let b = self
            .atlas
            .get(&k)
            .ok_or_else(|| AuthError::UserNotFound(id.to_owned()))?;
        serde_json::from_slice(&b).map_err(|e| corrupt(&k, e))
    }

    fn user_id_by_name(&self, username: &str) -> Option<String> {
        let b = self
            .atlas
            .get(&username_key(&username.to_ascii_lowercase()).ok()?)?;
        String::from_utf8(b.to_vec()).ok()
    }

    /// Self-registration (refused when closed): a new user with the `user` role.
    pub fn register(&self, username: &str, password: &str) -> Result<UserView> {
        if !self.config.registration_open {
            return Err(AuthError::RegistrationClosed);
        }
        self.create_user(username, password, &["user"])
    }

    /// Creates a user with `roles` (admins, bootstrap).
    pub fn create_user(&self, username: &str, password: &str, roles: &[&str]) -> Result<UserView> {
        check_username(username)?;
        password::check_rules("password", password, username, self.config.password_len_min)?;
        {
            let idx = self.index.read();
            if let Some(r) = roles.iter().find(|r| !idx.roles.contains_key(**r)) {
                return Err(AuthError::RoleNotFound((*r).to_owned()));
            }
        }
        let mut salt = [0u8; 16];
        self.rng.fill(&mut salt);
        // bcrypt before any lock: it is the slow part.
        let hash = password::hash(password, self.config.bcrypt_cost, salt)?;
        let id = hex_token(&*self.rng, 16);
        let lower = username.to_ascii_lowercase();
        let user = User {
            id: id.clone(),
            username: username.to_owned(),
            password_hash: hash,
            disabled: false,
            session_epoch: 0,
            created_at_ms: self.now_ms(),
        };
        let roles: Vec<String> = roles.iter().map(|r| (*r).to_owned()).collect();
        let mut b = WriteBatch::new();
        b.require(username_key(&lower)?, Precondition::Absent)
            .set(username_key(&lower)?, id.clone(), Expiry::Never)
            .set(user_key(&id)?, json(&user), Expiry::Never)
            .set(user_roles_key(&id)?, json(&roles), Expiry::Never);
        let _w = self.writes.lock();
        match self.atlas.write_batch(b) {
            Ok(()) => {}
            Err(helios_atlas::AtlasError::PreconditionFailed { .. }) => {
                return Err(AuthError::UsernameTaken(username.to_owned()));
            }
            Err(e) => return Err(e.into()),
        }
        self.index.write().users.insert(
            id.clone(),
            Session {
                username: username.to_owned(),
                epoch: 0,
                disabled: false,
                roles: roles.clone(),
            },
        );
        Ok(UserView {
            id,
            username: username.to_owned(),
            roles,
            disabled: false,
        })
    }

    /// Creates the `admin` user on a fresh store (no user at all): with `password`, or a
    /// random one that is returned (to be printed once). `Ok(None)` on a store that has
    /// users already, so removing the admins later never brings this one back.
    pub fn bootstrap_admin(&self, password: Option<&str>) -> Result<Option<String>> {
        if !self.index.read().users.is_empty() {
            return Ok(None);
        }
        match password {
            Some(p) => {
                self.create_user("admin", p, &["admin"])?;
                Ok(None)
            }
            None => {
                let mut b = [0u8; 18];
                self.rng.fill(&mut b);
                let p = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
                self.create_user("admin", &p, &["admin"])?;
                Ok(Some(p))
            }
        }
    }

    /// The delay a login (or password change) for `username` must wait before its check,
    /// ms: 0 normally; after repeated failures on the name from anywhere, up to the
    /// throttle's `user_delay_ms_max` (seconds). Never a refusal: the caller sleeps it
    /// (the gateway does, off the blocking pool), so guesses spread over many addresses are
    /// slowed while the right password still gets through.
    pub fn login_delay_ms(&self, username: &str) -> u64 {
        if check_username(username).is_err() {
            return 0;
        }
        self.throttle
            .delay_for(&crate::throttle::user_key(username), self.now_ms())
    }

    /// Counts an attempt against the (username, client) pair and the client, refusing it
    /// if either is locked.
    fn throttle_gate(&self, keys: &LoginKeys, now: u64) -> Result<()> {
        if let Some(ms) = self.throttle.attempt(&keys.pair, now) {
            return Err(AuthError::LockedOut { retry_after_ms: ms });
        }
        if let Some(ms) = self.throttle.attempt(&keys.client, now) {
            self.throttle.refund(&keys.pair);
            return Err(AuthError::LockedOut { retry_after_ms: ms });
        }
        Ok(())
    }

    /// The right password: the pair starts over, the client and the username get one
    /// attempt back (they are not cleared: an attacker's own account must not reset them).
    fn throttle_passed(&self, keys: &LoginKeys) {
        self.throttle.success(&keys.pair);
        self.throttle.refund(&keys.client);
        self.throttle.refund(&keys.user);
    }

    /// Logs in: [`Auth::authenticate`]'s check, then a new session (a token pair).
    pub fn login(&self, username: &str, password: &str, client: &str) -> Result<TokenPair> {
        let user = self.check_password(username, password, client)?;
        let family = hex_token(&*self.rng, 16);
        self.issue(&user.id, user.session_epoch, &family, None)
    }

    /// Checks a username and password from `client` (an address), as every password login
    /// does (the gateway's [`Auth::login`], helios-atlasd's `AUTH`). Throttled per
    /// (username, client) pair and per client (locks), and per username (a bounded delay
    /// the caller serves first: [`Auth::login_delay_ms`]). Unknown users cost the same time;
    /// a disabled account answers like a wrong password (`InvalidCredentials`) after the
    /// same check, without counting the right password as a failure. Blocking (bcrypt).
    pub fn authenticate(&self, username: &str, password: &str, client: &str) -> Result<UserView> {
        let user = self.check_password(username, password, client)?;
        Ok(self.user(&user.id).unwrap_or(UserView {
            id: user.id,
            username: user.username,
            roles: Vec::new(),
            disabled: user.disabled,
        }))
    }

    /// The password check of [`Auth::authenticate`] (and so of [`Auth::login`]).
    fn check_password(&self, username: &str, password: &str, client: &str) -> Result<User> {
        let now = self.now_ms();
        // Names that break the (public) rules cannot exist: refuse them before anything,
        // so they cannot fill the throttle with huge keys. Same for oversized passwords.
        if check_username(username).is_err() || password.len() > password::PASSWORD_SIZE_MAX {
            return Err(AuthError::InvalidCredentials);
        }
        let keys = LoginKeys::new(username, client);
        // The attempt counts before the slow check, so parallel guesses cannot slip
        // through a window; the right password takes it back.
        self.throttle_gate(&keys, now)?;
        let user = self
            .user_id_by_name(username)
            .and_then(|id| self.user_record(&id).ok());
        let ok = match &user {
            Some(u) => password::verify(password, &u.password_hash),
            None => {
                let _ = password::verify(password, &self.dummy_hash);
                false
            }
        };
        let Some(user) = user.filter(|_| ok) else {
            self.throttle.count(&keys.user, now);
            return Err(AuthError::InvalidCredentials);
        };
        if user.disabled {
            // Answered like a wrong password, and not counted as one: this attempt is
            // given back, but earlier failures stay (clearing them, as a success does,
            // would tell a guesser that this password was the right one).
            self.throttle.refund(&keys.pair);
            self.throttle.refund(&keys.client);
            return Err(AuthError::InvalidCredentials);
        }
        self.throttle_passed(&keys);
        Ok(user)
    }

    /// Writes a new refresh token (rotating `previous` if given, atomically) and signs an
    /// access token.
    fn issue(
        &self,
        user_id: &str,
        epoch: u64,
        family: &str,
        previous: Option<(String, Vec<u8>, RefreshRecord)>,
    ) -> Result<TokenPair> {
        let now = self.now_ms();
        let mut raw = [0u8; 32];
        self.rng.fill(&mut raw);
        let refresh = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw);
        let expires_at_ms = now.saturating_add(self.config.refresh_ttl_ms);
        let record = RefreshRecord {
            user: user_id.to_owned(),
            family: family.to_owned(),
            epoch,
            expires_at_ms,
            rotated: false,
        };
        let mut b = WriteBatch::new();
        if let Some((key, old_bytes, mut old)) = previous {
            // Single use even under concurrency: only the first refresh sees the record
            // as it was.
            b.require(key.clone(), Precondition::Equals(old_bytes.into()));
            old.rotated = true;
            b.set(
                key,
                json(&old),
                Expiry::AtMs(old.expires_at_ms.max(now + 1)),
            );
        }
        b.set(
            refresh_key(&refresh)?,
            json(&record),
            Expiry::AtMs(expires_at_ms),
        );
        match self.atlas.write_batch(b) {
            Ok(()) => {}
            Err(helios_atlas::AtlasError::PreconditionFailed { .. }) => {
                return Err(AuthError::RefreshReuse);
            }
            Err(e) => return Err(e.into()),
        }
        let roles = self
            .index
            .read()
            .users
            .get(user_id)
            .map(|s| s.roles.clone())
            .unwrap_or_default();
        let keys = self.keys.read();
        let cfg = keys.config();
        let now_s = now / 1000;
        let claims = Claims {
            sub: user_id.to_owned(),
            roles,
            iat: now_s,
            nbf: now_s,
            exp: now_s + cfg.access_ttl_s,
            iss: cfg.issuer.clone(),
            aud: cfg.audience.clone(),
            jti: hex_token(&*self.rng, 16),
            sep: epoch,
            fam: family.to_owned(),
        };
        Ok(TokenPair {
            access_token: keys.sign(&claims)?,
            refresh_token: refresh,
            token_type: "Bearer",
            expires_in: cfg.access_ttl_s,
        })
    }

    /// Exchanges a refresh token for a new pair. A token used twice revokes its family.
    pub fn refresh(&self, refresh_token: &str) -> Result<TokenPair> {
        let invalid = |r: &str| AuthError::InvalidToken {
            reason: r.to_owned(),
        };
        if refresh_token.len() > 256 {
            return Err(invalid("refresh token too long"));
        }
        let key = refresh_key(refresh_token)?;
        let bytes = self
            .atlas
            .get(&key)
            .ok_or_else(|| invalid("unknown refresh token"))?;
        let record: RefreshRecord = serde_json::from_slice(&bytes).map_err(|e| corrupt(&key, e))?;
        if self.atlas.exists(&family_key(&record.family)?) {
            return Err(invalid("session revoked"));
        }
        if record.rotated {
            self.revoke_family(&record.family)?;
            return Err(AuthError::RefreshReuse);
        }
        if record.expires_at_ms <= self.now_ms() {
            return Err(invalid("refresh token expired"));
        }
        let session = self
            .index
            .read()
            .users
            .get(&record.user)
            .cloned()
            .ok_or_else(|| invalid("user gone"))?;
        if session.disabled {
            return Err(AuthError::Disabled);
        }
        if session.epoch != record.epoch {
            return Err(invalid("sessions ended since (password change or disable)"));
        }
        let (user, epoch, family) = (record.user.clone(), record.epoch, record.family.clone());
        match self.issue(&user, epoch, &family, Some((key, bytes.to_vec(), record))) {
            Err(AuthError::RefreshReuse) => {
                // Lost a race with another use of the same token: that is reuse too.
                self.revoke_family(&family)?;
                Err(AuthError::RefreshReuse)
            }
            r => r,
        }
    }

    fn revoke_family(&self, family: &str) -> Result<()> {
        let until = self.now_ms().saturating_add(self.config.refresh_ttl_ms);
        self.atlas.set_with(
            &family_key(family)?,
            "revoked",
            helios_atlas::SetOptions {
                expiry: Expiry::AtMs(until),
                ..Default::default()
            },
        )?;
        Ok(())
    }

    /// Verifies an access token: signature, algorithm, key, times, issuer and audience,
    /// then revocation, session epoch and the user's state. No write.
    pub fn verify_access(&self, token: &str) -> Result<Claims> {
        self.verify_access_shared(token).map(|c| (*c).clone())
    }

    /// [`Auth::verify_access`] without copying the claims (the request path).
    pub fn verify_access_shared(&self, token: &str) -> Result<Arc<Claims>> {
        let now = self.now_ms();
        let cached = self.verified.read().get(token).cloned();
        let claims = match cached {
            Some(c) => {
                self.keys.read().check_times(&c, now / 1000)?;
                c
            }
            None => {
                let c = Arc::new(self.keys.read().verify(token, now / 1000)?);
                let mut cache = self.verified.write();
                if cache.len() >= VERIFIED_CACHE_COUNT_MAX {
                    cache.clear();
                }
                cache.insert(token.to_owned(), c.clone());
                c
            }
        };
        let invalid = |r: &str| AuthError::InvalidToken {
            reason: r.to_owned(),
        };
        if self.atlas.exists(&jti_key(&claims.jti)?) {
            return Err(invalid("revoked"));
        }
        if self.atlas.exists(&family_key(&claims.fam)?) {
            return Err(invalid("session revoked"));
        }
        match self.index.read().users.get(&claims.sub) {
            None => Err(invalid("user gone")),
            Some(s) if s.disabled => Err(AuthError::Disabled),
            Some(s) if s.epoch != claims.sep => {
                Err(invalid("sessions ended since (password change or disable)"))
            }
            Some(_) => Ok(claims),
        }
    }

    /// Logout: revokes the access token (until its expiry) and its refresh family. The
    /// arithmetic on the token's `exp` saturates, whatever the claims say.
    pub fn logout(&self, claims: &Claims) -> Result<()> {
        let leeway_ms = self.keys.read().config().leeway_s.saturating_mul(1000);
        let now = self.now_ms();
        let until = claims
            .exp
            .checked_mul(1000)
            .and_then(|ms| ms.checked_add(leeway_ms))
            .unwrap_or(u64::MAX);
        let family_until = now.saturating_add(self.config.refresh_ttl_ms);
        let mut b = WriteBatch::new();
        b.set(
            jti_key(&claims.jti)?,
            "revoked",
            Expiry::AtMs(until.max(now.saturating_add(1))),
        )
        .set(
            family_key(&claims.fam)?,
            "revoked",
            Expiry::AtMs(family_until),
        );
        self.atlas.write_batch(b)?;
        Ok(())
    }

    /// Whether `user_id` holds `permission` now (current roles, not the token's).
    pub fn authorize(&self, user_id: &str, permission: &str) -> bool {
        let idx = self.index.read();
        let Some(s) = idx.users.get(user_id) else {
            return false;
        };
        !s.disabled
            && s.roles.iter().any(|r| {
                idx.roles
                    .get(r)
                    .is_some_and(|ps| rbac::authorize(ps.iter().map(String::as_str), permission))
            })
    }

    /// Whether `user_id` holds `permission` or some narrowing of it now
    /// ([`rbac::grants_some`]: `jobs:work:emails` is some of `jobs:work`). A route's first
    /// check when the exact permission depends on the object; [`Auth::authorize`] follows.
    pub fn authorize_some(&self, user_id: &str, permission: &str) -> bool {
        let idx = self.index.read();
        let Some(s) = idx.users.get(user_id) else {
            return false;
        };
        !s.disabled
            && s.roles.iter().any(|r| {
                idx.roles.get(r).is_some_and(|ps| {
                    rbac::authorize_some(ps.iter().map(String::as_str), permission)
                })
            })
    }

    /// Rewrites a user record; the caller holds `self.writes`.
    fn update_user_locked(&self, id: &str, f: impl FnOnce(&mut User)) -> Result<User> {
        let mut user = self.user_record(id)?;
        f(&mut user);
        self.atlas.set(&user_key(id)?, json(&user))?;
        if let Some(s) = self.index.write().users.get_mut(id) {
            s.disabled = user.disabled;
            s.epoch = user.session_epoch;
        }
        Ok(user)
    }

    /// Changes the password of `user_id` after checking `current` (throttled like a login
    /// from `client`; the caller serves [`Auth::login_delay_ms`] first) and the rules
    /// (field `new_password`). Every session of the user ends (the session epoch moves);
    /// the returned pair is the caller's new session.
    pub fn change_password(
        &self,
        user_id: &str,
        current: &str,
        new: &str,
        client: &str,
    ) -> Result<TokenPair> {
        let username = self
            .index
            .read()
            .users
            .get(user_id)
            .map(|s| s.username.clone())
            .ok_or_else(|| AuthError::UserNotFound(user_id.to_owned()))?;
        password::check_rules("new_password", new, &username, self.config.password_len_min)?;
        let now = self.now_ms();
        let keys = LoginKeys::new(&username, client);
        self.throttle_gate(&keys, now)?;
        let user = self.user_record(user_id)?;
        if !password::verify(current, &user.password_hash) {
            self.throttle.count(&keys.user, now);
            return Err(AuthError::InvalidCredentials);
        }
        self.throttle_passed(&keys);
        if user.disabled {
            return Err(AuthError::Disabled);
        }
        let mut salt = [0u8; 16];
        self.rng.fill(&mut salt);
        let hash = password::hash(new, self.config.bcrypt_cost, salt)?;
        let user = {
            let _w = self.writes.lock();
            self.update_user_locked(user_id, |u| {
                u.password_hash = hash;
                u.session_epoch = u.session_epoch.saturating_add(1);
            })?
        };
        let family = hex_token(&*self.rng, 16);
        self.issue(user_id, user.session_epoch, &family, None)
    }

    /// Disables or enables a user, as the system (see [`Auth::set_disabled_as`]).
    pub fn set_disabled(&self, user_id: &str, disabled: bool) -> Result<()> {
        self.set_disabled_by(Actor::System, user_id, disabled)
    }

    /// Disables or enables a user on behalf of `actor` (a user id): only an `admin:*`
    /// holder may change an admin's account, and the last enabled admin cannot be
    /// disabled. Disabling ends every session of the user for good (the session epoch
    /// moves: a later enable does not bring old tokens back).
    pub fn set_disabled_as(&self, actor: &str, user_id: &str, disabled: bool) -> Result<()> {
        self.set_disabled_by(Actor::User(actor), user_id, disabled)
    }

    fn set_disabled_by(&self, actor: Actor<'_>, user_id: &str, disabled: bool) -> Result<()> {
        let _w = self.writes.lock();
        {
            let idx = self.index.read();
            let s = idx
                .users
                .get(user_id)
                .ok_or_else(|| AuthError::UserNotFound(user_id.to_owned()))?;
            idx.check_admin_target(actor, user_id)?;
            if disabled {
                let after = Session {
                    disabled: true,
                    ..s.clone()
                };
                idx.check_last_admin(Some((user_id, Some(&after))), None)?;
            }
        }
        self.update_user_locked(user_id, |u| {
            if disabled {
                u.session_epoch = u.session_epoch.saturating_add(1);
            }
            u.disabled = disabled;
        })?;
        Ok(())
    }

    /// Deletes a user (record, name and roles), as the system.
    pub fn delete_user(&self, user_id: &str) -> Result<()> {
        self.delete_user_by(Actor::System, user_id)
    }

    /// Deletes a user on behalf of `actor`: only an `admin:*` holder may delete an admin,
    /// and never the last enabled one.
    pub fn delete_user_as(&self, actor: &str, user_id: &str) -> Result<()> {
        self.delete_user_by(Actor::User(actor), user_id)
    }

    fn delete_user_by(&self, actor: Actor<'_>, user_id: &str) -> Result<()> {
        let _w = self.writes.lock();
        {
            let idx = self.index.read();
            idx.check_admin_target(actor, user_id)?;
            idx.check_last_admin(Some((user_id, None)), None)?;
        }
        let user = self.user_record(user_id)?;
        let mut b = WriteBatch::new();
        b.delete(user_key(user_id)?)
            .delete(username_key(&user.username.to_ascii_lowercase())?)
            .delete(user_roles_key(user_id)?);
        self.atlas.write_batch(b)?;
        self.index.write().users.remove(user_id);
        Ok(())
    }

    /// A user by id, without secrets.
    pub fn user(&self, user_id: &str) -> Option<UserView> {
        let idx = self.index.read();
        idx.users.get(user_id).map(|s| UserView {
            id: user_id.to_owned(),
            username: s.username.clone(),
            roles: s.roles.clone(),
            disabled: s.disabled,
        })
    }

    /// A user by name (case-insensitive), without secrets.
    pub fn user_view_by_name(&self, username: &str) -> Option<UserView> {
        self.user(&self.user_id_by_name(username)?)
    }

    /// All users, ordered by username.
    pub fn users(&self) -> Vec<UserView> {
        let idx = self.index.read();
        let mut v: Vec<UserView> = idx
            .users
            .iter()
            .map(|(id, s)| UserView {
                id: id.clone(),
                username: s.username.clone(),
                roles: s.roles.clone(),
                disabled: s.disabled,
            })
            .collect();
        v.sort_by_key(|u| u.username.to_ascii_lowercase());
        v
    }

    /// Changes a user's roles: `check` sees the index and the roles after the change,
    /// under the write lock, before anything is written.
    fn set_user_roles(
        &self,
        user_id: &str,
        f: impl FnOnce(&mut Vec<String>),
        check: impl FnOnce(&Index, &Session) -> Result<()>,
    ) -> Result<()> {
        let _w = self.writes.lock();
        let roles = {
            let idx = self.index.read();
            let mut after = idx
                .users
                .get(user_id)
                .cloned()
                .ok_or_else(|| AuthError::UserNotFound(user_id.to_owned()))?;
            f(&mut after.roles);
            after.roles.sort();
            after.roles.dedup();
            check(&idx, &after)?;
            after.roles
        };
        self.atlas.set(&user_roles_key(user_id)?, json(&roles))?;
        if let Some(s) = self.index.write().users.get_mut(user_id) {
            s.roles = roles;
        }
        Ok(())
    }

    /// Gives a user a role (takes effect on the next request), as the system.
    pub fn assign_role(&self, user_id: &str, role: &str) -> Result<()> {
        self.assign_role_by(Actor::System, user_id, role)
    }

    /// Gives a user a role on behalf of `actor`, who must hold every permission the role
    /// grants (and `admin:*` to change an admin's roles).
    pub fn assign_role_as(&self, actor: &str, user_id: &str, role: &str) -> Result<()> {
        self.assign_role_by(Actor::User(actor), user_id, role)
    }

    fn assign_role_by(&self, actor: Actor<'_>, user_id: &str, role: &str) -> Result<()> {
        self.set_user_roles(
            user_id,
            |r| r.push(role.to_owned()),
            |idx, _| {
                let granted = idx
                    .roles
                    .get(role)
                    .ok_or_else(|| AuthError::RoleNotFound(role.to_owned()))?;
                idx.check_covers(actor, granted, &format!("granting role {role:?}"))?;
                idx.check_admin_target(actor, user_id)
            },
        )
    }

    /// Takes a role from a user, as the system (never the last admin's `admin:*`).
    pub fn revoke_role(&self, user_id: &str, role: &str) -> Result<()> {
        self.revoke_role_by(Actor::System, user_id, role)
    }

    /// Takes a role from a user on behalf of `actor`, who must hold every permission the
    /// role grants (and `admin:*` to change an admin's roles).
    pub fn revoke_role_as(&self, actor: &str, user_id: &str, role: &str) -> Result<()> {
        self.revoke_role_by(Actor::User(actor), user_id, role)
    }

    fn revoke_role_by(&self, actor: Actor<'_>, user_id: &str, role: &str) -> Result<()> {
        self.set_user_roles(
            user_id,
            |r| r.retain(|x| x != role),
            |idx, after| {
                if let Some(granted) = idx.roles.get(role) {
                    idx.check_covers(actor, granted, &format!("taking role {role:?}"))?;
                }
                idx.check_admin_target(actor, user_id)?;
                idx.check_last_admin(Some((user_id, Some(after))), None)
            },
        )
    }

    /// Creates or replaces a role, as the system.
    pub fn put_role(&self, name: &str, permissions: Vec<String>) -> Result<()> {
        self.put_role_by(Actor::System, name, permissions)
    }

    /// Creates or replaces a role on behalf of `actor`, who must hold every permission the
    /// role grants, before and after. Never leaves the store without an enabled admin.
    pub fn put_role_as(&self, actor: &str, name: &str, permissions: Vec<String>) -> Result<()> {
        self.put_role_by(Actor::User(actor), name, permissions)
    }

    fn put_role_by(&self, actor: Actor<'_>, name: &str, permissions: Vec<String>) -> Result<()> {
        rbac::check_role_name(name)?;
        for p in &permissions {
            rbac::check_pattern(p)?;
        }
        let _w = self.writes.lock();
        {
            let idx = self.index.read();
            let what = format!("editing role {name:?}");
            idx.check_covers(actor, &permissions, &what)?;
            if let Some(old) = idx.roles.get(name) {
                idx.check_covers(actor, old, &what)?;
            }
            idx.check_last_admin(None, Some((name, Some(&permissions))))?;
        }
        let role = Role {
            name: name.to_owned(),
            permissions: permissions.clone(),
        };
        self.atlas.set(&role_key(name)?, json(&role))?;
        self.index
            .write()
            .roles
            .insert(name.to_owned(), permissions);
        Ok(())
    }

    /// Deletes a role (users keep the name, which then grants nothing), as the system.
    pub fn delete_role(&self, name: &str) -> Result<()> {
        self.delete_role_by(Actor::System, name)
    }

    /// Deletes a role on behalf of `actor`, who must hold every permission it grants.
    pub fn delete_role_as(&self, actor: &str, name: &str) -> Result<()> {
        self.delete_role_by(Actor::User(actor), name)
    }

    fn delete_role_by(&self, actor: Actor<'_>, name: &str) -> Result<()> {
        let _w = self.writes.lock();
        {
            let idx = self.index.read();
            let old = idx
                .roles
                .get(name)
                .ok_or_else(|| AuthError::RoleNotFound(name.to_owned()))?;
            idx.check_covers(actor, old, &format!("deleting role {name:?}"))?;
            idx.check_last_admin(None, Some((name, None)))?;
        }
        self.atlas.delete(&role_key(name)?)?;
        self.index.write().roles.remove(name);
        Ok(())
    }

    /// All roles, by name.
    pub fn roles(&self) -> Vec<Role> {
        let idx = self.index.read();
        let mut v: Vec<Role> = idx
            .roles
            .iter()
            .map(|(n, p)| Role {
                name: n.clone(),
                permissions: p.clone(),
            })
            .collect();
        v.sort_by(|a, b| a.name.cmp(&b.name));
        v
    }

    /// Current lockouts and delays (for admins), by key.
    pub fn lockouts(&self) -> Vec<Lockout> {
        self.throttle.lockouts(self.now_ms())
    }

    /// Lifts what slows `who` down: a username (case-insensitive) lifts its `user:` delay
    /// and every `pair:{username}@...` lock; a key with a `:` (`client:10.0.0.3`,
    /// `pair:bob@10.0.0.3`) lifts that key. Returns how many keys were lifted.
    pub fn lift_lockout(&self, who: &str) -> usize {
        if who.contains(':') {
            usize::from(self.throttle.lift(who))
        } else {
            self.throttle.lift_username(who)
        }
    }

    /// Replaces the JWT key ring (key rotation): checked before it takes effect.
    pub fn rotate_keys(&self, jwt: JwtConfig) -> Result<()> {
        let ring = KeyRing::new(jwt)?;
        let mut keys = self.keys.write();
        *keys = ring;
        // Verified under the old ring: must be checked again (a key may be retired).
        self.verified.write().clear();
        Ok(())
    }
}
