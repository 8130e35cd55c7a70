//! helios-auth benchmarks (criterion).
//!
//! Run: `cargo bench --bench auth` (about a minute). Measured:
//! - `auth/verify_raw_jsonwebtoken`: `jsonwebtoken::decode` of the same HS256 token with a
//!   plain `Validation` (signature, exp, iss, aud), the baseline;
//! - `auth/verify_access`: `Auth::verify_access` (header and kid check, signature, claims,
//!   times on the injected clock, revocation and family lookups, session state); target:
//!   within 1.5x of the baseline;
//! - `auth/authorize`: `Auth::authorize(user, permission)` with current roles;
//! - `auth/rate_limit_10k_clients`: `RateLimiter::check` cycling over 10,000 clients;
//! - `auth_login_failure/{wrong_password,unknown_user}`: the two must take the same time.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use helios::atlas::{Atlas, FsyncPolicy, Options};
use helios::auth::rbac::perms;
use helios::auth::{
    Auth, AuthConfig, Claims, JwtConfig, KeyConfig, KeyState, OsRandom, RateLimitConfig,
    RateLimiter, ThrottleConfig,
};
use helios::core::{Clock, SystemClock};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

const SECRET: &str = "0123456789abcdef0123456789abcdef-bench-secret";

fn benches(c: &mut Criterion) {
    let tmp = tempfile::tempdir().expect("tempdir");
    let atlas = Atlas::open(
        tmp.path(),
        Options {
            fsync: FsyncPolicy::Everysec,
            ..Options::default()
        },
    )
    .expect("atlas");
    let auth = Auth::open(
        atlas.clone(),
        AuthConfig {
            bcrypt_cost: 4,
            password_len_min: 10,
            registration_open: true,
            refresh_ttl_ms: 86_400_000,
            jwt: JwtConfig {
                algorithm: Algorithm::HS256,
                issuer: "helios".into(),
                audience: "helios-api".into(),
                access_ttl_s: 900,
                leeway_s: 30,
                keys: vec![KeyConfig {
                    kid: "k1".into(),
                    state: KeyState::Active,
                    secret: Some(SECRET.into()),
                    private_pem: None,
                    public_pem: None,
                }],
            },
            // No lockouts: the bench logs in with wrong passwords on purpose.
            throttle: ThrottleConfig {
                failures_before_lock: u32::MAX,
                ..ThrottleConfig::default()
            },
        },
        Arc::new(SystemClock),
        Arc::new(OsRandom),
    )
    .expect("auth");
    let user = auth
        .register("bench-user", "bench password 123")
        .expect("register");
    let pair = auth
        .login("bench-user", "bench password 123", "127.0.0.1")
        .expect("login");
    let token = pair.access_token;

    let mut g = c.benchmark_group("auth");
    g.throughput(Throughput::Elements(1));
    g.measurement_time(Duration::from_secs(3));
    g.warm_up_time(Duration::from_secs(1));

    let key = DecodingKey::from_secret(SECRET.as_bytes());
    let mut validation = Validation::new(Algorithm::HS256);
    validation.set_issuer(&["helios"]);
    validation.set_audience(&["helios-api"]);
    g.bench_function("verify_raw_jsonwebtoken", |b| {
        b.iter(|| {
            black_box(jsonwebtoken::decode::<Claims>(
                black_box(&token),
                &key,
                &validation,
            ))
            .expect("raw decode")
        })
    });
    g.bench_function("verify_access", |b| {
        b.iter(|| black_box(auth.verify_access(black_box(&token))).expect("verify"))
    });
    g.bench_function("authorize", |b| {
        b.iter(|| black_box(auth.authorize(black_box(&user.id), perms::KV_WRITE)))
    });
    let limiter = RateLimiter::new(atlas.clone(), RateLimitConfig::default()).expect("limiter");
    let clients: Vec<String> = (0..10_000).map(|i| format!("client-{i}")).collect();
    let clock = SystemClock;
    let mut i = 0usize;
    g.bench_function("rate_limit_10k_clients", |b| {
        b.iter(|| {
            i = (i + 1) % clients.len();
            black_box(limiter.check(&clients[i], &[], 1, clock.now_ms()))
        })
    });
    g.finish();

    // Timing of failed logins: an unknown user must cost what a wrong password costs
    // (both run one bcrypt verification at the configured cost, here 4).
    let mut g = c.benchmark_group("auth_login_failure");
    g.measurement_time(Duration::from_secs(3));
    g.bench_function("wrong_password", |b| {
        b.iter(|| black_box(auth.login("bench-user", "not the password", "c")).is_err())
    });
    g.bench_function("unknown_user", |b| {
        b.iter(|| black_box(auth.login("nobody-here", "not the password", "c")).is_err())
    });
    g.finish();
}

criterion_group!(auth_benches, benches);
criterion_main!(auth_benches);
