//! Crash safety (invariant 1): `kill -9` the real binary mid-stream on several
//! connections, restart it, and prove that every control id that was
//! acknowledged is in the store. Issue 2.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;

const CONNECTIONS: usize = 8;

#[test]
fn kill_9_mid_stream_loses_no_acknowledged_message() -> Result {
    let mut g = Gateway::start(&mllp_source("crash", ""))?;
    let mut all_acked: Vec<String> = Vec::new();

    for round in 0..3 {
        let addr = g.addr("crash");
        let acked = Arc::new(Mutex::new(Vec::<String>::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let mut senders = Vec::new();
        for conn in 0..CONNECTIONS {
            let acked = acked.clone();
            let stop = stop.clone();
            senders.push(std::thread::spawn(move || {
                let Ok(mut c) = Client::connect(addr) else {
                    return;
                };
                let mut i = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let id = format!("R{round}C{conn}M{i}");
                    match c.exchange(&oru(&id)) {
                        Ok(ack) if ack.code == "AA" && ack.control_id == id => {
                            acked.lock().unwrap().push(id)
                        }
                        Ok(ack) => panic!("unexpected answer {}", ack.raw),
                        Err(_) => return, // the daemon died under us: expected
                    }
                    i += 1;
                }
            }));
        }
        // Let traffic flow, then kill -9 while every connection is mid-stream.
        assert!(
            wait_until(Duration::from_secs(20), || acked.lock().unwrap().len()
                >= 300 * (round + 1)),
            "traffic did not flow:\n{}",
            g.stderr()
        );
        let status = g.signal_and_wait("-KILL", Duration::from_secs(10))?;
        assert!(!status.success());
        stop.store(true, Ordering::Relaxed);
        for s in senders {
            s.join().map_err(|_| "sender thread panicked")?;
        }
        all_acked.extend(acked.lock().unwrap().drain(..));

        // Restart on the same store and check every acknowledged id.
        g.spawn()?;
        let conn = g.open_store()?;
        let mut stmt = conn
            .prepare("SELECT COUNT(*) FROM messages WHERE source = 'crash' AND control_id = ?1")?;
        let mut missing = Vec::new();
        for id in &all_acked {
            let n: i64 = stmt.query_row([id], |r| r.get(0))?;
            if n != 1 {
                missing.push(id.clone());
            }
        }
        assert!(
            missing.is_empty(),
            "round {round}: {} of {} acknowledged messages missing after kill -9, e.g. {:?}",
            missing.len(),
            all_acked.len(),
            &missing[..missing.len().min(5)]
        );
        let st = g.status_json()?;
        assert_accounting(&st);
        assert!(
            st["acked"].as_i64().unwrap_or(0) >= all_acked.len() as i64,
            "{st}"
        );

        // The last messages acknowledged before the kill are known as
        // duplicates after the restart: a resend gets the original ACK and
        // is not stored again.
        let mut c = Client::connect(g.addr("crash"))?;
        let recent: Vec<String> = all_acked.iter().rev().take(20).cloned().collect();
        let before = st["duplicates"].as_i64().unwrap_or(0);
        for id in &recent {
            let ack = c.exchange(&oru(id))?;
            assert_eq!(
                (ack.code.as_str(), ack.control_id.as_str()),
                ("AA", id.as_str())
            );
            let n: i64 = stmt.query_row([id], |r| r.get(0))?;
            assert_eq!(n, 1, "round {round}: the resent {id} was stored again");
        }
        let st = g.status_json()?;
        assert_eq!(
            st["duplicates"].as_i64().unwrap_or(0) - before,
            recent.len() as i64,
            "{st}"
        );
    }
    Ok(())
}
