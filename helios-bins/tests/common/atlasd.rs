//! The helios-atlasd harness shared by its integration tests (`tests/atlasd.rs`,
//! `tests/atlasd_acl_matrix.rs`): a server on 127.0.0.1:0 over a data directory, on the
//! binary's runtime, stopped when dropped; its clients (the `redis` crate, logged in or
//! not, and raw sockets); and gateway data directories with helios-auth users in them.

use helios_atlas::{Atlas, FsyncPolicy, Options};
use helios_bins::atlasd::config::AtlasdConfig;
use helios_core::ManualClock;
use std::net::TcpStream;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// The bootstrap `admin`'s password in the gateway directories of [`gateway_dir`].
pub const ADMIN_PW: &str = "Vermilion-Anchor-Tundra-83";
/// `alice`'s password, where a test creates her.
pub const ALICE_PW: &str = "Quartz-Nebula-Falcon-42";
/// `bob`'s password, where a test creates him.
pub const BOB_PW: &str = "Copper-Glacier-Lantern-17";

/// helios-atlasd serving on 127.0.0.1:`port` on a thread of its own; stops when dropped.
pub struct Server {
    /// The port it listens on.
    pub port: u16,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Server {
    /// atlasd on 127.0.0.1:0 over `dir`, with the default configuration as `edit` leaves
    /// it, on the binary's runtime (its worker count and turn-end hook). With a `clock`, the
    /// server and its store run on it (no background maintenance) with seeded randomness;
    /// without, on the system's.
    pub fn start(
        dir: &Path,
        clock: Option<Arc<ManualClock>>,
        edit: impl FnOnce(&mut AtlasdConfig),
    ) -> Self {
        let mut cfg = AtlasdConfig {
            data_dir: dir.to_path_buf(),
            ..AtlasdConfig::default()
        };
        edit(&mut cfg);
        let mut options = Options {
            fsync: cfg.appendfsync.parse::<FsyncPolicy>().unwrap(),
            ..Options::default()
        };
        let ctx = match &clock {
            Some(c) => helios_bins::app::Context {
                clock: c.clone(),
                random: Arc::new(helios_auth::SeededRandom::new(7)),
            },
            None => helios_bins::app::Context::system(),
        };
        if let Some(c) = clock {
            options.clock = c;
            options.maintenance_interval_ms = None;
        }
        let atlas = Atlas::open(&cfg.data_dir, options).unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let (port_tx, port_rx) = std::sync::mpsc::channel();
        let thread = std::thread::spawn(move || {
            let (rt, turns) = helios_bins::atlasd::runtime(&cfg).unwrap();
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
                port_tx.send(listener.local_addr().unwrap().port()).unwrap();
                let stop = async {
                    let _ = rx.await;
                };
                helios_bins::atlasd::run_in(listener, atlas, cfg, ctx, stop, turns)
                    .await
                    .unwrap();
            });
        });
        let port = port_rx.recv().unwrap();
        Server {
            port,
            stop: Some(tx),
            thread: Some(thread),
        }
    }

    /// atlasd over `dir` with `requirepass` `s3cret` and helios-auth users
    /// (`auth_users: true`): the gateway's directory, served to its users.
    pub fn with_users(dir: &Path) -> Self {
        Self::start(dir, None, |c| {
            c.requirepass = "s3cret".into();
            c.auth_users = true;
        })
    }

    /// A `redis` connection that has not authenticated.
    pub fn client(&self) -> redis::Connection {
        redis::Client::open(format!("redis://127.0.0.1:{}/", self.port))
            .unwrap()
            .get_connection()
            .unwrap()
    }

    /// A `redis` connection logged in as `user` (the crate sends `AUTH user pass`).
    pub fn login(&self, user: &str, pass: &str) -> redis::Connection {
        redis::Client::open(format!("redis://{user}:{pass}@127.0.0.1:{}/", self.port))
            .unwrap()
            .get_connection()
            .unwrap()
    }

    /// A raw socket to the server, reads timing out after 5 s.
    pub fn raw(&self) -> TcpStream {
        let s = TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s
    }

    /// Stops the server and waits for its thread.
    pub fn stop(mut self) {
        self.shutdown();
    }

    /// Waits for the server's thread to end by itself (after a `SHUTDOWN`), without
    /// asking it to stop.
    pub fn wait(mut self) {
        if let Some(t) = self.thread.take() {
            t.join().unwrap();
        }
    }

    /// Stops the server and waits for its thread, once.
    fn shutdown(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            t.join().unwrap();
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// atlasd with the default configuration over a fresh temp dir (removed when dropped).
pub fn start() -> (tempfile::TempDir, Server) {
    start_with(|_| {})
}

/// atlasd configured by `edit` over a fresh temp dir (removed when dropped).
pub fn start_with(edit: impl FnOnce(&mut AtlasdConfig)) -> (tempfile::TempDir, Server) {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), None, edit);
    (dir, s)
}

/// The gateway started over `dir` (bcrypt cost 4) without serving, `admin_password` for a
/// new directory's bootstrap `admin`: its state, to write users and keys with; close its
/// ATLAS before atlasd opens `dir`.
pub fn gateway_state(dir: &Path, admin_password: Option<&str>) -> Arc<helios_bins::gateway::State> {
    let mut g = helios_bins::config::GatewayConfig {
        data_dir: dir.to_path_buf(),
        ..Default::default()
    };
    g.auth.bcrypt_cost = 4;
    helios_bins::gateway::start(g, admin_password.map(str::to_owned)).unwrap()
}

/// A fresh data directory as the gateway leaves it: the bootstrap `admin` ([`ADMIN_PW`])
/// and what `setup` writes through the gateway's state (users, keys), ATLAS closed; with
/// what `setup` returned.
pub fn gateway_dir<T>(
    setup: impl FnOnce(&helios_bins::gateway::State) -> T,
) -> (tempfile::TempDir, T) {
    let dir = tempfile::tempdir().unwrap();
    let state = gateway_state(dir.path(), Some(ADMIN_PW));
    let made = setup(&state);
    state.atlas.close().unwrap();
    (dir, made)
}

/// Creates the helios-auth user `name` with `password` and the one role `role` through
/// the gateway's state: its id.
pub fn add_user(
    state: &helios_bins::gateway::State,
    name: &str,
    password: &str,
    role: &str,
) -> String {
    state.auth.create_user(name, password, &[role]).unwrap().id
}

/// `v`, sorted.
pub fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}
