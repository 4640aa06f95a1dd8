//! Findings at fleet scale, against a running server (start it with a high `HYPRBOX_RATE_LIMIT`):
//!
//! 1. NODES nodes each report PER_NODE findings (in reports of 500) from WORKERS connections, while
//!    one more connection sends heartbeats back to back: upsert rate, and heartbeat p50/p99/max
//!    while the reports run;
//! 2. with all those rows stored: `GET /api/findings` and `GET /api/findings/health/summary`,
//!    100 times each, p50/p99.
//!
//! ```sh
//! NODES=1000 PER_NODE=500 WORKERS=8 cargo run --release --example findings_bench -- http://127.0.0.1:4100 ops@example.com 'password'
//! ```

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use hyprbox_client::Client;
use hyprbox_proto::Heartbeat;
use hyprbox_proto::auth::LoginRequest;
use hyprbox_proto::findings::{ReportBody, ReportedFinding};
use hyprbox_proto::tokens::CreateTokenRequest;

fn env_number(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

fn show(label: &str, mut samples: Vec<Duration>) {
    samples.sort();
    println!(
        "{label}: {} samples, p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        samples.len(),
        percentile(&samples, 0.5).as_secs_f64() * 1e3,
        percentile(&samples, 0.99).as_secs_f64() * 1e3,
        samples.last().copied().unwrap_or_default().as_secs_f64() * 1e3
    );
}

fn report(node: usize, from: usize, count: usize) -> ReportBody {
    let findings = (from..from + count)
        .map(|i| ReportedFinding {
            kind: if i % 2 == 0 { "disk.full" } else { "tls.expiring" }.into(),
            key: format!("/bench/{i}"),
            severity: ["INFO", "WARN", "CRITICAL"][i % 3].into(),
            title: format!("bench finding {i} of node {node}"),
            message: "a finding the benchmark reported".into(),
            related_entities: None,
            metadata: Some(serde_json::json!({ "mount": format!("/bench/{i}") })),
        })
        .collect();
    ReportBody {
        node_id: format!("bench-{node:05}"),
        findings,
        complete: Vec::new(),
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    anyhow::ensure!(
        args.len() >= 4,
        "usage: findings_bench <server> <email> <password>"
    );
    let (server, email, password) = (&args[1], &args[2], &args[3]);
    let (nodes, per_node, workers) = (
        env_number("NODES", 1000),
        env_number("PER_NODE", 500),
        env_number("WORKERS", 8),
    );

    let anonymous = Client::new(server, None)?;
    let session = anonymous
        .login(&LoginRequest {
            email: email.clone(),
            password: password.clone(),
        })
        .await?;
    let user = Client::new(server, Some(&session.token))?;
    let minted = user
        .create_token(&CreateTokenRequest {
            name: "findings bench".into(),
            node_id: None,
        })
        .await?;
    let agent = Client::new(server, Some(&minted.token))?;
    for node in 0..nodes {
        let beat = Heartbeat {
            node_id: format!("bench-{node:05}"),
            cpu_percent: Some(10.0),
            ..Default::default()
        };
        agent.heartbeat(&beat).await?;
    }

    // 1. The reports, with heartbeats measured beside them.
    let done = Arc::new(AtomicBool::new(false));
    let beats = {
        let (agent, done) = (agent.clone(), done.clone());
        tokio::spawn(async move {
            let mut samples = Vec::new();
            let mut n = 0usize;
            while !done.load(Ordering::Relaxed) {
                let beat = Heartbeat {
                    node_id: format!("bench-{:05}", n % nodes.max(1)),
                    cpu_percent: Some(20.0),
                    ..Default::default()
                };
                let started = Instant::now();
                if agent.heartbeat(&beat).await.is_ok() {
                    samples.push(started.elapsed());
                }
                n += 1;
            }
            samples
        })
    };
    let started = Instant::now();
    let mut tasks = Vec::new();
    for worker in 0..workers {
        let agent = agent.clone();
        tasks.push(tokio::spawn(async move {
            let mut sent = 0usize;
            for node in (worker..nodes).step_by(workers) {
                let mut from = 0;
                while from < per_node {
                    let count = (per_node - from).min(500);
                    agent.report_findings(&report(node, from, count)).await?;
                    sent += count;
                    from += count;
                }
            }
            anyhow::Ok(sent)
        }));
    }
    let mut upserts = 0;
    for task in tasks {
        upserts += task.await??;
    }
    let elapsed = started.elapsed();
    done.store(true, Ordering::Relaxed);
    let beat_samples = beats.await?;
    println!(
        "{upserts} findings upserted from {workers} connections in {:.1} s: {:.0}/s",
        elapsed.as_secs_f64(),
        upserts as f64 / elapsed.as_secs_f64()
    );
    show("heartbeat while reports run", beat_samples);

    // 2. Reads over everything stored.
    for (label, path) in [
        ("GET /api/findings", "/api/findings"),
        ("GET /api/findings/health/summary", "/api/findings/health/summary"),
    ] {
        let mut samples = Vec::new();
        for _ in 0..100 {
            let started = Instant::now();
            let response = user.send(user.authed(reqwest::Method::GET, path)?).await?;
            let _ = response.bytes().await?;
            samples.push(started.elapsed());
        }
        show(label, samples);
    }
    Ok(())
}
