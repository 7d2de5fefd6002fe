//! An MLLP listener whose store takes everything at once and keeps nothing:
//! for trying third-party senders (python-hl7's `mllp_send`, Mirth, HAPI
//! TestPanel) against the real source.
//!
//! `cargo run -p wardlink-devices --example mllp_sink -- [addr] [seconds]`
//!
//! Prints one line per message (control id and the answer's MSA) to stdout,
//! and stops after `seconds` (default 30).

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use wardlink_devices::mllp::{MllpListener, MllpOptions};
use wardlink_devices::{channel, Reply, ToStore};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let listen = args
        .next()
        .unwrap_or_else(|| "127.0.0.1:2575".into())
        .parse()?;
    let seconds: u64 = args.next().map_or(Ok(30), |a| a.parse())?;
    let (submitter, mut rx) = channel(64);
    tokio::spawn(async move {
        let mut id = 0;
        while let Some(req) = rx.recv().await {
            match req {
                ToStore::Commit { received, reply } => {
                    id += 1;
                    let answer = received.answer.clone().unwrap_or_default();
                    let msa = answer
                        .split(|&b| b == b'\r')
                        .nth(1)
                        .map(|s| String::from_utf8_lossy(s).into_owned())
                        .unwrap_or_default();
                    println!(
                        "stored #{id}: control_id={:?} bytes={} answer {msa}",
                        received.header.control_id,
                        received.bytes.len()
                    );
                    let _ = reply.send(Reply::Stored { id });
                }
                ToStore::Rejected { why, .. } => println!("rejected: {}", why.as_str()),
                // Only DICOM objects are staged.
                ToStore::Stage { .. } | ToStore::Finish { .. } | ToStore::Retract { .. } => {}
            }
        }
    });
    let listener = MllpListener::bind(MllpOptions {
        name: Arc::from("sink"),
        listen,
        allow: Vec::new(),
        max_connections: 16,
        max_message_bytes: 16 << 20,
        idle_timeout: Duration::from_secs(60),
        duplicate_window: Duration::ZERO,
        commit_blocks: false,
        tls: None,
    })
    .await?;
    println!("listening on {}", listener.local_addr());
    let shutdown = CancellationToken::new();
    let stop = shutdown.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(seconds)).await;
        stop.cancel();
    });
    listener.run(submitter, shutdown).await;
    Ok(())
}
