//! The pipeline: a stored raw message → de-identified events, or quarantine.
//!
//! Layout:
//! - [`hl7`]: charset decoding (MSH-18, UTF-8 first) and a lenient,
//!   borrowing HL7 v2 parser; HL7 timestamps.
//! - [`validate`]: the rule catalogue and structural/timestamp/value checks.
//! - [`normalize`]: ADT → `adt`, ORU^R01 → `observation`s (with the IHE
//!   PCD-01 containment tree), everything else → `hl7_other`.
//! - [`deidentify`]: applies the profile to every exported value.
//! - [`profile`]: the per-field action table (default: HIPAA Safe Harbor).
//! - [`detect`]: free-text identifier detectors (Aadhaar, ABHA, PAN, …).
//! - [`reading`]: device readings (serial, MQTT) → `observation`s.
//! - [`pseudonym`]: site keys, keyed pseudonyms and date offsets.
//! - [`dicom`], [`dicom_profile`]: stored DICOM headers and MPPS → imaging
//!   and procedure step events under PS3.15 Annex E.
//!
//! Invariants:
//! - **Nothing identifying leaves** (architecture.md invariant 2): every
//!   value in an [`wardlink_sync::Event`] has passed a profile action.
//! - **Deterministic.** The same bytes, receive time, settings and keys give
//!   the same events, so re-running after a crash or a quarantine release
//!   reproduces them (architecture.md step 3).
//! - **Never panics** on any input (tests feed random and truncated bytes);
//!   the store's `catch_unwind` is a second line, not the first.
//! - **Pure.** No I/O here except [`SiteKeys::load_or_create`]; the only
//!   state consulted is [`PipelineContext`].

pub mod deidentify;
pub mod detect;
pub mod dicom;
pub mod dicom_profile;
pub mod hl7;
pub mod normalize;
pub mod profile;
pub mod pseudonym;
pub mod reading;
pub mod validate;

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use wardlink_sync::{Body, Event, Issue, Severity, Text, SCHEMA_VERSION};

pub use profile::{Action, FieldOverride};
pub use pseudonym::{KeyError, SiteKeys};

use deidentify::Deid;
use hl7::{Declared, Message, ParseError, Ts};
use profile::Profile;
use pseudonym::IdKind;
use validate::{issue, TimeLimits};

/// One stored raw message, as the store hands it to the pipeline.
#[derive(Debug, Clone, Copy)]
pub struct RawMessage<'a> {
    /// The store's row id (not used in events; for the caller's bookkeeping).
    pub id: i64,
    /// The configured source name; copied into every event.
    pub source: &'a str,
    /// When the gateway received it (the ACK time base).
    pub received_at: SystemTime,
    /// The message bytes, MLLP framing removed.
    pub bytes: &'a [u8],
    /// MSH-18 as the source read it, if it did.
    pub charset_hint: Option<&'a str>,
}

/// State the pipeline may consult; the store implements it over SQLite.
pub trait PipelineContext {
    /// True when an earlier message already established this encounter
    /// (its pseudonym was in some `Outcome::Events::new_encounters`).
    fn encounter_known(&self, encounter_pseudonym: &str) -> bool;
}

/// A context with no history: every encounter is unknown (tests, `deid` CLI).
#[derive(Debug, Clone, Copy, Default)]
pub struct NoHistory;

impl PipelineContext for NoHistory {
    fn encounter_known(&self, _: &str) -> bool {
        false
    }
}

/// How dates leave the box.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DatePolicy {
    /// Every date of a patient moves by the same whole number of days in
    /// `-max_days..=max_days` (keyed per patient); time of day is kept.
    Shift {
        /// N of ±N days.
        max_days: u32,
    },
    /// Only the year is kept (HIPAA Safe Harbor literal reading).
    YearOnly,
}

impl Default for DatePolicy {
    fn default() -> Self {
        DatePolicy::Shift { max_days: 180 }
    }
}

/// Which key pseudonymizes network-wide identifiers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Scope {
    /// Everything with the site key (pseudonyms differ between sites).
    #[default]
    Site,
    /// ABHA numbers additionally with the shared network key
    /// (`patient_network`, equal at every site of the network).
    Network,
}

/// The pipeline's settings (the lead maps config keys onto these).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PipelineSettings {
    /// Date policy (default: shift ±180 days per patient).
    pub date_policy: DatePolicy,
    /// A timestamp later than receive time plus this is `TS_FUTURE` (default 5 min).
    pub max_future_skew: Duration,
    /// A timestamp older than receive time minus this is `TS_TOO_OLD` (default 30 days).
    pub max_age: Duration,
    /// Site overrides of single fields of the default profile.
    pub overrides: Vec<FieldOverride>,
    /// Pseudonym scope (default: site).
    pub pseudonym_scope: Scope,
}

impl Default for PipelineSettings {
    fn default() -> Self {
        PipelineSettings {
            date_policy: DatePolicy::default(),
            max_future_skew: Duration::from_secs(300),
            max_age: Duration::from_secs(30 * 86_400),
            overrides: Vec::new(),
            pseudonym_scope: Scope::Site,
        }
    }
}

/// Why a pipeline could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PipelineError {
    /// An override key does not parse.
    #[error(transparent)]
    BadOverride(#[from] profile::BadOverride),
    /// Network scope without a network key.
    #[error("pseudonym scope is network but no network key was loaded")]
    NetworkKeyMissing,
}

/// What became of one raw message.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// De-identified events for the outbox (at least one).
    Events {
        /// The events, in message order.
        events: Vec<Event>,
        /// Encounter pseudonyms this message established that the context did
        /// not know; the store records them in the same transaction.
        new_encounters: Vec<String>,
    },
    /// The message cannot be processed; it goes to quarantine.
    Quarantine {
        /// One line: the first fatal issue.
        reason: String,
        /// Everything validation found.
        issues: Vec<Issue>,
    },
}

/// One field's treatment, for `wardlink deid`. `result` is what leaves the
/// box (or `(removed)`), never the input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldTrace {
    /// Where, e.g. `PID-5`, `OBX[3]-5:ST`.
    pub field: String,
    /// What was done.
    pub action: Action,
    /// Which rule chose it (default profile line or site override) and notes.
    pub rule: String,
    /// The exported result.
    pub result: String,
}

/// What `explain` reports for one message.
#[derive(Debug, Clone, PartialEq)]
pub struct Explanation {
    /// The outcome `process` would return.
    pub outcome: Outcome,
    /// The charset used to decode the bytes.
    pub charset: &'static str,
    /// Fields as used by the events.
    pub event_fields: Vec<FieldTrace>,
    /// Every field of every segment under the profile (the `hl7_other` view).
    pub all_fields: Vec<FieldTrace>,
}

impl fmt::Display for Explanation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "charset: {}", self.charset)?;
        match &self.outcome {
            Outcome::Quarantine { reason, issues } => {
                writeln!(f, "quarantine: {reason}")?;
                for i in issues {
                    writeln!(
                        f,
                        "  {} {} {}: {}",
                        i.severity.as_str(),
                        i.code,
                        i.field.as_deref().unwrap_or("-"),
                        i.message
                    )?;
                }
            }
            Outcome::Events { events, .. } => {
                writeln!(f, "events ({}):", events.len())?;
                for e in events {
                    let json = serde_json::to_string(e)
                        .unwrap_or_else(|err| format!("<unserializable: {err}>"));
                    writeln!(f, "  {json}")?;
                }
            }
        }
        writeln!(f, "fields used by the events:")?;
        for t in &self.event_fields {
            writeln!(
                f,
                "  {:<16} {:<13} {:<40} [{}]",
                t.field,
                t.action.as_str(),
                t.result,
                t.rule
            )?;
        }
        writeln!(f, "every field under the profile:")?;
        for t in &self.all_fields {
            writeln!(
                f,
                "  {:<16} {:<13} {:<40} [{}]",
                t.field,
                t.action.as_str(),
                t.result,
                t.rule
            )?;
        }
        Ok(())
    }
}

/// The pipeline: profile, keys and settings.
#[derive(Debug, Clone)]
pub struct Pipeline {
    profile: Profile,
    keys: SiteKeys,
    settings: PipelineSettings,
    dicom: wardlink_config::DicomDeidConfig,
}

/// The default profile as text (`wardlink deid --print-profile`).
pub fn default_profile_text() -> String {
    profile::default_profile_text()
}

/// The DICOM profile as text (`wardlink deid --print-profile dicom`).
pub fn dicom_profile_text(options: &wardlink_config::DicomDeidConfig) -> String {
    dicom_profile::profile_text(options)
}

fn epoch_secs(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        Err(e) => -i64::try_from(e.duration().as_secs()).unwrap_or(i64::MAX),
    }
}

fn quarantine(issues: Vec<Issue>) -> Outcome {
    let reason = issues
        .iter()
        .find(|i| i.severity == Severity::Fatal)
        .map_or_else(
            || "unprocessable message".to_owned(),
            |i| format!("{}: {}", i.code, i.message),
        );
    Outcome::Quarantine { reason, issues }
}

impl Pipeline {
    /// Builds a pipeline.
    ///
    /// # Errors
    /// A malformed override key, or network scope without a network key.
    pub fn new(settings: PipelineSettings, keys: SiteKeys) -> Result<Self, PipelineError> {
        let profile = Profile::new(&settings.overrides)?;
        if settings.pseudonym_scope == Scope::Network && !keys.has_network() {
            return Err(PipelineError::NetworkKeyMissing);
        }
        Ok(Pipeline {
            profile,
            keys,
            settings,
            dicom: wardlink_config::DicomDeidConfig::default(),
        })
    }

    /// The PS3.15 Annex E options for DICOM (`[deid.dicom]`).
    pub fn with_dicom(mut self, options: wardlink_config::DicomDeidConfig) -> Self {
        self.dicom = options;
        self
    }

    /// The settings in force.
    pub fn settings(&self) -> &PipelineSettings {
        &self.settings
    }

    /// Parses, validates, normalizes and de-identifies one message.
    /// Deterministic for the same keys; never panics.
    pub fn process(&self, msg: &RawMessage<'_>, ctx: &dyn PipelineContext) -> Outcome {
        self.run(msg, ctx, false).0
    }

    /// Like [`Pipeline::process`], plus per field the rule that acted on it
    /// (for `wardlink deid FILE...`). Never contains removed values.
    pub fn explain(&self, msg: &RawMessage<'_>, ctx: &dyn PipelineContext) -> Explanation {
        let (outcome, charset, event_fields, all_fields) = self.run(msg, ctx, true);
        Explanation {
            outcome,
            charset,
            event_fields,
            all_fields,
        }
    }

    fn run(
        &self,
        raw: &RawMessage<'_>,
        ctx: &dyn PipelineContext,
        tracing: bool,
    ) -> (Outcome, &'static str, Vec<FieldTrace>, Vec<FieldTrace>) {
        if dicom::is_part10(raw.bytes) {
            let settings = dicom::Settings {
                keys: &self.keys,
                options: &self.dicom,
                policy: self.settings.date_policy,
            };
            let (outcome, event_fields, all_fields) = dicom::run(&settings, raw, ctx, tracing);
            return (outcome, "dicom", event_fields, all_fields);
        }
        let decoded = hl7::decode(raw.bytes, raw.charset_hint);
        let charset = decoded.used.as_str();
        let mut issues: Vec<Issue> = Vec::new();
        if decoded.fell_back {
            issues.push(issue(
                "CHARSET_FALLBACK",
                Some("MSH-18".into()),
                format!("bytes are not UTF-8; decoded as {charset}"),
            ));
        }
        if decoded.declared == Declared::Other {
            issues.push(issue(
                "CHARSET_UNSUPPORTED",
                Some("MSH-18".into()),
                "declared character set is not supported; UTF-8 or a single-byte fallback was used",
            ));
        }
        let msg = match Message::parse(&decoded.text) {
            Ok(m) => m,
            Err(e) => {
                let code = match e {
                    ParseError::NoMsh => "HL7_NO_MSH",
                    _ => "HL7_BAD_DELIMITERS",
                };
                issues.push(issue(code, Some("MSH".into()), e.to_string()));
                return (quarantine(issues), charset, Vec::new(), Vec::new());
            }
        };
        validate::structure(&msg, &mut issues);
        if issues.iter().any(|i| i.severity == Severity::Fatal) {
            return (quarantine(issues), charset, Vec::new(), Vec::new());
        }
        let received = epoch_secs(raw.received_at);
        let limits = TimeLimits {
            received,
            future_skew: i64::try_from(self.settings.max_future_skew.as_secs())
                .unwrap_or(i64::MAX / 4),
            max_age: i64::try_from(self.settings.max_age.as_secs()).unwrap_or(i64::MAX / 4),
        };
        let msh = msg.msh();
        let msh7 = validate::timestamp(
            msh.field(7).comp(1).raw(),
            || "MSH-7".to_owned(),
            "MSH7_INVALID",
            &limits,
            true,
            &mut issues,
        );
        let mut deid = Deid::new(
            &self.profile,
            &self.keys,
            self.settings.date_policy,
            &msg,
            tracing,
        );
        let ident = normalize::identity(
            &msg,
            &mut deid,
            self.settings.pseudonym_scope,
            raw.source,
            &mut issues,
        );
        deid.set_subject(&ident.subject);
        let control_id_hash = Text::from(self.keys.pseudonym(
            IdKind::Control,
            &[msh.field(3).raw(), msh.field(4).raw(), msh.field(10).raw()],
        ));
        let received_at = Text::from(deid.received(&Ts::from_epoch_utc(received)));
        let source = Text::from(raw.source);
        let code = msh.field(9).comp(1).raw().trim_ascii();
        let trigger = msh.field(9).comp(2).raw().trim_ascii();
        let trigger = if trigger.is_empty() && code == "ADT" {
            msg.first("EVN")
                .map_or("", |e| e.field(1).raw().trim_ascii())
        } else {
            trigger
        };
        let mut new_encounters = Vec::new();
        let stamp = |body: Body, own: Vec<Issue>| Event {
            schema: SCHEMA_VERSION,
            source: source.clone(),
            control_id_hash: control_id_hash.clone(),
            received_at: received_at.clone(),
            quality: 0,
            issues: own,
            patient: ident.patient.clone(),
            patient_network: ident.patient_network.clone(),
            encounter: ident.encounter.clone(),
            body,
        };
        let mut events: Vec<Event> = Vec::new();
        match code {
            "ADT" => {
                let b = normalize::adt(
                    &msg,
                    &mut deid,
                    &ident,
                    trigger,
                    &limits,
                    msh7.as_ref(),
                    ctx,
                    &mut issues,
                    &mut new_encounters,
                );
                events.push(stamp(b, Vec::new()));
            }
            "ORU" if trigger == "R01" => {
                events.reserve(msg.segments().filter(|s| s.id() == "OBX").count());
                normalize::observations(
                    &msg,
                    &mut deid,
                    &limits,
                    msh7.as_ref(),
                    &mut issues,
                    &mut events,
                    &stamp,
                );
            }
            _ => {}
        }
        if events.is_empty() {
            let b = normalize::other(&msg, &mut deid, msh7.as_ref(), received);
            events.push(stamp(b, Vec::new()));
        }
        // Message-wide issues (known only now) go first in every event.
        for e in &mut events {
            if !issues.is_empty() {
                let own = std::mem::take(&mut e.issues);
                e.issues = issues.clone();
                e.issues.extend(own);
            }
            e.quality = validate::quality(&e.issues);
        }
        let event_fields = deid.trace.take().unwrap_or_default();
        let all_fields = if tracing {
            deid.trace = Some(Vec::new());
            let _ = deid.other_segments();
            deid.trace.take().unwrap_or_default()
        } else {
            Vec::new()
        };
        (
            Outcome::Events {
                events,
                new_encounters,
            },
            charset,
            event_fields,
            all_fields,
        )
    }
}

#[cfg(test)]
mod tests;
