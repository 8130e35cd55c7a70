//! INFO: the server, clients, memory, persistence, stats and keyspace sections (the
//! fields Redis clients and tools read, under Redis's names), from ATLAS's stats and the
//! server's counters.
//!
//! Invariant: reading ATLAS's stats may wait for the writer lock (held across an fsync
//! under `always`), so INFO runs in `block_in_place`.

use super::eq;
use crate::atlasd::resp::Out;
use crate::atlasd::{REDIS_VERSION, Shared};
use bytes::Bytes;
use std::sync::atomic::Ordering;

/// INFO [section ...].
pub(super) fn info(shared: &Shared, a: &[Bytes], out: &mut Out) {
    let all = a.len() == 1
        || a[1..]
            .iter()
            .any(|s| eq(s, "all") || eq(s, "everything") || eq(s, "default"));
    let want = |name: &str| all || a[1..].iter().any(|s| eq(s, name));
    let stats = shared.atlas.stats();
    let mut t = String::new();
    use std::fmt::Write as _;
    let uptime_s = shared.started.elapsed().as_secs();
    if want("server") {
        let _ = write!(
            t,
            "# Server\r\nredis_version:{}\r\nhelios_version:{}\r\nredis_mode:standalone\r\nos:{}\r\narch_bits:64\r\nprocess_id:{}\r\ntcp_port:{}\r\nuptime_in_seconds:{}\r\nuptime_in_days:{}\r\n\r\n",
            REDIS_VERSION,
            env!("CARGO_PKG_VERSION"),
            std::env::consts::OS,
            std::process::id(),
            shared.port,
            uptime_s,
            uptime_s / 86_400
        );
    }
    if want("clients") {
        let _ = write!(
            t,
            "# Clients\r\nconnected_clients:{}\r\nmaxclients:{}\r\nblocked_clients:0\r\n\r\n",
            shared.conns.open.load(Ordering::Relaxed),
            shared.cfg.clients_max
        );
    }
    if want("memory") {
        let _ = write!(
            t,
            "# Memory\r\nused_memory:{}\r\nused_memory_human:{:.2}M\r\nmaxmemory:{}\r\nmaxmemory_policy:noeviction\r\n\r\n",
            stats.memory_size,
            stats.memory_size as f64 / (1024.0 * 1024.0),
            stats.memory_limit_size.unwrap_or(0)
        );
    }
    if want("persistence") {
        let _ = write!(
            t,
            "# Persistence\r\nloading:0\r\naof_enabled:1\r\nappendfsync:{}\r\naof_rewrite_in_progress:{}\r\naof_last_write_status:{}\r\naof_current_size:{}\r\naof_segments:{}\r\naof_fsyncs:{}\r\naof_delayed_fsync:{}\r\naof_last_fsync_age_ms:{}\r\nrdb_bgsave_in_progress:{}\r\nrdb_last_save_time:{}\r\nrdb_saves:{}\r\natlas_last_seq:{}\r\natlas_snapshot_last_seq:{}\r\n\r\n",
            shared.cfg.appendfsync,
            u8::from(shared.bg_running.load(Ordering::Relaxed)),
            if stats.write_error.is_some() {
                "err"
            } else {
                "ok"
            },
            stats.aof_current_size,
            stats.aof_segment_count,
            stats.fsync_count,
            stats.fsync_lag_stall_count,
            stats.fsync_last_ok_age_ms,
            u8::from(shared.bg_running.load(Ordering::Relaxed)),
            shared.last_save_s.load(Ordering::Relaxed),
            stats.snapshots_written_count,
            stats.last_seq,
            stats.snapshot_last_seq.unwrap_or(0)
        );
    }
    if want("stats") {
        let _ = write!(
            t,
            "# Stats\r\ntotal_connections_received:{}\r\ntotal_commands_processed:{}\r\nrejected_connections:{}\r\nexpired_keys:{}\r\n\r\n",
            shared.conns.accepted_total.load(Ordering::Relaxed),
            shared.commands_total.load(Ordering::Relaxed),
            shared.conns.refused_total.load(Ordering::Relaxed),
            stats.expired_count
        );
    }
    if want("keyspace") {
        t.push_str("# Keyspace\r\n");
        if stats.key_count > 0 {
            let _ = write!(
                t,
                "db0:keys={},expires={},avg_ttl=0\r\n",
                stats.key_count, stats.expiring_count
            );
        }
        t.push_str("\r\n");
    }
    out.verbatim(&t);
}
