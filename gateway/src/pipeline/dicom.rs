//! DICOM → events: a stored C-STORE header → `imaging_instance` (and
//! `imaging_study` for a study's first instance); a stored MPPS N-CREATE or
//! N-SET → `procedure_step`.
//!
//! Every exported attribute passes the PS3.15 Annex E action of
//! [`super::dicom_profile`] under the `[deid.dicom]` options: UIDs become
//! `2.25.` + the decimal of the first 128 bits of HMAC-SHA256 with the site
//! key (stable, so the same study from two modalities has one UID); dates
//! move by the patient's offset under the site's date policy (the same
//! offset as the patient's HL7 events); descriptors are scrubbed of
//! identifiers and of this object's names and ids. The patient pseudonym is
//! the HL7 one: [`IdKind::Patient`] over (assigning authority, identifier
//! type, id) with Issuer of Patient ID as the authority and `MR` as the type
//! (or the Identifier Type Code of the issuer qualifiers when sent), so an
//! HL7 encounter and its imaging join for the same MRN and authority.
//!
//! Validation (`docs/validation-rules.md`): `DICOM_UNPARSEABLE` (fatal),
//! `DICOM_UID_MISSING`, `DICOM_DATE_INVALID`, `DICOM_BURNED_IN`,
//! `MPPS_STATUS_INVALID`, `MPPS_END_MISSING`.

use dicom_core::value::Value as DValue;
use dicom_core::Tag;
use dicom_object::InMemDicomObject;
use dicom_transfer_syntax_registry::entries::{
    EXPLICIT_VR_LITTLE_ENDIAN, IMPLICIT_VR_LITTLE_ENDIAN,
};
use wardlink_config::DicomDeidConfig;
use wardlink_devices::dicom::stored::Envelope;
use wardlink_sync::{
    Body, Code as WireCode, Equipment, Event, ImagingInstanceBody, ImagingStudyBody, Issue,
    ProcedureStepBody, Text, SCHEMA_VERSION,
};

use super::detect::{self, Dictionary, Mode};
use super::dicom_profile::{decide, Code};
use super::hl7::Ts;
use super::pseudonym::{IdKind, SiteKeys};
use super::validate::{quality, Rule};
use super::{
    epoch_secs, quarantine, Action, DatePolicy, FieldTrace, Outcome, PipelineContext, RawMessage,
};

use wardlink_sync::Severity::{Error as E, Fatal as F, Warning as W};

/// The DICOM validation rules (`docs/validation-rules.md`, "DICOM"). Kept
/// beside the code that fires them; `validate::RULES` is the HL7 catalogue.
pub const DICOM_RULES: &[Rule] = &[
    Rule { code: "DICOM_UNPARSEABLE", severity: F, meaning: "the stored DICOM data set cannot be parsed (the node checks it before answering, so this means a damaged store)" },
    Rule { code: "DICOM_UID_MISSING", severity: E, meaning: "Study Instance UID (0020,000D) or Series Instance UID (0020,000E) is missing: the object cannot be joined to its study or series" },
    Rule { code: "DICOM_DATE_INVALID", severity: E, meaning: "a date/time attribute used by an event (study, series, acquisition, content, procedure step start/end) is not a valid DICOM DA/TM" },
    Rule { code: "DICOM_BURNED_IN", severity: W, meaning: "Burned In Annotation (0028,0301) is YES, or an ultrasound or secondary capture object does not say NO: the pixels may show identity" },
    Rule { code: "MPPS_STATUS_INVALID", severity: E, meaning: "Performed Procedure Step Status is not IN PROGRESS, COMPLETED or DISCONTINUED" },
    Rule { code: "MPPS_END_MISSING", severity: W, meaning: "a COMPLETED or DISCONTINUED procedure step has no end date (0040,0250): its duration is unknown" },
];

fn dicom_issue(code: &'static str, field: Option<String>, message: impl Into<String>) -> Issue {
    let severity = DICOM_RULES
        .iter()
        .find(|r| r.code == code)
        .map_or(E, |r| r.severity);
    Issue {
        code: code.to_owned(),
        severity,
        field,
        message: message.into(),
    }
}

/// Is this a Part 10 stream (128-byte preamble, `DICM`)?
pub fn is_part10(bytes: &[u8]) -> bool {
    bytes.get(128..132) == Some(b"DICM".as_slice())
}

/// The MPPS SOP class.
const MPPS: &str = "1.2.840.10008.3.1.2.3.3";
const IMPLICIT: &str = "1.2.840.10008.1.2";

fn t(g: u16, e: u16) -> Tag {
    Tag(g, e)
}

/// A trimmed string value of a top-level attribute (first value for multi-valued).
fn string(obj: &InMemDicomObject, tag: Tag) -> Option<String> {
    let e = obj.get(tag)?;
    let s = e.to_str().ok()?;
    let s = s.trim_matches([' ', '\0']);
    (!s.is_empty()).then(|| s.to_owned())
}

fn items(obj: &InMemDicomObject, tag: Tag) -> &[InMemDicomObject] {
    match obj.get(tag).map(|e| e.value()) {
        Some(DValue::Sequence(seq)) => seq.items(),
        _ => &[],
    }
}

/// De-identification state of one object.
struct Ctx<'a> {
    keys: &'a SiteKeys,
    options: &'a DicomDeidConfig,
    policy: DatePolicy,
    offset_days: i32,
    dict: Dictionary,
    trace: Option<Vec<FieldTrace>>,
    issues: Vec<Issue>,
}

fn label(tag: Tag) -> String {
    format!("({:04X},{:04X})", tag.0, tag.1)
}

impl Ctx<'_> {
    fn record(&mut self, field: String, action: Action, rule: String, result: Option<&str>) {
        if let Some(t) = &mut self.trace {
            t.push(FieldTrace {
                field,
                action,
                rule,
                result: result.map_or_else(|| "(removed)".to_owned(), str::to_owned),
            });
        }
    }

    /// `2.25.` + decimal of the first 128 bits of the keyed hash of `uid`.
    fn remap(&self, uid: &str) -> Text {
        let p = self.keys.pseudonym(IdKind::Other, &["DICOM-UID", uid]);
        let hex = p.get(3..35).unwrap_or("0");
        let n = u128::from_str_radix(hex, 16).unwrap_or(0);
        Text::from(format!("2.25.{n}"))
    }

    /// A UID attribute for an event.
    fn uid(&mut self, obj: &InMemDicomObject, tag: Tag) -> Option<Text> {
        let v = string(obj, tag)?;
        let d = decide((tag.0, tag.1), self.options);
        let out = match d.code {
            Code::U => Some(self.remap(&v)),
            Code::K => Some(Text::from(v.as_str())),
            _ => None,
        };
        self.record(label(tag), Action::Pseudonymize, d.rule, out.as_deref());
        out
    }

    /// A text attribute for an event: kept, cleaned (scrubbed) or removed.
    fn text(&mut self, obj: &InMemDicomObject, tag: Tag) -> Option<Text> {
        let v = string(obj, tag)?;
        let d = decide((tag.0, tag.1), self.options);
        let (action, out) = match d.code {
            Code::K if d.rule.contains(" with ") => {
                // Kept by an option (device identity, patient characteristics).
                (Action::Keep, Some(Text::from(v.as_str())))
            }
            Code::K => {
                // Not in the table (codes, makers, models): still refuse
                // anything a detector recognises as an identifier.
                let (s, hits) = detect::scrub(&v, Mode::Full, Some(&self.dict));
                (Action::Keep, (hits.is_empty()).then(|| Text::from(s)))
            }
            Code::C => {
                let (s, _) = detect::scrub(&v, Mode::Full, Some(&self.dict));
                (Action::Scrub, Some(Text::from(s)))
            }
            _ => (Action::Remove, None),
        };
        self.record(label(tag), action, d.rule, out.as_deref());
        out
    }

    /// A date (+ time) for an event under the action of the date attribute.
    fn date(&mut self, obj: &InMemDicomObject, date: Tag, time: Tag) -> Option<Text> {
        let d = string(obj, date)?;
        let tm = string(obj, time).unwrap_or_default();
        let tz = if decide((0x0008, 0x0201), self.options).code == Code::K {
            string(obj, t(0x0008, 0x0201)).unwrap_or_default()
        } else {
            String::new()
        };
        let joined = format!("{d}{tm}{tz}");
        let Some(ts) = Ts::parse(&joined) else {
            self.issues.push(dicom_issue(
                "DICOM_DATE_INVALID",
                Some(label(date)),
                format!("{} is not a valid DICOM date/time", label(date)),
            ));
            return None;
        };
        let dec = decide((date.0, date.1), self.options);
        let out = match dec.code {
            Code::C => Some(match self.policy {
                DatePolicy::Shift { .. } => ts.shift_days(self.offset_days).to_iso(),
                DatePolicy::YearOnly => format!("{:04}", ts.year),
            }),
            Code::K => Some(ts.to_iso()),
            _ => None,
        };
        self.record(label(date), Action::ShiftDate, dec.rule, out.as_deref());
        out.map(Text::from)
    }

    /// Equipment under the device policy.
    fn equipment(&mut self, obj: &InMemDicomObject, env: &Envelope, station: Tag) -> Equipment {
        let device = (!env.device.is_empty()).then(|| {
            self.keys
                .pseudonym_text(IdKind::Device, &["DICOM", &env.device])
        });
        Equipment {
            device,
            ward: (!env.ward.is_empty()).then(|| Text::from(env.ward.as_str())),
            room: (!env.room.is_empty()).then(|| Text::from(env.room.as_str())),
            station: self.text(obj, station),
            serial: self.text(obj, t(0x0018, 0x1000)),
            manufacturer: self.text(obj, t(0x0008, 0x0070)),
            model: self.text(obj, t(0x0008, 0x1090)),
        }
    }
}

/// The patient: the HL7 rule (authority, type, id) over Issuer of Patient
/// ID, `MR` (or the sent identifier type code) and Patient ID.
fn patient(keys: &SiteKeys, obj: &InMemDicomObject) -> Option<Text> {
    let id = string(obj, t(0x0010, 0x0020))?;
    let authority = string(obj, t(0x0010, 0x0021)).unwrap_or_default();
    let ty = items(obj, t(0x0010, 0x0024))
        .first()
        .and_then(|q| string(q, t(0x0040, 0x0035)))
        .unwrap_or_else(|| "MR".to_owned());
    Some(keys.pseudonym_text(IdKind::Patient, &[&authority, &ty, &id]))
}

/// Names and identifiers of this object, for scrubbing descriptors.
fn dictionary(obj: &InMemDicomObject) -> Dictionary {
    let mut d = Dictionary::new();
    for (g, e) in [
        (0x0010, 0x0010),
        (0x0010, 0x1001),
        (0x0008, 0x0090),
        (0x0008, 0x1050),
        (0x0008, 0x1070),
        (0x0008, 0x1048),
        (0x0008, 0x0080),
        (0x0010, 0x1040),
    ] {
        if let Some(v) = string(obj, t(g, e)) {
            for part in v.split(['^', '\\', ' ']) {
                d.add_name(part);
            }
        }
    }
    for (g, e) in [
        (0x0010, 0x0020),
        (0x0010, 0x1000),
        (0x0008, 0x0050),
        (0x0020, 0x0010),
    ] {
        if let Some(v) = string(obj, t(g, e)) {
            d.add_id(&v);
        }
    }
    d
}

/// Every top-level attribute under the profile (for `wardlink deid`): what
/// the profile does with it; values are never printed here.
fn all_fields(obj: &InMemDicomObject, options: &DicomDeidConfig) -> Vec<FieldTrace> {
    obj.iter()
        .map(|e| {
            let tag = e.header().tag;
            let d = decide((tag.0, tag.1), options);
            let action = match d.code {
                Code::K => Action::Keep,
                Code::C => Action::Scrub,
                Code::U => Action::Pseudonymize,
                Code::D | Code::Z | Code::X => Action::Remove,
            };
            let result = match d.code {
                Code::D | Code::Z | Code::X => "(removed)",
                _ => "(exported only where an event uses it)",
            };
            FieldTrace {
                field: label(tag),
                action,
                rule: format!("{} {}", d.code.as_str(), d.rule),
                result: result.to_owned(),
            }
        })
        .collect()
}

/// Settings the DICOM path needs from the pipeline.
pub(super) struct Settings<'a> {
    pub keys: &'a SiteKeys,
    pub options: &'a DicomDeidConfig,
    pub policy: DatePolicy,
}

/// Processes one stored DICOM unit; like `Pipeline::run` for HL7.
pub(super) fn run(
    s: &Settings<'_>,
    raw: &RawMessage<'_>,
    ctx: &dyn PipelineContext,
    tracing: bool,
) -> (Outcome, Vec<FieldTrace>, Vec<FieldTrace>) {
    let parsed = Envelope::parse(raw.bytes).and_then(|(env, at)| {
        let ts = if env.transfer_syntax == IMPLICIT {
            IMPLICIT_VR_LITTLE_ENDIAN.erased()
        } else {
            EXPLICIT_VR_LITTLE_ENDIAN.erased()
        };
        let obj = InMemDicomObject::read_dataset_with_ts(raw.bytes.get(at..)?, &ts).ok()?;
        Some((env, obj))
    });
    let Some((env, obj)) = parsed else {
        let issues = vec![dicom_issue(
            "DICOM_UNPARSEABLE",
            None,
            "the stored DICOM data set cannot be parsed",
        )];
        return (quarantine(issues), Vec::new(), Vec::new());
    };
    let patient = patient(s.keys, &obj);
    let subject = patient
        .as_deref()
        .map(str::to_owned)
        .or_else(|| {
            string(&obj, t(0x0020, 0x000D))
                .map(|u| s.keys.pseudonym(IdKind::Other, &["DICOM-UID", &u]))
        })
        .unwrap_or_else(|| {
            s.keys
                .pseudonym(IdKind::Other, &["DICOM-UID", &env.sop_instance])
        });
    let offset_days = match s.policy {
        DatePolicy::Shift { max_days } => s.keys.date_offset_days(&subject, max_days),
        DatePolicy::YearOnly => 0,
    };
    let mut c = Ctx {
        keys: s.keys,
        options: s.options,
        policy: s.policy,
        offset_days,
        dict: dictionary(&obj),
        trace: tracing.then(Vec::new),
        issues: Vec::new(),
    };
    if let Some(p) = &patient {
        c.record(
            "(0010,0020)".into(),
            Action::Pseudonymize,
            "patient pseudonym: the HL7 rule (IssuerOfPatientID, MR, PatientID)".into(),
            Some(p),
        );
    }
    let received = match s.policy {
        DatePolicy::Shift { .. } => Ts::from_epoch_utc(epoch_secs(raw.received_at))
            .shift_days(offset_days)
            .to_iso(),
        DatePolicy::YearOnly => format!(
            "{:04}",
            Ts::from_epoch_utc(epoch_secs(raw.received_at)).year
        ),
    };
    let control = s.keys.pseudonym_text(
        IdKind::Control,
        &[&env.calling_ae, &env.op, &env.sop_instance],
    );
    let mut new_encounters = Vec::new();
    let mut bodies = Vec::new();
    let is_mpps = env.sop_class == MPPS || env.op.starts_with("N-");
    if is_mpps {
        bodies.push(procedure_step(&mut c, &obj, &env));
    } else {
        let instance = instance(&mut c, &obj, &env);
        if let Some(study) = instance.study_uid.clone() {
            let key = format!("study:{study}");
            if !ctx.encounter_known(&key) {
                let study_at = c.date(&obj, t(0x0008, 0x0020), t(0x0008, 0x0030));
                let description = c.text(&obj, t(0x0008, 0x1030));
                bodies.push(Body::ImagingStudy(ImagingStudyBody {
                    study_uid: study,
                    modality: instance.modality.clone(),
                    study_at,
                    description,
                    equipment: instance.equipment.clone(),
                }));
                new_encounters.push(key);
            }
        }
        bodies.insert(0, Body::ImagingInstance(instance));
    }
    let issues = std::mem::take(&mut c.issues);
    let q = quality(&issues);
    let events = bodies
        .into_iter()
        .map(|body| Event {
            schema: SCHEMA_VERSION,
            source: Text::from(raw.source),
            control_id_hash: control.clone(),
            received_at: Text::from(received.as_str()),
            quality: q,
            issues: issues.clone(),
            patient: patient.clone(),
            patient_network: None,
            encounter: None,
            body,
        })
        .collect();
    let event_fields = c.trace.take().unwrap_or_default();
    let all = if tracing {
        all_fields(&obj, s.options)
    } else {
        Vec::new()
    };
    (
        Outcome::Events {
            events,
            new_encounters,
        },
        event_fields,
        all,
    )
}

fn number(obj: &InMemDicomObject, tag: Tag) -> Option<f64> {
    string(obj, tag)?.split('\\').next()?.trim().parse().ok()
}

/// A numeric value of a radiation dose SR: the first content item (at any
/// depth of Content Sequence) whose concept name is the DCM code `code`.
/// Only the number leaves; the SR's text items never do (ContentSequence is
/// X in Table E.1-1; this is its "clean structured content" for dose).
fn sr_number(obj: &InMemDicomObject, code: &str, depth: usize) -> Option<f64> {
    if depth > 16 {
        return None;
    }
    for item in items(obj, t(0x0040, 0xA730)) {
        let name = items(item, t(0x0040, 0xA043)).first();
        let is_it = name.is_some_and(|n| {
            string(n, t(0x0008, 0x0100)).as_deref() == Some(code)
                && string(n, t(0x0008, 0x0102)).as_deref() == Some("DCM")
        });
        if is_it {
            if let Some(v) = items(item, t(0x0040, 0xA300))
                .first()
                .and_then(|m| number(m, t(0x0040, 0xA30A)))
            {
                return Some(v);
            }
        }
        if let Some(v) = sr_number(item, code, depth + 1) {
            return Some(v);
        }
    }
    None
}

fn instance(c: &mut Ctx<'_>, obj: &InMemDicomObject, env: &Envelope) -> ImagingInstanceBody {
    let instance_uid = c
        .uid(obj, t(0x0008, 0x0018))
        .unwrap_or_else(|| c.remap(&env.sop_instance));
    let study_uid = c.uid(obj, t(0x0020, 0x000D));
    let series_uid = c.uid(obj, t(0x0020, 0x000E));
    for (uid, tag) in [(&study_uid, "(0020,000D)"), (&series_uid, "(0020,000E)")] {
        if uid.is_none() {
            c.issues.push(dicom_issue(
                "DICOM_UID_MISSING",
                Some(tag.to_owned()),
                format!("{tag} is missing: the object cannot be joined to its study or series"),
            ));
        }
    }
    let modality = c.text(obj, t(0x0008, 0x0060));
    let burned = string(obj, t(0x0028, 0x0301));
    let sop = env.sop_class.as_str();
    let us_or_sc = sop.starts_with("1.2.840.10008.5.1.4.1.1.6.")
        || sop.starts_with("1.2.840.10008.5.1.4.1.1.3.")
        || sop.starts_with("1.2.840.10008.5.1.4.1.1.7");
    let burned_in = match burned.as_deref() {
        Some("YES") => true,
        Some(_) => false,
        None => us_or_sc,
    };
    if burned_in {
        c.issues.push(dicom_issue(
            "DICOM_BURNED_IN",
            Some("(0028,0301)".into()),
            "the pixels may carry burned-in identity (Burned In Annotation YES, or ultrasound/secondary capture without it)",
        ));
    }
    let frames = string(obj, t(0x0028, 0x0008))
        .and_then(|f| f.parse().ok())
        .or((env.pixel_bytes > 0).then_some(1));
    ImagingInstanceBody {
        sop_class: Text::from(sop),
        instance_uid,
        study_uid,
        series_uid,
        modality,
        equipment: c.equipment(obj, env, t(0x0008, 0x1010)),
        body_part: c.text(obj, t(0x0018, 0x0015)),
        protocol: c.text(obj, t(0x0018, 0x1030)),
        series_description: c.text(obj, t(0x0008, 0x103E)),
        acquired_at: c
            .date(obj, t(0x0008, 0x0022), t(0x0008, 0x0032))
            .or_else(|| c.date(obj, t(0x0008, 0x0021), t(0x0008, 0x0031))),
        content_at: c.date(obj, t(0x0008, 0x0023), t(0x0008, 0x0033)),
        frames,
        bytes_received: env.dataset_bytes,
        pixel_bytes: env.pixel_bytes,
        transfer_syntax: Text::from(env.transfer_syntax.as_str()),
        ctdi_vol: number(obj, t(0x0018, 0x9345)),
        kvp: number(obj, t(0x0018, 0x0060)),
        dlp_total: sr_number(obj, "113813", 0),
        dap_total: sr_number(obj, "113722", 0),
        burned_in_annotation: burned_in,
    }
}

fn procedure_step(c: &mut Ctx<'_>, obj: &InMemDicomObject, env: &Envelope) -> Body {
    let status = if env.mpps_state.is_empty() {
        string(obj, t(0x0040, 0x0252)).unwrap_or_default()
    } else {
        env.mpps_state.clone()
    };
    if !matches!(
        status.as_str(),
        "IN PROGRESS" | "COMPLETED" | "DISCONTINUED"
    ) {
        c.issues.push(dicom_issue(
            "MPPS_STATUS_INVALID",
            Some("(0040,0252)".into()),
            "Performed Procedure Step Status is not IN PROGRESS, COMPLETED or DISCONTINUED",
        ));
    }
    let started_at = c.date(obj, t(0x0040, 0x0244), t(0x0040, 0x0245));
    let ended_at = c.date(obj, t(0x0040, 0x0250), t(0x0040, 0x0251));
    if matches!(status.as_str(), "COMPLETED" | "DISCONTINUED")
        && string(obj, t(0x0040, 0x0250)).is_none()
    {
        c.issues.push(dicom_issue(
            "MPPS_END_MISSING",
            Some("(0040,0250)".into()),
            "a final procedure step has no end date",
        ));
    }
    let protocol_codes = items(obj, t(0x0040, 0x0260))
        .iter()
        .filter_map(|item| {
            let code = string(item, t(0x0008, 0x0100))?;
            // Codes are kept only when no detector sees an identifier in them.
            if !detect::find(&code, Mode::Full, None).is_empty() {
                return None;
            }
            Some(WireCode {
                code: Text::from(code),
                system: string(item, t(0x0008, 0x0102)).map(Text::from),
                display: string(item, t(0x0008, 0x0104))
                    .map(|m| Text::from(detect::scrub(&m, Mode::Full, Some(&c.dict)).0)),
            })
        })
        .collect();
    let study_uids = items(obj, t(0x0040, 0x0270))
        .iter()
        .filter_map(|item| string(item, t(0x0020, 0x000D)))
        .map(|u| c.remap(&u))
        .collect();
    let step_uid = c.remap(&env.sop_instance);
    Body::ProcedureStep(ProcedureStepBody {
        operation: Text::from(if env.op == "N-SET" {
            "n_set"
        } else {
            "n_create"
        }),
        step_uid,
        status: Text::from(status.as_str()),
        modality: c.text(obj, t(0x0008, 0x0060)),
        equipment: c.equipment(obj, env, t(0x0040, 0x0242)),
        started_at,
        ended_at,
        description: c.text(obj, t(0x0040, 0x0254)),
        protocol_codes,
        study_uids,
    })
}

#[cfg(test)]
#[expect(clippy::unwrap_used, clippy::panic, reason = "tests fail loudly")]
mod tests {
    use std::time::{Duration, SystemTime};

    use dicom_core::{DataElement, PrimitiveValue, VR};

    use super::*;
    use crate::pipeline::{NoHistory, Pipeline, PipelineSettings};

    fn pipeline() -> Pipeline {
        Pipeline::new(
            PipelineSettings::default(),
            SiteKeys::from_secrets(&[11; 32], None),
        )
        .unwrap()
    }

    fn put(obj: &mut InMemDicomObject, g: u16, e: u16, vr: VR, v: &str) {
        obj.put(DataElement::new(t(g, e), vr, PrimitiveValue::from(v)));
    }

    fn ct() -> InMemDicomObject {
        let mut o = InMemDicomObject::new_empty();
        put(&mut o, 0x0008, 0x0016, VR::UI, "1.2.840.10008.5.1.4.1.1.2");
        put(&mut o, 0x0008, 0x0018, VR::UI, "1.2.3.4.5");
        put(&mut o, 0x0008, 0x0020, VR::DA, "20240531");
        put(&mut o, 0x0008, 0x0030, VR::TM, "100000");
        put(&mut o, 0x0008, 0x0060, VR::CS, "CT");
        put(&mut o, 0x0010, 0x0010, VR::PN, "RAO^LAKSHMI");
        put(&mut o, 0x0010, 0x0020, VR::LO, "555");
        put(&mut o, 0x0010, 0x0021, VR::LO, "HOSP");
        put(&mut o, 0x0020, 0x000D, VR::UI, "1.2.3.4");
        put(&mut o, 0x0020, 0x000E, VR::UI, "1.2.3.4.1");
        o
    }

    fn stored(obj: &InMemDicomObject, sop_class: &str, op: &str, state: &str) -> Vec<u8> {
        let mut ds = Vec::new();
        obj.write_dataset_with_ts(&mut ds, &EXPLICIT_VR_LITTLE_ENDIAN.erased())
            .unwrap();
        Envelope {
            op: op.into(),
            sop_class: sop_class.into(),
            sop_instance: "1.2.3.4.5".into(),
            transfer_syntax: "1.2.840.10008.1.2.1".into(),
            calling_ae: "CT1".into(),
            device: "ct-1".into(),
            mpps_state: state.into(),
            ..Envelope::default()
        }
        .to_part10(&ds)
    }

    fn process(p: &Pipeline, bytes: &[u8]) -> Outcome {
        let raw = RawMessage {
            id: 1,
            source: "unit",
            received_at: SystemTime::UNIX_EPOCH + Duration::from_secs(1_717_135_200),
            bytes,
            charset_hint: None,
        };
        p.process(&raw, &NoHistory)
    }

    fn events(o: Outcome) -> Vec<Event> {
        match o {
            Outcome::Events { events, .. } => events,
            Outcome::Quarantine { reason, .. } => panic!("{reason}"),
        }
    }

    fn codes(o: Outcome) -> Vec<String> {
        let mut c: Vec<String> = events(o)[0].issues.iter().map(|i| i.code.clone()).collect();
        c.dedup();
        c
    }

    #[test]
    fn hl7_and_dicom_of_one_patient_share_the_pseudonym_and_the_date_offset() {
        let p = pipeline();
        // The same MRN 555 of authority HOSP, type MR, on the same day.
        let hl7 = "MSH|^~\\&|HIS|HOSP|WL|EDGE|20240531100000||ADT^A01^ADT_A01|T1|P|2.5.1\r\
EVN|A01|20240531100000||||20240531100000\r\
PID|1||555^^^HOSP^MR||RAO^LAKSHMI||19300115|F\r\
PV1|1|I|ICU2^R4^B9^HOSP||||||||MED||||||||V1|||||||||||||||||||||||||20240531100000\r";
        let adt = &events(process(&p, hl7.as_bytes()))[0];
        let img = events(process(&p, &stored(&ct(), CT_CLASS, "C-STORE", "")));
        assert_eq!(img[0].patient, adt.patient, "one patient pseudonym");
        assert!(img[0].patient.as_deref().unwrap().starts_with("P1-"));
        let Body::Adt(a) = &adt.body else { panic!() };
        let Body::ImagingStudy(s) = &img[1].body else {
            panic!("{:?}", img[1].body)
        };
        // The same instant, shifted by the same per-patient offset.
        assert_eq!(
            a.admit_at.as_deref().map(|t| &t[..10]),
            s.study_at.as_deref().map(|t| &t[..10])
        );
    }

    const CT_CLASS: &str = "1.2.840.10008.5.1.4.1.1.2";

    #[test]
    fn uids_are_remapped_stably_under_2_25() {
        let p = pipeline();
        let a = events(process(&p, &stored(&ct(), CT_CLASS, "C-STORE", "")));
        let b = events(process(&p, &stored(&ct(), CT_CLASS, "C-STORE", "")));
        let (Body::ImagingInstance(x), Body::ImagingInstance(y)) = (&a[0].body, &b[0].body) else {
            panic!()
        };
        assert_eq!(x.study_uid, y.study_uid);
        let uid = x.study_uid.as_deref().unwrap();
        assert!(
            uid.starts_with("2.25.") && uid.len() <= 64 && uid != "1.2.3.4",
            "{uid}"
        );
        assert_ne!(x.study_uid, x.series_uid);
    }

    #[test]
    fn every_dicom_rule_fires() {
        let p = pipeline();
        let mut no_study = ct();
        no_study.remove_element(t(0x0020, 0x000D));
        assert!(
            codes(process(&p, &stored(&no_study, CT_CLASS, "C-STORE", "")))
                .contains(&"DICOM_UID_MISSING".to_owned())
        );
        let mut bad_date = ct();
        put(&mut bad_date, 0x0008, 0x0020, VR::DA, "20241399");
        assert!(
            codes(process(&p, &stored(&bad_date, CT_CLASS, "C-STORE", "")))
                .contains(&"DICOM_DATE_INVALID".to_owned())
        );
        assert_eq!(
            codes(process(&p, &stored(&ct(), CT_CLASS, "C-STORE", ""))),
            Vec::<String>::new()
        );
        let us = "1.2.840.10008.5.1.4.1.1.6.1";
        assert!(codes(process(&p, &stored(&ct(), us, "C-STORE", "")))
            .contains(&"DICOM_BURNED_IN".to_owned()));
        let mut said_no = ct();
        put(&mut said_no, 0x0028, 0x0301, VR::CS, "NO");
        assert!(codes(process(&p, &stored(&said_no, us, "C-STORE", ""))).is_empty());
        let mut step = InMemDicomObject::new_empty();
        put(&mut step, 0x0040, 0x0252, VR::CS, "COMPLETED");
        assert!(
            codes(process(&p, &stored(&step, MPPS, "N-SET", "COMPLETED")))
                .contains(&"MPPS_END_MISSING".to_owned())
        );
        assert!(codes(process(&p, &stored(&step, MPPS, "N-SET", "DONE")))
            .contains(&"MPPS_STATUS_INVALID".to_owned()));
        put(&mut step, 0x0040, 0x0250, VR::DA, "20240531");
        assert!(codes(process(&p, &stored(&step, MPPS, "N-SET", "COMPLETED"))).is_empty());
        let mut garbage = stored(&ct(), CT_CLASS, "C-STORE", "");
        let n = garbage.len();
        garbage[n - 20..].fill(0xFF);
        match process(&p, &garbage) {
            Outcome::Quarantine { reason, .. } => {
                assert!(reason.starts_with("DICOM_UNPARSEABLE"), "{reason}")
            }
            Outcome::Events { .. } => panic!("garbage became events"),
        }
    }

    #[test]
    fn dose_totals_come_from_a_radiation_dose_sr() {
        use dicom_core::value::DataSetSequence;
        let code = |v: &str, meaning: &str| {
            let mut c = InMemDicomObject::new_empty();
            put(&mut c, 0x0008, 0x0100, VR::SH, v);
            put(&mut c, 0x0008, 0x0102, VR::SH, "DCM");
            put(&mut c, 0x0008, 0x0104, VR::LO, meaning);
            c
        };
        let seq = |tag: Tag, items: Vec<InMemDicomObject>| {
            DataElement::new(tag, VR::SQ, DataSetSequence::from(items))
        };
        let mut measured = InMemDicomObject::new_empty();
        put(&mut measured, 0x0040, 0xA30A, VR::DS, "512.5");
        let mut dlp = InMemDicomObject::new_empty();
        put(&mut dlp, 0x0040, 0xA040, VR::CS, "NUM");
        dlp.put(seq(
            t(0x0040, 0xA043),
            vec![code("113813", "CT Dose Length Product Total")],
        ));
        dlp.put(seq(t(0x0040, 0xA300), vec![measured]));
        let mut note = InMemDicomObject::new_empty();
        put(&mut note, 0x0040, 0xA040, VR::CS, "TEXT");
        put(
            &mut note,
            0x0040,
            0xA160,
            VR::UT,
            "patient RAO LAKSHMI was anxious",
        );
        let mut container = InMemDicomObject::new_empty();
        put(&mut container, 0x0040, 0xA040, VR::CS, "CONTAINER");
        container.put(seq(t(0x0040, 0xA730), vec![note, dlp]));
        let mut sr = ct();
        put(&mut sr, 0x0008, 0x0060, VR::CS, "SR");
        sr.put(seq(t(0x0040, 0xA730), vec![container]));
        let rdsr = "1.2.840.10008.5.1.4.1.1.88.67";
        let evs = events(process(&pipeline(), &stored(&sr, rdsr, "C-STORE", "")));
        let Body::ImagingInstance(i) = &evs[0].body else {
            panic!()
        };
        assert_eq!(i.dlp_total, Some(512.5));
        assert_eq!(i.dap_total, None);
        let json = serde_json::to_string(&evs).unwrap();
        assert!(
            !json.contains("LAKSHMI") && !json.contains("anxious"),
            "{json}"
        );
    }

    #[test]
    fn docs_list_every_rule_and_every_exported_field() {
        let rules = include_str!("../../../docs/validation-rules.md");
        for r in DICOM_RULES {
            let row = format!("| `{}` | {} |", r.code, r.severity.as_str());
            assert!(rules.contains(&row), "docs/validation-rules.md lacks {row}");
        }
        let dict = include_str!("../../../docs/data-dictionary.md");
        let p = pipeline();
        let mut step = InMemDicomObject::new_empty();
        put(&mut step, 0x0040, 0x0252, VR::CS, "IN PROGRESS");
        let mut all = events(process(&p, &stored(&ct(), CT_CLASS, "C-STORE", "")));
        all.extend(events(process(
            &p,
            &stored(&step, MPPS, "N-CREATE", "IN PROGRESS"),
        )));
        for e in all {
            let v = serde_json::to_value(&e).unwrap();
            let mut keys = Vec::new();
            collect_keys(&v, &mut keys);
            for k in keys {
                assert!(
                    dict.contains(&format!("`{k}`")),
                    "docs/data-dictionary.md lacks `{k}` ({})",
                    e.type_name()
                );
            }
        }
    }

    fn collect_keys(v: &serde_json::Value, out: &mut Vec<String>) {
        match v {
            serde_json::Value::Object(m) => {
                for (k, x) in m {
                    out.push(k.clone());
                    collect_keys(x, out);
                }
            }
            serde_json::Value::Array(a) => a.iter().for_each(|x| collect_keys(x, out)),
            _ => {}
        }
    }
}
