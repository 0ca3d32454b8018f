//! Test harness: a scriptable origin server and the real `rempart` binary,
//! both on ephemeral loopback ports, cleaned up on drop.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpListener as StdListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// A free loopback port, never the same twice in one test binary.
///
/// Ports come from 20000–32767, below Linux's ephemeral range (32768+), so
/// an outgoing connection can never take one between this check and the
/// proxy's bind; the kernel's own `:0` choice was seen to hand the same port
/// out twice in a row. Each test binary starts at its own offset (from the
/// process id) and walks up, skipping ports something already holds.
pub fn free_port() -> u16 {
    const FIRST: u32 = 20_000;
    const COUNT: u32 = 12_768;
    static NEXT: AtomicUsize = AtomicUsize::new(usize::MAX);
    let start = (std::process::id().wrapping_mul(2_654_435_761) % COUNT) as usize;
    let _ = NEXT.compare_exchange(usize::MAX, start, Ordering::SeqCst, Ordering::SeqCst);
    for _ in 0..COUNT {
        let n = NEXT.fetch_add(1, Ordering::SeqCst);
        let port = (FIRST + (n as u32 % COUNT)) as u16;
        if StdListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free loopback port in {FIRST}..{}", FIRST + COUNT);
}

pub fn free_addr() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], free_port()))
}

/// An origin that echoes what it receives as JSON.
///
/// - `/healthz`: 200 `ok`
/// - `/slow?ms=N`: waits N ms, then echoes
/// - `/status/NNN`: answers that status
/// - anything else: 200 with `{"origin", "seq", "method", "path", "headers", "body"}`,
///   where `seq` counts the requests this origin answered.
///
/// Query parameters shape the answer: `ms=N` waits, `h=name:value` (percent
/// encoded, repeatable) adds a response header, `size=N` pads the body to N bytes.
pub struct TestOrigin {
    pub addr: SocketAddr,
    pub name: String,
    hits: Arc<AtomicUsize>,
    paths: Arc<std::sync::Mutex<Vec<String>>>,
    task: JoinHandle<()>,
}

impl TestOrigin {
    pub async fn start(name: &str) -> TestOrigin {
        Self::start_on(name, SocketAddr::from(([127, 0, 0, 1], 0))).await
    }

    pub async fn start_on(name: &str, addr: SocketAddr) -> TestOrigin {
        let listener = TcpListener::bind(addr).await.expect("bind origin");
        let addr = listener.local_addr().expect("origin addr");
        let hits = Arc::new(AtomicUsize::new(0));
        let paths = Arc::new(std::sync::Mutex::new(Vec::new()));
        let (name_owned, hits_task, paths_task) = (name.to_string(), hits.clone(), paths.clone());
        let task = tokio::spawn(async move {
            let mut conns = tokio::task::JoinSet::new();
            while let Ok((stream, _)) = listener.accept().await {
                let (name, hits, paths) =
                    (name_owned.clone(), hits_task.clone(), paths_task.clone());
                conns.spawn(serve_connection(stream, name, hits, paths));
            }
        });
        TestOrigin {
            addr,
            name: name.to_string(),
            hits,
            paths,
            task,
        }
    }

    /// Requests answered so far (health checks excluded).
    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }

    /// Requests answered for paths that start with `prefix`.
    pub fn hits_for(&self, prefix: &str) -> usize {
        self.paths
            .lock()
            .unwrap()
            .iter()
            .filter(|p| p.starts_with(prefix))
            .count()
    }

    /// Stops listening and drops every open connection.
    pub fn stop(self) {
        self.task.abort();
    }
}

impl Drop for TestOrigin {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve_connection(
    mut stream: TcpStream,
    name: String,
    hits: Arc<AtomicUsize>,
    paths: Arc<std::sync::Mutex<Vec<String>>>,
) {
    let mut buf = Vec::new();
    loop {
        let Some((method, path, headers, body)) = read_request(&mut stream, &mut buf).await else {
            return;
        };
        let query: Vec<(String, String)> = path
            .split_once('?')
            .map(|(_, q)| q)
            .unwrap_or("")
            .split('&')
            .filter_map(|p| p.split_once('='))
            .map(|(k, v)| (k.to_string(), percent_decode(v)))
            .collect();
        let param = |name: &str| {
            query
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
        };
        let mut extra_headers = String::new();
        let (status, payload) = if path == "/healthz" {
            (200, "ok".to_string())
        } else {
            let seq = hits.fetch_add(1, Ordering::SeqCst) + 1;
            paths.lock().unwrap().push(path.clone());
            if let Some(ms) = param("ms").and_then(|v| v.parse::<u64>().ok()) {
                tokio::time::sleep(Duration::from_millis(ms)).await;
            }
            let status = path
                .strip_prefix("/status/")
                .and_then(|s| s.get(..3))
                .and_then(|s| s.parse::<u16>().ok())
                .unwrap_or(200);
            // Like WordPress: a failed login answers 200 (with an error), a good one 302.
            let status = if method == "POST" && path.starts_with("/wp-login.php") {
                if String::from_utf8_lossy(&body).contains("pwd=right") {
                    302
                } else {
                    200
                }
            } else {
                status
            };
            for (k, v) in &query {
                if let ("h", Some((hn, hv))) = (k.as_str(), v.split_once(':')) {
                    extra_headers.push_str(&format!("{hn}: {}\r\n", hv.trim()));
                }
            }
            let mut echo = serde_json::json!({
                "origin": name,
                "seq": seq,
                "method": method,
                "path": path,
                "headers": headers,
                "body": String::from_utf8_lossy(&body),
            })
            .to_string();
            if let Some(size) = param("size").and_then(|v| v.parse::<usize>().ok()) {
                // Pad inside a JSON field so the body stays valid JSON.
                let pad = size.saturating_sub(echo.len() + 9);
                echo.insert_str(echo.len() - 1, &format!(",\"pad\":\"{}\"", "x".repeat(pad)));
            }
            (status, echo)
        };
        let response = format!(
            "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nx-origin: {name}\r\nkeep-alive: timeout=5\r\n{extra_headers}\r\n{payload}",
            payload.len()
        );
        if stream.write_all(response.as_bytes()).await.is_err() {
            return;
        }
    }
}

/// Decodes `%XX` escapes and `+`; invalid escapes stay as they are.
fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = text
            .get(i + 1..i + 3)
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(b)) => {
                out.push(b);
                i += 3;
            }
            (b'+', _) => {
                out.push(b' ');
                i += 1;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

type Parsed = (String, String, BTreeMap<String, String>, Vec<u8>);

/// Reads one HTTP/1.1 request (content-length or chunked body).
async fn read_request(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Option<Parsed> {
    loop {
        let mut headers = [httparse::EMPTY_HEADER; 128];
        let mut req = httparse::Request::new(&mut headers);
        if let Ok(httparse::Status::Complete(head_len)) = req.parse(buf) {
            let method = req.method?.to_string();
            let path = req.path?.to_string();
            let mut map = BTreeMap::new();
            for h in req.headers.iter() {
                let v = String::from_utf8_lossy(h.value).into_owned();
                map.entry(h.name.to_ascii_lowercase())
                    .and_modify(|old: &mut String| {
                        old.push_str(", ");
                        old.push_str(&v)
                    })
                    .or_insert(v);
            }
            buf.drain(..head_len);
            let body = if let Some(len) = map
                .get("content-length")
                .and_then(|v| v.parse::<usize>().ok())
            {
                while buf.len() < len {
                    read_more(stream, buf).await?;
                }
                buf.drain(..len).collect()
            } else if map
                .get("transfer-encoding")
                .is_some_and(|v| v.contains("chunked"))
            {
                read_chunked(stream, buf).await?
            } else {
                Vec::new()
            };
            return Some((method, path, map, body));
        }
        read_more(stream, buf).await?;
    }
}

async fn read_more(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Option<()> {
    let mut chunk = [0u8; 16384];
    let n = stream.read(&mut chunk).await.ok()?;
    if n == 0 {
        return None;
    }
    buf.extend_from_slice(&chunk[..n]);
    Some(())
}

async fn read_chunked(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Option<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let line_end = loop {
            if let Some(i) = buf.windows(2).position(|w| w == b"\r\n") {
                break i;
            }
            read_more(stream, buf).await?;
        };
        let size_text = String::from_utf8_lossy(&buf[..line_end]).to_string();
        let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
        buf.drain(..line_end + 2);
        while buf.len() < size + 2 {
            read_more(stream, buf).await?;
        }
        body.extend(buf.drain(..size));
        buf.drain(..2);
        if size == 0 {
            return Some(body);
        }
    }
}

/// The real `rempart run`, as a child process.
pub struct Rempart {
    pub child: Child,
    pub listen: SocketAddr,
    pub admin: SocketAddr,
    pub dir: tempfile::TempDir,
    pub policy: PathBuf,
}

pub fn binary() -> &'static str {
    env!("CARGO_BIN_EXE_rempart")
}

/// A policy with the given listeners and origins, plus extra YAML blocks.
pub fn policy(
    listen: SocketAddr,
    admin: SocketAddr,
    origins: &[SocketAddr],
    extra: &str,
) -> String {
    let servers = origins
        .iter()
        .map(|a| format!("\"{a}\""))
        .collect::<Vec<_>>()
        .join(", ");
    let upstream = if extra.contains("\nupstream:") || extra.starts_with("upstream:") {
        String::new()
    } else {
        format!(
            "upstream:\n  servers: [{servers}]\n  health_check:\n    path: /healthz\n    interval: 200ms\n    timeout: 500ms\n    healthy_threshold: 1\n    unhealthy_threshold: 1\n"
        )
    };
    format!(
        "server:\n  listen: [\"{listen}\"]\n  admin_listen: \"{admin}\"\n  threads: 2\n  grace_period: 1s\n  shutdown_timeout: 5s\n{upstream}{extra}"
    )
}

impl Rempart {
    /// Starts `rempart run` with this policy text and waits until its admin API answers.
    pub async fn start(policy_text: &str, listen: SocketAddr, admin: SocketAddr) -> Rempart {
        Self::start_with(policy_text, listen, admin, &[], &[]).await
    }

    /// Like `start`, with extra command-line flags and environment variables.
    pub async fn start_with(
        policy_text: &str,
        listen: SocketAddr,
        admin: SocketAddr,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> Rempart {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("policy.yaml"), policy_text).expect("write policy");
        Self::launch(dir, listen, admin, args, env).await
    }

    /// Like `start` but in an existing folder (certificates next to the policy).
    pub async fn start_in(
        dir: tempfile::TempDir,
        policy_text: &str,
        listen: SocketAddr,
        admin: SocketAddr,
    ) -> Rempart {
        std::fs::write(dir.path().join("policy.yaml"), policy_text).expect("write policy");
        Self::launch(dir, listen, admin, &[], &[]).await
    }

    /// Runs `dir/policy.yaml` as it is, with extra command-line flags.
    pub async fn launch(
        dir: tempfile::TempDir,
        listen: SocketAddr,
        admin: SocketAddr,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> Rempart {
        let policy = dir.path().join("policy.yaml");
        let child = spawn(&policy, dir.path(), args, env);
        let mut r = Rempart {
            child,
            listen,
            admin,
            dir,
            policy,
        };
        r.wait_ready().await;
        r
    }

    /// The Prometheus text of `/metrics`, once the proxy has finished logging
    /// the requests it answered (a client can have its answer a moment before
    /// the proxy counts it): two scrapes 50 ms apart with the same totals.
    pub async fn metrics(&self) -> String {
        let scrape = || async {
            client()
                .get(self.admin_url("/metrics"))
                .send()
                .await
                .expect("metrics")
                .text()
                .await
                .expect("metrics text")
        };
        let answered = |text: &str| -> f64 {
            text.lines()
                .filter(|l| l.starts_with("rempart_proxy_requests_total{"))
                .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                .sum()
        };
        let mut last = scrape().await;
        for _ in 0..40 {
            tokio::time::sleep(Duration::from_millis(50)).await;
            let next = scrape().await;
            if answered(&next) == answered(&last) {
                return next;
            }
            last = next;
        }
        last
    }

    async fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        let url = format!("http://{}/health", self.admin);
        let client = client();
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("rempart exited early with {status}:\n{}", self.log());
            }
            if let Ok(r) = client.get(&url).send().await {
                if r.status() == 200 && TcpStream::connect(self.listen).await.is_ok() {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("rempart did not become ready:\n{}", self.log());
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.listen)
    }

    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.admin)
    }

    /// Everything the process has logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("rempart.log")).unwrap_or_default()
    }

    pub fn signal(&self, sig: &str) {
        let status = Command::new("kill")
            .args([&format!("-{sig}"), &self.child.id().to_string()])
            .status()
            .expect("kill");
        assert!(status.success());
    }

    /// Replaces the policy file (for reload tests).
    pub fn write_policy(&self, text: &str) {
        std::fs::write(&self.policy, text).expect("write policy");
    }

    /// Waits for the process to exit by itself, at most `limit`.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }
}

fn spawn(policy: &Path, dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Child {
    let log = std::fs::File::create(dir.join("rempart.log")).expect("log file");
    let err = log.try_clone().expect("log clone");
    let mut cmd = Command::new(binary());
    cmd.arg("run").arg("--config").arg(policy).args(args);
    cmd.env_remove("REMPART_ADMIN_TOKEN");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.stdout(Stdio::from(log))
        .stderr(Stdio::from(err))
        .spawn()
        .expect("spawn rempart")
}

impl Drop for Rempart {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An HTTP client that never uses a proxy and never hangs.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client")
}

/// A client whose connections come from another loopback address (127.0.0.N).
pub fn client_from(ip: [u8; 4]) -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .local_address(std::net::IpAddr::from(ip))
        .build()
        .expect("client")
}

/// Sends raw bytes and returns whatever comes back before the server closes
/// or `limit` passes.
pub async fn raw_exchange(addr: SocketAddr, bytes: &[u8], limit: Duration) -> String {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    stream.write_all(bytes).await.expect("write");
    let mut out = Vec::new();
    let _ = tokio::time::timeout(limit, async {
        let mut chunk = [0u8; 4096];
        loop {
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    out.extend_from_slice(&chunk[..n]);
                    if out.windows(4).any(|w| w == b"\r\n\r\n") && out.len() > 12 {
                        // A head has arrived; give the body a moment, then stop.
                        let _ = tokio::time::timeout(
                            Duration::from_millis(200),
                            stream.read(&mut chunk),
                        )
                        .await
                        .map(|r| {
                            if let Ok(n) = r {
                                out.extend_from_slice(&chunk[..n])
                            }
                        });
                        break;
                    }
                }
            }
        }
    })
    .await;
    String::from_utf8_lossy(&out).into_owned()
}

/// Polls `check` until it holds or `limit` passes.
pub async fn eventually<F, Fut>(limit: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if check().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

/// A top-level block of a YAML file, as written (for reusing a shipped
/// preset's block in a test policy).
pub fn preset_block(preset: &str, key: &str) -> String {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("policies")
        .join(preset);
    let text = std::fs::read_to_string(path).expect("preset");
    let mut out = String::new();
    let mut inside = false;
    for line in text.lines() {
        if line.starts_with(&format!("{key}:")) {
            inside = true;
        } else if inside && !(line.starts_with(' ') || line.starts_with('#') || line.is_empty()) {
            break;
        }
        if inside {
            out.push_str(line);
            out.push('\n');
        }
    }
    assert!(!out.is_empty(), "no `{key}` block in {preset}");
    out
}

/// The usual scene: a test origin named `shop` and Rempart in front of it,
/// with the policy's extra blocks.
pub async fn shop_behind_rempart(extra: &str) -> (TestOrigin, Rempart) {
    let origin = TestOrigin::start("shop").await;
    let (listen, admin) = (free_addr(), free_addr());
    let proxy = Rempart::start(&policy(listen, admin, &[origin.addr], extra), listen, admin).await;
    (origin, proxy)
}

impl Rempart {
    /// Like `start`, for policies that take long to load (the whole OWASP
    /// CRS, in a debug build): waits up to `limit` instead of 20 s for the
    /// admin API and the listener.
    pub async fn start_within(
        policy_text: &str,
        listen: SocketAddr,
        admin: SocketAddr,
        limit: Duration,
    ) -> Rempart {
        let dir = tempfile::tempdir().expect("tempdir");
        let policy = dir.path().join("policy.yaml");
        std::fs::write(&policy, policy_text).expect("write policy");
        let child = spawn(&policy, dir.path(), &[], &[]);
        let mut r = Rempart {
            child,
            listen,
            admin,
            dir,
            policy,
        };
        let deadline = Instant::now() + limit;
        let url = format!("http://{admin}/health");
        let client = client();
        while Instant::now() < deadline {
            if let Ok(Some(status)) = r.child.try_wait() {
                panic!("rempart exited early with {status}:\n{}", r.log());
            }
            if let Ok(answer) = client.get(&url).send().await {
                if answer.status() == 200 && TcpStream::connect(listen).await.is_ok() {
                    return r;
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!(
            "rempart did not become ready within {limit:?}:\n{}",
            r.log()
        );
    }
}

// ---------------------------------------------------------------------------
// The OWASP CRS and its WordPress plugin, for tests that load them
// ---------------------------------------------------------------------------

pub const CRS_MISSING: &str = "OWASP CRS not found: set REMPART_CRS_DIR to a CRS v4 release folder (the one holding rules/), or put one at ../shared/crs next to this repository";
pub const PLUGINS_MISSING: &str = "CRS WordPress plugin not found: set REMPART_CRS_PLUGINS_DIR to a folder holding wordpress-rule-exclusions/, or put one at ../shared/crs-plugins next to this repository";

/// `$VAR`, or `../shared/<name>` next to the repository.
pub fn shared_dir(var: &str, name: &str) -> Option<PathBuf> {
    std::env::var_os(var).map(PathBuf::from).or_else(|| {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .map(|p| p.join("shared").join(name))
    })
}

/// The CRS folder (panics, saying how to get one, when it is missing).
pub fn crs_path() -> PathBuf {
    shared_dir("REMPART_CRS_DIR", "crs")
        .filter(|dir| dir.join("rules").is_dir())
        .unwrap_or_else(|| panic!("{CRS_MISSING}"))
}

/// The folder holding `wordpress-rule-exclusions/`.
pub fn plugins_path() -> PathBuf {
    shared_dir("REMPART_CRS_PLUGINS_DIR", "crs-plugins")
        .filter(|dir| dir.join("wordpress-rule-exclusions/plugins").is_dir())
        .unwrap_or_else(|| panic!("{PLUGINS_MISSING}"))
}

/// The environment a preset reads its CRS paths from.
pub fn crs_env() -> Vec<(String, String)> {
    vec![
        ("REMPART_CRS_DIR".into(), crs_path().display().to_string()),
        (
            "REMPART_CRS_PLUGINS_DIR".into(),
            plugins_path().display().to_string(),
        ),
    ]
}

// ---------------------------------------------------------------------------
// An origin that records the exact bytes it receives
// ---------------------------------------------------------------------------

/// One request as the raw origin parsed it off the wire.
#[derive(Debug, Clone)]
pub struct RawRequest {
    pub connection: usize,
    pub head: String,
    pub body: Vec<u8>,
}

#[derive(Default)]
struct RawLog {
    requests: Vec<RawRequest>,
    /// Bytes that could not be read as a request (a desync).
    garbage: Vec<(usize, Vec<u8>)>,
    connections: usize,
}

/// An origin that parses requests strictly (Content-Length or chunked) off
/// each connection, answers each with 200 and its sequence number, and
/// records every request and every byte it could not read as one.
pub struct RawOrigin {
    pub addr: SocketAddr,
    log: Arc<std::sync::Mutex<RawLog>>,
    task: JoinHandle<()>,
}

impl RawOrigin {
    pub async fn start() -> RawOrigin {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let log = Arc::new(std::sync::Mutex::new(RawLog::default()));
        let shared = log.clone();
        let task = tokio::spawn(async move {
            let mut conns = tokio::task::JoinSet::new();
            while let Ok((stream, _)) = listener.accept().await {
                let id = {
                    let mut l = shared.lock().unwrap();
                    l.connections += 1;
                    l.connections
                };
                conns.spawn(raw_connection(stream, id, shared.clone()));
            }
        });
        RawOrigin { addr, log, task }
    }

    /// Requests read so far (health checks excluded).
    pub fn requests(&self) -> Vec<RawRequest> {
        self.log
            .lock()
            .unwrap()
            .requests
            .iter()
            .filter(|r| !r.head.starts_with("GET /healthz"))
            .cloned()
            .collect()
    }

    /// Bytes that were not a well-framed request.
    pub fn garbage(&self) -> Vec<(usize, Vec<u8>)> {
        self.log.lock().unwrap().garbage.clone()
    }
}

impl Drop for RawOrigin {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn raw_connection(mut stream: TcpStream, id: usize, log: Arc<std::sync::Mutex<RawLog>>) {
    let mut buf = Vec::new();
    loop {
        // Read until a head parses; anything that cannot start a request is garbage.
        let head_len = loop {
            let mut headers = [httparse::EMPTY_HEADER; 64];
            let mut req = httparse::Request::new(&mut headers);
            match req.parse(&buf) {
                Ok(httparse::Status::Complete(n)) => break n,
                Ok(httparse::Status::Partial) => {}
                Err(_) => {
                    log.lock().unwrap().garbage.push((id, buf.clone()));
                    let _ = stream
                        .write_all(
                            b"HTTP/1.1 400 Bad\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
                        )
                        .await;
                    return;
                }
            }
            if read_more(&mut stream, &mut buf).await.is_none() {
                if !buf.is_empty() {
                    log.lock().unwrap().garbage.push((id, buf.clone()));
                }
                return;
            }
        };
        let head = String::from_utf8_lossy(&buf[..head_len]).into_owned();
        let lower = head.to_ascii_lowercase();
        buf.drain(..head_len);
        let length = lower
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .and_then(|v| v.trim().parse::<usize>().ok());
        let body = if lower.contains("transfer-encoding: chunked") {
            match read_chunked(&mut stream, &mut buf).await {
                Some(b) => b,
                None => return,
            }
        } else if let Some(len) = length {
            while buf.len() < len {
                if read_more(&mut stream, &mut buf).await.is_none() {
                    return;
                }
            }
            buf.drain(..len).collect()
        } else {
            Vec::new()
        };
        let seq = {
            let mut l = log.lock().unwrap();
            l.requests.push(RawRequest {
                connection: id,
                head: head.clone(),
                body: body.clone(),
            });
            l.requests.len()
        };
        let payload = format!(
            "{{\"seq\":{seq},\"connection\":{id},\"body_len\":{}}}",
            body.len()
        );
        let response = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncache-control: no-store\r\ncontent-length: {}\r\n\r\n{payload}",
            payload.len()
        );
        if stream.write_all(response.as_bytes()).await.is_err() {
            return;
        }
    }
}

/// Sends raw requests one after the other on one connection and returns
/// each response's status line and body (Content-Length framed).
pub async fn raw_requests(addr: SocketAddr, requests: &[Vec<u8>]) -> Vec<(String, String)> {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    let mut out = Vec::new();
    let mut buf = Vec::new();
    for req in requests {
        stream.write_all(req).await.expect("write");
        let result = tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                let mut headers = [httparse::EMPTY_HEADER; 64];
                let mut resp = httparse::Response::new(&mut headers);
                if let Ok(httparse::Status::Complete(n)) = resp.parse(&buf) {
                    let status = format!("{}", resp.code.unwrap_or(0));
                    let len = resp
                        .headers
                        .iter()
                        .find(|h| h.name.eq_ignore_ascii_case("content-length"))
                        .and_then(|h| std::str::from_utf8(h.value).ok()?.parse::<usize>().ok())
                        .unwrap_or(0);
                    while buf.len() < n + len {
                        read_more(&mut stream, &mut buf).await?;
                    }
                    let body = String::from_utf8_lossy(&buf[n..n + len]).into_owned();
                    buf.drain(..n + len);
                    return Some((status, body));
                }
                read_more(&mut stream, &mut buf).await?;
            }
        })
        .await;
        match result {
            Ok(Some(r)) => out.push(r),
            _ => break,
        }
    }
    out
}

// ---------------------------------------------------------------------------
// Headless Chromium, driven by the scripts of tests/browser
// ---------------------------------------------------------------------------

/// What a browser script printed, and whether it succeeded.
pub struct BrowserRun {
    pub ok: bool,
    pub stdout: String,
    pub stderr: String,
}

/// Runs `node tests/browser/<script> <args>` against Debian's Chromium
/// (`$CHROMIUM` overrides it), after checking that both are installed.
pub async fn browser_script(script: &str, args: &[&str]) -> BrowserRun {
    let browser_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser");
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    assert!(
        Path::new(&chromium).exists(),
        "Chromium is missing ({chromium}): run scripts/setup.sh --for-tests"
    );
    assert!(
        browser_dir.join("node_modules/playwright-core").is_dir(),
        "playwright-core is missing: npm ci in tests/browser"
    );
    let mut cmd = Command::new("node");
    cmd.arg(script)
        .args(args)
        .current_dir(browser_dir)
        .env("CHROMIUM", chromium);
    let out = tokio::task::spawn_blocking(move || cmd.output())
        .await
        .expect("browser task")
        .expect("node is needed to drive Chromium");
    BrowserRun {
        ok: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

impl Rempart {
    /// The bans in force, from `GET /bans`.
    pub async fn bans(&self) -> Vec<serde_json::Value> {
        let doc: serde_json::Value = client()
            .get(self.admin_url("/bans"))
            .send()
            .await
            .expect("bans")
            .json()
            .await
            .expect("bans json");
        doc["bans"].as_array().cloned().unwrap_or_default()
    }
}
