//! MQTT ingest benchmark (issue 5): readings from a real broker (Debian's
//! mosquitto on 127.0.0.1) into the store, against a baseline measured in
//! the same run.
//!
//! For each variant a backlog of N bed-sensor messages (the simulator's mix
//! of occupancy flags, weights and JSON vitals, 30–110 bytes) is queued at
//! the broker for that variant's persistent session while it is offline;
//! then the consumer starts and the clock runs until all N are consumed:
//!
//! - `baseline`: a plain rumqttc subscriber (QoS 1, persistent session,
//!   automatic PUBACKs) that only counts messages: the broker's and the
//!   client library's ceiling on this machine;
//! - `wardlink`: the real MQTT source (decode to a reading document,
//!   commit before PUBACK, acker in order) into the real store writer
//!   (group commit, WAL, synchronous=FULL); done when the store answered N;
//! - `wardlink + pipeline`: the same with the pipeline thread turning the
//!   stored readings into observation events concurrently, as in the daemon.
//!
//! The broker allows 1000 messages in flight per client
//! (`max_inflight_messages 1000`; mosquitto's default of 20 caps any QoS 1
//! consumer far lower, see docs/configuration.md).
//!
//! Figures (2-core machine, 2026-12-04, 100,000 messages, one run):
//! baseline 638,700 messages/s; wardlink 71,200/s (0.11x baseline, 249
//! commits of 402 messages); wardlink + pipeline 69,100/s (0.11x). Target
//! 20,000/s. Before the fix of 2026-12-04 the source stalled once its
//! backlog passed its internal queues (99 messages/s on 20,000; see
//! `mqtt::source`, "The poll loop never waits").
//!
//! `RUST_LOG=wardlink_devices=info` prints the source's log (reconnects).
//!
//! Run: `cargo bench -p wardlink --bench mqtt_ingest`
//! (`WARDLINK_BENCH_READINGS=200000` for a longer run; default 100000).
//! Needs mosquitto (scripts/install-test-deps.sh).
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "benchmark harness")]

#[path = "../../tests/common/broker.rs"]
mod broker;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use tokio_util::sync::CancellationToken;
use wardlink::pipeline::{Pipeline, PipelineSettings, SiteKeys};
use wardlink::processor::Processor;
use wardlink::store::{self, StoreWriter, WriterOptions};
use wardlink_devices::link::{LinkReport, LinkReporter, LinkStatus};
use wardlink_devices::mqtt::MqttSourceTask;
use wardlink_devices::sim::bed_sensors::{self, BedSensors};

use broker::Broker;

fn readings() -> u64 {
    std::env::var("WARDLINK_BENCH_READINGS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000)
}

/// Queue `n` simulator messages at the broker (the consumer is offline).
async fn backlog(broker: &Broker, n: u64, seed: u64) {
    let mut sensors = BedSensors::new("ICU", 32, seed);
    let t = Instant::now();
    let acked = bed_sensors::publish(
        "127.0.0.1",
        broker.port,
        &mut sensors,
        n,
        0.0,
        CancellationToken::new(),
        |_| {},
    )
    .await
    .expect("publish");
    assert_eq!(acked, n);
    eprintln!(
        "  queued {n} messages at the broker in {:.1} s",
        t.elapsed().as_secs_f64()
    );
}

fn options(client_id: &str, port: u16) -> MqttOptions {
    let mut o = MqttOptions::new(client_id, "127.0.0.1", port);
    o.set_keep_alive(Duration::from_secs(30))
        .set_clean_session(false);
    o
}

/// Plain subscriber: connect once to create the session, go away, let the
/// backlog queue, come back and count.
async fn baseline(broker: &Broker, n: u64) -> f64 {
    let topic = "hospital/+/bed/+/+";
    {
        let (c, mut el) = AsyncClient::new(options("bench-baseline", broker.port), 64);
        c.subscribe(topic, QoS::AtLeastOnce).await.unwrap();
        loop {
            if let Ok(Event::Incoming(Packet::SubAck(_))) = el.poll().await {
                break;
            }
        }
        c.disconnect().await.unwrap();
        while el.poll().await.is_ok() {}
    }
    backlog(broker, n, 1).await;
    let (_c, mut el) = AsyncClient::new(options("bench-baseline", broker.port), 64);
    let t = Instant::now();
    let mut seen = 0u64;
    while seen < n {
        match el.poll().await {
            Ok(Event::Incoming(Packet::Publish(_))) => seen += 1,
            Ok(_) => {}
            Err(e) => panic!("baseline: {e}"),
        }
    }
    n as f64 / t.elapsed().as_secs_f64()
}

fn source_config(broker: &Broker, client_id: &str) -> wardlink_config::MqttSource {
    let toml = bed_sensors::source_config("beds", &broker.url()).replacen(
        "\n\n",
        &format!("\nclient_id = \"{client_id}\"\n\n"),
        1,
    );
    wardlink_config::from_toml_str(&toml, "bench")
        .expect("config")
        .sources
        .mqtt
        .remove(0)
}

/// Run the real source until the link is up once, then stop it (the
/// broker keeps the persistent session and its subscriptions).
async fn create_session(cfg: &wardlink_config::MqttSource) {
    let (submitter, _rx) = wardlink_devices::channel(16);
    let up = Arc::new(tokio::sync::Notify::new());
    let u = up.clone();
    let link: LinkReporter = Arc::new(move |s: LinkReport| {
        if s.status == LinkStatus::Connected {
            u.notify_one();
        }
    });
    let stop = CancellationToken::new();
    let task = MqttSourceTask::new(cfg.clone()).unwrap();
    let h = tokio::spawn(task.run(submitter, link, stop.clone()));
    up.notified().await;
    // Let the SUBACK arrive before leaving.
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.cancel();
    h.await.unwrap();
}

async fn wardlink(broker: &Broker, n: u64, with_pipeline: bool) -> (f64, u64) {
    let id = if with_pipeline {
        "bench-wl-pipeline"
    } else {
        "bench-wl"
    };
    let cfg = source_config(broker, id);
    create_session(&cfg).await;
    backlog(broker, n, 2).await;

    let dir = tempfile::tempdir().unwrap();
    let conn = store::open_for_writing(dir.path(), None).unwrap();
    let group_commit_max = wardlink_config::Config::default().store.group_commit_max;
    let (submitter, requests) = wardlink_devices::channel(group_commit_max * 2);
    let writer = StoreWriter::spawn(
        conn,
        requests,
        WriterOptions {
            group_commit_max,
            raw_retention: Duration::from_secs(86_400),
            outbox_max_bytes: None,
            heartbeat: None,
        },
        tokio::runtime::Handle::current(),
    )
    .unwrap();
    let processor = with_pipeline.then(|| {
        let pipeline = Pipeline::new(
            PipelineSettings::default(),
            SiteKeys::from_secrets(&[5; 32], None),
        )
        .unwrap();
        Processor::spawn(dir.path(), pipeline, writer.jobs(), writer.doorbell()).unwrap()
    });
    let stats = writer.stats();
    let stop = CancellationToken::new();
    let task = MqttSourceTask::new(cfg).unwrap();
    let t = Instant::now();
    let h = tokio::spawn(task.run(submitter, wardlink_devices::link::log_only(), stop.clone()));
    while stats.requests.load(Ordering::Relaxed) < n {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let rate = n as f64 / t.elapsed().as_secs_f64();
    let groups = stats.groups.load(Ordering::Relaxed);
    stop.cancel();
    h.await.unwrap();
    if let Some(p) = processor {
        tokio::task::spawn_blocking(move || p.stop()).await.unwrap();
    }
    tokio::task::spawn_blocking(move || writer.join())
        .await
        .unwrap();
    (rate, groups)
}

fn main() {
    if broker::mosquitto_bin().is_none() {
        eprintln!("mqtt_ingest: mosquitto is not installed (scripts/install-test-deps.sh)");
        return;
    }
    if std::env::var_os("RUST_LOG").is_some() {
        // e.g. RUST_LOG=wardlink_devices=info,rumqttc=warn: why a connection ended.
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_writer(std::io::stderr)
            .init();
    }
    let n = readings();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let broker = Broker::start().expect("broker");
    rt.block_on(async {
        println!("MQTT ingest, {n} bed-sensor messages per variant, mosquitto on 127.0.0.1");
        eprintln!("baseline:");
        let base = baseline(&broker, n).await;
        println!("  baseline (rumqttc subscriber, count only)  {base:>9.0} messages/s");
        eprintln!("wardlink:");
        let (wl, groups) = wardlink(&broker, n, false).await;
        println!(
            "  wardlink (decode, store, PUBACK after commit) {wl:>9.0} messages/s  ({:.2}x baseline; {groups} commits, {:.0} messages per commit)",
            wl / base,
            n as f64 / groups.max(1) as f64
        );
        eprintln!("wardlink + pipeline:");
        let (wp, _) = wardlink(&broker, n, true).await;
        println!(
            "  wardlink + pipeline                           {wp:>9.0} messages/s  ({:.2}x baseline)",
            wp / base
        );
    });
}
