//! Load runner: the same `POST /jobs` route (1 KiB JSON body) served by axum and actix-web in
//! four modes, driven over HTTP on loopback, side by side.
//!
//! ```sh
//! cargo run --release --example load --all-features              # everything (≈ 2 min)
//! cargo run --release --example load --all-features -- --seconds 5 --frameworks axum --modes bare,verified
//! cargo run --release --example load --all-features -- --flood   # 200 × 20 MiB uploads, peak RSS
//! ```
//!
//! Modes: `bare` (the route alone), `verified` (behind the QStash layer / middleware),
//! `memory` (verified + in-memory dedup), `redis` (verified + Redis dedup on a `redis-server`
//! this runner starts on a free loopback port; skipped when `redis-server` is not installed).
//!
//! Each server runs in a child process (this binary, `serve` sub-command) with one worker
//! thread, pinned to CPU 0 with `taskset` when there are at least two CPUs; the client is a
//! hyper client with `--connections` concurrent requests (default 64), every request a fresh,
//! validly signed delivery with a distinct message id. Printed: requests/s, p50/p99 latency,
//! the ratio to `bare` of the same framework, and for `redis` the Redis commands per delivery.
//! Results are also written as JSON to `target/load/results.json`.
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
use std::time::{Duration, Instant};

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
    fn start(framework: Framework, mode: Mode, redis_url: Option<&str>) -> Server {
        let exe = std::env::current_exe().unwrap();
        let pin = std::thread::available_parallelism().map_or(1, |n| n.get()) >= 2
            && Command::new("taskset").arg("--version").output().is_ok();
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
    fn start() -> Option<RedisServer> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .ok()?
            .local_addr()
            .ok()?
            .port();
        let child = Command::new("redis-server")
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

    /// Total commands processed so far (`INFO stats` → `total_commands_processed`).
    async fn commands(&self) -> u64 {
        let client = redis::Client::open(self.url.as_str()).unwrap();
        let mut con = client.get_multiplexed_async_connection().await.unwrap();
        let info: String = redis::cmd("INFO")
            .arg("stats")
            .query_async(&mut con)
            .await
            .unwrap();
        info.lines()
            .find_map(|l| l.strip_prefix("total_commands_processed:"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0)
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[derive(Debug, Clone, Serialize)]
struct Row {
    framework: Framework,
    mode: Mode,
    requests: u64,
    errors: u64,
    requests_per_sec: f64,
    p50_us: u64,
    p99_us: u64,
    ratio_to_bare: Option<f64>,
    redis_commands_per_delivery: Option<f64>,
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

async fn drive(
    port: u16,
    connections: usize,
    warmup: Duration,
    measure: Duration,
) -> (u64, u64, Vec<u32>) {
    let client = client(connections);
    let signer = Signer::new(CURRENT_KEY);
    let body = body_1k();
    // Warm-up: open the connections and let the server settle.
    let until = Instant::now() + warmup;
    let mut tasks = Vec::new();
    for _ in 0..connections {
        let (client, signer, body) = (client.clone(), signer.clone(), body.clone());
        tasks.push(tokio::spawn(async move {
            while Instant::now() < until {
                let _ = send(&client, &signer, port, &body).await;
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let stop = Arc::new(AtomicBool::new(false));
    let errors = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for _ in 0..connections {
        let (client, signer, body) = (client.clone(), signer.clone(), body.clone());
        let (stop, errors) = (stop.clone(), errors.clone());
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::with_capacity(64 * 1024);
            while !stop.load(Ordering::Relaxed) {
                let start = Instant::now();
                match send(&client, &signer, port, &body).await {
                    Ok(200) => {
                        latencies.push(start.elapsed().as_micros().min(u32::MAX as u128) as u32)
                    }
                    _ => {
                        errors.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            latencies
        }));
    }
    tokio::time::sleep(measure).await;
    stop.store(true, Ordering::Relaxed);
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    all.sort_unstable();
    (all.len() as u64, errors.load(Ordering::Relaxed), all)
}

fn percentile(sorted: &[u32], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    u64::from(sorted[idx.min(sorted.len() - 1)])
}

struct Args {
    seconds: u64,
    connections: usize,
    frameworks: Vec<Framework>,
    modes: Vec<Mode>,
    flood: bool,
}

fn parse_args(mut args: impl Iterator<Item = String>) -> Args {
    let mut a = Args {
        seconds: 10,
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
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    if args.flood {
        rt.block_on(flood(&args));
        return;
    }
    let redis = if args.modes.contains(&Mode::Redis) {
        let server = RedisServer::start();
        if server.is_none() {
            eprintln!("redis-server not found or did not start: skipping the redis mode");
        }
        server
    } else {
        None
    };
    let mut rows: Vec<Row> = Vec::new();
    for &framework in &args.frameworks {
        for &mode in &args.modes {
            if mode == Mode::Redis && redis.is_none() {
                continue;
            }
            let server = Server::start(framework, mode, redis.as_ref().map(|r| r.url.as_str()));
            let before = match (&redis, mode) {
                (Some(r), Mode::Redis) => Some(rt.block_on(r.commands())),
                _ => None,
            };
            let (ok, errors, latencies) = rt.block_on(drive(
                server.port,
                args.connections,
                Duration::from_secs(2),
                Duration::from_secs(args.seconds),
            ));
            let after = match (&redis, mode) {
                (Some(r), Mode::Redis) => Some(rt.block_on(r.commands())),
                _ => None,
            };
            drop(server);
            // Deliveries include the warm-up ones: count them from the server side instead of
            // guessing; `INFO` itself is one command on each side of the window.
            let redis_per = match (before, after) {
                (Some(b), Some(a)) if ok > 0 => {
                    Some((a - b).saturating_sub(1) as f64 / (ok + errors) as f64)
                }
                _ => None,
            };
            let rps = ok as f64 / args.seconds as f64;
            let bare = rows
                .iter()
                .find(|r| r.framework == framework && r.mode == Mode::Bare)
                .map(|r| r.requests_per_sec);
            let row = Row {
                framework,
                mode,
                requests: ok,
                errors,
                requests_per_sec: rps,
                p50_us: percentile(&latencies, 0.50),
                p99_us: percentile(&latencies, 0.99),
                ratio_to_bare: bare.map(|b| rps / b),
                redis_commands_per_delivery: redis_per,
            };
            print_row(&row);
            rows.push(row);
        }
    }
    let _ = std::fs::create_dir_all("target/load");
    let json = serde_json::to_string_pretty(&rows).unwrap();
    if std::fs::write("target/load/results.json", json).is_ok() {
        println!("results written to target/load/results.json");
    }
}

fn print_row(r: &Row) {
    println!(
        "{:<6} {:<9} {:>9.0} req/s  p50 {:>6} µs  p99 {:>6} µs  errors {:>4}  ratio {}{}",
        r.framework.name(),
        r.mode.name(),
        r.requests_per_sec,
        r.p50_us,
        r.p99_us,
        r.errors,
        r.ratio_to_bare
            .map_or("  -  ".to_owned(), |x| format!("{x:.2}×")),
        r.redis_commands_per_delivery
            .map_or(String::new(), |x| format!(
                "  redis commands/delivery {x:.2}"
            )),
    );
}

/// 200 concurrent 20 MiB uploads (half announced with `Content-Length`, half chunked), each a
/// validly signed delivery, against the default limit: all must be answered 413; reports the
/// server's peak RSS.
async fn flood(args: &Args) {
    const UPLOADS: usize = 200;
    const SIZE: usize = 20 * 1024 * 1024;
    const CHUNK: usize = 64 * 1024;
    for &framework in &args.frameworks {
        let server = Server::start(framework, Mode::Verified, None);
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
                match client.request(req).await {
                    Ok(res) => res.status().as_u16(),
                    Err(_) => 0,
                }
            }));
        }
        let mut statuses = std::collections::BTreeMap::new();
        for t in tasks {
            *statuses.entry(t.await.unwrap()).or_insert(0u32) += 1;
        }
        let healthy = send(&client(1), &signer, port, &body_1k()).await;
        println!(
            "{:<6} flood: {UPLOADS} × 20 MiB → statuses {statuses:?} (0 = connection closed before an answer); \
             peak RSS {} MiB; afterwards a 1 KiB delivery → {healthy:?}",
            framework.name(),
            server
                .peak_rss_kib()
                .map_or("?".to_owned(), |k| format!("{:.1}", k as f64 / 1024.0)),
        );
    }
}
