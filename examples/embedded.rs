//! Quick start: embed ATLAS, write and read, use a TTL and an atomic batch, follow the
//! change feed, then close and reopen to show the data survived.
//!
//! Run: `cargo run --example embedded -- [DATA_DIR]` (default `./data`).

use helios::atlas::{Atlas, Expiry, FsyncPolicy, Options, Precondition, SetOptions, WriteBatch};
use std::time::Duration;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = std::env::args().nth(1).unwrap_or_else(|| "data".to_owned());
    let options = Options {
        fsync: FsyncPolicy::Always,
        ..Options::default()
    };
    let db = Atlas::open(&dir, options.clone())?;
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

    let db = Atlas::open(&dir, options)?;
    assert_eq!(db.get("kv:greeting").as_deref(), Some(&b"hello"[..]));
    println!(
        "reopened: {} keys, last seq {}",
        db.key_count(),
        db.last_seq()
    );
    db.close()?;
    Ok(())
}
