//! The error type of helios-auth. Authentication failures are deliberately coarse towards
//! clients (`InvalidCredentials` does not say whether the user exists); the variants carry
//! enough for logs and for the gateway to pick a status.

/// Everything that can go wrong in authentication and authorization.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AuthError {
    /// Unknown user or wrong password (never says which).
    #[error("invalid username or password")]
    InvalidCredentials,
    /// Too many failed logins: locked until the given time.
    #[error("too many failed logins; try again in {retry_after_ms} ms")]
    LockedOut {
        /// How long until the lockout ends.
        retry_after_ms: u64,
    },
    /// The account is disabled (said to the holder of a token or refresh token; a login
    /// to a disabled account is `InvalidCredentials`, so it is no password oracle).
    #[error("account is disabled")]
    Disabled,
    /// The acting user would grant, take or change what it does not hold itself (a role
    /// granting a permission it lacks, or an admin's account without `admin:*`).
    #[error("not allowed: {reason}")]
    PrivilegeEscalation {
        /// What is missing.
        reason: String,
    },
    /// The change would leave no enabled user holding `admin:*`.
    #[error("the last enabled admin cannot be removed, disabled or lose admin:*")]
    LastAdmin,
    /// The username is taken (case-insensitively).
    #[error("username {0:?} is taken")]
    UsernameTaken(String),
    /// A field failed its rules (username charset, password length...).
    #[error("invalid {field}: {reason}")]
    Invalid {
        /// The field.
        field: &'static str,
        /// Why.
        reason: String,
    },
    /// The token is not acceptable; `reason` is for logs, not for clients.
    #[error("invalid token: {reason}")]
    InvalidToken {
        /// What is wrong (signature, algorithm, expired, revoked...).
        reason: String,
    },
    /// The access token was valid but its `exp` (plus the leeway) has passed: the client
    /// should renew it with its refresh token. Only said of a token whose signature,
    /// algorithm and key were checked first.
    #[error("token expired")]
    TokenExpired,
    /// A refresh token was used twice: the whole family is now revoked.
    #[error("refresh token reuse detected; all sessions of this login are revoked")]
    RefreshReuse,
    /// No such user.
    #[error("user {0} not found")]
    UserNotFound(String),
    /// No such role.
    #[error("role {0:?} not found")]
    RoleNotFound(String),
    /// Registration is closed (only admins add users).
    #[error("self-registration is disabled")]
    RegistrationClosed,
    /// A stored record could not be read.
    #[error("auth record {key:?} is unreadable: {reason}")]
    CorruptRecord {
        /// The ATLAS key.
        key: String,
        /// What is wrong.
        reason: String,
    },
    /// A configuration value is invalid.
    #[error("invalid auth config {key}: {reason}")]
    Config {
        /// The config key.
        key: &'static str,
        /// Why.
        reason: String,
    },
    /// Password hashing failed.
    #[error("password hashing failed: {0}")]
    Hash(String),
    /// The store failed or refused the write.
    #[error(transparent)]
    Store(#[from] helios_atlas::AtlasError),
}

/// Result alias for helios-auth.
pub type Result<T, E = AuthError> = std::result::Result<T, E>;
