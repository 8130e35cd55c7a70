//! Role-based access control: permissions `resource:action`, roles as sets of permission
//! patterns, and the pure [`authorize`] check.
//!
//! Pattern rules: `*` matches every permission; `resource:*` matches every action on
//! `resource`; `admin:*` is the administrator's pattern and, like `*`, matches everything.
//! Anything else matches only itself. Names are `[a-z0-9_.-]`, 1..=64 bytes each side.

use crate::error::{AuthError, Result};
use serde::{Deserialize, Serialize};

/// The permissions HELIOS routes check (others may be defined freely).
pub mod perms {
    /// Read KV entries.
    pub const KV_READ: &str = "kv:read";
    /// Write KV entries.
    pub const KV_WRITE: &str = "kv:write";
    /// Enqueue jobs.
    pub const JOBS_ENQUEUE: &str = "jobs:enqueue";
    /// Claim, ack and nack jobs (workers).
    pub const JOBS_WORK: &str = "jobs:work";
    /// Inspect and administer queues.
    pub const JOBS_ADMIN: &str = "jobs:admin";
    /// Read one's own user record.
    pub const USERS_READ_SELF: &str = "users:read_self";
    /// Administer users and roles.
    pub const USERS_ADMIN: &str = "users:admin";
    /// Administer the proxy.
    pub const PROXY_ADMIN: &str = "proxy:admin";
    /// Everything.
    pub const ADMIN_ALL: &str = "admin:*";
}

/// A role: a name and the permission patterns it grants.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Role {
    /// The role's name.
    pub name: String,
    /// Permission patterns (see the module docs).
    pub permissions: Vec<String>,
}

/// The roles created on first open.
pub fn default_roles() -> Vec<Role> {
    use perms::*;
    vec![
        Role {
            name: "admin".into(),
            permissions: vec![ADMIN_ALL.into()],
        },
        Role {
            name: "user".into(),
            permissions: vec![
                KV_READ.into(),
                KV_WRITE.into(),
                JOBS_ENQUEUE.into(),
                USERS_READ_SELF.into(),
            ],
        },
        Role {
            name: "readonly".into(),
            permissions: vec![KV_READ.into(), USERS_READ_SELF.into()],
        },
    ]
}

fn name_ok(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'_' | b'.' | b'-')
        })
}

/// Checks a role name: `[a-z0-9_.-]{1,64}`.
pub fn check_role_name(name: &str) -> Result<()> {
    if name_ok(name) {
        Ok(())
    } else {
        Err(AuthError::Invalid {
            field: "role",
            reason: format!("{name:?} is not [a-z0-9_.-]{{1,64}}"),
        })
    }
}

/// Checks a permission pattern: `*`, `resource:*` or `resource:action`.
pub fn check_pattern(p: &str) -> Result<()> {
    if p == "*" {
        return Ok(());
    }
    match p.split_once(':') {
        Some((r, a)) if name_ok(r) && (a == "*" || name_ok(a)) => Ok(()),
        _ => Err(AuthError::Invalid {
            field: "permission",
            reason: format!("{p:?} is not `*`, `resource:*` or `resource:action`"),
        }),
    }
}

/// Whether `pattern` grants `permission`.
pub fn matches(pattern: &str, permission: &str) -> bool {
    if pattern == "*" || pattern == perms::ADMIN_ALL || pattern == permission {
        return true;
    }
    match (pattern.split_once(':'), permission.split_once(':')) {
        (Some((pr, "*")), Some((r, _))) => pr == r,
        _ => false,
    }
}

/// Whether any of `patterns` grants `permission`. Pure; no allocation.
pub fn authorize<'a>(patterns: impl IntoIterator<Item = &'a str>, permission: &str) -> bool {
    patterns.into_iter().any(|p| matches(p, permission))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn pattern_matching() {
        for (pattern, perm, want) in [
            ("*", "kv:read", true),
            ("admin:*", "users:admin", true),
            ("kv:*", "kv:write", true),
            ("kv:*", "jobs:work", false),
            ("kv:read", "kv:read", true),
            ("kv:read", "kv:write", false),
            ("kv", "kv:read", false),
        ] {
            assert_eq!(matches(pattern, perm), want, "{pattern} vs {perm}");
        }
        assert!(check_pattern("kv:*").is_ok());
        assert!(check_pattern("kv").is_err());
        assert!(check_pattern("KV:read").is_err());
        assert!(check_pattern("kv:re ad").is_err());
    }

    #[test]
    fn default_roles_grant_what_the_issue_says() {
        let roles = default_roles();
        let grants = |name: &str, p: &str| {
            let r = roles.iter().find(|r| r.name == name).unwrap();
            authorize(r.permissions.iter().map(String::as_str), p)
        };
        assert!(grants("admin", perms::PROXY_ADMIN));
        assert!(grants("user", perms::KV_WRITE) && grants("user", perms::JOBS_ENQUEUE));
        assert!(!grants("user", perms::JOBS_WORK) && !grants("user", perms::USERS_ADMIN));
        assert!(grants("readonly", perms::KV_READ) && !grants("readonly", perms::KV_WRITE));
    }

    proptest! {
        // Reference model: expand a pattern into the set of permissions it grants over a
        // small universe, and compare with `authorize`.
        #[test]
        fn authorize_matches_the_set_model(
            patterns in prop::collection::vec(prop_oneof![
                Just("*".to_string()),
                Just("admin:*".to_string()),
                "(kv|jobs|users):(\\*|read|write|work)",
            ], 0..4),
            perm in "(kv|jobs|users|proxy):(read|write|work|admin)",
        ) {
            let universe_match = |p: &str| -> bool {
                if p == "*" || p == "admin:*" { return true; }
                let (r, a) = p.split_once(':').unwrap();
                let (pr, pa) = perm.split_once(':').unwrap();
                r == pr && (a == "*" || a == pa)
            };
            let want = patterns.iter().any(|p| universe_match(p));
            prop_assert_eq!(authorize(patterns.iter().map(String::as_str), &perm), want);
        }
    }
}
