//! Access control that holds (issue 17): nobody can lock somebody else out, roles cannot
//! escalate privilege, the last admin stays, disabling revokes for good, and passwords
//! must be strong. Each test fails on the code before the issue.

mod common;

use common::*;
use helios_auth::rbac::perms;
use helios_auth::{AuthError, Claims};
use helios_core::Clock;
use jsonwebtoken::{Algorithm, EncodingKey, Header};

const PW: &str = "tangerine-kayak-47-violet";
const ADMIN_PW: &str = "obsidian-lantern-58-harbor";

fn locked(r: Result<helios_auth::TokenPair, AuthError>) -> bool {
    matches!(r, Err(AuthError::LockedOut { .. }))
}

// 4. Nobody can lock somebody else out.

#[test]
fn wrong_passwords_from_one_address_do_not_lock_the_name_for_another() {
    let e = env();
    e.auth.bootstrap_admin(Some(ADMIN_PW)).unwrap();
    for _ in 0..5 {
        assert!(matches!(
            e.auth.login("admin", "not-the-password-1", "203.0.113.9"),
            Err(AuthError::InvalidCredentials)
        ));
    }
    // The attacker's address is locked (30 s, as before) ...
    assert!(locked(e.auth.login("admin", ADMIN_PW, "203.0.113.9")));
    // ... the admin, from a clean address, gets in after a bounded delay.
    let delay = e.auth.login_delay_ms("admin");
    assert!((1..=5_000).contains(&delay), "{delay}");
    e.auth.login("admin", ADMIN_PW, "198.51.100.7").unwrap();
    // One wrong guess an hour (the old way to keep an admin locked out) changes nothing.
    for _ in 0..5 {
        e.clock.advance_ms(3_600_000);
        let _ = e.auth.login("admin", "not-the-password-1", "203.0.113.9");
        e.auth.login("admin", ADMIN_PW, "198.51.100.7").unwrap();
    }
}

#[test]
fn guesses_spread_over_many_addresses_pay_the_name_delay_every_time() {
    let e = env();
    e.auth.bootstrap_admin(Some(ADMIN_PW)).unwrap();
    let mut delays = Vec::new();
    for i in 0..40 {
        delays.push(e.auth.login_delay_ms("admin"));
        let client = format!("10.1.{}.{}", i / 256, i % 256);
        assert!(matches!(
            e.auth.login("admin", &format!("guess-number-{i}"), &client),
            Err(AuthError::InvalidCredentials)
        ));
    }
    // The first five are free; every later guess waits, doubling up to the bound.
    assert!(delays[..5].iter().all(|d| *d == 0), "{delays:?}");
    assert!(delays[5..].iter().all(|d| *d >= 1_000), "{delays:?}");
    assert_eq!(*delays.last().unwrap(), 5_000, "bounded: {delays:?}");
    // The owner's right password is never refused for it.
    e.auth.login("admin", ADMIN_PW, "192.0.2.1").unwrap();
    // One address guessing is locked as before, and the lock grows.
    for _ in 0..5 {
        let _ = e.auth.login("admin", "nope-nope-nope", "192.0.2.66");
    }
    let first = match e.auth.login("admin", ADMIN_PW, "192.0.2.66") {
        Err(AuthError::LockedOut { retry_after_ms }) => retry_after_ms,
        other => panic!("{other:?}"),
    };
    assert_eq!(first, 30_000);
    e.clock.advance_ms(30_000);
    let _ = e.auth.login("admin", "nope-nope-nope", "192.0.2.66");
    match e.auth.login("admin", ADMIN_PW, "192.0.2.66") {
        Err(AuthError::LockedOut { retry_after_ms }) => assert_eq!(retry_after_ms, 60_000),
        other => panic!("{other:?}"),
    }
    // Admins see it and lift it.
    let l = e.auth.lockouts();
    assert!(l.iter().any(|l| l.key == "pair:admin@192.0.2.66"), "{l:?}");
    assert!(
        l.iter().any(|l| l.key == "user:admin" && l.delay_ms > 0),
        "{l:?}"
    );
    // The name's delay and every pair of it (one per address that tried it).
    assert_eq!(e.auth.lift_lockout("ADMIN"), 1 + 40 + 1);
    assert_eq!(e.auth.login_delay_ms("admin"), 0);
    e.auth.login("admin", ADMIN_PW, "192.0.2.66").unwrap();
}

// 7. No privilege escalation through roles.

struct Org {
    e: Env,
    admin: String,
    manager: String,
    bob: String,
}

/// An admin, a manager whose only role grants `users:admin`, and bob (`user`).
fn org() -> Org {
    let e = env();
    e.auth.bootstrap_admin(Some(ADMIN_PW)).unwrap();
    let admin = e.auth.user_view_by_name("admin").unwrap().id;
    e.auth
        .put_role("user-admin", vec![perms::USERS_ADMIN.into()])
        .unwrap();
    let manager = e
        .auth
        .create_user("manager", PW, &["user-admin"])
        .unwrap()
        .id;
    let bob = e.auth.register("bob", PW).unwrap().id;
    Org {
        e,
        admin,
        manager,
        bob,
    }
}

fn escalation(r: Result<(), AuthError>) -> bool {
    matches!(r, Err(AuthError::PrivilegeEscalation { .. }))
}

#[test]
fn a_users_admin_cannot_grant_itself_admin_nor_touch_an_admin() {
    let Org {
        e,
        admin,
        manager,
        bob,
    } = org();
    let a = &e.auth;
    assert!(escalation(a.assign_role_as(&manager, &manager, "admin")));
    assert!(!a.authorize(&manager, perms::ADMIN_ALL));
    // Nor through a role of its own making, or by editing one.
    assert!(escalation(a.put_role_as(
        &manager,
        "sneaky",
        vec!["*".into()]
    )));
    assert!(escalation(a.put_role_as(
        &manager,
        "user-admin",
        vec!["users:admin".into(), "admin:*".into()]
    )));
    assert!(escalation(a.put_role_as(
        &manager,
        "admin",
        vec!["kv:read".into()]
    )));
    assert!(escalation(a.delete_role_as(&manager, "admin")));
    // The admin's account is out of reach.
    assert!(escalation(a.set_disabled_as(&manager, &admin, true)));
    assert!(escalation(a.delete_user_as(&manager, &admin)));
    assert!(escalation(a.revoke_role_as(&manager, &admin, "user-admin")));
    assert!(escalation(a.assign_role_as(&manager, &admin, "readonly")));
    assert!(a.authorize(&admin, perms::ADMIN_ALL));
    // Within what it holds, it works: a role of users:admin, plain users.
    a.put_role_as(&manager, "helpdesk", vec!["users:admin".into()])
        .unwrap();
    a.assign_role_as(&manager, &bob, "helpdesk").unwrap();
    a.revoke_role_as(&manager, &bob, "helpdesk").unwrap();
    a.set_disabled_as(&manager, &bob, true).unwrap();
    // "user" grants kv:read..., which the manager does not hold: it cannot hand it out.
    assert!(escalation(a.assign_role_as(&manager, &bob, "user")));
    // A disabled actor holds nothing.
    a.set_disabled(&manager, true).unwrap();
    assert!(escalation(a.put_role_as(
        &manager,
        "h2",
        vec!["users:admin".into()]
    )));
    // The admin may do all of it.
    a.assign_role_as(&admin, &bob, "admin").unwrap();
    a.set_disabled_as(&admin, &bob, false).unwrap();
    a.put_role_as(&admin, "sneaky", vec!["*".into()]).unwrap();
}

#[test]
fn the_last_enabled_admin_stays() {
    let Org { e, admin, bob, .. } = org();
    let a = &e.auth;
    let last = |r: Result<(), AuthError>| matches!(r, Err(AuthError::LastAdmin));
    assert!(last(a.set_disabled_as(&admin, &admin, true)));
    assert!(last(a.revoke_role_as(&admin, &admin, "admin")));
    assert!(last(a.delete_user_as(&admin, &admin)));
    assert!(last(a.put_role_as(&admin, "admin", vec!["kv:read".into()])));
    assert!(last(a.delete_role_as(&admin, "admin")));
    // The system (tools, tests) is bound by it too.
    assert!(last(a.set_disabled(&admin, true)));
    assert!(last(a.delete_user(&admin)));
    assert!(a.authorize(&admin, perms::ADMIN_ALL));
    // With a second admin, the first may go; then the second is the last.
    a.assign_role_as(&admin, &bob, "admin").unwrap();
    a.set_disabled_as(&bob, &admin, true).unwrap();
    assert!(last(a.revoke_role_as(&bob, &bob, "admin")));
    // A disabled admin does not count: re-enabling one is fine, it counts again.
    a.set_disabled_as(&bob, &admin, false).unwrap();
    a.revoke_role_as(&admin, &bob, "admin").unwrap();
    // Survives a restart.
    let e = e.reopen(config());
    assert!(matches!(
        e.auth.delete_role("admin"),
        Err(AuthError::LastAdmin)
    ));
}

// 8. Disable means revoke.

#[test]
fn disabling_ends_every_session_for_good_and_is_no_password_oracle() {
    let e = env();
    let bob = e.auth.register("bob", PW).unwrap().id;
    let p1 = e.auth.login("bob", PW, "ip").unwrap();
    let p2 = e.auth.login("bob", PW, "ip2").unwrap();
    // Verified once: the signature check is cached from here on.
    e.auth.verify_access(&p1.access_token).unwrap();
    e.auth.set_disabled(&bob, true).unwrap();
    // A disabled account: the right password answers exactly like a wrong one...
    let right = e.auth.login("bob", PW, "ip3");
    let wrong = e.auth.login("bob", "not-bobs-password", "ip3");
    assert!(
        matches!(right, Err(AuthError::InvalidCredentials)),
        "{right:?}"
    );
    assert!(
        matches!(wrong, Err(AuthError::InvalidCredentials)),
        "{wrong:?}"
    );
    // ... and the right one is not counted as a failure.
    for _ in 0..10 {
        assert!(matches!(
            e.auth.login("bob", PW, "ip4"),
            Err(AuthError::InvalidCredentials)
        ));
    }
    assert!(e.auth.lockouts().iter().all(|l| !l.key.contains("ip4")));
    // Nor does it clear earlier failures, as a success would (that told a guesser the
    // candidate was right: the lock vanished): four wrong, the right password, then the
    // fifth wrong one still locks the pair.
    for _ in 0..4 {
        let _ = e.auth.login("bob", "not-bobs-password", "ip5");
    }
    let _ = e.auth.login("bob", PW, "ip5");
    let _ = e.auth.login("bob", "not-bobs-password", "ip5");
    let after = e.auth.login("bob", PW, "ip5");
    assert!(
        matches!(after, Err(AuthError::LockedOut { .. })),
        "{after:?}"
    );
    e.auth.set_disabled(&bob, false).unwrap();
    for p in [&p1, &p2] {
        assert!(
            matches!(
                e.auth.verify_access(&p.access_token),
                Err(AuthError::InvalidToken { .. })
            ),
            "an access token from before the disable stays dead"
        );
        assert!(
            e.auth.refresh(&p.refresh_token).is_err(),
            "so does every refresh family"
        );
    }
    // Also after a restart (the generation is in the user record).
    let e = e.reopen(config());
    assert!(e.auth.verify_access(&p1.access_token).is_err());
    assert!(e.auth.refresh(&p2.refresh_token).is_err());
    let p3 = e.auth.login("bob", PW, "ip4").unwrap();
    e.auth.verify_access(&p3.access_token).unwrap();
}

// 9. Passwords, password change, logout arithmetic.

#[test]
fn weak_passwords_are_refused_naming_the_field_and_why() {
    let e = env();
    for (name, pw, why) in [
        ("carol", "password123", "common"),
        ("carol", "carol", "at least"),
        ("qwopfrank", "Qwopfrank2024!", "guess"),
        ("sam", "aaaaaaaaaaaaaaaa", "Repeats"),
    ] {
        match e.auth.register(name, pw) {
            Err(AuthError::Invalid {
                field: "password",
                reason,
            }) => assert!(reason.contains(why), "{pw}: {reason}"),
            other => panic!("{pw}: {other:?}"),
        }
    }
    let u = e.auth.register("qwopfrank", PW).unwrap();
    match e.auth.change_password(&u.id, PW, "qwopfrank", "ip") {
        Err(AuthError::Invalid {
            field: "new_password",
            reason,
        }) => assert!(
            reason.contains("username") || reason.contains("least"),
            "{reason}"
        ),
        other => panic!("{other:?}"),
    }
    match e.auth.change_password(&u.id, PW, "password1234", "ip") {
        Err(AuthError::Invalid {
            field: "new_password",
            reason,
        }) => assert!(reason.contains("guess"), "{reason}"),
        other => panic!("{other:?}"),
    }
    assert!(env().auth.bootstrap_admin(Some("admin12345")).is_err());
}

#[test]
fn a_password_change_ends_the_other_sessions_and_returns_a_fresh_pair() {
    let e = env();
    let u = e.auth.register("erin", PW).unwrap();
    let phone = e.auth.login("erin", PW, "phone").unwrap();
    let laptop = e.auth.login("erin", PW, "laptop").unwrap();
    let new = "marmalade-zeppelin-93-quartz";
    let fresh = e.auth.change_password(&u.id, PW, new, "laptop").unwrap();
    for old in [&phone, &laptop] {
        assert!(e.auth.verify_access(&old.access_token).is_err());
        assert!(e.auth.refresh(&old.refresh_token).is_err());
    }
    e.auth.verify_access(&fresh.access_token).unwrap();
    let again = e.auth.refresh(&fresh.refresh_token).unwrap();
    e.auth.verify_access(&again.access_token).unwrap();
    // The current password is throttled like a login: five wrong ones lock that client.
    for _ in 0..5 {
        assert!(matches!(
            e.auth
                .change_password(&u.id, "a-wrong-guess-9", "another-good-passphrase-1", "x"),
            Err(AuthError::InvalidCredentials)
        ));
    }
    assert!(matches!(
        e.auth
            .change_password(&u.id, new, "another-good-passphrase-1", "x"),
        Err(AuthError::LockedOut { .. })
    ));
}

#[test]
fn logout_survives_hostile_exp_claims() {
    let e = env();
    e.auth.register("mallory", PW).unwrap();
    let p = e.auth.login("mallory", PW, "ip").unwrap();
    let c = e.auth.verify_access(&p.access_token).unwrap();
    let now = e.clock.now_ms() / 1000;
    for exp in [u64::MAX, u64::MAX / 1000 + 1, u64::MAX / 1000, now + 60] {
        let claims = Claims {
            exp,
            jti: format!("jti-{exp}"),
            fam: format!("fam-{exp}"),
            ..c.clone()
        };
        let mut h = Header::new(Algorithm::HS256);
        h.kid = Some("k1".into());
        let t = jsonwebtoken::encode(&h, &claims, &EncodingKey::from_secret(SECRET.as_bytes()))
            .unwrap();
        let verified = e.auth.verify_access(&t).unwrap();
        e.auth.logout(&verified).unwrap();
        assert!(e.auth.verify_access(&t).is_err(), "exp {exp}: revoked");
    }
}
