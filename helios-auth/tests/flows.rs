//! Users, sessions, roles and limits through the `Auth` and `RateLimiter` APIs.

mod common;

use common::*;
use helios_auth::rbac::{self, perms};
use helios_auth::{AuthError, RateLimitConfig, RateLimiter, ThrottleConfig};
use helios_core::{Clock, TokenBucketConfig};
use proptest::prelude::*;
use std::collections::{BTreeMap, BTreeSet};

const PW: &str = "tangerine-kayak-47-violet";
const NEW_PW: &str = "marmalade-zeppelin-93-quartz";

#[test]
fn registration_rules_and_case_insensitive_uniqueness() {
    let e = env();
    let u = e.auth.register("Alice", PW).unwrap();
    assert_eq!(u.roles, vec!["user"]);
    assert!(matches!(
        e.auth.register("alice", PW),
        Err(AuthError::UsernameTaken(_))
    ));
    assert!(matches!(
        e.auth.register("ALICE", PW),
        Err(AuthError::UsernameTaken(_))
    ));
    for bad in ["ab", "-alice", "al ice", "al:ice", &"x".repeat(33)] {
        assert!(
            matches!(
                e.auth.register(bad, PW),
                Err(AuthError::Invalid {
                    field: "username",
                    ..
                })
            ),
            "{bad}"
        );
    }
    assert!(matches!(
        e.auth.register("bob", "short"),
        Err(AuthError::Invalid {
            field: "password",
            ..
        })
    ));
    // Login is case-insensitive on the name.
    e.auth.login("aLiCe", PW, "ip").unwrap();
    let mut closed = config();
    closed.registration_open = false;
    let e = e.reopen(closed);
    assert!(matches!(
        e.auth.register("carol", PW),
        Err(AuthError::RegistrationClosed)
    ));
    e.auth.create_user("carol", PW, &["readonly"]).unwrap();
    assert!(
        e.auth.user_view_by_name("Alice").is_some(),
        "users survive a restart"
    );
}

#[test]
fn throttling_locks_the_pair_and_the_client_and_only_delays_the_name() {
    let mut c = config();
    c.throttle = ThrottleConfig {
        failures_before_lock: 3,
        lock_ms_base: 1_000,
        lock_ms_max: 10_000,
        user_delay_ms_base: 500,
        user_delay_ms_max: 2_000,
        keys_max: 1_000,
    };
    let e = env_with(c);
    e.auth.register("dave", PW).unwrap();
    for _ in 0..3 {
        assert!(matches!(
            e.auth.login("dave", "wrong password!", "10.0.0.1"),
            Err(AuthError::InvalidCredentials)
        ));
    }
    // That address is locked out of that name, even with the right password...
    match e.auth.login("dave", PW, "10.0.0.1") {
        Err(AuthError::LockedOut { retry_after_ms }) => assert_eq!(retry_after_ms, 1_000),
        other => panic!("{other:?}"),
    }
    // ...but the name is only delayed: the right password from another address works.
    assert_eq!(e.auth.login_delay_ms("DAVE"), 500);
    e.auth.login("dave", PW, "10.0.0.2").unwrap();
    let locks = e.auth.lockouts();
    assert!(
        locks
            .iter()
            .any(|l| l.key == "pair:dave@10.0.0.1" && l.remaining_ms == 1_000),
        "{locks:?}"
    );
    assert_eq!(
        e.auth.lift_lockout("Dave"),
        2,
        "the pair and the name's count"
    );
    e.auth.login("dave", PW, "10.0.0.1").unwrap();
    // A password spray from one client over many (unknown) names locks the client after
    // four times the per-pair threshold, without revealing which names exist.
    for i in 0..12 {
        assert!(matches!(
            e.auth.login(&format!("nobody{i}"), PW, "10.0.0.3"),
            Err(AuthError::InvalidCredentials)
        ));
    }
    assert!(e.auth.lockouts().iter().any(|l| l.key == "client:10.0.0.3"));
    assert!(matches!(
        e.auth.login("dave", PW, "10.0.0.3"),
        Err(AuthError::LockedOut { .. })
    ));
    e.clock.advance_ms(1_000);
    e.auth.login("dave", PW, "10.0.0.3").unwrap();
    assert_eq!(e.auth.lift_lockout("client:10.0.0.3"), 1);
    // Malformed names never reach the throttle or bcrypt.
    assert!(matches!(
        e.auth.login(&"x".repeat(10_000), PW, "10.0.0.4"),
        Err(AuthError::InvalidCredentials)
    ));
    assert_eq!(e.auth.login_delay_ms(&"x".repeat(10_000)), 0);
}

#[test]
fn password_change_disable_and_delete_end_sessions() {
    let e = env();
    let u = e.auth.register("erin", PW).unwrap();
    let p = e.auth.login("erin", PW, "ip").unwrap();
    assert!(matches!(
        e.auth
            .change_password(&u.id, "not the password", NEW_PW, "ip"),
        Err(AuthError::InvalidCredentials)
    ));
    let fresh = e.auth.change_password(&u.id, PW, NEW_PW, "ip").unwrap();
    assert!(
        e.auth.verify_access(&p.access_token).is_err(),
        "old access token"
    );
    assert!(
        e.auth.refresh(&p.refresh_token).is_err(),
        "old refresh token"
    );
    e.auth.verify_access(&fresh.access_token).unwrap();
    assert!(e.auth.login("erin", PW, "ip").is_err());
    let p = e.auth.login("erin", NEW_PW, "ip").unwrap();
    e.auth.set_disabled(&u.id, true).unwrap();
    assert!(matches!(
        e.auth.verify_access(&p.access_token),
        Err(AuthError::Disabled)
    ));
    assert!(matches!(
        e.auth.login("erin", NEW_PW, "ip"),
        Err(AuthError::InvalidCredentials)
    ));
    assert!(!e.auth.authorize(&u.id, perms::KV_READ));
    e.auth.set_disabled(&u.id, false).unwrap();
    assert!(
        e.auth.verify_access(&p.access_token).is_err(),
        "a re-enable does not bring old tokens back"
    );
    let p = e.auth.login("erin", NEW_PW, "ip").unwrap();
    e.auth.delete_user(&u.id).unwrap();
    assert!(e.auth.verify_access(&p.access_token).is_err());
    assert!(e.auth.user(&u.id).is_none());
    e.auth.register("erin", PW).unwrap();
}

#[test]
fn bootstrap_admin_once_with_random_or_given_password() {
    let e = env();
    let pw = e
        .auth
        .bootstrap_admin(None)
        .unwrap()
        .expect("a random password, printed once");
    assert!(pw.len() >= 20);
    assert_eq!(e.auth.bootstrap_admin(None).unwrap(), None);
    let p = e.auth.login("admin", &pw, "ip").unwrap();
    let c = e.auth.verify_access(&p.access_token).unwrap();
    assert!(e.auth.authorize(&c.sub, perms::USERS_ADMIN));
    let e = env();
    assert_eq!(
        e.auth
            .bootstrap_admin(Some("obsidian-lantern-58-harbor"))
            .unwrap(),
        None
    );
    e.auth
        .login("admin", "obsidian-lantern-58-harbor", "ip")
        .unwrap();
}

#[test]
fn role_changes_apply_to_the_next_check_and_survive_restart() {
    let e = env();
    let u = e.auth.register("frank", PW).unwrap();
    assert!(!e.auth.authorize(&u.id, perms::JOBS_WORK));
    e.auth
        .put_role("worker", vec![perms::JOBS_WORK.into()])
        .unwrap();
    e.auth.assign_role(&u.id, "worker").unwrap();
    assert!(e.auth.authorize(&u.id, perms::JOBS_WORK));
    e.auth.put_role("worker", vec!["jobs:*".into()]).unwrap();
    assert!(e.auth.authorize(&u.id, perms::JOBS_ADMIN));
    assert!(e.auth.put_role("bad", vec!["nope".into()]).is_err());
    assert!(matches!(
        e.auth.assign_role(&u.id, "ghost"),
        Err(AuthError::RoleNotFound(_))
    ));
    let e = e.reopen(config());
    assert!(e.auth.authorize(&u.id, perms::JOBS_ADMIN));
    assert_eq!(e.auth.roles().len(), 4);
    e.auth.delete_role("worker").unwrap();
    assert!(!e.auth.authorize(&u.id, perms::JOBS_WORK));
    e.auth.revoke_role(&u.id, "user").unwrap();
    assert!(!e.auth.authorize(&u.id, perms::KV_READ));
}

#[test]
fn a_store_from_before_a_default_role_gains_it_and_keeps_edited_ones() {
    let e = env();
    // A store written before `worker` existed, whose `user` role was edited.
    e.auth.delete_role("worker").unwrap();
    e.auth
        .put_role("user", vec![perms::KV_READ.into()])
        .unwrap();
    let e = e.reopen(config());
    let roles = e.auth.roles();
    let worker = roles.iter().find(|r| r.name == "worker").unwrap();
    assert_eq!(
        worker.permissions,
        rbac::default_roles()
            .into_iter()
            .find(|r| r.name == "worker")
            .unwrap()
            .permissions
    );
    let user = roles.iter().find(|r| r.name == "user").unwrap();
    assert_eq!(user.permissions, [perms::KV_READ]);
}

fn limiter(e: &Env, capacity: u64) -> RateLimiter {
    RateLimiter::new(
        e.atlas.clone(),
        RateLimitConfig {
            default: TokenBucketConfig {
                capacity,
                refill_tokens: 1,
                refill_period_ms: 100,
            },
            idle_ms: 60_000,
            clients_max: 1_000,
            persist_interval_ms: 1_000,
            ..RateLimitConfig::default()
        },
    )
    .unwrap()
}

#[test]
fn rate_limits_admit_capacity_plus_refill_and_persist_across_restart() {
    let e = env();
    let l = limiter(&e, 10);
    let now = e.clock.now_ms();
    let allowed = (0..50)
        .filter(|_| l.check("c1", &[], 1, now).allowed)
        .count();
    assert_eq!(allowed, 10, "never more than capacity in a burst");
    let d = l.check("c1", &[], 1, now);
    assert!(!d.allowed);
    assert_eq!(d.retry_after_s, Some(1));
    assert_eq!(d.limit, 10);
    assert_eq!(d.remaining, 0);
    assert!(d.policy.starts_with("\"default\";q=10;w="), "{}", d.policy);
    // 1 s later: 10 more tokens (1 per 100 ms).
    let later = now + 1_000;
    assert_eq!(
        (0..50)
            .filter(|_| l.check("c1", &[], 1, later).allowed)
            .count(),
        10
    );
    // Persisted in one batch when due; a new limiter (a restart) resumes the empty bucket.
    assert_eq!(l.flush_due(later).unwrap(), 1);
    assert_eq!(l.flush_due(later + 10).unwrap(), 0, "not due again yet");
    let l2 = limiter(&e, 10);
    assert!(
        !l2.check("c1", &[], 1, later).allowed,
        "a restart does not reset the limit"
    );
}

#[test]
fn rate_limit_overrides_change_at_run_time_and_memory_is_bounded() {
    let e = env();
    let l = limiter(&e, 5);
    let now = e.clock.now_ms();
    let mut cfg = l.config();
    cfg.roles.insert(
        "admin".into(),
        TokenBucketConfig {
            capacity: 100,
            refill_tokens: 100,
            refill_period_ms: 1_000,
        },
    );
    cfg.clients_max = 100;
    l.set_config(cfg).unwrap();
    let admin = vec!["admin".to_string()];
    assert_eq!(
        (0..200)
            .filter(|_| l.check("a", &admin, 1, now).allowed)
            .count(),
        100
    );
    for i in 0..500 {
        l.check(&format!("client{i}"), &[], 1, now + i);
    }
    assert!(l.client_count() <= 100);
    l.flush(now + 500).unwrap();
    l.flush(now + 120_000).unwrap();
    assert_eq!(l.client_count(), 0, "idle clients are forgotten");
}

#[derive(Debug, Clone)]
enum RoleOp {
    Put(usize, Vec<usize>),
    Delete(usize),
    Assign(usize, usize),
    Revoke(usize, usize),
    Check(usize, usize),
    Reopen,
}

const ROLES: [&str; 3] = ["r1", "r2", "r3"];
const PATTERNS: [&str; 5] = ["kv:read", "kv:*", "jobs:work", "*", "users:admin"];
const PERMS: [&str; 4] = ["kv:read", "kv:write", "jobs:work", "users:admin"];

fn role_op() -> impl Strategy<Value = RoleOp> {
    prop_oneof![
        2 => (0..3usize, prop::collection::vec(0..5usize, 0..3)).prop_map(|(r, p)| RoleOp::Put(r, p)),
        1 => (0..3usize).prop_map(RoleOp::Delete),
        2 => (0..2usize, 0..3usize).prop_map(|(u, r)| RoleOp::Assign(u, r)),
        1 => (0..2usize, 0..3usize).prop_map(|(u, r)| RoleOp::Revoke(u, r)),
        4 => (0..2usize, 0..4usize).prop_map(|(u, p)| RoleOp::Check(u, p)),
        1 => Just(RoleOp::Reopen),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    /// Role changes and checks against a model of sets; reopen in the sequence.
    #[test]
    fn rbac_matches_the_model(ops in prop::collection::vec(role_op(), 1..40)) {
        let mut e = env();
        // A standing admin outside the model's roles: the last-admin rule never applies.
        e.auth.bootstrap_admin(Some("obsidian-lantern-58-harbor")).unwrap();
        let users: Vec<String> = ["u0x", "u1x"].iter().map(|n| {
            let id = e.auth.register(n, PW).unwrap().id;
            e.auth.revoke_role(&id, "user").unwrap();
            id
        }).collect();
        let mut roles: BTreeMap<usize, BTreeSet<usize>> = BTreeMap::new();
        let mut assigned: BTreeMap<usize, BTreeSet<usize>> = BTreeMap::new();
        for op in ops {
            match op {
                RoleOp::Put(r, ps) => {
                    e.auth.put_role(ROLES[r], ps.iter().map(|p| PATTERNS[*p].to_string()).collect()).unwrap();
                    roles.insert(r, ps.into_iter().collect());
                }
                RoleOp::Delete(r) => {
                    let res = e.auth.delete_role(ROLES[r]);
                    prop_assert_eq!(res.is_ok(), roles.remove(&r).is_some());
                }
                RoleOp::Assign(u, r) => {
                    let res = e.auth.assign_role(&users[u], ROLES[r]);
                    prop_assert_eq!(res.is_ok(), roles.contains_key(&r));
                    if res.is_ok() { assigned.entry(u).or_default().insert(r); }
                }
                RoleOp::Revoke(u, r) => {
                    e.auth.revoke_role(&users[u], ROLES[r]).unwrap();
                    assigned.entry(u).or_default().remove(&r);
                }
                RoleOp::Check(u, p) => {
                    let want = assigned.get(&u).into_iter().flatten().any(|r| {
                        roles.get(r).into_iter().flatten().any(|pat| helios_auth::rbac::matches(PATTERNS[*pat], PERMS[p]))
                    });
                    prop_assert_eq!(e.auth.authorize(&users[u], PERMS[p]), want, "user {} perm {}", u, PERMS[p]);
                }
                RoleOp::Reopen => e = e.reopen(config()),
            }
        }
    }
}

/// Issue 19: the bytes the rate limiter writes to the AOF depend on its history only, not
/// on a hash map's iteration order: two limiters fed the same checks write the same log.
#[test]
fn rate_limit_flushes_write_the_same_aof_for_the_same_history() {
    let logs: Vec<Vec<u8>> = (0..2)
        .map(|_| {
            let disk = helios_atlas::storage::MemStorage::new();
            let clock = std::sync::Arc::new(helios_core::ManualClock::new(1_700_000_000_000));
            let atlas = common::atlas(&disk, &clock);
            let l = RateLimiter::new(atlas.clone(), RateLimitConfig::default()).unwrap();
            let now = clock.now_ms();
            for i in 0..300 {
                l.check(&format!("ip.10.0.{}.{}", i / 200, i % 200), &[], 1, now);
            }
            assert_eq!(l.flush(now).unwrap(), 300);
            drop(l);
            atlas.close().unwrap();
            use helios_atlas::storage::Storage;
            let dir = std::path::Path::new("/auth");
            let mut log = Vec::new();
            for name in disk.list(dir).unwrap() {
                if name.starts_with("aof-") {
                    log.extend(disk.read(&dir.join(name)).unwrap());
                }
            }
            log
        })
        .collect();
    assert!(logs[0].len() > 300 * 40, "the buckets were written");
    assert!(
        logs[0] == logs[1],
        "the same history wrote different AOF bytes"
    );
}
