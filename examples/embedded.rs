//! Quick start: embed ATLAS, write and read, use a TTL and an atomic batch, follow the
//! change feed, then close and reopen to show the data survived.
//!
//! Run: `cargo run --example embedded -- [DATA_DIR]` (default: a new directory under the
//! system's temporary directory, removed at the end; never the gateway's `./data`).

use helios::atlas::{Atlas, Expiry, FsyncPolicy, Options, Precondition, SetOptions, WriteBatch};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

fn main() -> ExitCode {
    let (dir, temporary) = match std::env::args().nth(1) {
        Some(d) => (PathBuf::from(d), false),
        None => (
            std::env::temp_dir().join(format!("helios-embedded-example-{}", std::process::id())),
            true,
        ),
    };
    println!("data directory: {}", dir.display());
    let result = run(&dir);
    if temporary {
        let _ = std::fs::remove_dir_all(&dir);
    }
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // Display, not Debug: the error names the directory and what to do.
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(dir: &Path) -> Result<(), Box<dyn std::error::Error>> {
    let options = Options {
        fsync: FsyncPolicy::Always,
        ..Options::default()
    };
    let db = Atlas::open(dir, options.clone())?;
    let mut feed = db.subscribe("kv:", db.last_seq() + 1)?;

    db.set("kv:greeting", "hello")?;
    db.set_with(
        "kv:session",
        "abc",
        SetOptions {
            expiry: Expiry::InMs(60_000),
            ..Default::default()
        },
    )?;
    let visits = db.incr_by("kv:visits", 1)?;
    let mut batch = WriteBatch::new();
    batch
        .require("kv:greeting", Precondition::Present)
        .set("kv:a", "1", Expiry::Never)
        .set("kv:b", "2", Expiry::Never);
    db.write_batch(batch)?;

    println!("greeting = {:?}", db.get("kv:greeting"));
    println!("visits   = {visits}");
    println!("session ttl = {:?}", db.ttl("kv:session"));
    let page = db.scan("kv:", None, 10)?;
    println!(
        "scan kv: -> {:?}",
        page.entries.iter().map(|(k, _)| k).collect::<Vec<_>>()
    );
    while let Some(ev) = feed.next_timeout(Duration::from_millis(100))? {
        println!("feed: seq {} -> {} change(s)", ev.seq, ev.changes.len());
    }
    let snap = db.snapshot()?;
    println!("snapshot at seq {snap:?}; stats: {:?}", db.stats());
    db.close()?;
    drop(db);

    let db = Atlas::open(dir, options)?;
    assert_eq!(db.get("kv:greeting").as_deref(), Some(&b"hello"[..]));
    println!(
        "reopened: {} keys, last seq {}",
        db.key_count(),
        db.last_seq()
    );
    db.close()?;
    Ok(())
}
