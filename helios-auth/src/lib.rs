//! helios-auth: users, password hashing, JWT issue/verify/revoke and RBAC.
//!
//! Not built yet: issue 4 fills this crate. It stays synchronous and takes time and
//! randomness as inputs, like every core crate.
