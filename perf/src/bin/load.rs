//! Load runner: the same `POST /jobs` route (1 KiB JSON body) served by axum and actix-web in
//! four modes, driven over HTTP on loopback, side by side.
//!
//! ```sh
//! cargo build --release -p qstash-receiver-perf
//! ./target/release/load --seconds 10 --runs 3     # everything, medians of 3 runs (≈ 5 min)
//! ./target/release/load --seconds 5 --runs 1 --frameworks axum --modes bare,verified
//! ./target/release/load --flood                   # 200 × 20 MiB uploads, peak RSS
//! python3 perf/scripts/load_chart.py                            # README table + docs/load.svg
//! ```
//!
//! Modes: `bare` (the route alone), `verified` (behind the QStash layer / middleware),
//! `memory` (verified + in-memory dedup), `redis` (verified + Redis dedup on a `redis-server`
//! this runner starts on a free loopback port; skipped when `redis-server` is not installed).
//!
//! Placement on a 2-core machine: each server runs in a child process (this binary, `serve`
//! sub-command) with one worker thread, pinned to CPU 0 with `taskset`; the client (this
//! process, one thread) and `redis-server` are pinned to CPU 1. The client is a minimal
//! HTTP/1.1 keep-alive client on raw sockets, `--connections` of them (default 64), and signs
//! every request as QStash does (new message id, new token) with the body hash and the keyed
//! HMAC state computed once, so that it stays cheaper than the server. Each (framework, mode)
//! gets a warm-up (`--warmup`, default 2 s) then a measured window; `--runs` rounds (default 3)
//! of every mode; medians are reported, and each ratio is the median of the per-round ratios
//! to the same framework's `bare`.
//!
//! Printed per window: requests/s, p50/p99 latency, the server's CPU time per request (from
//! `/proc`, all threads), the client's CPU share (near 100 % would mean the client, not the
//! server, is the bottleneck) and, for `redis`, the Redis round trips per delivery (`EVALSHA`
//! calls, counted between the end of the warm-up and the end of the window, every request
//! finished) and every command Redis ran (those inside the Lua scripts included) per delivery.
//! Results are written as JSON to `target/load/results.json`.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::{URL_SAFE, URL_SAFE_NO_PAD};
use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Frame;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use qstash_receiver::dedup::{Dedup, DedupStore, MemoryStore, RedisStore};
use qstash_receiver::test_utils::Signer;
use qstash_receiver::{Receiver, SigningKeys, UrlPolicy, Verifier};
use serde::{Deserialize, Serialize};

const CURRENT_KEY: &str = "sig_loadCurrentKey0123456789ab";
const NEXT_KEY: &str = "sig_loadNextKey0123456789abcde";
/// The URL every delivery is signed for (checked exactly by the receivers).
const URL: &str = "http://load.test/jobs";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
enum Framework {
    Axum,
    Actix,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
enum Mode {
    Bare,
    Verified,
    Memory,
    Redis,
}

impl Framework {
    fn parse(s: &str) -> Framework {
        match s {
            "axum" => Framework::Axum,
            "actix" | "actix-web" => Framework::Actix,
            _ => panic!("unknown framework {s:?} (axum, actix)"),
        }
    }
    fn name(self) -> &'static str {
        match self {
            Framework::Axum => "axum",
            Framework::Actix => "actix",
        }
    }
}

impl Mode {
    fn parse(s: &str) -> Mode {
        match s {
            "bare" => Mode::Bare,
            "verified" => Mode::Verified,
            "memory" => Mode::Memory,
            "redis" => Mode::Redis,
            _ => panic!("unknown mode {s:?} (bare, verified, memory, redis)"),
        }
    }
    fn name(self) -> &'static str {
        match self {
            Mode::Bare => "bare",
            Mode::Verified => "verified",
            Mode::Memory => "memory",
            Mode::Redis => "redis",
        }
    }
}

#[derive(Deserialize)]
struct Job {
    task: String,
}

// ---------------------------------------------------------------------------------------------
// Server side (child process)

fn receiver(mode: Mode, redis: Option<RedisStore>) -> Receiver {
    let keys = SigningKeys::new(CURRENT_KEY, NEXT_KEY).unwrap();
    let receiver = Receiver::new(Verifier::new(keys)).url_policy(UrlPolicy::exact(URL));
    match mode {
        Mode::Bare | Mode::Verified => receiver,
        Mode::Memory => receiver.dedup(Dedup::new(Arc::new(MemoryStore::new()))),
        Mode::Redis => {
            let store: Arc<dyn DedupStore> = Arc::new(redis.expect("redis store"));
            receiver.dedup(Dedup::new(store))
        }
    }
}

fn serve(framework: Framework, mode: Mode, redis_url: Option<String>) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let redis = match (mode, redis_url) {
        (Mode::Redis, Some(url)) => Some(rt.block_on(RedisStore::connect(&url)).unwrap()),
        _ => None,
    };
    let receiver = receiver(mode, redis);
    match framework {
        Framework::Axum => rt.block_on(serve_axum(mode, receiver)),
        Framework::Actix => {
            drop(rt);
            serve_actix(mode, receiver);
        }
    }
}

async fn serve_axum(mode: Mode, receiver: Receiver) {
    use axum::routing::post;
    use axum::{Json, Router};
    use qstash_receiver::tower::QStashLayer;

    async fn jobs(Json(job): Json<Job>) -> Json<serde_json::Value> {
        Json(serde_json::json!({ "task": job.task }))
    }
    let mut app = Router::new().route("/jobs", post(jobs));
    if mode != Mode::Bare {
        app = app.route_layer(QStashLayer::new(receiver));
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    println!("PORT {}", listener.local_addr().unwrap().port());
    axum::serve(listener, app).await.unwrap();
}

fn serve_actix(mode: Mode, receiver: Receiver) {
    use actix_web::{App, HttpResponse, HttpServer, middleware::Condition, web};
    use qstash_receiver::actix::QStashMiddleware;

    async fn jobs(job: web::Json<Job>) -> HttpResponse {
        HttpResponse::Ok().json(serde_json::json!({ "task": job.task }))
    }
    actix_web::rt::System::new().block_on(async move {
        let verified = mode != Mode::Bare;
        let server = HttpServer::new(move || {
            App::new().service(
                web::resource("/jobs")
                    .wrap(Condition::new(
                        verified,
                        QStashMiddleware::new(receiver.clone()),
                    ))
                    .route(web::post().to(jobs)),
            )
        })
        .workers(1)
        .bind("127.0.0.1:0")
        .unwrap();
        println!("PORT {}", server.addrs()[0].port());
        server.run().await.unwrap();
    });
}

// ---------------------------------------------------------------------------------------------
// Client side

struct Server {
    child: Child,
    port: u16,
}

impl Server {
    fn start(framework: Framework, mode: Mode, redis_url: Option<&str>, pin: bool) -> Server {
        let exe = std::env::current_exe().unwrap();
        let mut cmd = if pin {
            let mut c = Command::new("taskset");
            c.arg("-c").arg("0").arg(exe);
            c
        } else {
            Command::new(exe)
        };
        cmd.arg("serve").arg(framework.name()).arg(mode.name());
        if let Some(url) = redis_url {
            cmd.arg(url);
        }
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let port = line
            .trim()
            .strip_prefix("PORT ")
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("server did not report its port: {line:?}"));
        Server { child, port }
    }

    /// Peak resident set size (VmHWM), in KiB.
    fn peak_rss_kib(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).ok()?;
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A `redis-server` on a free loopback port, killed on drop.
struct RedisServer {
    child: Child,
    url: String,
}

impl RedisServer {
    fn start(pin: bool) -> Option<RedisServer> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .ok()?
            .local_addr()
            .ok()?
            .port();
        let mut cmd = if pin {
            let mut c = Command::new("taskset");
            c.args(["-c", "1", "redis-server"]);
            c
        } else {
            Command::new("redis-server")
        };
        let child = cmd
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .spawn()
            .ok()?;
        let url = format!("redis://127.0.0.1:{port}/");
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return Some(RedisServer { child, url });
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }
}

/// Counters of the runner's redis-server, read over one connection of its own.
struct RedisStats {
    connection: redis::aio::MultiplexedConnection,
}

/// `INFO stats commandstats`, the parts the runner needs.
#[derive(Debug, Clone, Copy, Default)]
struct RedisCounters {
    /// `total_commands_processed`: counts the commands run inside Lua scripts too.
    commands: u64,
    /// Calls of the commands a client sends on its own round trip here: `EVALSHA`, `EVAL`
    /// (the fallback when a script is not loaded), `SET` is left out because the scripts call it.
    round_trips: u64,
    /// `INFO` calls (the runner's own).
    info: u64,
}

impl RedisCounters {
    /// What the server did between `before` and `self`, the runner's `INFO` taken out.
    fn since(&self, before: &RedisCounters) -> RedisCounters {
        let info = self.info - before.info;
        RedisCounters {
            commands: (self.commands - before.commands).saturating_sub(info),
            round_trips: self.round_trips - before.round_trips,
            info,
        }
    }
}

impl RedisStats {
    async fn connect(url: &str) -> RedisStats {
        let client = redis::Client::open(url).unwrap();
        let connection = client.get_multiplexed_async_connection().await.unwrap();
        RedisStats { connection }
    }

    async fn read(&self) -> RedisCounters {
        let mut con = self.connection.clone();
        let info: String = redis::cmd("INFO")
            .arg("stats")
            .arg("commandstats")
            .query_async(&mut con)
            .await
            .unwrap();
        let calls = |name: &str| -> u64 {
            info.lines()
                .find_map(|l| l.strip_prefix(&format!("cmdstat_{name}:calls=")))
                .and_then(|v| v.split(',').next())
                .and_then(|v| v.parse().ok())
                .unwrap_or(0)
        };
        RedisCounters {
            commands: info
                .lines()
                .find_map(|l| l.strip_prefix("total_commands_processed:"))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0),
            round_trips: calls("evalsha") + calls("eval"),
            info: calls("info"),
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One measured window of one (framework, mode).
#[derive(Debug, Clone, Serialize)]
struct Sample {
    requests: u64,
    errors: u64,
    requests_per_sec: f64,
    p50_us: u64,
    p99_us: u64,
    /// Server CPU time (user + system, every thread) per answered request.
    server_cpu_us_per_request: Option<f64>,
    /// Share of one CPU the client (this process) used during the window.
    client_cpu_share: Option<f64>,
    /// Redis round trips (`EVALSHA`/`EVAL`/`SET` sent by the server) per delivery.
    redis_round_trips_per_delivery: Option<f64>,
    /// Every command Redis executed (those inside the Lua scripts included) per delivery.
    redis_commands_per_delivery: Option<f64>,
}

/// The median of the runs of one (framework, mode).
#[derive(Debug, Clone, Serialize)]
struct Row {
    framework: Framework,
    mode: Mode,
    runs: usize,
    /// Median over the runs.
    requests_per_sec: f64,
    /// Of the median run.
    p50_us: u64,
    /// Of the median run.
    p99_us: u64,
    errors: u64,
    /// Median over the runs of (this mode / bare of the same framework, same run).
    ratio_to_bare: Option<f64>,
    /// The bar the ratio must meet.
    bar: Option<f64>,
    server_cpu_us_per_request: Option<f64>,
    client_cpu_share: Option<f64>,
    redis_round_trips_per_delivery: Option<f64>,
    redis_commands_per_delivery: Option<f64>,
    samples: Vec<Sample>,
}

fn body_1k() -> Bytes {
    let head = r#"{"task":"load","pad":""#;
    let tail = r#""}"#;
    let pad = "x".repeat(1024 - head.len() - tail.len());
    Bytes::from(format!("{head}{pad}{tail}"))
}

type HttpClient = Client<HttpConnector, Full<Bytes>>;

fn client(connections: usize) -> HttpClient {
    Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(connections)
        .build_http()
}

/// One delivery through hyper's client (used by the flood's health check).
async fn send(
    client: &HttpClient,
    signer: &Signer,
    port: u16,
    body: &Bytes,
) -> Result<u16, String> {
    let delivery = signer.delivery(URL, body);
    let mut req = http::Request::post(format!("http://127.0.0.1:{port}/jobs"))
        .header("content-type", "application/json");
    for (name, value) in &delivery.headers {
        req = req.header(name.as_str(), value.as_str());
    }
    let req = req
        .body(Full::new(body.clone()))
        .map_err(|e| e.to_string())?;
    let res = client.request(req).await.map_err(|e| e.to_string())?;
    let status = res.status().as_u16();
    res.into_body().collect().await.map_err(|e| e.to_string())?;
    Ok(status)
}

/// The load client: a minimal HTTP/1.1 keep-alive client on a raw `TcpStream`, so that the
/// client spends as little CPU per request as possible (the server must be the bottleneck).
/// Each request is a freshly signed delivery (new message id, new token) of the same body.
mod raw {
    use std::io::Write as _;

    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    use tokio::net::TcpStream;

    /// Writes the start of a `POST /jobs` of `body_len` bytes into `out` (the delivery headers,
    /// a blank line and the body follow).
    pub(crate) fn request_head(out: &mut Vec<u8>, port: u16, body_len: usize) {
        out.clear();
        let _ = write!(
            out,
            "POST /jobs HTTP/1.1\r\nhost: 127.0.0.1:{port}\r\ncontent-type: application/json\r\ncontent-length: {body_len}\r\n"
        );
    }

    /// Sends `out` and reads one response (its head and a `Content-Length` body): the status,
    /// and whether the connection can be reused.
    pub(crate) async fn exchange(
        stream: &mut TcpStream,
        out: &[u8],
        buf: &mut [u8],
    ) -> std::io::Result<(u16, bool)> {
        stream.write_all(out).await?;
        let mut filled = 0;
        loop {
            let n = stream
                .read(
                    buf.get_mut(filled..)
                        .ok_or_else(|| bad("response too large"))?,
                )
                .await?;
            if n == 0 {
                return Err(bad("connection closed"));
            }
            filled += n;
            let Some(head_end) = buf[..filled].windows(4).position(|w| w == b"\r\n\r\n") else {
                continue;
            };
            let head = std::str::from_utf8(&buf[..head_end]).map_err(|_| bad("head not utf-8"))?;
            let status: u16 = head
                .get(9..12)
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| bad("status line"))?;
            let mut length = None;
            let mut keep_alive = true;
            for line in head.split("\r\n").skip(1) {
                let (name, value) = line.split_once(':').ok_or_else(|| bad("header"))?;
                if name.eq_ignore_ascii_case("content-length") {
                    length = value.trim().parse::<usize>().ok();
                } else if name.eq_ignore_ascii_case("connection")
                    && value.trim().eq_ignore_ascii_case("close")
                {
                    keep_alive = false;
                }
            }
            let total = head_end + 4 + length.ok_or_else(|| bad("no content-length"))?;
            while filled < total {
                let n = stream
                    .read(
                        buf.get_mut(filled..)
                            .ok_or_else(|| bad("response too large"))?,
                    )
                    .await?;
                if n == 0 {
                    return Err(bad("connection closed"));
                }
                filled += n;
            }
            if filled != total {
                return Err(bad("bytes after the response"));
            }
            return Ok((status, keep_alive));
        }
    }

    fn bad(what: &'static str) -> std::io::Error {
        std::io::Error::new(std::io::ErrorKind::InvalidData, what)
    }
}

/// Signs deliveries exactly as QStash does (HS256 over the standard header and Go-ordered
/// claims, padded base64url body hash), but cheaply: the body hash and the keyed HMAC state are
/// computed once, ids come from a counter. Keeps the client's CPU per request low, so that the
/// server, not the client, is what the load measures. Tokens live 300 s: one signer per window.
#[derive(Clone)]
struct FastSigner {
    mac: Hmac<Sha256>,
    body_hash: Arc<str>,
    /// Unique per window: message ids never repeat across windows (Redis outlives a server).
    prefix: Arc<str>,
    counter: Arc<AtomicU64>,
    iat: i64,
}

impl FastSigner {
    fn new(key: &str, body: &[u8]) -> FastSigner {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
        FastSigner {
            mac: <Hmac<Sha256> as KeyInit>::new_from_slice(key.as_bytes()).unwrap(),
            body_hash: URL_SAFE.encode(Sha256::digest(body)).into(),
            prefix: format!("{:x}", now.as_nanos()).into(),
            counter: Arc::new(AtomicU64::new(0)),
            iat: i64::try_from(now.as_secs()).unwrap(),
        }
    }

    /// Appends the delivery headers of a new message (each `name: value\r\n`) to `out`.
    fn write_headers(&self, out: &mut Vec<u8>, claims: &mut String, token: &mut String) {
        use std::fmt::Write as _;
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        claims.clear();
        let _ = write!(
            claims,
            r#"{{"aud":"","body":"{}","exp":{},"iat":{},"iss":"Upstash","jti":"jwt_{}_{n}","nbf":-62135596800,"sub":"{URL}"}}"#,
            self.body_hash,
            self.iat + 300,
            self.iat,
            self.prefix,
        );
        token.clear();
        token.push_str(JWT_HEADER);
        token.push('.');
        URL_SAFE_NO_PAD.encode_string(claims.as_bytes(), token);
        let mut mac = self.mac.clone();
        mac.update(token.as_bytes());
        let tag = mac.finalize().into_bytes();
        token.push('.');
        URL_SAFE_NO_PAD.encode_string(tag, token);
        out.extend_from_slice(b"upstash-signature: ");
        out.extend_from_slice(token.as_bytes());
        let _ = std::io::Write::write_fmt(
            out,
            format_args!(
                "\r\nupstash-message-id: msg_{}_{n}\r\nupstash-retried: 0\r\nupstash-region: US-EAST-1\r\nupstash-caller-ip: 127.0.0.1\r\nuser-agent: Upstash-QStash\r\n",
                self.prefix
            ),
        );
    }
}

/// `{"alg":"HS256","typ":"JWT"}`, base64url: the header QStash sends.
const JWT_HEADER: &str = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9";

/// One connection's loop until `stop`: latencies of the 200s, and the count of anything else.
async fn connection(
    port: u16,
    signer: FastSigner,
    body: Bytes,
    stop: Arc<AtomicBool>,
    keep_latencies: bool,
) -> (Vec<u32>, u64, u64) {
    let mut stream: Option<tokio::net::TcpStream> = None;
    let mut out = Vec::with_capacity(4096);
    let mut buf = vec![0u8; 64 * 1024];
    let (mut claims, mut token) = (String::with_capacity(512), String::with_capacity(512));
    let mut latencies = Vec::with_capacity(if keep_latencies { 64 * 1024 } else { 0 });
    let (mut ok, mut errors) = (0u64, 0u64);
    while !stop.load(Ordering::Relaxed) {
        raw::request_head(&mut out, port, body.len());
        signer.write_headers(&mut out, &mut claims, &mut token);
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(&body);
        let start = Instant::now();
        let mut s = match stream.take() {
            Some(s) => s,
            None => match tokio::net::TcpStream::connect(("127.0.0.1", port)).await {
                Ok(s) => {
                    let _ = s.set_nodelay(true);
                    s
                }
                Err(_) => {
                    errors += 1;
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
        };
        match raw::exchange(&mut s, &out, &mut buf).await {
            Ok((status, keep_alive)) => {
                if status == 200 {
                    ok += 1;
                    if keep_latencies {
                        latencies.push(start.elapsed().as_micros().min(u32::MAX as u128) as u32);
                    }
                } else {
                    errors += 1;
                }
                if keep_alive {
                    stream = Some(s);
                }
            }
            Err(_) => errors += 1,
        }
    }
    (latencies, ok, errors)
}

/// Runs `connections` connections for `duration`; every request started is finished before
/// this returns (so counts on the server side match).
async fn window(
    port: u16,
    connections: usize,
    duration: Duration,
    keep_latencies: bool,
) -> (u64, u64, Vec<u32>) {
    let body = body_1k();
    let signer = FastSigner::new(CURRENT_KEY, &body);
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for _ in 0..connections {
        let (signer, body, stop) = (signer.clone(), body.clone(), stop.clone());
        tasks.push(tokio::spawn(connection(
            port,
            signer,
            body,
            stop,
            keep_latencies,
        )));
    }
    tokio::time::sleep(duration).await;
    stop.store(true, Ordering::Relaxed);
    let (mut ok, mut errors, mut all) = (0, 0, Vec::new());
    for t in tasks {
        let (latencies, o, e) = t.await.unwrap();
        ok += o;
        errors += e;
        all.extend(latencies);
    }
    all.sort_unstable();
    (ok, errors, all)
}

fn percentile(sorted: &[u32], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    u64::from(sorted[idx.min(sorted.len() - 1)])
}

/// CPU time (user + system, all threads) of process `pid` so far, in microseconds.
fn cpu_time_us(pid: &str) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces): state is field 3, utime 14, stime 15.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) * 1e6 / clock_ticks())
}

fn clock_ticks() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}

/// Pins every thread of this process (the client) to CPU 1, before the runtime starts.
fn pin_self(cpu: &str) -> bool {
    Command::new("taskset")
        .args(["-a", "-p", "-c", cpu, &std::process::id().to_string()])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn can_pin() -> bool {
    std::thread::available_parallelism().map_or(1, |n| n.get()) >= 2
        && Command::new("taskset")
            .arg("--version")
            .stdout(Stdio::null())
            .status()
            .is_ok()
}

struct Args {
    seconds: u64,
    warmup: u64,
    runs: usize,
    connections: usize,
    frameworks: Vec<Framework>,
    modes: Vec<Mode>,
    flood: bool,
}

fn parse_args(mut args: impl Iterator<Item = String>) -> Args {
    let mut a = Args {
        seconds: 10,
        warmup: 2,
        runs: 3,
        connections: 64,
        frameworks: vec![Framework::Axum, Framework::Actix],
        modes: vec![Mode::Bare, Mode::Verified, Mode::Memory, Mode::Redis],
        flood: false,
    };
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--seconds" => {
                a.seconds = args
                    .next()
                    .and_then(|v| v.parse().ok())
                    .expect("--seconds N")
            }
            "--warmup" => {
                a.warmup = args
                    .next()
                    .and_then(|v| v.parse().ok())
                    .expect("--warmup N")
            }
            "--runs" => {
                a.runs = args
                    .next()
                    .and_then(|v| v.parse().ok())
                    .filter(|&n| n > 0)
                    .expect("--runs N (at least 1)")
            }
            "--connections" => {
                a.connections = args
                    .next()
                    .and_then(|v| v.parse().ok())
                    .expect("--connections N")
            }
            "--frameworks" => {
                a.frameworks = args
                    .next()
                    .expect("--frameworks a,b")
                    .split(',')
                    .map(Framework::parse)
                    .collect()
            }
            "--modes" => {
                a.modes = args
                    .next()
                    .expect("--modes a,b")
                    .split(',')
                    .map(Mode::parse)
                    .collect()
            }
            "--flood" => a.flood = true,
            "--bench" => {} // passed by `cargo bench`-like runners
            other => panic!("unknown argument {other:?}"),
        }
    }
    a
}

fn bar(mode: Mode) -> Option<f64> {
    match mode {
        Mode::Bare => None,
        Mode::Verified => Some(0.85),
        Mode::Memory => Some(0.80),
        Mode::Redis => Some(0.50),
    }
}

fn main() {
    let mut args = std::env::args().skip(1).peekable();
    if args.peek().map(String::as_str) == Some("serve") {
        args.next();
        let framework = Framework::parse(&args.next().expect("framework"));
        let mode = Mode::parse(&args.next().expect("mode"));
        serve(framework, mode, args.next());
        return;
    }
    let args = parse_args(args);
    // Server on CPU 0 (one worker thread); this client and redis-server on CPU 1.
    let pinned = can_pin() && pin_self("1");
    println!(
        "placement: {}",
        if pinned {
            "server pinned to CPU 0; client (1 thread) and redis-server pinned to CPU 1"
        } else {
            "not pinned (fewer than 2 CPUs or no taskset)"
        }
    );
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    if args.flood {
        rt.block_on(flood(&args, pinned));
        return;
    }
    let redis = if args.modes.contains(&Mode::Redis) {
        let server = RedisServer::start(pinned);
        if server.is_none() {
            eprintln!("redis-server not found or did not start: skipping the redis mode");
        }
        server
    } else {
        None
    };
    let redis_stats = redis
        .as_ref()
        .map(|r| rt.block_on(RedisStats::connect(&r.url)));
    let me = std::process::id().to_string();
    // samples[(framework, mode)][run]
    let mut samples: Vec<((Framework, Mode), Vec<Sample>)> = Vec::new();
    for run in 0..args.runs {
        println!("run {}/{}", run + 1, args.runs);
        for &framework in &args.frameworks {
            for &mode in &args.modes {
                if mode == Mode::Redis && redis.is_none() {
                    continue;
                }
                let server = Server::start(
                    framework,
                    mode,
                    redis.as_ref().map(|r| r.url.as_str()),
                    pinned,
                );
                let server_pid = server.child.id().to_string();
                // Warm-up: connections open, caches and allocator warm; every request finished.
                rt.block_on(window(
                    server.port,
                    args.connections,
                    Duration::from_secs(args.warmup),
                    false,
                ));
                let before = match (&redis_stats, mode) {
                    (Some(r), Mode::Redis) => Some(rt.block_on(r.read())),
                    _ => None,
                };
                let (server_cpu0, client_cpu0) = (cpu_time_us(&server_pid), cpu_time_us(&me));
                let started = Instant::now();
                let (ok, errors, latencies) = rt.block_on(window(
                    server.port,
                    args.connections,
                    Duration::from_secs(args.seconds),
                    true,
                ));
                let elapsed = started.elapsed().as_secs_f64();
                let (server_cpu1, client_cpu1) = (cpu_time_us(&server_pid), cpu_time_us(&me));
                let after = match (&redis_stats, mode) {
                    (Some(r), Mode::Redis) => Some(rt.block_on(r.read())),
                    _ => None,
                };
                drop(server);
                let deliveries = (ok + errors) as f64;
                let (round_trips, commands) = match (before, after) {
                    (Some(b), Some(a)) if deliveries > 0.0 => {
                        let d = a.since(&b);
                        (
                            Some(d.round_trips as f64 / deliveries),
                            Some(d.commands as f64 / deliveries),
                        )
                    }
                    _ => (None, None),
                };
                let sample = Sample {
                    requests: ok,
                    errors,
                    requests_per_sec: ok as f64 / elapsed,
                    p50_us: percentile(&latencies, 0.50),
                    p99_us: percentile(&latencies, 0.99),
                    server_cpu_us_per_request: server_cpu0
                        .zip(server_cpu1)
                        .filter(|_| ok > 0)
                        .map(|(a, b)| (b - a) / ok as f64),
                    client_cpu_share: client_cpu0
                        .zip(client_cpu1)
                        .map(|(a, b)| (b - a) / (elapsed * 1e6)),
                    redis_round_trips_per_delivery: round_trips,
                    redis_commands_per_delivery: commands,
                };
                print_sample(framework, mode, &sample);
                match samples.iter_mut().find(|(k, _)| *k == (framework, mode)) {
                    Some((_, v)) => v.push(sample),
                    None => samples.push(((framework, mode), vec![sample])),
                }
            }
        }
    }
    let rows: Vec<Row> = samples
        .iter()
        .map(|((framework, mode), runs)| {
            let bare = samples
                .iter()
                .find(|(k, _)| *k == (*framework, Mode::Bare))
                .map(|(_, v)| v);
            aggregate(*framework, *mode, runs, bare)
        })
        .collect();
    println!();
    println!(
        "medians of {} run(s) of {} s (warm-up {} s), {} connections:",
        args.runs, args.seconds, args.warmup, args.connections
    );
    for row in &rows {
        print_row(row);
    }
    let _ = std::fs::create_dir_all("target/load");
    let json = serde_json::json!({
        "seconds": args.seconds,
        "warmup": args.warmup,
        "runs": args.runs,
        "connections": args.connections,
        "pinned": pinned,
        "rows": rows,
    });
    if std::fs::write(
        "target/load/results.json",
        serde_json::to_string_pretty(&json).unwrap(),
    )
    .is_ok()
    {
        println!("results written to target/load/results.json");
    }
}

fn median(mut values: Vec<f64>) -> Option<f64> {
    values.retain(|v| v.is_finite());
    if values.is_empty() {
        return None;
    }
    values.sort_by(f64::total_cmp);
    let n = values.len();
    Some(if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    })
}

fn aggregate(framework: Framework, mode: Mode, runs: &[Sample], bare: Option<&Vec<Sample>>) -> Row {
    let rps = median(runs.iter().map(|s| s.requests_per_sec).collect()).unwrap_or(0.0);
    // The run closest to the median throughput gives the latencies.
    let typical = runs
        .iter()
        .min_by(|a, b| {
            (a.requests_per_sec - rps)
                .abs()
                .total_cmp(&(b.requests_per_sec - rps).abs())
        })
        .cloned();
    let ratio = match (mode, bare) {
        (Mode::Bare, _) | (_, None) => None,
        (_, Some(bare)) => median(
            runs.iter()
                .zip(bare)
                .map(|(s, b)| s.requests_per_sec / b.requests_per_sec)
                .collect(),
        ),
    };
    let opt_median = |f: fn(&Sample) -> Option<f64>| median(runs.iter().filter_map(f).collect());
    Row {
        framework,
        mode,
        runs: runs.len(),
        requests_per_sec: rps,
        p50_us: typical.as_ref().map_or(0, |s| s.p50_us),
        p99_us: typical.as_ref().map_or(0, |s| s.p99_us),
        errors: runs.iter().map(|s| s.errors).sum(),
        ratio_to_bare: ratio,
        bar: bar(mode),
        server_cpu_us_per_request: opt_median(|s| s.server_cpu_us_per_request),
        client_cpu_share: opt_median(|s| s.client_cpu_share),
        redis_round_trips_per_delivery: opt_median(|s| s.redis_round_trips_per_delivery),
        redis_commands_per_delivery: opt_median(|s| s.redis_commands_per_delivery),
        samples: runs.to_vec(),
    }
}

fn redis_text(round_trips: Option<f64>, commands: Option<f64>) -> String {
    match (round_trips, commands) {
        (Some(r), Some(c)) => {
            format!("  redis round trips/delivery {r:.3} (commands incl. scripts {c:.2})")
        }
        _ => String::new(),
    }
}

fn print_sample(framework: Framework, mode: Mode, s: &Sample) {
    println!(
        "  {:<6} {:<9} {:>8.0} req/s  p50 {:>6} µs  p99 {:>6} µs  errors {:>4}  server {} µs CPU/req  client CPU {}{}",
        framework.name(),
        mode.name(),
        s.requests_per_sec,
        s.p50_us,
        s.p99_us,
        s.errors,
        s.server_cpu_us_per_request
            .map_or("?".to_owned(), |x| format!("{x:.1}")),
        s.client_cpu_share
            .map_or("?".to_owned(), |x| format!("{:.0}%", x * 100.0)),
        redis_text(
            s.redis_round_trips_per_delivery,
            s.redis_commands_per_delivery
        ),
    );
}

fn print_row(r: &Row) {
    let verdict = match (r.ratio_to_bare, r.bar) {
        (Some(x), Some(b)) if x >= b => format!(" (bar ≥ {b:.2}: met)"),
        (Some(_), Some(b)) => format!(" (bar ≥ {b:.2}: MISSED)"),
        _ => String::new(),
    };
    println!(
        "{:<6} {:<9} {:>8.0} req/s  p50 {:>6} µs  p99 {:>6} µs  errors {:>4}  server {} µs CPU/req  ratio {}{}{}",
        r.framework.name(),
        r.mode.name(),
        r.requests_per_sec,
        r.p50_us,
        r.p99_us,
        r.errors,
        r.server_cpu_us_per_request
            .map_or("?".to_owned(), |x| format!("{x:.1}")),
        r.ratio_to_bare
            .map_or("  -  ".to_owned(), |x| format!("{x:.2}×")),
        verdict,
        redis_text(
            r.redis_round_trips_per_delivery,
            r.redis_commands_per_delivery
        ),
    );
}

/// 200 concurrent 20 MiB uploads (half announced with `Content-Length`, half chunked), each a
/// validly signed delivery, against the default limit: all must be answered 413; reports the
/// server's peak RSS.
async fn flood(args: &Args, pinned: bool) {
    const UPLOADS: usize = 200;
    const SIZE: usize = 20 * 1024 * 1024;
    const CHUNK: usize = 64 * 1024;
    let mut results = Vec::new();
    for &framework in &args.frameworks {
        let server = Server::start(framework, Mode::Verified, None, pinned);
        let port = server.port;
        let signer = Signer::new(CURRENT_KEY);
        let chunk = Bytes::from(vec![b'a'; CHUNK]);
        let mut tasks = Vec::new();
        for i in 0..UPLOADS {
            let (signer, chunk) = (signer.clone(), chunk.clone());
            tasks.push(tokio::spawn(async move {
                // The token is for a body we never finish sending: the limit must trip first.
                let delivery = signer.delivery(URL, b"");
                let stream = futures_util::stream::iter(
                    (0..SIZE / CHUNK)
                        .map(move |_| Ok::<_, std::io::Error>(Frame::data(chunk.clone()))),
                );
                let mut req = http::Request::post(format!("http://127.0.0.1:{port}/jobs"));
                if i % 2 == 0 {
                    req = req.header("content-length", SIZE.to_string());
                }
                for (name, value) in &delivery.headers {
                    req = req.header(name.as_str(), value.as_str());
                }
                let req = req.body(StreamBody::new(stream)).unwrap();
                let client = Client::builder(TokioExecutor::new()).build_http();
                let status = match client.request(req).await {
                    Ok(res) => res.status().as_u16(),
                    Err(_) => 0,
                };
                (i % 2 == 0, status)
            }));
        }
        // Only a 413 the client actually received counts as refused; 0 = no answer seen.
        let mut announced = std::collections::BTreeMap::new();
        let mut chunked = std::collections::BTreeMap::new();
        for t in tasks {
            let (with_length, status) = t.await.unwrap();
            let map = if with_length {
                &mut announced
            } else {
                &mut chunked
            };
            *map.entry(status).or_insert(0u32) += 1;
        }
        let healthy = send(&client(1), &signer, port, &body_1k()).await;
        let peak_mib = server.peak_rss_kib().map(|k| k as f64 / 1024.0);
        let all_413 = announced.keys().chain(chunked.keys()).all(|&s| s == 413);
        println!(
            "{:<6} flood: {UPLOADS} × 20 MiB → with Content-Length {announced:?}, chunked {chunked:?} \
             (status → count; 0 = connection closed before an answer); all 413: {all_413}; \
             peak RSS {} MiB; afterwards a 1 KiB delivery → {healthy:?}",
            framework.name(),
            peak_mib.map_or("?".to_owned(), |m| format!("{m:.1}")),
        );
        results.push(serde_json::json!({
            "framework": framework,
            "uploads": UPLOADS,
            "upload_bytes": SIZE,
            "with_content_length": announced.iter().map(|(k, v)| (k.to_string(), v)).collect::<std::collections::BTreeMap<_, _>>(),
            "chunked": chunked.iter().map(|(k, v)| (k.to_string(), v)).collect::<std::collections::BTreeMap<_, _>>(),
            "all_413": all_413,
            "peak_rss_mib": peak_mib,
            "healthy_afterwards": healthy.as_ref().ok(),
        }));
    }
    let _ = std::fs::create_dir_all("target/load");
    if std::fs::write(
        "target/load/flood.json",
        serde_json::to_string_pretty(&results).unwrap(),
    )
    .is_ok()
    {
        println!("results written to target/load/flood.json");
    }
}
