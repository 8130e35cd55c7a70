//! Scraping `/metrics` the way Prometheus does, and checking what comes back: the content
//! type of each format, the families a test names (with their TYPE), the shape of each
//! format (OpenMetrics ends with `# EOF`; the text format 0.0.4 names counters' metadata
//! with `_total` and has no `# EOF` or `_created`), and `promtool` when it is installed.

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioExecutor;
use std::io::Write;
use std::net::SocketAddr;
use std::process::{Command, Stdio};

/// What Prometheus sends when it prefers OpenMetrics.
pub const ACCEPT_OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0";

/// `GET http://addr/metrics` with `accept`: (status, content type, body).
pub async fn scrape(addr: SocketAddr, accept: Option<&str>) -> (u16, String, String) {
    let client = hyper_util::client::legacy::Client::builder(TokioExecutor::new())
        .build_http::<Empty<Bytes>>();
    let mut req = Request::get(format!("http://{addr}/metrics"));
    if let Some(a) = accept {
        req = req.header(http::header::ACCEPT, a);
    }
    let resp = client
        .request(req.body(Empty::new()).unwrap())
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let ct = resp
        .headers()
        .get(http::header::CONTENT_TYPE)
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, ct, String::from_utf8(body.to_vec()).unwrap())
}

/// A family a test expects: its name as declared in OpenMetrics (a counter without
/// `_total`) and its type.
pub type Want<'a> = (&'a str, &'a str);

/// Scrapes `addr` in both formats and checks each body: content type, `want`'s families
/// with their TYPE and at least one sample, the process families, the format's shape,
/// and promtool. Returns the text-format body.
pub async fn check_both(addr: SocketAddr, want: &[Want<'_>]) -> String {
    let mut want: Vec<Want<'_>> = want.to_vec();
    want.extend([
        ("process_cpu_seconds", "counter"),
        ("process_resident_memory_bytes", "gauge"),
        ("process_open_fds", "gauge"),
        ("process_start_time_seconds", "gauge"),
        ("helios_log_lines_dropped", "counter"),
    ]);
    let (st, ct, text) = scrape(addr, None).await;
    assert_eq!(st, 200);
    assert_eq!(ct, "text/plain; version=0.0.4; charset=utf-8");
    check_text_004(&text, &want);
    let (st, ct, om) = scrape(addr, Some(ACCEPT_OPENMETRICS)).await;
    assert_eq!(st, 200);
    assert_eq!(
        ct,
        "application/openmetrics-text; version=1.0.0; charset=utf-8"
    );
    check_openmetrics(&om, &want);
    promtool_text_004(&text);
    promtool_openmetrics(&om);
    text
}

fn sample_names<'a>(body: &'a str, family: &str, kind: &str) -> Vec<&'a str> {
    let suffixes: &[&str] = match kind {
        "counter" => &["_total"],
        "histogram" => &["_bucket", "_sum", "_count"],
        _ => &[""],
    };
    body.lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| l.split(['{', ' ']).next().unwrap_or(""))
        .filter(|n| suffixes.iter().any(|s| *n == format!("{family}{s}")))
        .collect()
}

/// The text format 0.0.4: counters' metadata under `_total`, no `# EOF`, no `_created`.
pub fn check_text_004(body: &str, want: &[Want<'_>]) {
    assert!(!body.contains("# EOF"), "{body}");
    assert!(!body.contains("# UNIT"), "{body}");
    assert!(!body.contains("_created"), "{body}");
    for (name, kind) in want {
        let meta = if *kind == "counter" {
            format!("{name}_total")
        } else {
            (*name).to_owned()
        };
        assert!(
            body.contains(&format!("\n# TYPE {meta} {kind}\n"))
                || body.starts_with(&format!("# TYPE {meta} {kind}\n")),
            "# TYPE {meta} {kind} not in:\n{body}"
        );
        assert!(
            body.contains(&format!("# HELP {meta} ")),
            "# HELP {meta} not in:\n{body}"
        );
        assert!(
            !sample_names(body, name, kind).is_empty(),
            "no sample of {name} in:\n{body}"
        );
    }
    // Every TYPE of a counter names a family ending in _total.
    for l in body.lines().filter(|l| l.ends_with(" counter")) {
        assert!(l.ends_with("_total counter"), "{l}");
    }
}

/// OpenMetrics 1.0: counters declared without `_total`, `# EOF` last.
pub fn check_openmetrics(body: &str, want: &[Want<'_>]) {
    assert!(body.ends_with("# EOF\n"), "{body}");
    assert_eq!(body.matches("# EOF").count(), 1, "{body}");
    for (name, kind) in want {
        assert!(
            body.contains(&format!("# TYPE {name} {kind}\n")),
            "# TYPE {name} {kind} not in:\n{body}"
        );
        assert!(
            !sample_names(body, name, kind).is_empty(),
            "no sample of {name} in:\n{body}"
        );
    }
    for l in body.lines().filter(|l| l.ends_with(" counter")) {
        assert!(!l.ends_with("_total counter"), "{l}");
    }
}

fn promtool_present() -> bool {
    let found = Command::new("promtool")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !found {
        eprintln!("note: promtool is not on PATH; skipping `promtool check metrics`");
    }
    found
}

/// Runs `promtool args...` with `input` on stdin: (success, stdout + stderr).
fn promtool(args: &[&str], input: &str) -> (bool, String) {
    let mut child = Command::new("promtool")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let mut said = String::from_utf8_lossy(&out.stdout).into_owned();
    said.push_str(&String::from_utf8_lossy(&out.stderr));
    (out.status.success(), said)
}

/// `promtool check metrics` on a text-format body: exit 0, no complaint.
pub fn promtool_text_004(body: &str) {
    if !promtool_present() {
        return;
    }
    let (ok, said) = promtool(&["check", "metrics"], body);
    assert!(ok && said.trim().is_empty(), "promtool: {said}\n{body}");
}

/// promtool on an OpenMetrics body. `promtool check metrics` (2.x) reads the text format
/// 0.0.4 only, where an OpenMetrics counter's `X_total` samples are a family apart from
/// the declared `X`: it complains of exactly that ("X_total no help text") and nothing
/// else is allowed. Then Prometheus's own OpenMetrics parser reads the body (promtool's
/// `tsdb create-blocks-from openmetrics`, which wants a timestamp on every sample).
pub fn promtool_openmetrics(body: &str) {
    if !promtool_present() {
        return;
    }
    let counters: Vec<&str> = body
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE ")?.strip_suffix(" counter"))
        .collect();
    let (_, said) = promtool(&["check", "metrics"], body);
    for complaint in said.lines().filter(|l| !l.trim().is_empty()) {
        let explained = counters
            .iter()
            .any(|c| complaint == format!("{c}_total no help text"));
        assert!(explained, "promtool: {complaint}\n{body}");
    }
    let stamped: String = body
        .lines()
        .map(|l| {
            if l.starts_with('#') {
                format!("{l}\n")
            } else {
                format!("{l} 1700000000\n")
            }
        })
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("scrape.om");
    std::fs::write(&file, stamped).unwrap();
    let (ok, said) = promtool(
        &[
            "tsdb",
            "create-blocks-from",
            "openmetrics",
            file.to_str().unwrap(),
            dir.path().join("blocks").to_str().unwrap(),
        ],
        "",
    );
    assert!(ok, "promtool's OpenMetrics parser: {said}\n{body}");
}
