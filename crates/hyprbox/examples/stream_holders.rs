//! Holds N live fleet streams open against a server, as N open dashboards would, for the stream
//! benchmark (`bench/streams.sh`). `read` drains every stream and reports what each received;
//! `stall` reads the answer's headers and then never reads again (a tab in the background on a
//! slow link). With `gzip` last, each stream asks for gzip as a browser does (what it counts is then
//! compressed bytes, as they cross the network).
//!
//! ```sh
//! cargo run --release -p hyprbox --example stream_holders -- 127.0.0.1:4100 "$JWT" 1000 read 20 [gzip]
//! ```

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (args, encoding) = match args.as_slice() {
        [rest @ .., last] if last == "gzip" => (rest, "Accept-Encoding: gzip\r\n"),
        all => (all, ""),
    };
    let [addr, jwt, count, mode, seconds] = args else {
        anyhow::bail!("usage: stream_holders ADDR JWT COUNT read|stall SECONDS [gzip]");
    };
    let count: usize = count.parse()?;
    let seconds: u64 = seconds.parse()?;
    let read = mode == "read";
    let received = Arc::new(AtomicU64::new(0));
    let opened = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for _ in 0..count {
        let (addr, jwt, received, opened) = (addr.clone(), jwt.clone(), received.clone(), opened.clone());
        tasks.push(tokio::spawn(async move {
            let mut socket = TcpStream::connect(&addr).await?;
            let request = format!(
                "GET /api/stream/nodes HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {jwt}\r\nAccept: text/event-stream\r\n{encoding}\r\n"
            );
            socket.write_all(request.as_bytes()).await?;
            let mut buffer = vec![0u8; 64 * 1024];
            let n = socket.read(&mut buffer).await?;
            anyhow::ensure!(buffer[..n].starts_with(b"HTTP/1.1 200"), "the stream was refused");
            opened.fetch_add(1, Ordering::Relaxed);
            if !read {
                // Keep the socket, read nothing more.
                tokio::time::sleep(Duration::from_secs(seconds + 3600)).await;
                return Ok(());
            }
            loop {
                let n = socket.read(&mut buffer).await?;
                if n == 0 {
                    return Ok::<(), anyhow::Error>(());
                }
                received.fetch_add(n as u64, Ordering::Relaxed);
            }
        }));
        if tasks.len() % 100 == 0 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let started = Instant::now();
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    let elapsed = started.elapsed().as_secs_f64();
    let bytes = received.load(Ordering::Relaxed) as f64;
    let open = opened.load(Ordering::Relaxed);
    println!(
        "streams open: {open} ({mode}); received {:.1} MiB in {elapsed:.0} s: {:.1} KiB/s per stream",
        bytes / 1_048_576.0,
        bytes / 1024.0 / elapsed / open.max(1) as f64
    );
    Ok(())
}
