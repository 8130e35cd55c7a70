//! A connector of your own, run by the worker runtime inside your program.
//!
//! `WordCountConnector` counts the words of each job's `text` and returns the count as the
//! job's result; a payload without `text` is a permanent error (the job goes to the
//! dead-letter list at once, no retry). It is registered under the name `wordcount`, the
//! protocol-style name a service map uses (`connector: wordcount`), next to the shipped
//! `http`, `command` and `noop`.
//!
//! The program opens ATLAS in a directory, enqueues a few jobs, and runs a `Worker` over
//! the queue in the same process (`EmbeddedSource`: no gateway, no HTTP hop) until every
//! job is finished, then drains it and prints each job's outcome.
//!
//! Run: `cargo run --example custom_connector -- [DATA_DIR]` (default: a temporary
//! directory).

use helios::atlas::{Atlas, FsyncPolicy, Options};
use helios::core::SystemClock;
use helios::queue::registry::Registry;
use helios::queue::{EnqueueRequest, JobState, Queue, QueueConfig};
use helios_bins::app::Context;
use helios_bins::worker::config::{ServiceSpec, WorkerSettings, build_services};
use helios_bins::worker::{
    BoxFuture, Connector, ConnectorError, Connectors, EmbeddedSource, ErrorClass, JobInput,
    Outcome, Worker,
};
use serde_json::json;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

/// Counts the words of the payload's `text`.
struct WordCountConnector;

impl Connector for WordCountConnector {
    fn call<'a>(&'a self, job: &'a JobInput) -> BoxFuture<'a, Outcome> {
        Box::pin(async move {
            let text = job.payload["text"].as_str().ok_or_else(|| {
                ConnectorError::new(ErrorClass::Permanent, "the payload has no \"text\"")
            })?;
            Ok(Some(json!({ "words": text.split_whitespace().count() })))
        })
    }
}

fn main() -> ExitCode {
    let (dir, temporary) = match std::env::args().nth(1) {
        Some(d) => (PathBuf::from(d), false),
        None => (
            std::env::temp_dir().join(format!("helios-connector-example-{}", std::process::id())),
            true,
        ),
    };
    let result = run(&dir);
    if temporary {
        let _ = std::fs::remove_dir_all(&dir);
    }
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(dir: &Path) -> Result<(), Box<dyn std::error::Error>> {
    let atlas = Atlas::open(
        dir,
        Options {
            fsync: FsyncPolicy::Everysec,
            ..Options::default()
        },
    )?;
    let queue = Arc::new(Queue::open(atlas.clone(), QueueConfig::default())?);
    let registry = Arc::new(Registry::new(atlas.clone(), Arc::new(SystemClock)));
    let mut ids = Vec::new();
    for text in ["the quick brown fox", "jumps over", "the lazy dog"] {
        ids.push(
            queue
                .enqueue(EnqueueRequest::new("texts", json!({ "text": text })))?
                .id,
        );
    }
    ids.push(
        queue
            .enqueue(EnqueueRequest::new("texts", json!({ "pages": 3 })))?
            .id,
    );

    // The service map, as a YAML file would give it: queue `texts` -> `wordcount`.
    let mut connectors = Connectors::default();
    connectors.register("wordcount", |_spec| Ok(Arc::new(WordCountConnector) as _));
    let mut settings = WorkerSettings {
        id: "example".to_owned(),
        ..WorkerSettings::default()
    };
    settings
        .services
        .insert("texts".to_owned(), ServiceSpec::new("wordcount", ""));
    let services = build_services(&settings, "workers", &connectors)?;

    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async {
        let ready = Arc::new(tokio::sync::Notify::new());
        let source = EmbeddedSource::new(queue.clone(), registry, ready);
        let ctx = Context::system();
        let worker = Worker::new(
            Arc::new(source),
            services,
            settings.runtime_settings("example", "localhost", ctx.random_u64()),
            ctx,
        );
        let q = queue.clone();
        let all_finished = {
            let ids = ids.clone();
            async move {
                while !ids
                    .iter()
                    .all(|id| q.get(*id).is_some_and(|j| j.state.is_finished()))
                {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
        };
        worker.run(all_finished, std::future::pending()).await;
    });

    for id in &ids {
        let job = queue.get(*id).ok_or("a job vanished")?;
        println!(
            "{id} {:?} result={} error={}",
            job.state,
            job.result.unwrap_or_default(),
            job.last_error.unwrap_or_default()
        );
    }
    let states: Vec<JobState> = ids
        .iter()
        .filter_map(|id| queue.get(*id).map(|j| j.state))
        .collect();
    if states
        != [
            JobState::Done,
            JobState::Done,
            JobState::Done,
            JobState::Failed,
        ]
    {
        return Err(format!("unexpected outcomes: {states:?}").into());
    }
    atlas.close()?;
    Ok(())
}
