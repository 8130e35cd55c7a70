//! Role-based access control: permissions `resource:action`, roles as sets of permission
//! patterns, and the pure [`authorize`] check.
//!
//! Permissions are `resource:action`, or `resource:action:scope` for an action narrowed to
//! one object (`kv:read:{namespace}`, `jobs:work:{queue}`).
//!
//! Pattern rules: `*` matches every permission; `resource:*` matches every action on
//! `resource`, scoped or not; `resource:action:*` matches that action in every scope (but
//! not the unscoped `resource:action`); `admin:*` is the administrator's pattern and, like
//! `*`, matches everything. Anything else matches only itself: in particular
//! `resource:action` does not match `resource:action:scope` (the `user` role's `kv:read`
//! reads its own namespace, not the shared ones). Resource and action names are
//! `[a-z0-9_.-]`, scopes `[A-Za-z0-9_.-]` (queue names may hold capitals), 1..=64 bytes.

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
    /// Scrape `/metrics` on the API listener.
    pub const METRICS_READ: &str = "metrics:read";
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
        // Job workers (service accounts): claim, ack, nack and heartbeat in every queue;
        // narrow a custom role to `jobs:work:{queue}` for one queue.
        Role {
            name: "worker".into(),
            permissions: vec![JOBS_WORK.into(), USERS_READ_SELF.into()],
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

fn scope_ok(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

/// Checks a permission pattern: `*`, `resource:*`, `resource:action`,
/// `resource:action:*` or `resource:action:scope`.
pub fn check_pattern(p: &str) -> Result<()> {
    if p == "*" {
        return Ok(());
    }
    let mut parts = p.splitn(3, ':');
    let ok = match (parts.next(), parts.next(), parts.next()) {
        (Some(r), Some("*"), None) => name_ok(r),
        (Some(r), Some(a), None) => name_ok(r) && name_ok(a),
        (Some(r), Some(a), Some(s)) => name_ok(r) && name_ok(a) && (s == "*" || scope_ok(s)),
        _ => false,
    };
    if ok {
        Ok(())
    } else {
        Err(AuthError::Invalid {
            field: "permission",
            reason: format!(
                "{p:?} is not `*`, `resource:*`, `resource:action`, `resource:action:*` or `resource:action:scope`"
            ),
        })
    }
}

/// Whether `pattern` grants `permission`.
pub fn matches(pattern: &str, permission: &str) -> bool {
    if pattern == "*" || pattern == perms::ADMIN_ALL || pattern == permission {
        return true;
    }
    let Some((pr, pa)) = pattern.split_once(':') else {
        return false;
    };
    let Some((r, a)) = permission.split_once(':') else {
        return false;
    };
    if pr != r {
        return false;
    }
    if pa == "*" {
        return true;
    }
    // `resource:action:*` grants `resource:action:{scope}` (a non-empty scope).
    match (pa.strip_suffix(":*"), a.split_once(':')) {
        (Some(action), Some((a, scope))) => action == a && !scope.is_empty(),
        _ => false,
    }
}

/// Whether any of `patterns` grants `permission`. Pure; no allocation.
pub fn authorize<'a>(patterns: impl IntoIterator<Item = &'a str>, permission: &str) -> bool {
    patterns.into_iter().any(|p| matches(p, permission))
}

/// Whether `pattern` grants `permission` (`resource:action` or `resource:*`) or some
/// narrowing of it: `resource:action:{scope}` for some scope; for `resource:*`, anything
/// on the resource. A route's first check when its exact permission depends on the object
/// (the gateway knows `jobs:work:{queue}` only once it has the queue); the exact check
/// follows with [`authorize`]. Pure; no allocation.
pub fn grants_some(pattern: &str, permission: &str) -> bool {
    if matches(pattern, permission) {
        return true;
    }
    let (Some((pr, pa)), Some((r, a))) = (pattern.split_once(':'), permission.split_once(':'))
    else {
        return false;
    };
    pr == r && (a == "*" || pa.split_once(':').is_some_and(|(pa, _)| pa == a))
}

/// Whether any of `patterns` [`grants_some`] of `permission`. Pure; no allocation.
pub fn authorize_some<'a>(patterns: impl IntoIterator<Item = &'a str>, permission: &str) -> bool {
    patterns.into_iter().any(|p| grants_some(p, permission))
}

/// Whether a holder of `held` patterns holds everything `pattern` grants (so may grant
/// it to others, or take it away). `*` and `admin:*` cover everything; only they cover `*`
/// and `admin:*`; `resource:*` covers every pattern on `resource`; `resource:action:*`
/// covers itself and every `resource:action:scope`; anything else covers only itself.
/// Pure; sound (a property test checks that whoever covers a pattern is granted every
/// permission it matches).
pub fn covers<'a>(held: impl IntoIterator<Item = &'a str>, pattern: &str) -> bool {
    held.into_iter().any(|h| pattern_covers(h, pattern))
}

fn pattern_covers(held: &str, pattern: &str) -> bool {
    if held == "*" || held == perms::ADMIN_ALL {
        return true;
    }
    if pattern == "*" || pattern == perms::ADMIN_ALL {
        return false;
    }
    if held == pattern {
        return true;
    }
    let (Some((hr, ha)), Some((pr, pa))) = (held.split_once(':'), pattern.split_once(':')) else {
        return false;
    };
    if hr != pr {
        return false;
    }
    if ha == "*" {
        return true;
    }
    // `resource:action:*` covers `resource:action:{scope}` (and `:*`, equal above).
    match (ha.strip_suffix(":*"), pa.split_once(':')) {
        (Some(action), Some((a, _))) => action == a,
        _ => false,
    }
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
            // Scoped permissions: `kv:*` and `*` grant them, `kv:read` does not.
            ("kv:*", "kv:read:team", true),
            ("*", "kv:write:team", true),
            ("admin:*", "kv:write:legacy", true),
            ("kv:read", "kv:read:team", false),
            ("kv:read:team", "kv:read:team", true),
            ("kv:read:team", "kv:read:other", false),
            ("kv:read:team", "kv:write:team", false),
            ("kv:read:team", "kv:read", false),
            ("kv:read:*", "kv:read:team", true),
            ("kv:read:*", "kv:read", false),
            ("kv:read:*", "kv:write:team", false),
            ("kv:read:*", "kv:read:", false),
            ("jobs:*", "kv:read:team", false),
            ("jobs:work:emails", "jobs:work:emails", true),
            ("jobs:work:emails", "jobs:work", false),
        ] {
            assert_eq!(matches(pattern, perm), want, "{pattern} vs {perm}");
        }
        assert!(check_pattern("kv:*").is_ok());
        assert!(check_pattern("kv").is_err());
        assert!(check_pattern("KV:read").is_err());
        assert!(check_pattern("kv:re ad").is_err());
        for ok in ["kv:read:team", "kv:read:*", "jobs:work:Emails.v2", "kv:*"] {
            assert!(check_pattern(ok).is_ok(), "{ok}");
        }
        for bad in [
            "kv:*:team",
            "kv:read:",
            "kv:read:a:b",
            "kv:read:a b",
            ":read:x",
            "kv::x",
        ] {
            assert!(check_pattern(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn covering_a_pattern_needs_everything_it_grants() {
        for (held, pattern, want) in [
            (&["*"][..], "admin:*", true),
            (&["admin:*"][..], "*", true),
            (&["users:admin"][..], "admin:*", false),
            (&["users:*"][..], "*", false),
            (&["users:*"][..], "users:admin", true),
            (&["users:*"][..], "users:*", true),
            (&["users:admin"][..], "users:*", false),
            (&["kv:read", "kv:write"][..], "kv:*", false),
            (&["kv:read", "kv:write"][..], "kv:write", true),
            (&[][..], "kv:read", false),
            (&["kv:read"][..], "kv:read:shared", false),
            (&["kv:read:*"][..], "kv:read:shared", true),
            (&["kv:read:*"][..], "kv:read", false),
            (&["kv:read:shared"][..], "kv:read:*", false),
            (&["kv:*"][..], "kv:read:*", true),
        ] {
            assert_eq!(
                covers(held.iter().copied(), pattern),
                want,
                "{held:?} {pattern}"
            );
        }
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
        assert!(grants("worker", perms::JOBS_WORK) && !grants("worker", perms::JOBS_ENQUEUE));
        assert!(!grants("worker", perms::JOBS_ADMIN) && !grants("worker", perms::KV_READ));
    }

    /// Shows `grants_some`: the permission itself, or a narrowing of it (`jobs:work:emails`
    /// is some of `jobs:work`; anything on `jobs` is some of `jobs:*`); never another
    /// action or resource.
    #[test]
    fn some_of_a_permission() {
        for (pattern, perm, want) in [
            ("jobs:work", "jobs:work", true),
            ("jobs:work:emails", "jobs:work", true),
            ("jobs:work:*", "jobs:work", true),
            ("jobs:*", "jobs:work", true),
            ("*", "jobs:work", true),
            ("admin:*", "jobs:work", true),
            ("jobs:enqueue", "jobs:work", false),
            ("jobs:workers:x", "jobs:work", false),
            ("kv:work:x", "jobs:work", false),
            ("jobs:enqueue", "jobs:*", true),
            ("jobs:work:emails", "jobs:*", true),
            ("jobs:admin", "jobs:*", true),
            ("kv:read", "jobs:*", false),
            ("users:admin", "jobs:*", false),
            ("jobs", "jobs:*", false),
        ] {
            assert_eq!(grants_some(pattern, perm), want, "{pattern} vs {perm}");
        }
        assert!(authorize_some(["kv:read", "jobs:work:emails"], "jobs:work"));
        assert!(!authorize_some(["kv:read", "jobs:enqueue"], "jobs:work"));
    }

    proptest! {
        /// `grants_some(p, q)` holds exactly when `p` grants some concrete permission of a
        /// small universe that is `q` or narrower than it.
        #[test]
        fn grants_some_matches_the_set_model(
            pattern in prop_oneof![
                Just("*".to_string()),
                Just("admin:*".to_string()),
                "(kv|jobs):(\\*|read|work)",
                "(kv|jobs):(read|work):(\\*|a|b)",
            ],
            perm in "(kv|jobs):(\\*|read|work)",
        ) {
            let mut universe = Vec::new();
            for r in ["kv", "jobs"] {
                for a in ["read", "work"] {
                    universe.push(format!("{r}:{a}"));
                    for s in ["a", "b"] {
                        universe.push(format!("{r}:{a}:{s}"));
                    }
                }
            }
            let (r, a) = perm.split_once(':').unwrap();
            let narrower = |x: &str| {
                let (xr, rest) = x.split_once(':').unwrap();
                let xa = rest.split(':').next().unwrap();
                xr == r && (a == "*" || xa == a)
            };
            let want = universe.iter().any(|x| narrower(x) && matches(&pattern, x));
            prop_assert_eq!(grants_some(&pattern, &perm), want, "{} vs {}", pattern, perm);
        }
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

        // Sound: whoever covers a pattern is granted every permission it grants.
        #[test]
        fn covers_is_sound(
            held in prop::collection::vec(prop_oneof![
                Just("*".to_string()),
                Just("admin:*".to_string()),
                "(kv|jobs|users|admin):(\\*|read|write|work)",
                "(kv|jobs):(read|write):(\\*|a|b)",
            ], 0..4),
            pattern in prop_oneof![
                Just("*".to_string()),
                "(kv|jobs|users|admin):(\\*|read|write|work)",
                "(kv|jobs):(read|write):(\\*|a|b)",
            ],
            perm in "(kv|jobs|users|proxy|admin):(read|write|work|admin)(:(a|b))?",
        ) {
            if covers(held.iter().map(String::as_str), &pattern) && matches(&pattern, &perm) {
                prop_assert!(authorize(held.iter().map(String::as_str), &perm));
            }
        }
    }
}
