//! Job-path benchmark against a running server (start it with a high `HYPRBOX_RATE_LIMIT`):
//!
//! 1. pickup latency: POST a job → the connected agent's wake-up → its claim succeeds (p50/p99);
//! 2. claim throughput: N queued jobs drained by 16 concurrent claimers;
//! 3. output ingestion: 64 KiB pieces posted to one RUNNING job (MiB/s, server RSS before/after).
//!
//! ```sh
//! CLAIMS=4000 OUTPUT_MIB=512 cargo run --release --example jobs_bench -- http://127.0.0.1:4100 ops@example.com 'password' [server-pid]
//! ```

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::{Message, client::IntoClientRequest};

const PICKUPS: usize = 1000;
const CLAIMERS: usize = 16;
const PIECE: usize = 64 * 1024;

struct Api {
    base: String,
    client: reqwest::Client,
    jwt: String,
}

impl Api {
    async fn post(&self, path: &str, token: &str, body: Value) -> anyhow::Result<Value> {
        let response = self
            .client
            .post(format!("{}{path}", self.base))
            .bearer_auth(token)
            .json(&body)
            .send()
            .await?;
        let status = response.status();
        let text = response.text().await?;
        anyhow::ensure!(status.is_success(), "POST {path}: {status} {text}");
        Ok(serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    async fn get(&self, path: &str, token: &str) -> anyhow::Result<Value> {
        let response = self
            .client
            .get(format!("{}{path}", self.base))
            .bearer_auth(token)
            .send()
            .await?;
        let status = response.status();
        let text = response.text().await?;
        anyhow::ensure!(status.is_success(), "GET {path}: {status} {text}");
        Ok(serde_json::from_str(&text)?)
    }

    async fn token(&self, node: Option<&str>) -> anyhow::Result<String> {
        let minted = self
            .post("/api/tokens", &self.jwt, json!({"name": "bench", "nodeId": node}))
            .await?;
        Ok(minted["token"].as_str().unwrap_or_default().to_string())
    }

    async fn queue(&self, node: &str) -> anyhow::Result<String> {
        let job = self
            .post(
                "/api/jobs",
                &self.jwt,
                json!({"nodeId": node, "presetName": "disk-cleanup"}),
            )
            .await?;
        Ok(job["job"]["id"].as_str().unwrap_or_default().to_string())
    }
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    let rank = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[rank].as_secs_f64() * 1000.0
}

fn rss_mib(pid: Option<&str>) -> String {
    pid.and_then(|pid| std::fs::read_to_string(format!("/proc/{pid}/status")).ok())
        .and_then(|status| {
            status
                .lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        })
        .map_or_else(|| "n/a".into(), |kib| format!("{:.1} MiB", kib / 1024.0))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    anyhow::ensure!(
        args.len() >= 4,
        "usage: jobs_bench URL EMAIL PASSWORD [SERVER_PID]"
    );
    let (base, email, password, pid) = (&args[1], &args[2], &args[3], args.get(4).map(String::as_str));
    let client = reqwest::Client::new();
    let login: Value = client
        .post(format!("{base}/api/auth/login"))
        .json(&json!({"email": email, "password": password}))
        .send()
        .await?
        .json()
        .await?;
    let jwt = login["token"].as_str().unwrap_or_default().to_string();
    anyhow::ensure!(!jwt.is_empty(), "login failed: {login}");
    let api = Api {
        base: base.clone(),
        client,
        jwt,
    };

    // 1. Pickup latency through the wake-up.
    let pinned = api.token(Some("bench-ws")).await?;
    api.post(
        "/api/nodes/heartbeat",
        &pinned,
        json!({"node_id": "bench-ws", "cpu_percent": 1, "ram_percent": 1}),
    )
    .await?;
    let mut request = format!("{}/api/agent/ws", base.replacen("http", "ws", 1)).into_client_request()?;
    request
        .headers_mut()
        .insert("authorization", format!("Bearer {pinned}").parse()?);
    let (mut socket, _) = tokio_tungstenite::connect_async(request).await?;
    let mut pickups = Vec::with_capacity(PICKUPS);
    for _ in 0..PICKUPS {
        let started = Instant::now();
        let (queued, woken) = tokio::join!(api.queue("bench-ws"), async {
            while let Some(Ok(message)) = socket.next().await {
                if matches!(message, Message::Text(ref t) if t.contains("wakeup")) {
                    return true;
                }
            }
            false
        });
        let id = queued?;
        anyhow::ensure!(woken, "the socket closed");
        let claimed = api.get("/api/jobs/pending?nodeId=bench-ws", &pinned).await?;
        pickups.push(started.elapsed());
        anyhow::ensure!(
            claimed["job"]["id"] == id.as_str(),
            "claimed {claimed} instead of {id}"
        );
        api.post(
            &format!("/api/jobs/{id}/complete"),
            &pinned,
            json!({"exitCode": 0}),
        )
        .await?;
    }
    pickups.sort();
    println!(
        "pickup latency over {PICKUPS} jobs: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        percentile(&pickups, 0.5),
        percentile(&pickups, 0.99),
        percentile(&pickups, 1.0)
    );

    // 2. Claim throughput (CLAIMS jobs, default 4000).
    let claims: usize = std::env::var("CLAIMS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(4000);
    let fleet = api.token(None).await?;
    api.post(
        "/api/nodes/heartbeat",
        &fleet,
        json!({"node_id": "bench-claims", "cpu_percent": 1, "ram_percent": 1}),
    )
    .await?;
    let started = Instant::now();
    for _ in 0..claims {
        api.queue("bench-claims").await?;
    }
    let queue_secs = started.elapsed().as_secs_f64();
    let started = Instant::now();
    let claimers = (0..CLAIMERS).map(|_| {
        let client = api.client.clone();
        let url = format!("{base}/api/jobs/pending?nodeId=bench-claims");
        let token = fleet.clone();
        tokio::spawn(async move {
            let mut claimed = 0usize;
            loop {
                let body: Value = client.get(&url).bearer_auth(&token).send().await?.json().await?;
                if body["job"].is_null() {
                    return Ok::<_, anyhow::Error>(claimed);
                }
                claimed += 1;
            }
        })
    });
    let mut claimed = 0;
    for claimer in futures_util::future::join_all(claimers).await {
        claimed += claimer??;
    }
    let claim_secs = started.elapsed().as_secs_f64();
    anyhow::ensure!(claimed == claims, "claimed {claimed} of {claims}");
    println!(
        "created {claims} jobs in {queue_secs:.2} s ({:.0}/s, one client); {CLAIMERS} claimers took them in {claim_secs:.2} s: {:.0} claims/s",
        claims as f64 / queue_secs,
        claims as f64 / claim_secs
    );

    // 3. Output ingestion into one job (OUTPUT_MIB, default 512).
    let pieces: usize = std::env::var("OUTPUT_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(512)
        * 16;
    let id = api.queue("bench-ws").await?;
    api.get("/api/jobs/pending?nodeId=bench-ws", &pinned).await?;
    let piece = "x".repeat(PIECE - 1) + "\n";
    let before = rss_mib(pid);
    let started = Instant::now();
    let body = serde_json::to_vec(&json!({ "stdout": piece }))?;
    let url = format!("{base}/api/jobs/{id}/output");
    let senders = (0..4).map(|_| {
        let client = api.client.clone();
        let (url, token, body) = (url.clone(), pinned.clone(), body.clone());
        tokio::spawn(async move {
            for _ in 0..pieces / 4 {
                let response = client
                    .post(&url)
                    .bearer_auth(&token)
                    .header("content-type", "application/json")
                    .body(body.clone())
                    .send()
                    .await?;
                anyhow::ensure!(response.status().as_u16() == 204, "output: {}", response.status());
            }
            Ok(())
        })
    });
    for sender in futures_util::future::join_all(senders).await {
        sender??;
    }
    let secs = started.elapsed().as_secs_f64();
    let mib = (pieces * PIECE) as f64 / (1024.0 * 1024.0);
    println!(
        "output: {mib:.0} MiB in {pieces} pieces of 64 KiB in {secs:.2} s: {:.1} MiB/s; server RSS {before} before, {} after",
        mib / secs,
        rss_mib(pid)
    );
    api.post(
        &format!("/api/jobs/{id}/complete"),
        &pinned,
        json!({"exitCode": 0}),
    )
    .await?;
    Ok(())
}
