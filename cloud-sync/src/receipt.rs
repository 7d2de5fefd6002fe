//! The collector's receipt: its signed word that it stored a batch.
//!
//! A gateway deletes a sealed batch only after a receipt that verifies
//! against the collector's public key (configured on the gateway) and names
//! exactly that batch: the same gateway id, sequence number and header
//! SHA-256. A receipt that fails either check means "not stored": keep the
//! batch and retry (`docs/batch-format.md` §8).
//!
//! The signed bytes are five `key=value\n` lines, like a batch header:
//!
//! ```text
//! wardlink-receipt/1
//! gateway_id=gw-…
//! seq=42
//! header_sha256=<64 lowercase hex>
//! stored_ms=1795000000000
//! ```
//!
//! and the signature is Ed25519 by the collector's key over the SHA-256
//! digest of those bytes. On the wire (the body of a `200` from
//! `POST /v1/batches`) it is a JSON object with the four values and
//! `signature` (128 lowercase hex digits). A re-sent batch gets the same
//! receipt, byte for byte: the collector stores the receipt with the batch.

use ed25519_dalek::{Signature, Signer as _, Verifier as _};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::batch::{Batch, Sha256Digest};
use crate::hex;
use crate::keys::{GatewayId, PublicKey, SigningKeyFile};

/// A receipt for one stored batch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Receipt {
    /// The gateway whose batch was stored.
    pub gateway_id: String,
    /// The batch's sequence number.
    pub seq: u64,
    /// The batch's header SHA-256, lowercase hex.
    pub header_sha256: String,
    /// When the collector committed the batch, ms since the Unix epoch.
    pub stored_ms: u64,
    /// Ed25519 signature by the collector over SHA-256 of [`Receipt::signed_bytes`], lowercase hex.
    pub signature: String,
}

/// Why a receipt does not acknowledge the batch it should.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ReceiptError {
    /// Not the receipt's JSON shape.
    #[error("receipt is not valid JSON of the expected shape: {0}")]
    Malformed(String),
    /// The signature does not verify against the collector's key.
    #[error("receipt signature does not verify against the collector's key")]
    BadSignature,
    /// A well-signed receipt for another batch.
    #[error(
        "receipt is for {gateway_id} seq {seq} header {header_sha256}, not for the batch sent"
    )]
    OtherBatch {
        /// The receipt's gateway.
        gateway_id: String,
        /// The receipt's sequence.
        seq: u64,
        /// The receipt's header hash.
        header_sha256: String,
    },
}

impl Receipt {
    /// Sign a receipt for a batch the collector has just committed.
    pub fn sign(
        collector: &SigningKeyFile,
        gateway_id: &GatewayId,
        seq: u64,
        header_sha256: &Sha256Digest,
        stored_ms: u64,
    ) -> Receipt {
        let mut r = Receipt {
            gateway_id: gateway_id.to_string(),
            seq,
            header_sha256: hex::encode(header_sha256),
            stored_ms,
            signature: String::new(),
        };
        let digest = Sha256::digest(r.signed_bytes());
        r.signature = hex::encode(&collector.signing_key().sign(&digest).to_bytes());
        r
    }

    /// The bytes whose SHA-256 the signature covers (see the module doc).
    pub fn signed_bytes(&self) -> Vec<u8> {
        format!(
            "wardlink-receipt/1\ngateway_id={}\nseq={}\nheader_sha256={}\nstored_ms={}\n",
            self.gateway_id, self.seq, self.header_sha256, self.stored_ms
        )
        .into_bytes()
    }

    /// The receipt as sent on the wire.
    pub fn to_json(&self) -> String {
        // A struct of strings and integers always serializes.
        serde_json::to_string(self).unwrap_or_default()
    }

    /// Parse a receipt from the wire.
    ///
    /// # Errors
    /// The bytes are not a receipt object.
    pub fn from_json(bytes: &[u8]) -> Result<Receipt, ReceiptError> {
        serde_json::from_slice(bytes).map_err(|e| ReceiptError::Malformed(e.to_string()))
    }

    /// Check that the collector signed this receipt and that it names
    /// `batch`. Only then may the gateway delete the batch.
    ///
    /// # Errors
    /// A bad signature, or a receipt for another batch.
    pub fn verify_for(&self, collector: &PublicKey, batch: &Batch) -> Result<(), ReceiptError> {
        let sig = hex::decode::<64>(&self.signature).ok_or(ReceiptError::BadSignature)?;
        let digest = Sha256::digest(self.signed_bytes());
        collector
            .verifying_key()
            .verify(&digest, &Signature::from_bytes(&sig))
            .map_err(|_| ReceiptError::BadSignature)?;
        let h = batch.header();
        if self.gateway_id != h.gateway_id.as_str()
            || self.seq != h.seq
            || self.header_sha256 != hex::encode(&batch.header_sha256())
        {
            return Err(ReceiptError::OtherBatch {
                gateway_id: self.gateway_id.clone(),
                seq: self.seq,
                header_sha256: self.header_sha256.clone(),
            });
        }
        Ok(())
    }
}

#[cfg(test)]
#[expect(clippy::unwrap_used, reason = "tests: a failed step is a failed test")]
mod tests {
    use super::*;
    use crate::batch::{seal, Chain, SealMeta};

    #[test]
    fn a_receipt_acknowledges_only_its_batch() {
        let gw = SigningKeyFile::from_seed([1; 32]);
        let collector = SigningKeyFile::from_seed([9; 32]);
        let meta = SealMeta {
            created_ms: 1,
            backlog: 0,
            zstd_level: 3,
        };
        let a = seal(&[r#"{"event_id":1}"#], &Chain::GENESIS, &gw, meta).unwrap();
        let b = seal(&[r#"{"event_id":2}"#], &a.chain_after(), &gw, meta).unwrap();
        let r = Receipt::sign(&collector, &gw.gateway_id(), 1, &a.header_sha256(), 5);
        let r = Receipt::from_json(r.to_json().as_bytes()).unwrap();
        r.verify_for(&collector.public_key(), &a).unwrap();
        assert!(matches!(
            r.verify_for(&collector.public_key(), &b),
            Err(ReceiptError::OtherBatch { .. })
        ));
        assert_eq!(
            r.verify_for(&gw.public_key(), &a),
            Err(ReceiptError::BadSignature)
        );
        let mut forged = r.clone();
        forged.stored_ms += 1;
        assert_eq!(
            forged.verify_for(&collector.public_key(), &a),
            Err(ReceiptError::BadSignature)
        );
    }
}
