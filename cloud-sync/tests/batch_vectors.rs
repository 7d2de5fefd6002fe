//! The test vectors of docs/batch-format.md: checked here in Rust, and by an
//! independent implementation (Python's `cryptography` and `zstandard`).
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{json, Value};
use sha2::{Digest as _, Sha256};
use wardlink_sync::batch::{seal, verify, Batch, Chain, SealMeta};
use wardlink_sync::keys::SigningKeyFile;
use wardlink_sync::receipt::Receipt;

type Result<T = ()> = std::result::Result<T, Box<dyn std::error::Error>>;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).to_path_buf()
}

fn vectors_path() -> PathBuf {
    root().join("tests/vectors/batch-v1.json")
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

/// The events of the vectors: two batches of one chain.
fn vector_events() -> [Vec<&'static str>; 2] {
    [
        vec![
            r#"{"event_id":1,"type":"observation","code":"MDC_ECG_HEART_RATE","value":72}"#,
            r#"{"event_id":2,"type":"observation","code":"MDC_PULS_OXIM_SAT_O2","value":97}"#,
        ],
        vec![r#"{"event_id":5,"type":"adt","action":"admit","patient":"P1-0f3a"}"#],
    ]
}

/// Seal the vector batches from `seed` and describe them as JSON (the shape
/// tests/vectors/verify_vectors.py reads).
fn make_vectors(seed: [u8; 32], collector_seed: [u8; 32]) -> Value {
    let key = SigningKeyFile::from_seed(seed);
    let collector = SigningKeyFile::from_seed(collector_seed);
    let mut chain = Chain::GENESIS;
    let mut batches = Vec::new();
    let mut receipt = Value::Null;
    for (i, events) in vector_events().iter().enumerate() {
        let meta = SealMeta {
            created_ms: 1_795_000_000_000 + 5_000 * i as u64,
            backlog: [12, 0][i],
            zstd_level: 3,
        };
        let b = seal(events, &chain, &key, meta).unwrap();
        chain = b.chain_after();
        let ndjson: String = events.iter().map(|e| format!("{e}\n")).collect();
        batches.push(json!({
            "seq": b.header().seq,
            "created_ms": meta.created_ms,
            "backlog": meta.backlog,
            "ndjson": ndjson,
            "body_hex": hex(b.body()),
            "header": String::from_utf8(b.header_bytes().to_vec()).unwrap(),
            "header_sha256": hex(&b.header_sha256()),
            "signature_hex": hex(b.signature()),
            "wire_hex": hex(&b.encode()),
        }));
        if i == 0 {
            let r = Receipt::sign(
                &collector,
                &key.gateway_id(),
                1,
                &b.header_sha256(),
                1_795_000_000_250,
            );
            receipt = serde_json::from_str(&r.to_json()).unwrap();
        }
    }
    json!({
        "format": "wardlink-batch/1",
        "seed_hex": hex(&seed),
        "public_key_hex": key.public_key().to_string(),
        "gateway_id": key.gateway_id().to_string(),
        "batches": batches,
        "collector_seed_hex": hex(&collector_seed),
        "collector_public_key_hex": collector.public_key().to_string(),
        "receipt": receipt,
    })
}

fn vector_seeds() -> ([u8; 32], [u8; 32]) {
    let mut seed = [0u8; 32];
    let mut collector = [0u8; 32];
    for i in 0..32u8 {
        seed[i as usize] = i;
        collector[i as usize] = 0x20 + i;
    }
    (seed, collector)
}

/// The committed vectors are what this implementation produces, verify, and
/// appear verbatim in the spec. (Set WARDLINK_REGENERATE_VECTORS=1 to write
/// the file; only ever for a new format version.)
#[test]
fn committed_vectors_match_this_implementation_and_the_spec() -> Result {
    let (seed, collector_seed) = vector_seeds();
    let fresh = make_vectors(seed, collector_seed);
    if std::env::var_os("WARDLINK_REGENERATE_VECTORS").is_some() {
        std::fs::write(vectors_path(), serde_json::to_string_pretty(&fresh)? + "\n")?;
    }
    let committed: Value = serde_json::from_str(&std::fs::read_to_string(vectors_path())?)?;

    // Independent of how zstd compresses today: take the committed body and
    // check that the header, hash chain and signature follow from it.
    let key = SigningKeyFile::from_seed(seed);
    assert_eq!(committed["public_key_hex"], key.public_key().to_string());
    assert_eq!(committed["gateway_id"], key.gateway_id().to_string());
    let mut prev = [0u8; 32];
    for v in committed["batches"].as_array().unwrap() {
        let wire = unhex(v["wire_hex"].as_str().unwrap());
        let b = Batch::decode(&wire)?;
        assert_eq!(b.header_bytes(), v["header"].as_str().unwrap().as_bytes());
        assert_eq!(hex(b.body()), v["body_hex"]);
        assert_eq!(hex(&b.header_sha256()), v["header_sha256"]);
        assert_eq!(b.header().prev_header_sha256, prev);
        let sig = ed25519_dalek::Signer::sign(key.signing_key(), &Sha256::digest(b.header_bytes()));
        assert_eq!(
            hex(&sig.to_bytes()),
            v["signature_hex"],
            "deterministic signature"
        );
        let verified = verify(&b, &key.public_key())?;
        assert_eq!(verified.ndjson(), v["ndjson"].as_str().unwrap());
        assert_eq!(b.encode(), wire);
        prev = b.header_sha256();
    }
    let collector = SigningKeyFile::from_seed(collector_seed);
    let receipt = Receipt::from_json(committed["receipt"].to_string().as_bytes())?;
    let first = Batch::decode(&unhex(
        committed["batches"][0]["wire_hex"].as_str().unwrap(),
    ))?;
    receipt.verify_for(&collector.public_key(), &first)?;

    // The spec shows every value verbatim.
    let spec = std::fs::read_to_string(root().join("../docs/batch-format.md"))?;
    let mut shown = vec![
        committed["seed_hex"].as_str().unwrap().to_string(),
        committed["public_key_hex"].as_str().unwrap().to_string(),
        committed["gateway_id"].as_str().unwrap().to_string(),
        committed["collector_seed_hex"]
            .as_str()
            .unwrap()
            .to_string(),
        committed["collector_public_key_hex"]
            .as_str()
            .unwrap()
            .to_string(),
        committed["receipt"]["signature"]
            .as_str()
            .unwrap()
            .to_string(),
    ];
    for v in committed["batches"].as_array().unwrap() {
        for k in ["header", "body_hex", "header_sha256", "signature_hex"] {
            shown.push(v[k].as_str().unwrap().to_string());
        }
    }
    for s in shown {
        assert!(
            spec.contains(&s),
            "docs/batch-format.md does not show {s:?}"
        );
    }
    Ok(())
}

/// Python's `cryptography` (OpenSSL's Ed25519) and `zstandard` verify the
/// committed vectors and a batch sealed just now with a random key, rebuilding
/// each header from the spec alone.
#[test]
fn an_independent_implementation_verifies_the_vectors() -> Result {
    let Some(python) = std::env::var_os("WARDLINK_TEST_PYTHON") else {
        assert!(
            std::env::var_os("WARDLINK_REQUIRE_EXTERNAL").is_none(),
            "WARDLINK_TEST_PYTHON is not set but external verifiers are required"
        );
        eprintln!("SKIPPED: python not set up; run scripts/test.sh to include this test");
        return Ok(());
    };
    let dir = tempfile::tempdir()?;
    let mut seed = [0u8; 32];
    let mut collector_seed = [0u8; 32];
    getrandom::fill(&mut seed)?;
    getrandom::fill(&mut collector_seed)?;
    let fresh = dir.path().join("fresh.json");
    std::fs::write(
        &fresh,
        serde_json::to_string(&make_vectors(seed, collector_seed))?,
    )?;
    let script = root().join("tests/vectors/verify_vectors.py");
    let out = Command::new(&python)
        .arg(&script)
        .arg(vectors_path())
        .arg(&fresh)
        .output()?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "verify_vectors.py failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
    assert_eq!(stdout.matches("ok ").count(), 2, "{stdout}");
    Ok(())
}
