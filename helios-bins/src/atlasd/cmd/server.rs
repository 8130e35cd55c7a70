//! The server commands: [`server`], the dispatcher of those that answer at once, and AUTH
//! and HELLO (throttled, so awaited by the batch). Connection state (SELECT, QUIT, RESET,
//! CLIENT, MULTI, DISCARD), COMMAND, CONFIG, persistence (SAVE, BGSAVE, BGREWRITEAOF,
//! LASTSAVE), FLUSHDB/FLUSHALL and SHUTDOWN are here; INFO is `info.rs`'s, the
//! whole-keyspace reads (KEYS, SCAN, DBSIZE and RANDOMKEY of a scope) `keyspace.rs`'s.
//!
//! Invariant: what may wait (snapshots, whole-keyspace walks, stats) runs in
//! `block_in_place` ([`blocking`]); AUTH and HELLO are awaited (the AUTH throttles' waits
//! are tokio sleeps, bcrypt runs in `block_in_place` in `auth`). AUTH, HELLO and EXEC
//! never reach [`server`]: `execute_batch` runs them.

use super::info::info;
use super::keyspace::{all_keys, count_prefix, flush, random_in_prefix, scan};
use super::pipeline::atlas_error_line;
use super::table::{Exec, SPECS, Spec, Srv, lookup};
use super::{Flow, MultiState, Session, eq};
use crate::atlasd::auth::{self, WRONGPASS};
use crate::atlasd::glob;
use crate::atlasd::kv::{ERR_NOT_INT, ERR_SYNTAX};
use crate::atlasd::resp::Out;
use crate::atlasd::{REDIS_VERSION, Shared, blocking};
use bytes::Bytes;
use helios_core::digits::parse_i64_canonical;
use std::sync::Arc;
use std::sync::atomic::Ordering;

/// AUTH [user] pass.
pub(super) async fn auth_command(shared: &Shared, s: &mut Session, a: &[Bytes], out: &mut Out) {
    let (user, pass) = match a.len() {
        2 => (None, &a[1]),
        3 => (Some(&a[1][..]), &a[2]),
        _ => {
            out.error(ERR_SYNTAX);
            return;
        }
    };
    if user.is_none() && shared.cfg.requirepass.is_empty() {
        out.error("ERR AUTH <password> called without any password configured for the default user. Are you sure your configuration is correct?");
    } else if auth::log_in(shared, s, user, pass).await {
        out.ok();
    } else {
        out.error(WRONGPASS);
    }
}

/// Runs server command `c` (all but AUTH, HELLO and EXEC); `Close`: close the connection.
pub(super) fn server(
    shared: &Arc<Shared>,
    s: &mut Session,
    c: Srv,
    a: &[Bytes],
    out: &mut Out,
) -> Flow {
    match c {
        Srv::Quit => {
            out.ok();
            return Flow::Close;
        }
        Srv::Reset => {
            s.multi = None;
            s.watch = None;
            s.name = None;
            out.resp3 = false;
            s.authed = auth::starts_authed(&shared.cfg);
            s.scope = None;
            out.simple("RESET");
        }
        // Awaited in `execute_batch`.
        Srv::Auth | Srv::Hello => unreachable!("AUTH and HELLO are executed by execute_batch"),
        Srv::Select => match parse_i64_canonical(&a[1]) {
            Some(0) => out.ok(),
            Some(_) => out.error("ERR DB index is out of range"),
            None => out.error(ERR_NOT_INT),
        },
        Srv::Client => client(s, a, out),
        Srv::Command => command(a, out),
        // Both read ATLAS's stats, which may wait for the writer lock (held across an
        // fsync under `always`).
        Srv::Info => blocking(|| info(shared, a, out)),
        Srv::Dbsize => match &s.scope {
            None => out.int(shared.atlas.key_count() as i64),
            // O(namespace): a walk of its prefix.
            Some(scope) => out.int(blocking(|| count_prefix(shared, scope.prefix())) as i64),
        },
        Srv::Keys => {
            let keys = blocking(|| all_keys(shared, s.scope.as_ref(), Some(&a[1])));
            out.array(keys.len());
            for k in keys {
                out.bulk(k.as_bytes());
            }
        }
        Srv::Scan => scan(shared, s.scope.as_ref(), a, out),
        Srv::Randomkey => {
            if let Some(scope) = &s.scope {
                // O(namespace): one walk of its prefix.
                let key = blocking(|| random_in_prefix(shared, scope.prefix()));
                let key = key.as_deref().and_then(|k| scope.client_key(k));
                out.opt_bulk(key);
                return Flow::Continue;
            }
            let n = shared.atlas.key_count();
            let key = if n == 0 {
                None
            } else {
                let skip = shared.random() % n;
                // Read the time first: `now_ms` takes the keyspace lock itself, and a
                // second read lock behind a queued writer would deadlock.
                let now = shared.now_ms();
                shared.atlas.with_keyspace(|ks| {
                    ks.iter()
                        .skip(skip as usize)
                        .chain(ks.iter())
                        .find(|(_, e)| !e.is_expired(now))
                        .map(|(k, _)| k.to_owned())
                })
            };
            out.opt_bulk(key.as_deref());
        }
        Srv::Flushdb | Srv::Flushall => {
            if a.len() > 2 || a.get(1).is_some_and(|o| !eq(o, "ASYNC") && !eq(o, "SYNC")) {
                out.error(ERR_SYNTAX);
            } else {
                // The marks go first: a key changed in place while the flush runs keeps
                // its mark (cleared after, it would answer from its content), and one the
                // flush then deletes leaves a mark its next write replaces, as a key
                // deleted by active expiry does.
                shared.raw_strings.clear();
                let r = blocking(|| flush(shared));
                // Even a partial flush changed watched keys.
                shared.watches.touch_all();
                match r {
                    Ok(()) => out.ok(),
                    Err(e) => out.error(&atlas_error_line(&e)),
                }
            }
        }
        Srv::Save => match blocking(|| shared.atlas.snapshot()) {
            Ok(_) => {
                shared.saved_now();
                out.ok();
            }
            Err(e) => out.error(&atlas_error_line(&e)),
        },
        Srv::Bgsave | Srv::Bgrewriteaof => {
            if shared.bg_running.swap(true, Ordering::AcqRel) {
                out.error("ERR Background save already in progress");
            } else {
                let sh = shared.clone();
                let rewrite = c == Srv::Bgrewriteaof;
                std::thread::spawn(move || {
                    let r = if rewrite {
                        sh.atlas.rewrite_aof()
                    } else {
                        sh.atlas.snapshot()
                    };
                    match r {
                        Ok(_) => sh.saved_now(),
                        Err(e) => tracing::error!(error = %e, "background save failed"),
                    }
                    sh.bg_running.store(false, Ordering::Release);
                });
                out.simple(if rewrite {
                    "Background append only file rewriting started"
                } else {
                    "Background saving started"
                });
            }
        }
        Srv::Lastsave => out.int(shared.last_save_s.load(Ordering::Relaxed) as i64),
        Srv::Config => blocking(|| config(shared, a, out)),
        Srv::Multi => {
            if s.multi.is_some() {
                out.error("ERR MULTI calls can not be nested");
            } else {
                s.multi = Some(MultiState::default());
                out.ok();
            }
        }
        // Awaited in `execute_batch`.
        Srv::Exec => unreachable!("EXEC is executed by execute_batch"),
        Srv::Watch => unreachable!("WATCH is executed by execute_batch"),
        Srv::Unwatch => {
            s.watch = None;
            out.ok();
        }
        Srv::Discard => {
            s.watch = None;
            if s.multi.take().is_some() {
                out.ok();
            } else {
                out.error("ERR DISCARD without MULTI");
            }
        }
        // SHUTDOWN ABORT cancels a shutdown in progress; ours never is one a client can
        // see (it starts at once), so it answers as Redis does when there is none.
        Srv::Shutdown if a[1..].iter().any(|o| eq(o, "ABORT")) => {
            if a.len() == 2 {
                out.error("ERR No shutdown in progress.");
            } else {
                out.error(ERR_SYNTAX);
            }
        }
        Srv::Shutdown => {
            if a.len() > 1
                && !a[1..]
                    .iter()
                    .all(|o| ["NOSAVE", "SAVE", "NOW", "FORCE"].iter().any(|w| eq(o, w)))
            {
                out.error(ERR_SYNTAX);
            } else {
                tracing::info!(client = s.id, "SHUTDOWN: shutting down");
                shared.shutdown.send_replace(true);
                // Redis closes the connection without a reply.
                return Flow::Close;
            }
        }
    }
    Flow::Continue
}

/// HELLO [protover [AUTH user pass] [SETNAME name]].
pub(super) async fn hello(shared: &Shared, s: &mut Session, a: &[Bytes], out: &mut Out) {
    let mut i = 1;
    let mut proto = if out.resp3 { 3 } else { 2 };
    if let Some(v) = a.get(1) {
        match parse_i64_canonical(v) {
            Some(p @ (2 | 3)) => proto = p,
            Some(_) => {
                out.error("NOPROTO unsupported protocol version");
                return;
            }
            None => {
                out.error("ERR Protocol version is not an integer or out of range");
                return;
            }
        }
        i = 2;
    }
    let mut name = None;
    let mut creds = None;
    while i < a.len() {
        if eq(&a[i], "AUTH") && i + 2 < a.len() {
            creds = Some((a[i + 1].clone(), a[i + 2].clone()));
            i += 3;
        } else if eq(&a[i], "SETNAME") && i + 1 < a.len() {
            name = Some(a[i + 1].clone());
            i += 2;
        } else {
            out.error(&format!(
                "ERR Syntax error in HELLO option '{}'",
                String::from_utf8_lossy(&a[i])
            ));
            return;
        }
    }
    if let Some((u, p)) = creds
        && !auth::log_in(shared, s, Some(&u), &p).await
    {
        out.error(WRONGPASS);
        return;
    }
    if !s.authed {
        out.error("NOAUTH HELLO must be called with the client already authenticated, otherwise the HELLO <proto> AUTH <user> <pass> option can be used to authenticate the client and select the RESP protocol version at the same time");
        return;
    }
    if name.is_some() {
        s.name = name;
    }
    out.resp3 = proto == 3;
    out.map(7);
    out.bulk(b"server");
    out.bulk(b"redis");
    out.bulk(b"version");
    out.bulk(REDIS_VERSION.as_bytes());
    out.bulk(b"proto");
    out.int(proto);
    out.bulk(b"id");
    out.int(s.id as i64);
    out.bulk(b"mode");
    out.bulk(b"standalone");
    out.bulk(b"role");
    out.bulk(b"master");
    out.bulk(b"modules");
    out.array(0);
}

fn client(s: &mut Session, a: &[Bytes], out: &mut Out) {
    let sub = &a[1];
    if eq(sub, "ID") && a.len() == 2 {
        out.int(s.id as i64);
    } else if eq(sub, "GETNAME") && a.len() == 2 {
        out.opt_bulk(s.name.as_deref());
    } else if eq(sub, "SETNAME") && a.len() == 3 {
        if a[2].iter().any(|&b| !(b'!'..=b'~').contains(&b)) {
            out.error("ERR Client names cannot contain spaces, newlines or special characters.");
        } else {
            s.name = (!a[2].is_empty()).then(|| a[2].clone());
            out.ok();
        }
    } else if eq(sub, "SETINFO") && a.len() == 4 {
        out.ok();
    } else if eq(sub, "INFO") || eq(sub, "LIST") {
        let line = format!(
            "id={} addr={} name={} db=0 multi={}\n",
            s.id,
            s.addr,
            s.name
                .as_deref()
                .map(String::from_utf8_lossy)
                .unwrap_or_default(),
            s.multi.as_ref().map_or(-1, |m| m.queued.len() as i64)
        );
        out.verbatim(&line);
    } else {
        out.error(&format!(
            "ERR unknown subcommand or wrong number of arguments for '{}'. Try CLIENT HELP.",
            String::from_utf8_lossy(sub)
        ));
    }
}

fn command_entry(spec: &Spec, out: &mut Out) {
    out.array(10);
    out.bulk(spec.name.as_bytes());
    out.int(i64::from(spec.arity));
    let flags: &[&str] = match spec.exec {
        Exec::Kv(_, true) => &["write"],
        Exec::Kv(_, false) => &["readonly", "fast"],
        Exec::Server(_) => &["admin"],
    };
    out.set(flags.len());
    for f in flags {
        out.simple(f);
    }
    out.int(i64::from(spec.keys.0));
    out.int(i64::from(spec.keys.1));
    out.int(i64::from(spec.keys.2));
    // As Redis 7: ACL categories and tips are sets, key specs and subcommands arrays.
    out.set(0);
    out.set(0);
    out.array(0);
    out.array(0);
}

fn command(a: &[Bytes], out: &mut Out) {
    match a.get(1) {
        None => {
            out.array(SPECS.len());
            for s in SPECS {
                command_entry(s, out);
            }
        }
        Some(sub) if eq(sub, "COUNT") => out.int(SPECS.len() as i64),
        Some(sub) if eq(sub, "DOCS") => out.map(0),
        Some(sub) if eq(sub, "INFO") => {
            out.array(a.len() - 2);
            for n in &a[2..] {
                match lookup(n) {
                    Some(s) => command_entry(s, out),
                    None => out.null_array(),
                }
            }
        }
        Some(sub) if eq(sub, "LIST") => {
            out.array(SPECS.len());
            for s in SPECS {
                out.bulk(s.name.as_bytes());
            }
        }
        Some(sub) => out.error(&format!(
            "ERR unknown subcommand '{}'. Try COMMAND HELP.",
            String::from_utf8_lossy(sub)
        )),
    }
}

fn config(shared: &Shared, a: &[Bytes], out: &mut Out) {
    let sub = &a[1];
    if eq(sub, "GET") && a.len() >= 3 {
        let settings = shared.settings();
        let hits: Vec<&(String, String)> = settings
            .iter()
            .filter(|(k, _)| {
                a[2..]
                    .iter()
                    .any(|p| glob::matches(&p.to_ascii_lowercase(), k.as_bytes()))
            })
            .collect();
        out.map(hits.len());
        for (k, v) in hits {
            out.bulk(k.as_bytes());
            out.bulk(v.as_bytes());
        }
    } else if eq(sub, "SET") {
        out.error("ERR CONFIG SET is not supported: helios-atlasd settings are read-only (set them in atlasd.yaml, HELIOS_ATLASD_* or flags)");
    } else if eq(sub, "RESETSTAT") && a.len() == 2 {
        out.ok();
    } else if eq(sub, "GET") {
        out.error("ERR wrong number of arguments for 'config|get' command");
    } else {
        out.error(&format!(
            "ERR unknown subcommand or wrong number of arguments for '{}'. Try CONFIG HELP.",
            String::from_utf8_lossy(sub)
        ));
    }
}
