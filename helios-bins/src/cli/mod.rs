//! The `helios` command-line tool.
//!
//! Online commands talk to a gateway (`--url`, default `http://127.0.0.1:8080`) with the
//! tokens saved by `helios login` (access and refresh token as JSON, in `--token-file` /
//! `$HELIOS_TOKEN_FILE`, default `~/.config/helios/token`, mode 0600, replaced
//! atomically). A command that needs a token and finds none saved fails before contacting
//! the server and says to run `helios login`. A 401 with a refresh token saved renews the
//! pair once and retries; a 401 that remains says the session has expired (with the
//! server's problem detail). `users add` (open registration) needs no token.
//!
//! Passwords (`login`, `users add`): `--password-stdin` reads the first line of stdin (as
//! `docker login --password-stdin`; it wins over `--password`, since clap cannot tell the
//! flag from its environment variable in a conflict); else `--password` or its environment
//! variable (`HELIOS_PASSWORD`, `HELIOS_NEW_PASSWORD`); else, when stdin is a terminal, a
//! prompt without echo (twice for `users add`, which must match); else a usage error.
//! `passwd` takes the current and the new password the same way (`--current-password`,
//! `--new-password`, or two lines of stdin; no environment variables), changes it through
//! `POST /api/v1/auth/password` and saves the fresh token pair (every other session ends).
//!
//! Offline commands work on a data directory and take its lock, so they refuse to run
//! beside a live server. Their errors print as messages, never as debug structures.
//!
//! Exit codes, for scripts: 0 success; 1 the server answered with an error (its problem
//! detail goes to stderr), the session is missing or expired (not logged in), or the
//! offline check found damage; 2 bad usage (including no password source); 3 the gateway
//! could not be reached or the local files (token file, terminal, data directory) could
//! not be read.

use bytes::Bytes;
use clap::{Parser, Subcommand};
use http::{Method, Request};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};
use std::io::{BufRead, IsTerminal};
use std::path::{Path, PathBuf};

/// Exit code: the server refused, the session is missing or expired, or a check found
/// damage.
pub const EXIT_REFUSED: u8 = 1;
/// Exit code: bad usage.
pub const EXIT_USAGE: u8 = 2;
/// Exit code: cannot reach the gateway or read local files.
pub const EXIT_UNREACHABLE: u8 = 3;

/// The HELIOS command-line tool.
#[derive(Debug, Parser)]
#[command(
    name = "helios",
    version,
    about = "HELIOS command-line tool",
    after_help = AFTER_HELP
)]
pub struct Cli {
    /// Gateway base URL.
    #[arg(
        long,
        global = true,
        default_value = "http://127.0.0.1:8080",
        env = "HELIOS_URL"
    )]
    pub url: String,
    /// Where `login` saves the token pair and other commands read it.
    #[arg(
        long,
        global = true,
        env = "HELIOS_TOKEN_FILE",
        default_value_os_t = default_token_file()
    )]
    pub token_file: PathBuf,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The environment and exit codes, under `helios --help`.
const AFTER_HELP: &str = "\
Environment:
  HELIOS_URL           gateway base URL (--url)
  HELIOS_TOKEN_FILE    token file (--token-file; default $HOME/.config/helios/token)
  HELIOS_PASSWORD      password for `helios login` (--password)
  HELIOS_NEW_PASSWORD  password for `helios users add` (--password)

Passwords: `--password-stdin` reads the first line of stdin (`passwd`: the current
password, then the new one on the second line); in a terminal, `login`, `users add` and
`passwd` prompt without echo. Start with `helios login --username NAME`.

Exit codes: 0 ok; 1 the server refused, not logged in or session expired, or damage found;
2 bad usage; 3 gateway unreachable or local files unreadable.";

/// Commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Log in and save the token pair (the refresh token renews an expired access token
    /// on the next command).
    Login {
        /// Username.
        #[arg(long)]
        username: String,
        /// Password (shows in `ps` and shell history: prefer the prompt, --password-stdin
        /// or the environment variable).
        #[arg(long, env = "HELIOS_PASSWORD", hide_env_values = true)]
        password: Option<String>,
        /// Read the password from the first line of stdin (`--password-stdin <
        /// data/admin-password`).
        #[arg(long)]
        password_stdin: bool,
    },
    /// Key-value entries.
    Kv {
        /// A shared namespace (`[a-z0-9_-]{1,64}`; needs `kv:read:NAME` / `kv:write:NAME`)
        /// instead of your own.
        #[arg(long, global = true, value_name = "NAME")]
        ns: Option<String>,
        #[command(subcommand)]
        /// What to do.
        op: KvOp,
    },
    /// Jobs.
    Jobs {
        #[command(subcommand)]
        /// What to do.
        op: JobsOp,
    },
    /// The live workers (`GET /api/v1/workers`): every one with `jobs:admin`, your own
    /// with `jobs:work`.
    Workers,
    /// Whether a server answers: GET `URL` (default `--url` + `/healthz`; the proxy's and
    /// worker's metrics listeners answer `/healthz` too) within 3 s. Exit 0 on a 2xx, 1 on
    /// another status, 3 unreachable: a container's HEALTHCHECK, no login needed.
    Health {
        /// The URL to GET.
        url: Option<String>,
    },
    /// Cron schedules (repeatable jobs, `/api/v1/schedules`).
    Schedules {
        #[command(subcommand)]
        /// What to do.
        op: SchedulesOp,
    },
    /// Change your password: every other session ends, and the new token pair is saved.
    Passwd {
        /// The current password (shows in `ps` and shell history: prefer the prompt or
        /// --password-stdin).
        #[arg(long)]
        current_password: Option<String>,
        /// The new password (long and not guessable; same caveat).
        #[arg(long)]
        new_password: Option<String>,
        /// Read the current password from the first line of stdin and the new one from
        /// the second.
        #[arg(long)]
        password_stdin: bool,
    },
    /// Users (admin).
    Users {
        #[command(subcommand)]
        /// What to do.
        op: UsersOp,
    },
    /// Store administration.
    Admin {
        #[command(subcommand)]
        /// What to do.
        op: AdminOp,
    },
    /// Offline AOF tools on a data directory.
    Aof {
        #[command(subcommand)]
        /// What to do.
        op: AofOp,
    },
    /// A consistent backup (snapshot + AOF + manifest). Online by default: the running
    /// gateway writes it into its `backup_dir` while writes go on (`admin:*`). With
    /// `--data-dir` and `--out`: offline, on a directory no server uses.
    Backup {
        /// Online: the backup's name under the gateway's `backup_dir` (default
        /// `backup-{unix ms}`).
        #[arg(long, conflicts_with_all = ["data_dir", "out"])]
        name: Option<String>,
        /// Offline: the data directory (must not be in use).
        #[arg(long, requires = "out")]
        data_dir: Option<PathBuf>,
        /// Offline: where to write the backup (must not exist).
        #[arg(long, requires = "data_dir")]
        out: Option<PathBuf>,
    },
    /// Offline: verify a backup against its manifest and restore it into an empty data
    /// directory.
    Restore {
        /// The backup directory.
        #[arg(long)]
        from: PathBuf,
        /// The data directory to create (must be empty or missing).
        #[arg(long)]
        data_dir: PathBuf,
    },
}

/// KV commands.
#[derive(Debug, Subcommand)]
pub enum KvOp {
    /// Print a value.
    Get {
        /// The key.
        key: String,
    },
    /// Set a value (JSON; a bare word is taken as a string).
    Set {
        /// The key.
        key: String,
        /// The value.
        value: String,
        /// Time to live, s.
        #[arg(long)]
        ttl: Option<u64>,
    },
    /// Delete a key.
    Del {
        /// The key.
        key: String,
    },
    /// List keys under a prefix.
    List {
        /// Prefix.
        #[arg(long, default_value = "")]
        prefix: String,
        /// Page size.
        #[arg(long, default_value_t = 100)]
        limit: u32,
    },
}

/// Job commands.
#[derive(Debug, Subcommand)]
pub enum JobsOp {
    /// Enqueue a job.
    Enqueue {
        /// Queue.
        queue: String,
        /// Payload (JSON).
        #[arg(default_value = "null")]
        payload: String,
        /// Priority (higher first).
        #[arg(long, default_value_t = 0)]
        priority: i32,
        /// Delay, s.
        #[arg(long)]
        delay: Option<u64>,
        /// Dedup id (scoped to the caller and the queue).
        #[arg(long)]
        dedup_id: Option<String>,
    },
    /// Show a job (one's own; any with jobs:admin).
    Get {
        /// Job id: 32 lowercase hex digits.
        id: String,
    },
    /// List jobs of a queue in a state (one's own; every job with jobs:admin).
    List {
        /// Queue.
        queue: String,
        /// State (pending, in_progress, done, failed, cancelled).
        #[arg(long, default_value = "pending")]
        state: String,
    },
    /// Show a queue's dead-letter list.
    Dlq {
        /// Queue.
        queue: String,
    },
    /// Move dead-lettered jobs back to pending.
    Redrive {
        /// Queue.
        queue: String,
        /// Only these job ids.
        ids: Vec<String>,
    },
}

/// Cron schedule commands.
#[derive(Debug, Subcommand)]
pub enum SchedulesOp {
    /// Schedule a job: one run into QUEUE at each fire time of CRON (UTC; 5 fields, or 6
    /// with seconds first, or a nickname such as @hourly).
    Add {
        /// Queue.
        queue: String,
        /// Cron expression (quote it: `"*/5 * * * *"`).
        cron: String,
        /// Payload of every job (JSON).
        #[arg(default_value = "null")]
        payload: String,
        /// Priority of the jobs (higher first).
        #[arg(long, default_value_t = 0)]
        priority: i32,
        /// Attempts of each job (default: the queue's).
        #[arg(long)]
        max_attempts: Option<u32>,
    },
    /// List schedules (one's own; every one with jobs:admin).
    List,
    /// Delete a schedule (one's own; any with jobs:admin). Jobs it made stay.
    Rm {
        /// Schedule id: 32 lowercase hex digits.
        id: String,
    },
}

/// User commands.
#[derive(Debug, Subcommand)]
pub enum UsersOp {
    /// Register a user.
    Add {
        /// Username.
        username: String,
        /// Password (shows in `ps` and shell history: prefer the prompt, --password-stdin
        /// or the environment variable).
        #[arg(long, env = "HELIOS_NEW_PASSWORD", hide_env_values = true)]
        password: Option<String>,
        /// Read the password from the first line of stdin.
        #[arg(long)]
        password_stdin: bool,
    },
    /// List users, or give one a role.
    Roles {
        /// User id (omit to list users).
        id: Option<String>,
        /// Role to add.
        #[arg(long)]
        add: Option<String>,
        /// Role to remove.
        #[arg(long)]
        remove: Option<String>,
    },
}

/// Admin commands.
#[derive(Debug, Subcommand)]
pub enum AdminOp {
    /// Take a snapshot now.
    Snapshot,
    /// Print store statistics.
    Stats,
    /// List login lockouts (locked address and name pairs, locked addresses) and delayed
    /// names, or lift them.
    Lockouts {
        /// Lift every lockout and delay of this username (or one key, e.g.
        /// `client:10.0.0.3`).
        #[arg(long, value_name = "USERNAME")]
        lift: Option<String>,
    },
}

/// Offline AOF commands.
#[derive(Debug, Subcommand)]
pub enum AofOp {
    /// Report the state of every snapshot and AOF segment.
    Check {
        /// The data directory.
        #[arg(long)]
        data_dir: PathBuf,
    },
    /// Cut the AOF at its first bad record (damaged bytes are kept as `*.corrupt`).
    Repair {
        /// The data directory.
        #[arg(long)]
        data_dir: PathBuf,
    },
}

/// What went wrong, with its exit code.
#[derive(Debug)]
pub struct Failure {
    /// The exit code.
    pub code: u8,
    /// The message for stderr.
    pub message: String,
}

fn fail(code: u8, message: impl Into<String>) -> Failure {
    Failure {
        code,
        message: message.into(),
    }
}

fn default_token_file() -> PathBuf {
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_default();
    home.join(".config/helios/token")
}

fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// What `helios login` saves: the token pair, as JSON. A file holding a bare access token
/// (written by older versions) still reads, without a refresh token.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
struct Session {
    access_token: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    refresh_token: Option<String>,
}

impl Session {
    /// The saved session; `None` if the file is missing or empty.
    fn read(path: &Path) -> Result<Option<Session>, Failure> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => {
                return Err(fail(
                    EXIT_UNREACHABLE,
                    format!("cannot read the token file {}: {e}", path.display()),
                ));
            }
        };
        let text = text.trim();
        if text.is_empty() {
            return Ok(None);
        }
        Ok(Some(serde_json::from_str(text).unwrap_or_else(|_| {
            Session {
                access_token: text.to_owned(),
                refresh_token: None,
            }
        })))
    }

    /// The saved session, or the not-logged-in failure (before any server contact).
    fn require(path: &Path) -> Result<Session, Failure> {
        Session::read(path)?.ok_or_else(|| {
            fail(
                EXIT_REFUSED,
                format!(
                    "not logged in (no token in {}): run `helios login --username NAME` first",
                    path.display()
                ),
            )
        })
    }

    /// From a login or refresh answer.
    fn from_answer(v: &Value) -> Option<Session> {
        Some(Session {
            access_token: v["access_token"].as_str()?.to_owned(),
            refresh_token: v["refresh_token"].as_str().map(str::to_owned),
        })
    }

    /// Writes the file readable by its owner only, replacing it atomically.
    fn save(&self, path: &Path) -> Result<(), Failure> {
        let io = |e: std::io::Error| fail(EXIT_UNREACHABLE, format!("{}: {e}", path.display()));
        if let Some(dir) = path.parent()
            && !dir.as_os_str().is_empty()
        {
            std::fs::create_dir_all(dir).map_err(io)?;
        }
        let tmp = path.with_extension("tmp");
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create(true).truncate(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            opts.mode(0o600);
        }
        let text = serde_json::to_string(self).unwrap_or_default();
        {
            use std::io::Write;
            let mut f = opts.open(&tmp).map_err(io)?;
            f.write_all(text.as_bytes()).map_err(io)?;
        }
        std::fs::rename(&tmp, path).map_err(io)
    }
}

struct Api {
    base: String,
    session: parking_lot::Mutex<Option<Session>>,
    session_path: PathBuf,
    client: Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>,
}

impl Api {
    /// Calls the API; on a 401 with a saved refresh token, refreshes the pair once (saving
    /// it) and retries, so an expired access token does not need a new login.
    async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value, Failure> {
        let token = self.session.lock().as_ref().map(|s| s.access_token.clone());
        let (mut status, mut v) = self
            .send(method.clone(), path, body.clone(), token.as_deref())
            .await?;
        if status == http::StatusCode::UNAUTHORIZED && self.refresh().await? {
            let token = self.session.lock().as_ref().map(|s| s.access_token.clone());
            (status, v) = self.send(method, path, body, token.as_deref()).await?;
        }
        if status == http::StatusCode::UNAUTHORIZED && token.is_some() {
            return Err(fail(
                EXIT_REFUSED,
                format!(
                    "the session has expired (refresh token spent, expired or revoked): run \
                     `helios login --username NAME` again (server: {})",
                    Self::problem(status, &v)
                ),
            ));
        }
        Self::answer(status, v)
    }

    /// Trades the saved refresh token for a new pair; false if there is none or the server
    /// refuses it (the caller then reports the original 401).
    async fn refresh(&self) -> Result<bool, Failure> {
        let Some(refresh) = self
            .session
            .lock()
            .as_ref()
            .and_then(|s| s.refresh_token.clone())
        else {
            return Ok(false);
        };
        let (status, v) = self
            .send(
                Method::POST,
                "/api/v1/auth/refresh",
                Some(json!({ "refresh_token": refresh })),
                None,
            )
            .await?;
        let fresh = match (status.is_success(), Session::from_answer(&v)) {
            (true, Some(s)) => s,
            _ => return Ok(false),
        };
        fresh.save(&self.session_path)?;
        *self.session.lock() = Some(fresh);
        Ok(true)
    }

    fn answer(status: http::StatusCode, v: Value) -> Result<Value, Failure> {
        if status.is_success() {
            Ok(v)
        } else {
            Err(fail(EXIT_REFUSED, Self::problem(status, &v)))
        }
    }

    /// The status and the problem detail of an error answer.
    fn problem(status: http::StatusCode, v: &Value) -> String {
        match v["detail"].as_str() {
            Some(detail) if !detail.is_empty() => format!("{status}: {detail}"),
            _ => status.to_string(),
        }
    }

    async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
        token: Option<&str>,
    ) -> Result<(http::StatusCode, Value), Failure> {
        let mut b = Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base.trim_end_matches('/')));
        if let Some(t) = token {
            b = b.header("authorization", format!("Bearer {t}"));
        }
        let body = body.map(|v| Bytes::from(v.to_string())).unwrap_or_default();
        let req = b
            .body(Full::new(body))
            .map_err(|e| fail(EXIT_USAGE, format!("bad request: {e}")))?;
        let resp = self.client.request(req).await.map_err(|e| {
            fail(
                EXIT_UNREACHABLE,
                format!("cannot reach {}: {}", self.base, chain(&e)),
            )
        })?;
        let status = resp.status();
        let bytes = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| {
                fail(
                    EXIT_UNREACHABLE,
                    format!("reading the answer: {}", chain(&e)),
                )
            })?
            .to_bytes();
        Ok((
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        ))
    }
}

/// An error and its sources, as one line ("client error (Connect): tcp connect error: ...").
fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let next = s.to_string();
        if !text.contains(&next) {
            text.push_str(": ");
            text.push_str(&next);
        }
        source = s.source();
    }
    text
}

/// Which password source `login` or `users add` was given.
struct PasswordArgs<'a> {
    /// `--password` or its environment variable.
    given: Option<String>,
    /// `--password-stdin`.
    from_stdin: bool,
    /// The environment variable, for messages (empty: none).
    env: &'a str,
    /// The flag that gives it, for messages.
    flag: &'a str,
    /// The terminal prompt.
    prompt: &'a str,
    /// Prompt twice and require both to match (a new password).
    confirm: bool,
}

/// The password from `--password-stdin`, `--password`/environment, or a no-echo prompt on
/// the terminal; a usage error if none applies.
fn password(args: PasswordArgs<'_>) -> Result<String, Failure> {
    let PasswordArgs {
        given,
        from_stdin,
        env,
        flag,
        prompt,
        confirm,
    } = args;
    if from_stdin {
        return first_line(&mut std::io::stdin().lock());
    }
    if let Some(p) = given {
        return Ok(p);
    }
    if !std::io::stdin().is_terminal() {
        let env = if env.is_empty() {
            String::new()
        } else {
            format!("set {env}, ")
        };
        return Err(fail(
            EXIT_USAGE,
            format!(
                "no password given and stdin is not a terminal to prompt on: pass \
                 --password-stdin (reads the first line of stdin), {env}or pass {flag}"
            ),
        ));
    }
    let tty = |e: std::io::Error| {
        fail(
            EXIT_UNREACHABLE,
            format!("cannot read the password from the terminal: {e}"),
        )
    };
    let p = rpassword::prompt_password(prompt).map_err(tty)?;
    if p.is_empty() {
        return Err(fail(EXIT_USAGE, "empty password"));
    }
    if confirm && rpassword::prompt_password("Repeat the password: ").map_err(tty)? != p {
        return Err(fail(
            EXIT_USAGE,
            "the two passwords differ; nothing was sent",
        ));
    }
    Ok(p)
}

/// The first line of `input`, its line ending stripped (`--password-stdin`).
fn first_line(input: &mut impl BufRead) -> Result<String, Failure> {
    let mut line = String::new();
    input.read_line(&mut line).map_err(|e| {
        fail(
            EXIT_UNREACHABLE,
            format!("cannot read the password from stdin: {e}"),
        )
    })?;
    let p = line.strip_suffix('\n').unwrap_or(&line);
    let p = p.strip_suffix('\r').unwrap_or(p);
    if p.is_empty() {
        return Err(fail(
            EXIT_USAGE,
            "--password-stdin: the first line of stdin is empty",
        ));
    }
    Ok(p.to_owned())
}

/// How `helios aof check` prints a file's state.
fn status_text(status: &helios_atlas::FileStatus) -> String {
    match status {
        helios_atlas::FileStatus::Ok => "ok".to_owned(),
        helios_atlas::FileStatus::TornTail { offset } => {
            format!("torn last record at byte {offset} (recoverable: `helios aof repair`)")
        }
        helios_atlas::FileStatus::Corrupt { offset, reason } => {
            format!("corrupt at byte {offset}: {reason}")
        }
    }
}

fn print(v: &Value) {
    println!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
}

fn json_arg(s: &str) -> Value {
    serde_json::from_str(s).unwrap_or_else(|_| Value::String(s.to_owned()))
}

/// `helios health`: GET `url` within 3 s.
async fn health(url: &str) -> Result<(), Failure> {
    let uri: http::Uri = url
        .parse()
        .map_err(|e| fail(EXIT_USAGE, format!("{url:?} is not a URL: {e}")))?;
    let client: Client<_, http_body_util::Empty<bytes::Bytes>> =
        Client::builder(TokioExecutor::new()).build_http();
    let answer = tokio::time::timeout(std::time::Duration::from_secs(3), client.get(uri)).await;
    match answer {
        Ok(Ok(resp)) if resp.status().is_success() => {
            println!("{url}: {}", resp.status());
            Ok(())
        }
        Ok(Ok(resp)) => Err(fail(EXIT_REFUSED, format!("{url}: {}", resp.status()))),
        Ok(Err(e)) => Err(fail(EXIT_UNREACHABLE, format!("{url}: {e}"))),
        Err(_) => Err(fail(
            EXIT_UNREACHABLE,
            format!("{url}: no answer within 3 s"),
        )),
    }
}

fn offline(cmd: &Command) -> Option<Result<(), Failure>> {
    use helios_atlas::storage::FsStorage;
    Some(match cmd {
        Command::Aof {
            op: AofOp::Check { data_dir },
        } => match helios_atlas::check(&FsStorage, data_dir) {
            Err(e) => Err(fail(EXIT_UNREACHABLE, e.to_string())),
            Ok(report) => {
                for f in report.snapshots.iter().chain(&report.segments) {
                    println!(
                        "{}: {} records, {}",
                        f.path.display(),
                        f.record_count,
                        status_text(&f.status)
                    );
                }
                if report.is_clean() {
                    println!("ok");
                    Ok(())
                } else {
                    Err(fail(
                        EXIT_REFUSED,
                        "damage found; `helios aof repair` cuts the AOF at the first bad record",
                    ))
                }
            }
        },
        Command::Aof {
            op: AofOp::Repair { data_dir },
        } => match helios_atlas::repair(&FsStorage, data_dir) {
            Err(e) => Err(fail(EXIT_REFUSED, e.to_string())),
            Ok(r) => {
                for (p, at) in &r.truncated {
                    println!("cut {} at byte {at}", p.display());
                }
                for p in &r.set_aside {
                    println!("kept damaged bytes in {}", p.display());
                }
                Ok(())
            }
        },
        Command::Backup {
            data_dir: Some(data_dir),
            out: Some(out),
            ..
        } => backup(data_dir, out),
        Command::Restore { from, data_dir } => restore(from, data_dir),
        _ => return None,
    })
}

fn backup(data_dir: &Path, out: &Path) -> Result<(), Failure> {
    if out.exists() {
        return Err(fail(
            EXIT_USAGE,
            format!("{} exists; pick a new directory", out.display()),
        ));
    }
    // Opening takes the lock (no server may run: online, ask it with `helios backup`
    // without --data-dir) and recovers; the backup is then the same as the server's.
    let db = helios_atlas::Atlas::open(
        data_dir,
        helios_atlas::Options {
            maintenance_interval_ms: None,
            ..helios_atlas::Options::default()
        },
    )
    .map_err(|e| fail(EXIT_REFUSED, e.to_string()))?;
    let written = db.backup(out);
    let closed = db.close();
    let manifest = written.map_err(|e| fail(EXIT_REFUSED, e.to_string()))?;
    closed.map_err(|e| fail(EXIT_REFUSED, e.to_string()))?;
    println!(
        "backed up {} files (records up to {}) to {}",
        manifest.files.len(),
        manifest.last_seq,
        out.display()
    );
    Ok(())
}

fn restore(from: &Path, data_dir: &Path) -> Result<(), Failure> {
    use helios_atlas::AtlasError;
    let storage = helios_atlas::storage::FsStorage;
    // Verifies every file against the manifest, then copies (each fsynced).
    let manifest = helios_atlas::restore_backup(&storage, from, data_dir).map_err(|e| match e {
        AtlasError::BackupInvalid { ref dir, .. } if dir == data_dir => {
            fail(EXIT_USAGE, e.to_string())
        }
        AtlasError::Io { .. } => fail(EXIT_UNREACHABLE, e.to_string()),
        _ => fail(
            EXIT_REFUSED,
            format!("{e}; the backup is damaged or incomplete, nothing was restored"),
        ),
    })?;
    // Opening proves the copy recovers.
    let db = helios_atlas::Atlas::open(data_dir, helios_atlas::Options::default())
        .map_err(|e| fail(EXIT_REFUSED, e.to_string()))?;
    let keys = db.key_count();
    db.close().map_err(|e| fail(EXIT_REFUSED, e.to_string()))?;
    println!(
        "restored {} files ({keys} keys, records up to {}) into {}",
        manifest.files.len(),
        manifest.last_seq,
        data_dir.display()
    );
    Ok(())
}

/// Runs a parsed command line.
pub async fn run(cli: Cli) -> Result<(), Failure> {
    if let Some(r) = offline(&cli.command) {
        return r;
    }
    if let Command::Health { url } = &cli.command {
        let url = url
            .clone()
            .unwrap_or_else(|| format!("{}/healthz", cli.url.trim_end_matches('/')));
        return health(&url).await;
    }
    let token_path = cli.token_file.clone();
    // Login and open registration need no session; every other command fails here, before
    // contacting the server, when none is saved.
    let session = match &cli.command {
        Command::Login { .. } => None,
        Command::Users {
            op: UsersOp::Add { .. },
        } => Session::read(&token_path)?,
        _ => Some(Session::require(&token_path)?),
    };
    let api = Api {
        base: cli.url.clone(),
        session: parking_lot::Mutex::new(session),
        session_path: token_path.clone(),
        client: Client::builder(TokioExecutor::new()).build_http(),
    };
    match cli.command {
        Command::Login {
            username,
            password: given,
            password_stdin,
        } => {
            let password = password(PasswordArgs {
                given,
                from_stdin: password_stdin,
                env: "HELIOS_PASSWORD",
                flag: "--password",
                prompt: "Password: ",
                confirm: false,
            })?;
            let (status, v) = api
                .send(
                    Method::POST,
                    "/api/v1/auth/login",
                    Some(json!({"username": username, "password": password})),
                    None,
                )
                .await?;
            let v = Api::answer(status, v)?;
            let session = Session::from_answer(&v)
                .ok_or_else(|| fail(EXIT_REFUSED, "the login answer holds no access_token"))?;
            session.save(&token_path)?;
            println!("logged in; tokens saved in {}", token_path.display());
        }
        Command::Kv { ns, op } => {
            // Your own namespace, or a shared one.
            let base = match &ns {
                Some(n) => format!("/api/v1/ns/{}/kv", enc(n)),
                None => "/api/v1/kv".to_owned(),
            };
            match op {
                KvOp::Get { key } => print(
                    &api.call(Method::GET, &format!("{base}/{}", enc(&key)), None)
                        .await?["value"],
                ),
                KvOp::Set { key, value, ttl } => {
                    let mut body = json!({"value": json_arg(&value)});
                    if let Some(t) = ttl {
                        body["ttl_seconds"] = json!(t);
                    }
                    api.call(Method::PUT, &format!("{base}/{}", enc(&key)), Some(body))
                        .await?;
                }
                KvOp::Del { key } => {
                    api.call(Method::DELETE, &format!("{base}/{}", enc(&key)), None)
                        .await?;
                }
                KvOp::List { prefix, limit } => print(
                    &api.call(
                        Method::GET,
                        &format!("{base}?prefix={}&limit={limit}", enc(&prefix)),
                        None,
                    )
                    .await?,
                ),
            }
        }
        Command::Jobs { op } => match op {
            JobsOp::Enqueue {
                queue,
                payload,
                priority,
                delay,
                dedup_id,
            } => {
                let mut body =
                    json!({"queue": queue, "payload": json_arg(&payload), "priority": priority});
                if let Some(d) = delay {
                    body["delay_seconds"] = json!(d);
                }
                if let Some(d) = dedup_id {
                    body["dedup_id"] = json!(d);
                }
                print(&api.call(Method::POST, "/api/v1/jobs", Some(body)).await?);
            }
            JobsOp::Get { id } => print(
                &api.call(Method::GET, &format!("/api/v1/jobs/{}", enc(&id)), None)
                    .await?,
            ),
            JobsOp::List { queue, state } => print(
                &api.call(
                    Method::GET,
                    &format!("/api/v1/jobs?queue={}&state={}", enc(&queue), enc(&state)),
                    None,
                )
                .await?,
            ),
            JobsOp::Dlq { queue } => print(
                &api.call(
                    Method::GET,
                    &format!("/api/v1/queues/{}/dlq", enc(&queue)),
                    None,
                )
                .await?,
            ),
            JobsOp::Redrive { queue, ids } => {
                let body = if ids.is_empty() {
                    json!({})
                } else {
                    json!({"ids": ids})
                };
                print(
                    &api.call(
                        Method::POST,
                        &format!("/api/v1/queues/{}/dlq/redrive", enc(&queue)),
                        Some(body),
                    )
                    .await?,
                );
            }
        },
        Command::Workers => print(&api.call(Method::GET, "/api/v1/workers", None).await?),
        // Answered before any session is read.
        Command::Health { .. } => {}
        Command::Schedules { op } => match op {
            SchedulesOp::Add {
                queue,
                cron,
                payload,
                priority,
                max_attempts,
            } => {
                let mut body = json!({"queue": queue, "cron": cron, "payload": json_arg(&payload), "priority": priority});
                if let Some(a) = max_attempts {
                    body["max_attempts"] = json!(a);
                }
                print(
                    &api.call(Method::POST, "/api/v1/schedules", Some(body))
                        .await?,
                );
            }
            SchedulesOp::List => print(&api.call(Method::GET, "/api/v1/schedules", None).await?),
            SchedulesOp::Rm { id } => {
                api.call(
                    Method::DELETE,
                    &format!("/api/v1/schedules/{}", enc(&id)),
                    None,
                )
                .await?;
            }
        },
        Command::Users { op } => match op {
            UsersOp::Add {
                username,
                password: given,
                password_stdin,
            } => {
                let password = password(PasswordArgs {
                    given,
                    from_stdin: password_stdin,
                    env: "HELIOS_NEW_PASSWORD",
                    flag: "--password",
                    prompt: "Password: ",
                    confirm: true,
                })?;
                print(
                    &api.call(
                        Method::POST,
                        "/api/v1/auth/register",
                        Some(json!({"username": username, "password": password})),
                    )
                    .await?,
                )
            }
            UsersOp::Roles { id: None, .. } => {
                print(&api.call(Method::GET, "/admin/users", None).await?)
            }
            UsersOp::Roles {
                id: Some(id),
                add,
                remove,
            } => {
                if let Some(r) = add {
                    api.call(
                        Method::POST,
                        &format!("/admin/users/{}/roles", enc(&id)),
                        Some(json!({"role": r})),
                    )
                    .await?;
                }
                if let Some(r) = remove {
                    api.call(
                        Method::DELETE,
                        &format!("/admin/users/{}/roles/{}", enc(&id), enc(&r)),
                        None,
                    )
                    .await?;
                }
            }
        },
        Command::Admin { op } => match op {
            AdminOp::Snapshot => print(&api.call(Method::POST, "/admin/snapshot", None).await?),
            AdminOp::Stats => print(&api.call(Method::GET, "/admin/stats", None).await?),
            AdminOp::Lockouts { lift: None } => {
                print(&api.call(Method::GET, "/admin/lockouts", None).await?)
            }
            AdminOp::Lockouts { lift: Some(who) } => {
                api.call(
                    Method::DELETE,
                    &format!("/admin/lockouts/{}", enc(&who)),
                    None,
                )
                .await?;
                println!("lifted the lockouts of {who}");
            }
        },
        Command::Passwd {
            current_password,
            new_password,
            password_stdin,
        } => {
            let current = password(PasswordArgs {
                given: current_password,
                from_stdin: password_stdin,
                env: "",
                flag: "--current-password",
                prompt: "Current password: ",
                confirm: false,
            })?;
            let new = password(PasswordArgs {
                given: new_password,
                from_stdin: password_stdin,
                env: "",
                flag: "--new-password",
                prompt: "New password: ",
                confirm: true,
            })?;
            let v = api
                .call(
                    Method::POST,
                    "/api/v1/auth/password",
                    Some(json!({"current_password": current, "new_password": new})),
                )
                .await?;
            // The old tokens are dead now: keep the new pair.
            let session = Session::from_answer(&v)
                .ok_or_else(|| fail(EXIT_REFUSED, "the answer holds no access_token"))?;
            session.save(&token_path)?;
            println!(
                "password changed; every other session has ended; new tokens saved in {}",
                token_path.display()
            );
        }
        Command::Backup { name, .. } => {
            let body = name.as_ref().map(|n| json!({ "name": n }));
            let v = api.call(Method::POST, "/admin/backup", body).await?;
            println!(
                "backed up {} files (records up to {}) to {} on the server",
                v["files"].as_array().map_or(0, Vec::len),
                v["last_seq"],
                v["dir"].as_str().unwrap_or("?")
            );
        }
        Command::Aof { .. } | Command::Restore { .. } => {}
    }
    Ok(())
}
