//! The container files (issue 22): `Dockerfile`, `deploy/compose.yaml`,
//! `deploy/prometheus.yml` and Grafana's provisioning, checked by what can run here (no
//! container engine runs on this machine). The Dockerfile is a multi-stage build whose
//! runtime stage runs as a non-root user with a data volume, an exec-form entrypoint
//! (SIGTERM reaches the binary as PID 1) and a HEALTHCHECK; every binary, path and file it
//! and the compose file name exists in the build or the repository. Then each compose
//! service runs for real, as written: the image's environment and the service's
//! entrypoint, command and environment, with container paths mapped into a temporary
//! directory, `0.0.0.0` ports to free ports on 127.0.0.1 and service names to those
//! processes; each one's own HEALTHCHECK command must pass, and SIGTERM must stop it with
//! exit 0. Prometheus's targets are the services' metrics ports (and `promtool check
//! config` passes when promtool is installed). Everything on 127.0.0.1.

use serde_json::Value;
use std::collections::{BTreeMap, HashMap};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const ADMIN_PW: &str = "correct-horse-battery-staple-42";

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn bin(name: &str) -> &'static str {
    match name {
        "helios-gateway" => env!("CARGO_BIN_EXE_helios-gateway"),
        "helios-worker" => env!("CARGO_BIN_EXE_helios-worker"),
        "helios-proxy" => env!("CARGO_BIN_EXE_helios-proxy"),
        "helios-atlasd" => env!("CARGO_BIN_EXE_helios-atlasd"),
        "helios" => env!("CARGO_BIN_EXE_helios"),
        other => panic!("{other} is not a binary of the build"),
    }
}

/// The Dockerfile's instructions, continuation lines joined, comments dropped.
fn dockerfile() -> Vec<(String, String)> {
    let text = std::fs::read_to_string(repo().join("Dockerfile")).unwrap();
    let mut out = Vec::new();
    let mut cur = String::new();
    for line in text.lines() {
        let t = line.trim();
        if t.starts_with('#') || (t.is_empty() && cur.is_empty()) {
            continue;
        }
        match t.strip_suffix('\\') {
            Some(head) => {
                cur.push_str(head);
                cur.push(' ');
            }
            None => {
                cur.push_str(t);
                let (instr, args) = cur.split_once(' ').unwrap_or((cur.as_str(), ""));
                out.push((instr.to_uppercase(), args.trim().to_owned()));
                cur.clear();
            }
        }
    }
    out
}

fn json_array(args: &str) -> Vec<String> {
    serde_json::from_str(args).unwrap_or_else(|e| panic!("not exec form: {args}: {e}"))
}

/// The runtime stage's instructions (after the last FROM).
fn runtime_stage(all: &[(String, String)]) -> Vec<(String, String)> {
    let last = all.iter().rposition(|(i, _)| i == "FROM").unwrap();
    all[last..].to_vec()
}

fn image_env(stage: &[(String, String)]) -> Vec<(String, String)> {
    stage
        .iter()
        .filter(|(i, _)| i == "ENV")
        .flat_map(|(_, a)| {
            a.split_whitespace()
                .map(|kv| {
                    let (k, v) = kv.split_once('=').expect("ENV K=V");
                    (k.to_owned(), v.to_owned())
                })
                .collect::<Vec<_>>()
        })
        .collect()
}

#[test]
fn the_dockerfile_names_what_the_build_has() {
    let all = dockerfile();
    let froms: Vec<&String> = all
        .iter()
        .filter(|(i, _)| i == "FROM")
        .map(|(_, a)| a)
        .collect();
    assert_eq!(froms.len(), 2, "a build stage and a runtime stage");
    assert!(froms[0].ends_with(" AS build"), "{froms:?}");
    assert!(
        froms[1].contains("slim"),
        "a small runtime image: {froms:?}"
    );
    // Every binary the build copies out is one of helios-bins' binaries, all five are.
    let run = all
        .iter()
        .find(|(i, a)| i == "RUN" && a.contains("cargo build"))
        .expect("the build");
    assert!(
        run.1.contains("--release") && run.1.contains("--locked"),
        "{}",
        run.1
    );
    let copied: Vec<&str> = run
        .1
        .split_whitespace()
        .filter_map(|w| w.strip_prefix("target/release/"))
        .collect();
    let mut names = copied.clone();
    names.sort_unstable();
    assert_eq!(
        names,
        [
            "helios",
            "helios-atlasd",
            "helios-gateway",
            "helios-proxy",
            "helios-worker"
        ]
    );
    for n in copied {
        assert!(Path::new(bin(n)).exists(), "{n}");
    }
    let stage = runtime_stage(&all);
    let get = |instr: &str| -> Vec<String> {
        stage
            .iter()
            .filter(|(i, _)| i == instr)
            .map(|(_, a)| a.clone())
            .collect()
    };
    // A non-root user, a volume for the data, SIGTERM to the binary itself.
    let user = get("USER");
    assert_eq!(user.len(), 1);
    assert!(
        !user[0].starts_with("root") && !user[0].starts_with('0'),
        "{user:?}"
    );
    assert!(get("VOLUME")[0].contains("/var/lib/helios/data"));
    assert_eq!(get("STOPSIGNAL"), ["SIGTERM"]);
    let entry = json_array(&get("ENTRYPOINT")[0]);
    assert_eq!(entry, ["helios-gateway"], "exec form: the binary is PID 1");
    let health = get("HEALTHCHECK");
    let cmd = health[0].split_once("CMD ").expect("HEALTHCHECK CMD").1;
    let cmd = json_array(cmd);
    assert_eq!(cmd[..2], ["helios", "health"]);
    assert!(cmd[2].ends_with("/healthz"), "{cmd:?}");
    // What COPY takes from the repository exists.
    for (i, a) in &stage {
        if i == "COPY" && !a.starts_with("--from") {
            let src = a.split_whitespace().next().unwrap();
            assert!(repo().join(src).exists(), "COPY {src}");
        }
    }
    // The default command's config file is one of configs/ (COPY configs/ /etc/helios/).
    let cmd = json_array(&get("CMD")[0]);
    let file = cmd[1]
        .strip_prefix("/etc/helios/")
        .expect("a config in /etc/helios");
    assert!(repo().join("configs").join(file).exists(), "{file}");
    // .dockerignore keeps the build context small.
    let ignore = std::fs::read_to_string(repo().join(".dockerignore")).unwrap();
    assert!(ignore.lines().any(|l| l.trim() == "target"));
}

fn yaml(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap();
    serde_saphyr::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// A port that was free a moment ago.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// How container names map here: paths into `root`, service hosts and ports to
/// 127.0.0.1 and free ports, the compose variables to the test's values.
struct Mapping {
    root: PathBuf,
    ports: HashMap<u16, u16>,
    hosts: BTreeMap<String, String>,
}

impl Mapping {
    fn port(&mut self, p: u16) -> u16 {
        *self.ports.entry(p).or_insert_with(free_port)
    }

    fn text(&mut self, s: &str) -> String {
        let mut s = s
            .replace("/var/lib/helios", &self.root.display().to_string())
            .replace("/etc/helios", &repo().join("configs").display().to_string());
        // The compose file's required variables (`${NAME:?...}`): the test's secrets.
        if s.starts_with("${HELIOS_ADMIN_PASSWORD") {
            s = ADMIN_PW.to_owned();
        } else if s.starts_with("${") {
            s = "another-long-test-secret-7".to_owned();
        }
        for prefix in ["0.0.0.0:", "127.0.0.1:"] {
            if let Some(at) = s.find(prefix) {
                let rest = &s[at + prefix.len()..];
                let end = rest
                    .find(|c: char| !c.is_ascii_digit())
                    .unwrap_or(rest.len());
                if let Ok(p) = rest[..end].parse::<u16>() {
                    let mapped = self.port(p);
                    s = format!("{}127.0.0.1:{mapped}{}", &s[..at], &rest[end..]);
                    break;
                }
            }
        }
        // Service names last: their addresses are mapped already.
        for (host, addr) in &self.hosts {
            s = s.replace(&format!("http://{host}"), &format!("http://{addr}"));
        }
        s
    }
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| a.iter().map(|x| x.as_str().unwrap().to_owned()).collect())
        .unwrap_or_default()
}

struct Running {
    name: String,
    root: PathBuf,
    child: Child,
    health: Vec<String>,
}

fn stop(mut r: Running) {
    let st = Command::new("kill")
        .args(["-TERM", &r.child.id().to_string()])
        .status()
        .unwrap();
    assert!(st.success());
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(st) = r.child.try_wait().unwrap() {
            assert!(st.success(), "{}: SIGTERM gave {st}", r.name);
            return;
        }
        assert!(Instant::now() < deadline, "{} did not stop", r.name);
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Runs the HEALTHCHECK command of `r` until it passes (the server answers /healthz).
fn healthy(r: &mut Running) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(st) = r.child.try_wait().unwrap() {
            let log = std::fs::read_to_string(r.root.join("stderr.log")).unwrap_or_default();
            panic!("{} exited: {st}\n{log}", r.name);
        }
        let out = Command::new(bin(&r.health[0]))
            .args(&r.health[1..])
            .output()
            .unwrap();
        if out.status.success() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{}: {:?} never passed: {}",
            r.name,
            r.health,
            String::from_utf8_lossy(&out.stderr)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn compose_services_run_as_written() {
    let deploy = repo().join("deploy");
    let compose = yaml(&deploy.join("compose.yaml"));
    let services = compose["services"].as_object().expect("services");
    for name in [
        "gateway",
        "worker",
        "proxy",
        "atlasd",
        "prometheus",
        "grafana",
    ] {
        assert!(services.contains_key(name), "no {name} service");
    }
    // Published ports stay on the host's loopback (the example holds weak defaults).
    for (name, svc) in services {
        for p in strings(&svc["ports"]) {
            assert!(
                p.starts_with("127.0.0.1:"),
                "{name} publishes {p} beyond this host"
            );
        }
    }
    // Files mounted from the repository exist.
    for s in services.values() {
        for v in strings(&s["volumes"]) {
            if let Some(local) = v.strip_prefix("./") {
                let local = local.split(':').next().unwrap();
                assert!(deploy.join(local).exists(), "volume {v}");
            }
        }
    }
    assert_eq!(services["gateway"]["build"]["dockerfile"], "Dockerfile");
    assert!(repo().join("Dockerfile").exists());

    let stage = runtime_stage(&dockerfile());
    let env = image_env(&stage);
    let arg_of = |instr: &str| -> Vec<String> {
        let (_, a) = stage.iter().find(|(i, _)| i == instr).unwrap();
        json_array(a)
    };
    let (image_entry, image_cmd) = (arg_of("ENTRYPOINT"), arg_of("CMD"));
    let (_, hc) = stage.iter().find(|(i, _)| i == "HEALTHCHECK").unwrap();
    let image_health = json_array(hc.split_once("CMD ").unwrap().1);

    let dir = tempfile::tempdir().unwrap();
    let mut map = Mapping {
        root: dir.path().to_path_buf(),
        ports: HashMap::new(),
        hosts: BTreeMap::new(),
    };
    // Prometheus's targets: each service's metrics port.
    let prom = yaml(&deploy.join("prometheus.yml"));
    let mut targets: Vec<(String, u16)> = Vec::new();
    for job in prom["scrape_configs"].as_array().unwrap() {
        for t in strings(&job["static_configs"][0]["targets"]) {
            let (host, port) = t.split_once(':').unwrap();
            targets.push((host.to_owned(), port.parse().unwrap()));
        }
    }
    let mut running: Vec<Running> = Vec::new();
    // The gateway first: the others reach it by its service name.
    for name in ["gateway", "atlasd", "worker", "proxy"] {
        let s = &services[name];
        assert_eq!(s["image"], "helios:latest", "{name}");
        let entry = match strings(&s["entrypoint"]) {
            e if e.is_empty() => image_entry.clone(),
            e => e,
        };
        let cmd = match strings(&s["command"]) {
            c if c.is_empty() => image_cmd.clone(),
            c => c,
        };
        let health = match strings(&s["healthcheck"]["test"]) {
            h if h.is_empty() => image_health.clone(),
            h => h[1..].to_vec(),
        };
        let mut all_env: Vec<(String, String)> = env.clone();
        if let Some(e) = s["environment"].as_object() {
            for (k, v) in e {
                all_env.push((k.clone(), v.as_str().unwrap().to_owned()));
            }
        }
        // The metrics port Prometheus scrapes is the one the service serves, and the one
        // its health check asks.
        let text = format!("{cmd:?} {all_env:?}");
        let (_, port) = targets
            .iter()
            .find(|(h, _)| h == name)
            .unwrap_or_else(|| panic!("prometheus.yml does not scrape {name}"));
        assert!(
            text.contains(&port.to_string()),
            "{name} serves no metrics on {port}"
        );
        assert!(
            health.last().unwrap().contains(&format!(":{port}/")) || name == "gateway",
            "{name}: {health:?}"
        );
        // Run it, in a directory of its own (each container has its own volumes).
        map.root = dir.path().join(name);
        std::fs::create_dir_all(&map.root).unwrap();
        let mut args: Vec<String> = Vec::new();
        let mut bare_port = false;
        for a in entry[1..].iter().chain(&cmd) {
            if bare_port {
                let p: u16 = a.parse().unwrap();
                args.push(map.port(p).to_string());
                bare_port = false;
                continue;
            }
            bare_port = a == "--metrics-port" || a == "--port";
            args.push(map.text(a));
        }
        let health: Vec<String> = health.iter().map(|h| map.text(h)).collect();
        let mut c = Command::new(bin(&entry[0]));
        c.args(&args)
            .current_dir(&map.root)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(map.root.join("stderr.log")).unwrap());
        for (k, v) in &all_env {
            c.env(k, map.text(v));
        }
        let mut r = Running {
            name: name.to_owned(),
            root: map.root.clone(),
            child: c.spawn().unwrap(),
            health,
        };
        healthy(&mut r);
        if name == "gateway" {
            let api = map.text("0.0.0.0:8080");
            map.hosts.insert("gateway:8080".to_owned(), api);
        }
        running.push(r);
    }
    // A request through the proxy (its published port) reaches the gateway.
    let via_proxy = format!("http://127.0.0.1:{}/healthz", map.port(8081));
    let out = Command::new(bin("helios"))
        .args(["health", &via_proxy])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{via_proxy}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // `helios health` tells a refusal (1) from no answer (3).
    let code = |url: &str| {
        Command::new(bin("helios"))
            .args(["health", url])
            .output()
            .unwrap()
            .status
            .code()
    };
    assert_eq!(
        code(&format!("http://127.0.0.1:{}/nothing", map.port(8080))),
        Some(1)
    );
    assert_eq!(
        code(&format!("http://127.0.0.1:{}/healthz", free_port())),
        Some(3)
    );
    // Stop the dependents first, the gateway last.
    while let Some(r) = running.pop() {
        stop(r);
    }
    // The worker logged in to the gateway (its audit log says so).
    let audit = std::fs::read_to_string(dir.path().join("gateway/data/audit/audit.log")).unwrap();
    assert!(
        audit.lines().any(|l| l.contains("\"auth.login\"")
            && l.contains("\"success\"")
            && l.contains("\"username\":\"admin\"")),
        "{audit}"
    );

    // promtool checks the scrape configuration when it is installed.
    match Command::new("promtool")
        .args(["check", "config"])
        .arg(deploy.join("prometheus.yml"))
        .output()
    {
        Ok(out) => assert!(
            out.status.success(),
            "promtool check config: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
        Err(_) => eprintln!("promtool not installed: prometheus.yml not checked by it"),
    }
    // Grafana's provisioning: the datasource the dashboards name, and their folder.
    let ds = yaml(&deploy.join("grafana/provisioning/datasources/prometheus.yml"));
    assert_eq!(ds["datasources"][0]["uid"], "prometheus");
    let dash = yaml(&deploy.join("grafana/provisioning/dashboards/helios.yml"));
    let path = dash["providers"][0]["options"]["path"].as_str().unwrap();
    let mounted = strings(&services["grafana"]["volumes"])
        .iter()
        .any(|v| v.ends_with(&format!(":{path}:ro")));
    assert!(mounted, "the dashboards' folder {path} is mounted");
}
