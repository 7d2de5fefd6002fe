//! Tamper and garbage resistance of the batch wire format (fuzz-style, with a
//! fixed-seed PRNG so a failure reproduces): decode never panics, and no
//! flipped bit in the length, header, signature or body is accepted.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

use wardlink_sync::batch::{seal, verify, Batch, Chain, SealMeta};
use wardlink_sync::keys::{PublicKey, SigningKeyFile};

/// xorshift64*: deterministic and good enough to pick bytes and positions.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

fn sample() -> (SigningKeyFile, Batch) {
    let key = SigningKeyFile::from_seed([3; 32]);
    let events: Vec<String> = (100..140)
        .map(|i| {
            format!(r#"{{"event_id":{i},"type":"observation","code":"MDC_TEMP","value":36.{i}}}"#)
        })
        .collect();
    let meta = SealMeta {
        created_ms: 1_795_000_000_000,
        backlog: 3,
        zstd_level: 3,
    };
    let b = seal(&events, &Chain::GENESIS, &key, meta).unwrap();
    (key, b)
}

/// Whether wire bytes pass both decode and verify.
fn accepted(wire: &[u8], key: &PublicKey) -> bool {
    match Batch::decode(wire) {
        Ok(b) => verify(&b, key).is_ok(),
        Err(_) => false,
    }
}

#[test]
fn a_flipped_bit_in_every_byte_is_rejected() {
    let (key, b) = sample();
    let wire = b.encode();
    let pk = key.public_key();
    assert!(accepted(&wire, &pk));
    let header_end = 4 + b.header_bytes().len();
    let sig_end = header_end + 64;
    let mut rejected = [0usize; 4];
    for i in 0..wire.len() {
        // One bit per byte, a different one each time (all 8 per byte cost
        // 8x the Ed25519 verifications for little more coverage).
        let bit = i % 8;
        let mut w = wire.clone();
        w[i] ^= 1 << bit;
        assert!(
            !accepted(&w, &pk),
            "bit {bit} of byte {i} flipped was accepted"
        );
        let part = match i {
            0..4 => 0,
            _ if i < header_end => 1,
            _ if i < sig_end => 2,
            _ => 3,
        };
        rejected[part] += 1;
    }
    assert!(rejected.iter().all(|&n| n > 0), "{rejected:?}");
}

#[test]
fn every_truncation_and_extension_is_rejected() {
    let (key, b) = sample();
    let wire = b.encode();
    let pk = key.public_key();
    for len in 0..wire.len() {
        assert!(Batch::decode(&wire[..len]).is_err(), "truncated to {len}");
    }
    let mut longer = wire.clone();
    longer.push(0);
    assert!(!accepted(&longer, &pk));
}

#[test]
fn decode_never_panics_on_random_or_mutated_bytes() {
    let (key, b) = sample();
    let wire = b.encode();
    let pk = key.public_key();
    let mut rng = Rng(0x5eed_1234_abcd_ef01);
    for round in 0..3_000 {
        let mut w = if round % 4 == 0 {
            // Pure garbage, sometimes with a plausible length prefix.
            let len = rng.below(600);
            let mut g: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
            if len >= 4 && rng.below(2) == 0 {
                g[..4].copy_from_slice(&(rng.below(len) as u32).to_be_bytes());
            }
            g
        } else {
            // The real batch with a few bytes changed, cut or repeated.
            let mut m = wire.clone();
            for _ in 0..=rng.below(4) {
                let i = rng.below(m.len());
                match rng.below(3) {
                    0 => m[i] = rng.next() as u8,
                    1 => m.truncate(i.max(1)),
                    _ => m.insert(i, m[i]),
                }
            }
            m
        };
        if let Ok(d) = Batch::decode(&w) {
            // A decodable batch re-encodes to the same bytes (canonical form).
            assert_eq!(d.encode(), w);
            let _ = verify(&d, &pk);
        }
        w.clear();
    }
}
