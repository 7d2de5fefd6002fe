//! Throughput of the MLLP listener against a store that stores nothing.
//!
//! `cargo run --release -p wardlink-devices --example mllp_load -- [connections] [seconds]`
//!
//! Each connection sends generated ~1 KB ORU messages one at a time (window
//! 1, as real senders do) and waits for each answer. The store task answers
//! `Stored` at once, so this measures the source alone: framing, header,
//! ACK building, the submit round trip and the socket work.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;
use wardlink_devices::mllp::{MllpClient, MllpListener, MllpOptions};
use wardlink_devices::sim::Hl7Generator;
use wardlink_devices::{channel, Reply, ToStore};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let connections: u64 = args.next().map_or(Ok(1), |a| a.parse())?;
    let seconds: u64 = args.next().map_or(Ok(5), |a| a.parse())?;

    let (submitter, mut rx) = channel(1024);
    tokio::spawn(async move {
        let mut id = 0;
        while let Some(req) = rx.recv().await {
            if let ToStore::Commit { reply, .. } = req {
                id += 1;
                let _ = reply.send(Reply::Stored { id });
            }
        }
    });
    let listener = MllpListener::bind(MllpOptions {
        name: Arc::from("load"),
        listen: "127.0.0.1:0".parse()?,
        allow: Vec::new(),
        max_connections: 64,
        max_message_bytes: 1 << 20,
        idle_timeout: Duration::from_secs(30),
        duplicate_window: Duration::from_secs(60),
        commit_blocks: false,
        tls: None,
    })
    .await?;
    let addr = listener.local_addr();
    let shutdown = CancellationToken::new();
    let server = tokio::spawn(listener.run(submitter, shutdown.clone()));

    let sent = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let mut clients = Vec::new();
    for c in 0..connections {
        let sent = sent.clone();
        clients.push(tokio::spawn(async move {
            let mut client = MllpClient::connect(addr).await?;
            let mut g = Hl7Generator::new(c).with_prefix(&format!("L{c}-"));
            // Pre-generate so the load generator costs little.
            let messages: Vec<Vec<u8>> = (0..1000).map(|_| g.oru_vitals()).collect();
            let mut i = 0;
            while Instant::now() < deadline {
                client.send(&messages[i % messages.len()]).await?;
                i += 1;
                sent.fetch_add(1, Ordering::Relaxed);
            }
            Ok::<_, wardlink_devices::mllp::ClientError>(())
        }));
    }
    let start = Instant::now();
    for c in clients {
        c.await??;
    }
    let elapsed = start.elapsed().as_secs_f64();
    let n = sent.load(Ordering::Relaxed);
    println!(
        "{connections} connection(s): {n} messages in {elapsed:.2} s = {:.0} msg/s",
        n as f64 / elapsed
    );
    shutdown.cancel();
    server.await?;
    Ok(())
}
