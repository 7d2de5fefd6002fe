//! The normalized event: what leaves the box.
//!
//! Design:
//! - **One envelope, a body per type.** Every event has the same envelope
//!   (source, hashed control id, received time, quality, issues, pseudonyms)
//!   and a body chosen by `type`: `observation`, `adt` or `hl7_other`. The
//!   body's fields are flattened into the envelope's JSON object, so a
//!   consumer reads `{"type":"observation", "source":..., "code":...}`.
//! - **Nothing here is identifying.** The pipeline fills these types only
//!   with de-identified values: pseudonyms (`P1-…`, `E1-…`, `D1-…`, `L1-…`),
//!   dates under the site's date policy, generalized geography, codes and
//!   measured values. Free text appears only after scrubbing, and only where
//!   the site's profile keeps it.
//! - **Times are strings** because the date policy decides their shape:
//!   `2024-01-01T12:00:00+05:30` (shifted, precision as sent), `2024-01-01`
//!   (date only), or `2024` (year-only policy).
//! - **Shared strings.** Per-message values are [`Text`] (`Arc<str>`);
//!   JSON does not see the difference.
//! - **Additive evolution.** Optional fields are omitted when empty and
//!   default when absent, so a newer gateway can add fields without breaking
//!   an older collector; [`SCHEMA_VERSION`] changes only on a breaking change.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

/// An immutable, cheaply cloned string. Values shared by every event of one
/// message (source, control id hash, times, pseudonyms, location, device)
/// and values that repeat across messages (units, value types, coding
/// systems) are shared `Text`, so a message with 12 observations holds one
/// copy of each — the pipeline's throughput target (50k messages/s) is
/// mostly an allocation budget. It serializes exactly like a `String`.
pub type Text = Arc<str>;

/// The version of this schema, carried in every event as `schema`.
pub const SCHEMA_VERSION: u32 = 1;

/// One normalized, de-identified event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// Schema version ([`SCHEMA_VERSION`]).
    pub schema: u32,
    /// The configured name of the source that received the message (e.g.
    /// `icu-monitors`); a site-chosen label, not patient data.
    pub source: Text,
    /// Keyed hash of the original message's sender and control id (MSH-3,
    /// MSH-4, MSH-10): joins the events of one message and detects resends
    /// without revealing the id (`C1-` + 32 hex digits).
    pub control_id_hash: Text,
    /// When the gateway received the message, under the date policy.
    pub received_at: Text,
    /// Quality score 0–100 derived from the severities of `issues`
    /// (formula in `docs/validation-rules.md`).
    pub quality: u8,
    /// What validation found (message-wide issues and this event's own).
    #[serde(default)]
    pub issues: Vec<Issue>,
    /// Site-scoped patient pseudonym (`P1-…`), from the patient's local
    /// identifier (PID-3), when there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub patient: Option<Text>,
    /// Network-scoped patient pseudonym (`N1-…`) from the patient's ABHA
    /// number, present only when the site runs with the network scope: equal
    /// at every site of the network for the same ABHA number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub patient_network: Option<Text>,
    /// Encounter (visit) pseudonym (`E1-…`) from PV1-19.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encounter: Option<Text>,
    /// The type-specific part; serialized as `type` plus the body's fields.
    #[serde(flatten)]
    pub body: Body,
}

impl Event {
    /// The event type's wire name: `observation`, `adt` or `hl7_other`.
    pub fn type_name(&self) -> &'static str {
        match self.body {
            Body::Observation(_) => "observation",
            Body::Adt(_) => "adt",
            Body::Hl7Other(_) => "hl7_other",
            Body::ImagingInstance(_) => "imaging_instance",
            Body::ImagingStudy(_) => "imaging_study",
            Body::ProcedureStep(_) => "procedure_step",
        }
    }
}

/// The type-specific body of an [`Event`], tagged by `type`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Body {
    /// A measured or reported value (one OBX row).
    Observation(ObservationBody),
    /// An admission, transfer, discharge or related patient-movement event.
    Adt(AdtBody),
    /// Any other message, de-identified segment by segment.
    Hl7Other(Hl7OtherBody),
    /// One DICOM object received by C-STORE (its header; pixels counted only).
    ImagingInstance(ImagingInstanceBody),
    /// A study seen for the first time (sent with its first instance).
    ImagingStudy(ImagingStudyBody),
    /// A Modality Performed Procedure Step N-CREATE or N-SET.
    ProcedureStep(ProcedureStepBody),
}

/// How severe a validation issue is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    /// Worth knowing, no effect on trust.
    Info,
    /// Something is off but the data is probably usable.
    Warning,
    /// A value or reference is wrong; the event is kept but less trustworthy.
    Error,
    /// The message cannot be processed; it is quarantined, not uploaded.
    Fatal,
}

impl Severity {
    /// The wire name (`info`, `warning`, `error`, `fatal`).
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Error => "error",
            Severity::Fatal => "fatal",
        }
    }
}

/// One validation finding. Never carries an identifying value: `message`
/// names the field and the rule, and at most a clinical number or code.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Issue {
    /// The rule's stable code, e.g. `VALUE_IMPLAUSIBLE` (see `docs/validation-rules.md`).
    pub code: String,
    /// How severe it is.
    pub severity: Severity,
    /// Where, as `SEG-n[.c]` with an optional occurrence (`OBX[3]-5`), if it
    /// concerns one field.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// What is wrong, in words.
    pub message: String,
}

/// A coded concept: code, coding system and display text.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Code {
    /// The code, e.g. `150456`.
    pub code: Text,
    /// The coding system as sent: `MDC`, `LN` (LOINC), `SCT`, `UCUM` or a local name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system: Option<Text>,
    /// The display text or reference id, e.g. `MDC_PULS_OXIM_SAT_O2`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display: Option<Text>,
}

/// A place in the hospital (HL7 PL), de-identified: the ward is kept, room
/// and bed are keyed pseudonyms (stable per site, so bed analytics still work).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Location {
    /// Facility (PL-4), as a code.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub facility: Option<Text>,
    /// Ward / point of care (PL-1), e.g. `ICU3`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ward: Option<Text>,
    /// Room pseudonym (`L1-…`) from facility, ward and PL-2.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub room: Option<Text>,
    /// Bed pseudonym (`L1-…`) from facility, ward, room and PL-3.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bed: Option<Text>,
}

impl Location {
    /// True when no part is known.
    pub fn is_empty(&self) -> bool {
        self.facility.is_none() && self.ward.is_none() && self.room.is_none() && self.bed.is_none()
    }
}

/// An observation: one OBX row of an ORU^R01 (lab result or device metric).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ObservationBody {
    /// What was observed (OBX-3), e.g. `150456` / `MDC` / `MDC_PULS_OXIM_SAT_O2`.
    pub code: Code,
    /// The HL7 value type (OBX-2), e.g. `NM`, `CWE`, `ST`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value_type: Option<Text>,
    /// The numeric value (NM, or the number of an SN).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value_num: Option<f64>,
    /// The coded value (CWE/CE/CNE).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value_code: Option<Code>,
    /// A textual value after de-identification (ST scrubbed, dates shifted,
    /// numeric arrays as sent); absent when the profile removed it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value_text: Option<Text>,
    /// The unit in UCUM, when it could be mapped (e.g. `mm[Hg]`, `%`, `/min`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unit: Option<Text>,
    /// The unit as sent (OBX-6 code or text), e.g. `266016` or `mmHg`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unit_sent: Option<Text>,
    /// Reference / alarm range (OBX-7), e.g. `90-100`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reference_range: Option<Text>,
    /// Abnormal flags (OBX-8), e.g. `["H"]`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub abnormal_flags: Vec<Text>,
    /// Result status (OBX-11), e.g. `F`, `R`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result_status: Option<Text>,
    /// When it was observed (OBX-14, else OBR-7, else MSH-7), under the date policy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_at: Option<Text>,
    /// The OBX-4 sub-id; for IHE PCD-01 the containment path `MDS.VMD.CHAN.METRIC`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sub_id: Option<Text>,
    /// Device pseudonym (`D1-…`) from OBX-18 (inherited down the PCD tree) or MSH-3's EUI-64.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device: Option<Text>,
    /// PCD-01: the MDS (device) code of this row's containment path, e.g. `69965`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_mds: Option<Text>,
    /// PCD-01: the VMD (module) code of this row's containment path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_vmd: Option<Text>,
    /// PCD-01: the channel code of this row's containment path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_channel: Option<Text>,
    /// Where the patient/device was (PV1-3).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<Arc<Location>>,
    /// The order's universal service id (OBR-4), e.g. `182777000` / `SCT`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub panel: Option<Arc<Code>>,
}

/// What an ADT event does to a stay.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AdtAction {
    /// A01 admit / visit notification.
    Admit,
    /// A02 transfer.
    Transfer,
    /// A03 discharge / end visit.
    Discharge,
    /// A04 register (outpatient / ED).
    Register,
    /// A05 pre-admit.
    PreAdmit,
    /// A06 / A07 class change (outpatient ↔ inpatient).
    ChangeClass,
    /// A08 update patient information.
    Update,
    /// A11 cancel admit.
    CancelAdmit,
    /// A12 cancel transfer.
    CancelTransfer,
    /// A13 cancel discharge.
    CancelDischarge,
    /// A21 / A22 leave of absence out / back.
    LeaveOfAbsence,
    /// A34–A36 / A40 merge of patient records.
    Merge,
    /// Any other ADT trigger.
    Other,
}

/// An admission/transfer/discharge (ADT) event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AdtBody {
    /// The trigger event (MSH-9.2, else EVN-1), e.g. `A02`.
    pub trigger: Text,
    /// What the trigger does.
    pub action: AdtAction,
    /// Patient class (PV1-2), e.g. `I`, `E`, `O`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub patient_class: Option<Text>,
    /// The location after the event (PV1-3).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<Location>,
    /// The location before the event (PV1-6), set on transfers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prior_location: Option<Location>,
    /// When the event happened (EVN-6, else EVN-2, else MSH-7), under the date policy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_at: Option<Text>,
    /// Admit time (PV1-44), under the date policy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admit_at: Option<Text>,
    /// Discharge time (PV1-45), under the date policy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub discharge_at: Option<Text>,
    /// Administrative sex (PID-8).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sex: Option<Text>,
    /// Age in whole years at the event, derived from PID-7 (the birth date
    /// itself is removed); `90+` for 90 and over.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub age: Option<Text>,
    /// The first 3 digits of the PIN / ZIP code (PID-11.5).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub postal_prefix: Option<Text>,
    /// State or province (PID-11.4).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<Text>,
    /// Country (PID-11.6).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub country: Option<Text>,
    /// Admission type (PV1-4).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admission_type: Option<Text>,
    /// Hospital service (PV1-10).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hospital_service: Option<Text>,
    /// Discharge disposition (PV1-36).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub discharge_disposition: Option<Text>,
    /// Death indicator (PID-30).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deceased: Option<bool>,
    /// Death time (PID-29), under the date policy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub death_at: Option<Text>,
    /// On a merge: the pseudonym of the patient record merged away (MRG-1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prior_patient: Option<Text>,
}

/// Any other message, de-identified segment by segment so nothing is
/// silently dropped.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hl7OtherBody {
    /// The message type (MSH-9 as `code^trigger`), e.g. `ORM^O01`.
    pub message_type: String,
    /// The segments in order, after the profile's field actions.
    pub segments: Vec<OtherSegment>,
}

/// One de-identified segment of an [`Hl7OtherBody`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OtherSegment {
    /// The segment id, e.g. `ORC`.
    pub id: String,
    /// Fields 1..n as HL7 text in the standard encoding (`|^~\&`), after
    /// de-identification; `fields[0]` is field 1. Trailing empty fields are omitted.
    pub fields: Vec<String>,
}

/// Where imaging equipment is and what it is, under the device policy.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Equipment {
    /// Device pseudonym (`D1-…`) of the configured device id (or calling AE title).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device: Option<Text>,
    /// Ward of the DICOM source (configured).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ward: Option<Text>,
    /// Room of the DICOM source (configured).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub room: Option<Text>,
    /// Station Name (0008,1010) or Performed Station Name (0040,0242), when
    /// the device identity option keeps it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub station: Option<Text>,
    /// Device Serial Number (0018,1000), when the device identity option keeps it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serial: Option<Text>,
    /// Manufacturer (0008,0070).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manufacturer: Option<Text>,
    /// Manufacturer's Model Name (0008,1090).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<Text>,
}

/// One received DICOM object: what it is, when it was acquired, how big.
/// UIDs are remapped (`2.25.` + keyed hash), stable across modalities.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ImagingInstanceBody {
    /// SOP Class UID (a public, non-identifying UID), e.g. CT Image Storage.
    pub sop_class: Text,
    /// Remapped SOP Instance UID.
    pub instance_uid: Text,
    /// Remapped Study Instance UID.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub study_uid: Option<Text>,
    /// Remapped Series Instance UID.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub series_uid: Option<Text>,
    /// Modality (0008,0060), e.g. `CT`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub modality: Option<Text>,
    /// The equipment.
    #[serde(default)]
    pub equipment: Equipment,
    /// Body Part Examined (0018,0015).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body_part: Option<Text>,
    /// Protocol Name (0018,1030), cleaned (Clean Descriptors) or absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<Text>,
    /// Series Description (0008,103E), cleaned or absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub series_description: Option<Text>,
    /// Acquisition date and time, under the date policy (longitudinal option).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acquired_at: Option<Text>,
    /// Content date and time, under the date policy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_at: Option<Text>,
    /// Number of Frames (0028,0008); 1 when absent and Pixel Data is present.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub frames: Option<u32>,
    /// Bytes of the data set as received.
    pub bytes_received: u64,
    /// Bytes of Pixel Data and what follows it (counted, never kept).
    pub pixel_bytes: u64,
    /// The transfer syntax UID it was sent in.
    pub transfer_syntax: Text,
    /// CTDIvol (0018,9345) in mGy, when present.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ctdi_vol: Option<f64>,
    /// KVP (0018,0060), when present.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kvp: Option<f64>,
    /// Radiation dose SR: CT Dose Length Product Total (DCM 113813), mGy·cm.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dlp_total: Option<f64>,
    /// Radiation dose SR: Dose Area Product Total (DCM 113722), Gy·m².
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dap_total: Option<f64>,
    /// Burned In Annotation (0028,0301) said YES, or an ultrasound or
    /// secondary capture object did not say NO: the pixels may show identity
    /// (also an issue `DICOM_BURNED_IN`).
    #[serde(default)]
    pub burned_in_annotation: bool,
}

/// A study, sent once with its first instance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImagingStudyBody {
    /// Remapped Study Instance UID.
    pub study_uid: Text,
    /// Modality of the first instance.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub modality: Option<Text>,
    /// Study date and time, under the date policy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub study_at: Option<Text>,
    /// Study Description (0008,1030), cleaned or absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<Text>,
    /// The equipment of the first instance.
    #[serde(default)]
    pub equipment: Equipment,
}

/// A Modality Performed Procedure Step operation (PS3.4 F.7).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcedureStepBody {
    /// `n_create` or `n_set`.
    pub operation: Text,
    /// Remapped MPPS SOP Instance UID: joins the N-CREATE and its N-SETs.
    pub step_uid: Text,
    /// `IN PROGRESS`, `COMPLETED` or `DISCONTINUED` after this operation.
    pub status: Text,
    /// Modality (0008,0060).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub modality: Option<Text>,
    /// The equipment (Performed Station Name under the device policy).
    #[serde(default)]
    pub equipment: Equipment,
    /// Start (0040,0244/0245), under the date policy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<Text>,
    /// End (0040,0250/0251), under the date policy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended_at: Option<Text>,
    /// Performed Procedure Step Description (0040,0254), cleaned or absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<Text>,
    /// Performed Protocol Code Sequence (0040,0260) codes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub protocol_codes: Vec<Code>,
    /// Remapped Study Instance UIDs of the scheduled steps (0040,0270).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub study_uids: Vec<Text>,
}

#[cfg(test)]
#[expect(clippy::unwrap_used, reason = "tests fail loudly")]
mod tests {
    use super::*;

    fn envelope(body: Body) -> Event {
        Event {
            schema: SCHEMA_VERSION,
            source: Text::from("icu"),
            control_id_hash: Text::from("C1-00"),
            received_at: Text::from("2024-01-01T00:00:00Z"),
            quality: 95,
            issues: vec![Issue {
                code: "UNIT_MISSING".into(),
                severity: Severity::Warning,
                field: Some("OBX[1]-6".into()),
                message: "no unit".into(),
            }],
            patient: Some(Text::from("P1-ab")),
            patient_network: None,
            encounter: None,
            body,
        }
    }

    #[test]
    fn observation_round_trips_with_flat_type_tag() {
        let ev = envelope(Body::Observation(ObservationBody {
            code: Code {
                code: Text::from("150456"),
                system: Some(Text::from("MDC")),
                display: None,
            },
            value_type: Some(Text::from("NM")),
            value_num: Some(97.0),
            value_code: None,
            value_text: None,
            unit: Some(Text::from("%")),
            unit_sent: None,
            reference_range: None,
            abnormal_flags: vec![],
            result_status: Some(Text::from("R")),
            observed_at: None,
            sub_id: Some(Text::from("1.2.1.1")),
            device: None,
            device_mds: None,
            device_vmd: None,
            device_channel: None,
            location: None,
            panel: None,
        }));
        let json = serde_json::to_string(&ev).unwrap();
        assert!(json.contains(r#""type":"observation""#), "{json}");
        assert!(json.contains(r#""severity":"warning""#), "{json}");
        let back: Event = serde_json::from_str(&json).unwrap();
        assert_eq!(back, ev);
        assert_eq!(back.type_name(), "observation");
    }

    #[test]
    fn other_round_trips() {
        let ev = envelope(Body::Hl7Other(Hl7OtherBody {
            message_type: "ORM^O01".into(),
            segments: vec![OtherSegment {
                id: "ORC".into(),
                fields: vec!["NW".into()],
            }],
        }));
        let json = serde_json::to_string(&ev).unwrap();
        assert!(json.contains(r#""type":"hl7_other""#), "{json}");
        let back: Event = serde_json::from_str(&json).unwrap();
        assert_eq!(back, ev);
    }
}
