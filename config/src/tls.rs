//! `tls = { cert, key, client_ca }` of a `[[source.mllp]]` listener: MLLP over
//! TLS. Raw shape, validation and the validated [`MllpTls`], kept together;
//! `raw` and `validate` only call in.
//!
//! All three keys default to `""`; `cert` and `key` both empty means plain
//! TCP (the default). The files are read when the listener starts (and again
//! on reload), not here: validation does no I/O.

use std::path::PathBuf;

use serde::Deserialize;

use crate::raw::Field;
use crate::report::Report;
use crate::validate::Scope;

const FIX_CERT: &str = "write the path of the listener's PEM certificate chain in quotes, e.g. \
     \"/etc/wardlink/mllp-cert.pem\", together with key; or leave cert, key and client_ca \"\" \
     for plain TCP";
const FIX_KEY: &str = "write the path of the listener's PEM private key in quotes, e.g. \
     \"/etc/wardlink/mllp-key.pem\", together with cert; or leave cert, key and client_ca \"\" \
     for plain TCP";
const FIX_CLIENT_CA: &str = "write the path of the PEM file of the CA that signs the senders' \
     certificates in quotes, or \"\" to accept any sender without a certificate; it needs cert \
     and key";

/// TLS settings of one MLLP listener, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MllpTls {
    /// The listener's certificate chain (PEM).
    pub cert: PathBuf,
    /// Its private key (PEM).
    pub key: PathBuf,
    /// When set, only senders presenting a certificate signed by this CA
    /// (PEM) are accepted; others fail the handshake.
    pub client_ca: Option<PathBuf>,
}

/// `tls = { ... }` as written.
#[derive(Debug, Deserialize)]
#[serde(
    deny_unknown_fields,
    rename_all = "snake_case",
    expecting = "a table such as { cert = \"...\", key = \"...\", client_ca = \"...\" }"
)]
pub(crate) struct RawTls {
    #[serde(default = "empty")]
    pub(crate) cert: Field<String>,
    #[serde(default = "empty")]
    pub(crate) key: Field<String>,
    #[serde(default = "empty")]
    pub(crate) client_ca: Field<String>,
}

impl Default for RawTls {
    fn default() -> Self {
        RawTls {
            cert: empty(),
            key: empty(),
            client_ca: empty(),
        }
    }
}

fn empty() -> Field<String> {
    Field::absent(String::new())
}

/// Validate a listener's `tls` table (`scope` is the table itself).
pub(crate) fn validate(report: &mut Report<'_>, scope: &Scope, raw: &RawTls) -> Option<MllpTls> {
    let cert = scope.get(report, "cert", &raw.cert, FIX_CERT)?.trim();
    let key = scope.get(report, "key", &raw.key, FIX_KEY)?.trim();
    let ca = scope
        .get(report, "client_ca", &raw.client_ca, FIX_CLIENT_CA)?
        .trim();
    match (cert.is_empty(), key.is_empty()) {
        (true, true) => {
            if !ca.is_empty() {
                report.push(
                    scope.span_of(&raw.client_ca),
                    scope.key("client_ca"),
                    "is set but cert and key are empty",
                    FIX_CLIENT_CA,
                );
            }
            None
        }
        (false, true) => {
            report.push(
                scope.span_of(&raw.key),
                scope.key("key"),
                "is empty but cert is set",
                FIX_KEY,
            );
            None
        }
        (true, false) => {
            report.push(
                scope.span_of(&raw.cert),
                scope.key("cert"),
                "is empty but key is set",
                FIX_CERT,
            );
            None
        }
        (false, false) => Some(MllpTls {
            cert: PathBuf::from(cert),
            key: PathBuf::from(key),
            client_ca: (!ca.is_empty()).then(|| PathBuf::from(ca)),
        }),
    }
}

#[cfg(test)]
mod tests {
    use crate::from_toml_str;

    #[test]
    fn tls_is_off_by_default_and_parsed_when_set() -> Result<(), String> {
        let c = from_toml_str("[[source.mllp]]\nname = \"a\"\n", "t").map_err(|e| e.to_string())?;
        assert_eq!(c.sources.mllp[0].tls, None);
        let c = from_toml_str(
            "[[source.mllp]]\nname = \"a\"\ntls = { cert = \"c.pem\", key = \"k.pem\", client_ca = \"ca.pem\" }\n",
            "t",
        )
        .map_err(|e| e.to_string())?;
        let tls = c.sources.mllp[0].tls.clone().ok_or("no tls")?;
        assert_eq!(tls.cert.to_str(), Some("c.pem"));
        assert_eq!(
            tls.client_ca
                .and_then(|p| p.to_str().map(String::from))
                .as_deref(),
            Some("ca.pem")
        );
        Ok(())
    }

    #[test]
    fn half_a_tls_table_names_the_missing_key() {
        let e = from_toml_str(
            "[[source.mllp]]\nname = \"a\"\ntls = { cert = \"c.pem\" }\n",
            "t",
        )
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
        assert!(
            e.contains("t:3: source.mllp[0].tls.key: is empty but cert is set"),
            "{e}"
        );
        let e = from_toml_str(
            "[[source.mllp]]\nname = \"a\"\ntls = { client_ca = \"ca.pem\", bogus = 1 }\n",
            "t",
        )
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
        assert!(e.contains("source.mllp[0].tls"), "{e}");
    }
}
