//! `Auth::authenticate`: the one password check of every login (the gateway's `login`,
//! helios-atlasd's `AUTH`), with login's throttle.

mod common;

use common::*;
use helios_auth::AuthError;

const PW: &str = "tangerine-kayak-47-violet";

#[test]
fn authenticate_answers_who_the_user_is_or_invalid_credentials() {
    let e = env();
    let alice = e.auth.register("alice", PW).unwrap();
    let who = e.auth.authenticate("Alice", PW, "1.2.3.4").unwrap();
    assert_eq!(who, alice);
    assert_eq!(who.roles, ["user"]);
    for (user, pw) in [("alice", "not-the-password"), ("nobody", PW)] {
        assert!(matches!(
            e.auth.authenticate(user, pw, "1.2.3.4"),
            Err(AuthError::InvalidCredentials)
        ));
    }
    // A disabled user answers exactly like a wrong password, even to the right one.
    e.auth.set_disabled(&alice.id, true).unwrap();
    assert!(matches!(
        e.auth.authenticate("alice", PW, "1.2.3.4"),
        Err(AuthError::InvalidCredentials)
    ));
}

#[test]
fn authenticate_and_login_share_one_throttle() {
    let e = env();
    e.auth.register("alice", PW).unwrap();
    for _ in 0..config().throttle.failures_before_lock {
        let _ = e.auth.authenticate("alice", "not-the-password", "1.2.3.4");
    }
    // The failures through one lock the other out, from that address.
    assert!(matches!(
        e.auth.login("alice", PW, "1.2.3.4"),
        Err(AuthError::LockedOut { .. })
    ));
    assert!(matches!(
        e.auth.authenticate("alice", PW, "1.2.3.4"),
        Err(AuthError::LockedOut { .. })
    ));
    assert!(e.auth.login_delay_ms("alice") > 0);
    // And login is authenticate, then a session.
    let pair = e.auth.login("alice", PW, "5.6.7.8").unwrap();
    let claims = e.auth.verify_access(&pair.access_token).unwrap();
    assert_eq!(
        claims.sub,
        e.auth.authenticate("alice", PW, "5.6.7.8").unwrap().id
    );
}
