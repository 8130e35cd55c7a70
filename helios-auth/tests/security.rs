//! Token security: every way a forged, stale or mismatched token must be refused, and the
//! password edge bcrypt is known for.

mod common;

use base64::Engine as _;
use common::*;
use helios_auth::{AuthError, Claims, JwtConfig, KeyConfig, KeyRing, KeyState};
use helios_core::Clock;
use jsonwebtoken::{Algorithm, EncodingKey, Header};

const PW: &str = "tangerine-kayak-47-violet";
const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::URL_SAFE_NO_PAD;

fn login(e: &Env) -> (String, Claims) {
    e.auth.register("alice", PW).unwrap();
    let pair = e.auth.login("alice", PW, "1.2.3.4").unwrap();
    let claims = e.auth.verify_access(&pair.access_token).unwrap();
    (pair.access_token, claims)
}

fn refused(e: &Env, token: &str, why: &str) {
    match e.auth.verify_access(token) {
        Err(AuthError::InvalidToken { .. }) => {}
        other => panic!("{why}: expected InvalidToken, got {other:?}"),
    }
}

/// Refused as expired (its own error, so clients know to refresh), not as invalid.
fn expired(e: &Env, token: &str, why: &str) {
    match e.auth.verify_access(token) {
        Err(AuthError::TokenExpired) => {}
        other => panic!("{why}: expected TokenExpired, got {other:?}"),
    }
}

fn forge(claims: &serde_json::Value, alg: Algorithm, kid: Option<&str>, secret: &str) -> String {
    let mut h = Header::new(alg);
    h.kid = kid.map(str::to_owned);
    jsonwebtoken::encode(&h, claims, &EncodingKey::from_secret(secret.as_bytes())).unwrap()
}

#[test]
fn tampered_signature_and_payload_are_refused() {
    let e = env();
    let (token, _) = login(&e);
    let mut parts: Vec<String> = token.split('.').map(str::to_owned).collect();
    let mut sig = B64.decode(&parts[2]).unwrap();
    sig[0] ^= 1;
    parts[2] = B64.encode(&sig);
    refused(&e, &parts.join("."), "flipped signature bit");
    let mut payload: serde_json::Value =
        serde_json::from_slice(&B64.decode(token.split('.').nth(1).unwrap()).unwrap()).unwrap();
    payload["roles"] = serde_json::json!(["admin"]);
    let parts: Vec<&str> = token.split('.').collect();
    let forged = format!(
        "{}.{}.{}",
        parts[0],
        B64.encode(payload.to_string()),
        parts[2]
    );
    refused(&e, &forged, "payload changed, old signature");
}

#[test]
fn none_and_other_algorithms_are_refused() {
    let e = env();
    let (token, claims) = login(&e);
    let v = serde_json::to_value(&claims).unwrap();
    let none_header = B64.encode(r#"{"alg":"none","typ":"JWT","kid":"k1"}"#);
    let body = token.split('.').nth(1).unwrap();
    refused(&e, &format!("{none_header}.{body}."), "alg none");
    refused(
        &e,
        &forge(&v, Algorithm::HS512, Some("k1"), SECRET),
        "HS512 instead of HS256",
    );
    refused(
        &e,
        &forge(&v, Algorithm::HS384, Some("k1"), SECRET),
        "HS384",
    );
    refused(&e, "not.a.token", "garbage");
    refused(&e, "", "empty");
    refused(&e, &"a".repeat(10_000), "huge");
}

#[test]
fn time_issuer_audience_and_required_claims() {
    let e = env();
    let (_, claims) = login(&e);
    let now = e.clock.now_ms() / 1000;
    let base = serde_json::to_value(&claims).unwrap();
    let with = |k: &str, v: serde_json::Value| {
        let mut c = base.clone();
        c[k] = v;
        forge(&c, Algorithm::HS256, Some("k1"), SECRET)
    };
    let without = |k: &str| {
        let mut c = base.clone();
        c.as_object_mut().unwrap().remove(k);
        forge(&c, Algorithm::HS256, Some("k1"), SECRET)
    };
    // Still valid as issued.
    e.auth
        .verify_access(&with("exp", serde_json::json!(now + 100)))
        .unwrap();
    expired(
        &e,
        &with("exp", serde_json::json!(now - 10)),
        "expired beyond leeway",
    );
    // Expired and forged: the signature is checked first, so it is invalid, not expired.
    let mut c = base.clone();
    c["exp"] = serde_json::json!(now - 10);
    refused(
        &e,
        &forge(
            &c,
            Algorithm::HS256,
            Some("k1"),
            "not the secret, but thirty-two bytes",
        ),
        "expired and badly signed",
    );
    e.auth
        .verify_access(&with("exp", serde_json::json!(now - 2)))
        .unwrap();
    refused(
        &e,
        &with("nbf", serde_json::json!(now + 60)),
        "not yet valid",
    );
    refused(&e, &with("iss", serde_json::json!("evil")), "wrong issuer");
    refused(
        &e,
        &with("aud", serde_json::json!("other-api")),
        "wrong audience",
    );
    refused(
        &e,
        &with("exp", serde_json::json!("9999999999")),
        "exp of the wrong JSON type",
    );
    for k in ["exp", "iss", "aud", "nbf", "sub", "jti"] {
        refused(&e, &without(k), &format!("missing {k}"));
    }
    refused(
        &e,
        &forge(
            &base,
            Algorithm::HS256,
            Some("k1"),
            "a-different-secret-0123456789abcdef",
        ),
        "wrong key",
    );
}

#[test]
fn kid_rotation_unknown_and_retired_keys() {
    let e = env();
    let (old_token, claims) = login(&e);
    let v = serde_json::to_value(&claims).unwrap();
    refused(
        &e,
        &forge(&v, Algorithm::HS256, Some("nope"), SECRET),
        "unknown kid",
    );
    refused(&e, &forge(&v, Algorithm::HS256, None, SECRET), "no kid");
    let k2 = "fedcba9876543210fedcba9876543210-second-key";
    e.auth
        .rotate_keys(jwt(vec![
            hs_key("k1", KeyState::Verifying, SECRET),
            hs_key("k2", KeyState::Active, k2),
        ]))
        .unwrap();
    e.auth.verify_access(&old_token).unwrap();
    let fresh = e.auth.login("alice", PW, "ip").unwrap();
    let header: serde_json::Value = serde_json::from_slice(
        &B64.decode(fresh.access_token.split('.').next().unwrap())
            .unwrap(),
    )
    .unwrap();
    assert_eq!(header["kid"], "k2", "new tokens use the active key");
    e.auth
        .rotate_keys(jwt(vec![
            hs_key("k1", KeyState::Retired, SECRET),
            hs_key("k2", KeyState::Active, k2),
        ]))
        .unwrap();
    refused(&e, &old_token, "retired key");
    e.auth.verify_access(&fresh.access_token).unwrap();
    // A bad ring is refused and the old one stays.
    assert!(
        e.auth
            .rotate_keys(jwt(vec![hs_key("k3", KeyState::Active, "short")]))
            .is_err()
    );
    e.auth.verify_access(&fresh.access_token).unwrap();
}

#[test]
fn revoked_tokens_and_refresh_reuse() {
    let e = env();
    e.auth.register("bob", PW).unwrap();
    let p1 = e.auth.login("bob", PW, "ip").unwrap();
    let p2 = e.auth.refresh(&p1.refresh_token).unwrap();
    e.auth.verify_access(&p2.access_token).unwrap();
    // Reusing the rotated token revokes the whole family, including the new pair.
    assert!(matches!(
        e.auth.refresh(&p1.refresh_token),
        Err(AuthError::RefreshReuse)
    ));
    assert!(e.auth.refresh(&p2.refresh_token).is_err());
    refused(&e, &p2.access_token, "family revoked");
    // Logout revokes that access token until its expiry, and its family.
    let p3 = e.auth.login("bob", PW, "ip").unwrap();
    let c3 = e.auth.verify_access(&p3.access_token).unwrap();
    e.auth.logout(&c3).unwrap();
    refused(&e, &p3.access_token, "revoked jti");
    assert!(e.auth.refresh(&p3.refresh_token).is_err());
    // The revocation record expires with the token: the list cannot grow without bound.
    let key = format!("auth:token:jti.{}", c3.jti);
    assert!(e.atlas.exists(&key));
    e.clock.advance_ms(901_000 + 6_000);
    assert!(!e.atlas.exists(&key));
}

#[test]
fn a_72_byte_password_registers_and_logs_in() {
    let e = env();
    // 72 bytes of a strong passphrase (a run of one character alone is refused as weak).
    let p72 = format!("{PW:-<72}");
    assert_eq!(p72.len(), 72);
    e.auth.register("dora", &p72).unwrap();
    e.auth.login("dora", &p72, "ip").unwrap();
    assert!(e.auth.login("dora", &p72[..71], "ip").is_err());
}

#[test]
fn long_passwords_sharing_72_bytes_are_not_interchangeable() {
    let e = env();
    let base = format!("{PW:-<72}");
    e.auth.register("carol", &format!("{base}-one")).unwrap();
    assert!(matches!(
        e.auth.login("carol", &format!("{base}-two"), "ip"),
        Err(AuthError::InvalidCredentials)
    ));
    e.auth.login("carol", &format!("{base}-one"), "ip").unwrap();
}

#[test]
fn rs256_and_eddsa_rings_sign_and_verify_and_pin_the_algorithm() {
    let pem = |f: &str| {
        std::fs::read_to_string(format!("{}/tests/keys/{f}", env!("CARGO_MANIFEST_DIR"))).unwrap()
    };
    for (alg, private, public) in [
        (Algorithm::RS256, "rsa_private.pem", "rsa_public.pem"),
        (Algorithm::EdDSA, "ed_private.pem", "ed_public.pem"),
    ] {
        let ring = KeyRing::new(JwtConfig {
            algorithm: alg,
            keys: vec![KeyConfig {
                kid: "a".into(),
                state: KeyState::Active,
                secret: None,
                private_pem: Some(pem(private)),
                public_pem: Some(pem(public)),
            }],
            ..jwt(vec![])
        })
        .unwrap();
        let claims = Claims {
            sub: "u".into(),
            roles: vec![],
            iat: 100,
            nbf: 100,
            exp: 1000,
            iss: "helios".into(),
            aud: "helios-api".into(),
            jti: "j".into(),
            sep: 0,
            fam: "f".into(),
        };
        let t = ring.sign(&claims).unwrap();
        assert_eq!(ring.verify(&t, 500).unwrap(), claims);
        // An HS256 token made with the public key as the secret (the classic confusion
        // attack) is refused: the algorithm is pinned.
        let v = serde_json::to_value(&claims).unwrap();
        let confused = forge(&v, Algorithm::HS256, Some("a"), &pem(public));
        assert!(
            ring.verify(&confused, 500).is_err(),
            "{alg:?} key confusion"
        );
    }
}

#[test]
fn concurrent_use_of_one_refresh_token_wins_once_then_revokes_the_family() {
    let e = env();
    e.auth.register("gina", PW).unwrap();
    let p = e.auth.login("gina", PW, "ip").unwrap();
    let auth = std::sync::Arc::new(e.auth);
    let results: Vec<_> = (0..8)
        .map(|_| {
            let auth = auth.clone();
            let t = p.refresh_token.clone();
            std::thread::spawn(move || auth.refresh(&t))
        })
        .map(|h| h.join().unwrap())
        .collect();
    let winners: Vec<_> = results.iter().filter_map(|r| r.as_ref().ok()).collect();
    assert_eq!(
        winners.len(),
        1,
        "exactly one use of a refresh token succeeds"
    );
    assert!(results.iter().filter(|r| r.is_err()).all(|r| matches!(
        r,
        Err(AuthError::RefreshReuse) | Err(AuthError::InvalidToken { .. })
    )));
    // The reuse revoked the family: the winner's new tokens are dead too.
    assert!(auth.refresh(&winners[0].refresh_token).is_err());
    assert!(auth.verify_access(&winners[0].access_token).is_err());
}

#[test]
fn a_verified_token_still_expires_and_rotation_rechecks_it() {
    // Verified tokens are remembered to skip the signature check; time and key state are
    // still checked on every use.
    let e = env();
    let (token, _) = login(&e);
    e.auth.verify_access(&token).unwrap();
    e.auth.verify_access(&token).unwrap();
    e.clock.advance_ms(900_000 + 5_000);
    expired(&e, &token, "expired after being verified once");
    let e = env();
    let (token, _) = login(&e);
    e.auth.verify_access(&token).unwrap();
    let k2 = "fedcba9876543210fedcba9876543210-second-key";
    e.auth
        .rotate_keys(jwt(vec![
            hs_key("k1", KeyState::Retired, SECRET),
            hs_key("k2", KeyState::Active, k2),
        ]))
        .unwrap();
    refused(&e, &token, "verified before its key was retired");
}
