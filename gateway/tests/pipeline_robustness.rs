//! `process` never panics (architecture.md invariant 5): random bytes,
//! every truncation of real messages, and random mutations; and it is
//! deterministic for the same input and keys.
#![expect(clippy::unwrap_used, reason = "tests fail loudly")]

mod support;

use std::time::{Duration, SystemTime};

use support::{phi_adt, phi_oru, Rng};
use wardlink::pipeline::{
    Action, FieldOverride, NoHistory, Outcome, Pipeline, PipelineSettings, RawMessage, SiteKeys,
};

fn pipelines() -> Vec<Pipeline> {
    let keys = SiteKeys::from_secrets(&[5; 32], None);
    let scrub_all = ["NTE-3", "OBX-5:TX", "OBX-5:FT", "PID-5", "ZPI"]
        .iter()
        .map(|k| FieldOverride {
            field: (*k).to_owned(),
            action: Action::Scrub,
        })
        .collect();
    vec![
        Pipeline::new(PipelineSettings::default(), keys.clone()).unwrap(),
        Pipeline::new(
            PipelineSettings {
                overrides: scrub_all,
                ..PipelineSettings::default()
            },
            keys,
        )
        .unwrap(),
    ]
}

fn run(p: &Pipeline, bytes: &[u8]) -> Outcome {
    let raw = RawMessage {
        id: 1,
        source: "fuzz",
        received_at: SystemTime::UNIX_EPOCH + Duration::from_secs(1_717_200_000),
        bytes,
        charset_hint: None,
    };
    let out = p.process(&raw, &NoHistory);
    // Serialization and explanation must not panic either.
    if let Outcome::Events { events, .. } = &out {
        assert!(!events.is_empty());
        serde_json::to_string(events).unwrap();
    }
    let _ = p.explain(&raw, &NoHistory).to_string();
    out
}

#[test]
fn random_bytes() {
    let ps = pipelines();
    let mut rng = Rng::new(1);
    let alphabet = b"MSHPIDOBXV1|^~\\&#\r\n0123456789.+-XFSTRE \"\xE9\xC3\xA9\x00\x0B\x1C";
    for i in 0..4000 {
        let len = rng.below(600) as usize;
        let mut b: Vec<u8> = (0..len)
            .map(|_| {
                if rng.below(3) == 0 {
                    rng.below(256) as u8
                } else {
                    alphabet[rng.below(alphabet.len() as u64) as usize]
                }
            })
            .collect();
        if i % 2 == 0 {
            let mut h = b"MSH|^~\\&|".to_vec();
            h.append(&mut b);
            b = h;
        }
        for p in &ps {
            run(p, &b);
        }
    }
}

#[test]
fn every_truncation_of_real_messages() {
    let ps = pipelines();
    let mut rng = Rng::new(2);
    let samples = [
        phi_adt(&mut rng, 1).0,
        phi_oru(&mut rng, 2).0,
        support::pcd_oru(&mut rng, 3).0,
    ];
    for s in &samples {
        let b = s.as_bytes();
        for cut in 0..b.len() {
            run(&ps[cut % 2], &b[..cut]);
        }
    }
}

#[test]
fn random_mutations_of_real_messages() {
    let ps = pipelines();
    let mut rng = Rng::new(3);
    let specials = [
        b'|', b'^', b'~', b'\\', b'&', b'\r', b'\n', 0xFF, b'X', b'0', b'9',
    ];
    for i in 0..1500 {
        let base = match i % 3 {
            0 => phi_adt(&mut rng, i).0,
            1 => phi_oru(&mut rng, i).0,
            _ => support::pcd_oru(&mut rng, i).0,
        };
        let mut b = base.into_bytes();
        for _ in 0..1 + rng.below(8) {
            let at = rng.below(b.len() as u64) as usize;
            match rng.below(3) {
                0 => b[at] = specials[rng.below(specials.len() as u64) as usize],
                1 => {
                    b.remove(at);
                }
                _ => b.insert(at, specials[rng.below(specials.len() as u64) as usize]),
            }
        }
        run(&ps[i % 2], &b);
    }
}

#[test]
fn deterministic_for_the_same_keys() {
    let mut rng = Rng::new(4);
    for i in 0..50 {
        let (t, _) = if i % 2 == 0 {
            phi_adt(&mut rng, i)
        } else {
            phi_oru(&mut rng, i)
        };
        let a = run(&pipelines()[0], t.as_bytes());
        let b = run(&pipelines()[0], t.as_bytes());
        assert_eq!(a, b);
    }
}
