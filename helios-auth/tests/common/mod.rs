//! Shared setup of the helios-auth tests: an Auth over an in-memory ATLAS, a manual clock
//! and seeded randomness, bcrypt at cost 4.
#![allow(dead_code)]

use helios_atlas::storage::MemStorage;
use helios_atlas::{Atlas, FsyncPolicy, Options};
use helios_auth::{Auth, AuthConfig, JwtConfig, KeyConfig, KeyState, SeededRandom, ThrottleConfig};
use helios_core::ManualClock;
use jsonwebtoken::Algorithm;
use std::path::PathBuf;
use std::sync::Arc;

pub const SECRET: &str = "0123456789abcdef0123456789abcdef-test-secret";

pub fn jwt(keys: Vec<KeyConfig>) -> JwtConfig {
    JwtConfig {
        algorithm: Algorithm::HS256,
        issuer: "helios".into(),
        audience: "helios-api".into(),
        access_ttl_s: 900,
        leeway_s: 5,
        keys,
    }
}

pub fn hs_key(kid: &str, state: KeyState, secret: &str) -> KeyConfig {
    KeyConfig {
        kid: kid.into(),
        state,
        secret: Some(secret.into()),
        private_pem: None,
        public_pem: None,
    }
}

pub fn config() -> AuthConfig {
    AuthConfig {
        bcrypt_cost: 4,
        password_len_min: 10,
        registration_open: true,
        refresh_ttl_ms: 30 * 24 * 3600 * 1000,
        jwt: jwt(vec![hs_key("k1", KeyState::Active, SECRET)]),
        throttle: ThrottleConfig::default(),
    }
}

pub struct Env {
    pub disk: MemStorage,
    pub clock: Arc<ManualClock>,
    pub atlas: Atlas,
    pub auth: Auth,
}

pub fn atlas(disk: &MemStorage, clock: &Arc<ManualClock>) -> Atlas {
    Atlas::open(
        PathBuf::from("/auth"),
        Options {
            fsync: FsyncPolicy::Always,
            storage: Arc::new(disk.clone()),
            clock: clock.clone(),
            maintenance_interval_ms: None,
            ..Options::default()
        },
    )
    .expect("atlas")
}

pub fn env_with(config: AuthConfig) -> Env {
    let disk = MemStorage::new();
    let clock = Arc::new(ManualClock::new(1_700_000_000_000));
    let atlas = atlas(&disk, &clock);
    let auth = Auth::open(
        atlas.clone(),
        config,
        clock.clone(),
        Arc::new(SeededRandom::new(42)),
    )
    .expect("auth");
    Env {
        disk,
        clock,
        atlas,
        auth,
    }
}

pub fn env() -> Env {
    env_with(config())
}

impl Env {
    /// Reopens auth over the same store (a restart).
    pub fn reopen(self, config: AuthConfig) -> Env {
        let Env {
            disk,
            clock,
            atlas: old,
            auth,
        } = self;
        drop(auth);
        drop(old);
        let atlas = atlas(&disk, &clock);
        let auth = Auth::open(
            atlas.clone(),
            config,
            clock.clone(),
            Arc::new(SeededRandom::new(7)),
        )
        .expect("reopen auth");
        Env {
            disk,
            clock,
            atlas,
            auth,
        }
    }
}
