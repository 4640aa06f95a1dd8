//! Holds N idle agent WebSocket links open against a server, as N connected agents between jobs
//! would, for the link-memory benchmark (`bench/links.sh`): mints one token pinned to each of N
//! nodes and says `minted N`, waits PAUSE seconds (the server's memory is read then), opens every
//! link, says `holding N` and keeps them (answering pings) for SECONDS.
//!
//! ```sh
//! cargo run --release -p hyprbox --example agent_links -- http://127.0.0.1:4100 "$JWT" 10000 8 30
//! ```

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use futures_util::StreamExt;
use hyprbox_client::Client;
use hyprbox_proto::tokens::CreateTokenRequest;
use tokio::sync::Semaphore;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [server, jwt, count, pause, seconds] = args.as_slice() else {
        anyhow::bail!("usage: agent_links SERVER JWT COUNT PAUSE SECONDS");
    };
    let pause: u64 = pause.parse()?;
    let count: usize = count.parse()?;
    let seconds: u64 = seconds.parse()?;
    let client = Arc::new(Client::new(server, Some(jwt))?);
    let ws_url = format!("{}/api/agent/ws", server.replacen("http", "ws", 1));
    // Every token first, so the server's memory can be read between minting and linking.
    let minting = Arc::new(Semaphore::new(16));
    let mut mints = Vec::with_capacity(count);
    for n in 0..count {
        let (client, minting) = (client.clone(), minting.clone());
        mints.push(tokio::spawn(async move {
            let _turn = minting.acquire().await?;
            let request = CreateTokenRequest {
                name: format!("link-{n}"),
                node_id: Some(format!("link-{n}")),
            };
            Ok::<String, anyhow::Error>(client.create_token(&request).await?.token)
        }));
    }
    let mut tokens = Vec::with_capacity(count);
    for mint in mints {
        tokens.push(mint.await??);
    }
    println!("minted {count}");
    tokio::time::sleep(Duration::from_secs(pause)).await;
    let opened = Arc::new(AtomicUsize::new(0));
    let mut links = Vec::with_capacity(count);
    for token in tokens {
        let (opened, ws_url) = (opened.clone(), ws_url.clone());
        links.push(tokio::spawn(async move {
            let mut request = ws_url.into_client_request()?;
            request
                .headers_mut()
                .insert("authorization", format!("Bearer {token}").parse()?);
            let (mut socket, _) = tokio_tungstenite::connect_async(request).await?;
            opened.fetch_add(1, Ordering::Relaxed);
            // Reading answers the server's pings; nothing else is sent, as an idle agent.
            while let Some(message) = socket.next().await {
                message?;
            }
            Ok::<(), anyhow::Error>(())
        }));
        if links.len() % 500 == 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    while opened.load(Ordering::Relaxed) < count {
        if links.iter().all(tokio::task::JoinHandle::is_finished) {
            anyhow::bail!("only {} of {count} links opened", opened.load(Ordering::Relaxed));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    println!("holding {count}");
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    Ok(())
}
