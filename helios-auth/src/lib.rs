//! helios-auth: users, passwords, JWT access tokens with key rotation, rotating refresh
//! tokens, revocation, RBAC, login throttling and per-client rate limits, over ATLAS.
//!
//! Synchronous and deterministic: time comes from an injected [`helios_core::Clock`],
//! randomness from an injected [`Randomness`]. Modules:
//! - [`store`]: [`Auth`], the users/sessions/roles service and its ATLAS records;
//! - [`jwt`]: the key ring and token checks; [`password`]: rules (zxcvbn) and bcrypt;
//! - [`rbac`]: permission patterns, the pure `authorize` and `covers`;
//! - [`throttle`]: login lockouts of (username, client) pairs and clients, and a bounded
//!   per-username delay; [`ratelimit`]: per-client token buckets;
//! - [`random`]: the randomness sources.

pub mod error;
pub mod jwt;
pub mod password;
pub mod random;
pub mod ratelimit;
pub mod rbac;
pub mod store;
pub mod throttle;

pub use error::{AuthError, Result};
pub use jwt::{Claims, JwtConfig, KeyConfig, KeyRing, KeyState};
pub use random::{OsRandom, Randomness, SeededRandom};
pub use ratelimit::{Decision, RateLimitConfig, RateLimiter};
pub use rbac::Role;
pub use store::{Auth, AuthConfig, TokenPair, User, UserView};
pub use throttle::{Lockout, ThrottleConfig};
