//! `hyprbox simulate`: a fleet of simulated agents for demos and load tests.
//!
//! Each simulated agent has a stable `nodeId`, sends its inventory on first contact and then
//! drifting CPU, memory and disk figures every interval, like a real agent. The run ends after
//! `--duration` or on Ctrl-C, and prints what it sent and how fast the server answered.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use hyprbox_client::{Client, Error as ClientError};
use hyprbox_proto::Heartbeat;
use hyprbox_proto::auth::LoginRequest;
use hyprbox_proto::jobs::{CompleteJob, OutputPiece};
use hyprbox_proto::tokens::CreateTokenRequest;
use rand::RngExt;
use serde::Serialize;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

#[derive(clap::Args, Debug)]
pub struct SimulateArgs {
    /// The HyprBox server.
    #[arg(long, env = "HYPRBOX_URL", default_value = "http://127.0.0.1:4000")]
    pub server: String,
    /// How many agents to simulate.
    #[arg(long, default_value_t = 100)]
    pub agents: u32,
    /// Seconds between two heartbeats of one agent (fractions allowed).
    #[arg(long, default_value_t = 5.0)]
    pub interval: f64,
    /// Stop after this many seconds (default: run until Ctrl-C).
    #[arg(long)]
    pub duration: Option<f64>,
    /// Use this node token instead of minting one.
    #[arg(long, env = "HYPRBOX_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Sign in with this email to mint a fleet-wide token (needs OPERATOR).
    #[arg(long, env = "HYPRBOX_EMAIL")]
    pub email: Option<String>,
    /// The password for `--email`.
    #[arg(long, env = "HYPRBOX_PASSWORD", hide_env_values = true)]
    pub password: Option<String>,
    /// Node ids are `<prefix>-00001`, `<prefix>-00002`, …
    #[arg(long, default_value = "sim")]
    pub prefix: String,
    /// Print the summary as one JSON object.
    #[arg(long)]
    pub json: bool,
    /// Also run jobs: after each heartbeat an agent pulls its next job and, when it gets one,
    /// streams plausible output (the script's steps, one a second) and completes it with exit 0.
    #[arg(long)]
    pub jobs: bool,
}

#[derive(Serialize, Debug)]
#[serde(rename_all = "camelCase")]
pub struct Summary {
    pub agents: u32,
    pub interval_secs: f64,
    pub elapsed_secs: f64,
    pub sent: u64,
    pub accepted: u64,
    pub errors: u64,
    pub rate_per_sec: f64,
    pub latency_ms: Latency,
    /// Jobs claimed and completed (with `--jobs`).
    pub jobs_run: u64,
}

#[derive(Serialize, Debug, Default)]
pub struct Latency {
    pub p50: f64,
    pub p95: f64,
    pub p99: f64,
    pub max: f64,
}

#[derive(Default)]
struct Counters {
    sent: AtomicU64,
    accepted: AtomicU64,
    errors: AtomicU64,
    jobs_run: AtomicU64,
}

/// Runs the simulation and prints the summary; an error when any heartbeat failed.
pub async fn run(args: SimulateArgs) -> anyhow::Result<()> {
    if args.agents == 0 || !(args.interval.is_finite() && args.interval > 0.0) {
        bail!("--agents must be at least 1 and --interval a positive number of seconds");
    }
    let server = args.server.trim_end_matches('/').to_string();
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(usize::try_from(args.agents).unwrap_or(usize::MAX).min(1024))
        .timeout(Duration::from_secs(30))
        .build()?;
    let token = match &args.token {
        Some(token) => token.clone(),
        None => mint_token(&http, &server, &args).await?,
    };
    let client = Client::with_http(http, &server, Some(&token));
    let stop = CancellationToken::new();
    {
        let stop = stop.clone();
        tokio::spawn(async move {
            let _ = tokio::signal::ctrl_c().await;
            stop.cancel();
        });
    }
    if let Some(duration) = args.duration {
        let stop = stop.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs_f64(duration.max(0.0))).await;
            stop.cancel();
        });
    }
    if !args.json {
        eprintln!(
            "simulating {} agents every {}s against {server} (Ctrl-C stops)",
            args.agents, args.interval
        );
    }

    let counters = Arc::new(Counters::default());
    let interval = Duration::from_secs_f64(args.interval);
    let started = Instant::now();
    let mut agents = JoinSet::new();
    for n in 1..=args.agents {
        let agent = Agent::new(&args.prefix, n);
        // Spread first contacts over one interval so the load is even from the start.
        let offset = interval.mul_f64(f64::from(n - 1) / f64::from(args.agents));
        agents.spawn(agent.run(
            client.clone(),
            interval,
            offset,
            stop.clone(),
            Arc::clone(&counters),
            args.jobs,
        ));
    }
    if !args.json {
        tokio::spawn(report_progress(Arc::clone(&counters), started, stop.clone()));
    }
    let mut latencies: Vec<u32> = Vec::new();
    while let Some(done) = agents.join_next().await {
        latencies.extend(done.context("a simulated agent failed")?);
    }
    let summary = summarize(&args, &counters, started.elapsed(), latencies);
    if args.json {
        println!("{}", serde_json::to_string(&summary)?);
    } else {
        print_table(&summary);
    }
    if summary.errors > 0 {
        bail!("{} of {} heartbeats failed", summary.errors, summary.sent);
    }
    Ok(())
}

/// A progress line on stderr every 5 s while the simulation runs (not with `--json`).
async fn report_progress(counters: Arc<Counters>, started: Instant, stop: CancellationToken) {
    let mut ticks = tokio::time::interval_at(
        tokio::time::Instant::now() + Duration::from_secs(5),
        Duration::from_secs(5),
    );
    let mut last = (0u64, Instant::now());
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = ticks.tick() => {}
        }
        let accepted = counters.accepted.load(Ordering::Relaxed);
        let rate = (accepted - last.0) as f64 / last.1.elapsed().as_secs_f64().max(1e-9);
        last = (accepted, Instant::now());
        eprintln!(
            "[{:>4.0}s] accepted {accepted}, errors {}, jobs run {} ({rate:.0} heartbeats/s)",
            started.elapsed().as_secs_f64(),
            counters.errors.load(Ordering::Relaxed),
            counters.jobs_run.load(Ordering::Relaxed),
        );
    }
}

async fn mint_token(http: &reqwest::Client, server: &str, args: &SimulateArgs) -> anyhow::Result<String> {
    let (Some(email), Some(password)) = (&args.email, &args.password) else {
        bail!("give --token, or --email and --password (or HYPRBOX_EMAIL/HYPRBOX_PASSWORD) to mint one");
    };
    let session = Client::with_http(http.clone(), server, None)
        .login(&LoginRequest {
            email: email.clone(),
            password: password.clone(),
        })
        .await
        .context("sign-in refused")?;
    let operator = Client::with_http(http.clone(), server, Some(&session.token));
    let minted = operator
        .create_token(&CreateTokenRequest {
            name: format!("simulator ({})", args.prefix),
            node_id: None,
        })
        .await
        .context("minting a node token was refused (it needs the OPERATOR role)")?;
    Ok(minted.token)
}

/// One simulated server: stable identity, metrics that drift around a baseline.
struct Agent {
    node_id: String,
    n: u32,
    cpu: f64,
    ram: f64,
    disk: f64,
    uptime: u64,
}

impl Agent {
    fn new(prefix: &str, n: u32) -> Agent {
        let mut rng = rand::rng();
        Agent {
            node_id: format!("{prefix}-{n:05}"),
            n,
            cpu: rng.random_range(5.0..60.0),
            ram: rng.random_range(20.0..70.0),
            disk: rng.random_range(10.0..80.0),
            uptime: rng.random_range(3_600..2_000_000),
        }
    }

    /// The next reading: a random walk pulled back toward a baseline, kept within 0–100.
    fn step(&mut self, interval: Duration) {
        let mut rng = rand::rng();
        self.cpu = (self.cpu + rng.random_range(-8.0..8.0) + (30.0 - self.cpu) * 0.05).clamp(0.0, 100.0);
        self.ram = (self.ram + rng.random_range(-2.0..2.0) + (50.0 - self.ram) * 0.02).clamp(0.0, 100.0);
        self.disk = (self.disk + rng.random_range(-0.05..0.1)).clamp(0.0, 100.0);
        self.uptime += interval.as_secs().max(1);
    }

    fn heartbeat(&self, first: bool) -> Heartbeat {
        let round = |v: f64| (v * 10.0).round() / 10.0;
        let mut hb = Heartbeat {
            node_id: self.node_id.clone(),
            cpu_percent: Some(round(self.cpu)),
            ram_percent: Some(round(self.ram)),
            disk_percent: Some(round(self.disk)),
            status: Some("ok".into()),
            uptime_seconds: Some(self.uptime),
            load_avg: Some([
                round(self.cpu / 25.0),
                round(self.cpu / 30.0),
                round(self.cpu / 35.0),
            ]),
            ..Heartbeat::default()
        };
        if first {
            let regions = ["eu-west", "eu-central", "us-east", "us-west", "ap-south"];
            hb.hostname = Some(self.node_id.clone());
            hb.os = Some("Debian GNU/Linux 12 (bookworm)".into());
            hb.kernel = Some("6.1.0-28-amd64".into());
            hb.architecture = Some("x86_64".into());
            hb.agent_version = Some(format!("{}-sim", env!("CARGO_PKG_VERSION")));
            hb.ip = Some(format!(
                "10.{}.{}.{}",
                (self.n >> 16) & 255,
                (self.n >> 8) & 255,
                self.n & 255
            ));
            hb.region = Some(regions[self.n as usize % regions.len()].into());
            hb.mem_total_bytes = Some(8 << 30);
            hb.disk_total_bytes = Some(100 << 30);
        }
        hb
    }

    /// Sends heartbeats until `stop`; returns each one's latency in microseconds.
    async fn run(
        mut self,
        client: Client,
        interval: Duration,
        offset: Duration,
        stop: CancellationToken,
        counters: Arc<Counters>,
        jobs: bool,
    ) -> Vec<u32> {
        let mut running: Option<tokio::task::JoinHandle<()>> = None;
        let mut latencies = Vec::new();
        let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + offset, interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut first = true;
        loop {
            tokio::select! {
                () = stop.cancelled() => return latencies,
                _ = ticks.tick() => {}
            }
            let body = self.heartbeat(first);
            let sent_at = Instant::now();
            counters.sent.fetch_add(1, Ordering::Relaxed);
            let answer = client.heartbeat(&body).await;
            let micros = u32::try_from(sent_at.elapsed().as_micros()).unwrap_or(u32::MAX);
            match answer {
                Ok(_) => {
                    counters.accepted.fetch_add(1, Ordering::Relaxed);
                    latencies.push(micros);
                    first = false;
                }
                // No answer at all: nothing to time.
                Err(ClientError::Unreachable { .. }) => {
                    counters.errors.fetch_add(1, Ordering::Relaxed);
                }
                Err(refused) => {
                    counters.errors.fetch_add(1, Ordering::Relaxed);
                    latencies.push(micros);
                    if matches!(refused, ClientError::Unauthorized { .. }) {
                        eprintln!("{}: the server refused the node token", self.node_id);
                    }
                }
            }
            self.step(interval);
            let busy = running.as_ref().is_some_and(|job| !job.is_finished());
            if jobs && !busy && !first {
                running = claim_and_run(&client, &self.node_id, &stop, &counters).await;
            }
        }
    }
}

/// Pulls the agent's next job; when there is one, plays it in the background.
async fn claim_and_run(
    client: &Client,
    node_id: &str,
    stop: &CancellationToken,
    counters: &Arc<Counters>,
) -> Option<tokio::task::JoinHandle<()>> {
    let job = client.pending(Some(node_id)).await.ok()??;
    let steps = step_names(&job.script);
    let (client, stop, counters) = (client.clone(), stop.clone(), Arc::clone(counters));
    Some(tokio::spawn(async move {
        let total = steps.len();
        for (i, step) in steps.iter().enumerate() {
            let line = format!("[{}] ==> step {}/{total}: {step}\n", utc_clock(), i + 1);
            let piece = OutputPiece {
                stdout: Some(line),
                stderr: None,
            };
            // A job cancelled or reaped meanwhile answers 409: stop playing it.
            if client.output(&job.id, &piece).await.is_err() {
                return;
            }
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
        }
        let done = CompleteJob {
            exit_code: 0,
            output: OutputPiece {
                stdout: Some("done (simulated)\n".into()),
                stderr: None,
            },
        };
        if client.complete(&job.id, &done).await.is_ok() {
            counters.jobs_run.fetch_add(1, Ordering::Relaxed);
        }
    }))
}

/// The step names a rendered script announces (`==> step i/N: 'name'`), or one generic step.
fn step_names(script: &str) -> Vec<String> {
    let names: Vec<String> = script
        .lines()
        .filter(|line| line.contains("==> step"))
        .filter_map(|line| {
            let end = line.rfind('\'')?;
            let start = line[..end].rfind('\'')?;
            Some(line[start + 1..end].replace("'\\''", "'"))
        })
        .collect();
    if names.is_empty() {
        vec!["run the script".into()]
    } else {
        names
    }
}

/// The current UTC time as `HH:MM:SS`, enough for a simulated log line.
fn utc_clock() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    format!("{:02}:{:02}:{:02}", secs / 3600 % 24, secs / 60 % 60, secs % 60)
}

fn summarize(
    args: &SimulateArgs,
    counters: &Counters,
    elapsed: Duration,
    mut latencies: Vec<u32>,
) -> Summary {
    latencies.sort_unstable();
    let at = |q: f64| -> f64 {
        if latencies.is_empty() {
            return 0.0;
        }
        // Nearest-rank percentile.
        let rank = (q * latencies.len() as f64).ceil() as usize;
        f64::from(latencies[rank.clamp(1, latencies.len()) - 1]) / 1000.0
    };
    let accepted = counters.accepted.load(Ordering::Relaxed);
    Summary {
        agents: args.agents,
        interval_secs: args.interval,
        elapsed_secs: (elapsed.as_secs_f64() * 100.0).round() / 100.0,
        sent: counters.sent.load(Ordering::Relaxed),
        accepted,
        errors: counters.errors.load(Ordering::Relaxed),
        rate_per_sec: (accepted as f64 / elapsed.as_secs_f64().max(1e-9) * 10.0).round() / 10.0,
        jobs_run: counters.jobs_run.load(Ordering::Relaxed),
        latency_ms: Latency {
            p50: at(0.50),
            p95: at(0.95),
            p99: at(0.99),
            max: latencies.last().map_or(0.0, |m| f64::from(*m) / 1000.0),
        },
    }
}

fn print_table(s: &Summary) {
    println!("agents          {}", s.agents);
    println!("interval        {} s", s.interval_secs);
    println!("elapsed         {:.2} s", s.elapsed_secs);
    println!("sent            {}", s.sent);
    println!("accepted        {}", s.accepted);
    println!("errors          {}", s.errors);
    println!("rate            {:.1} heartbeats/s", s.rate_per_sec);
    println!(
        "latency (ms)    p50 {:.2}  p95 {:.2}  p99 {:.2}  max {:.2}",
        s.latency_ms.p50, s.latency_ms.p95, s.latency_ms.p99, s.latency_ms.max
    );
    println!("jobs run        {}", s.jobs_run);
}
