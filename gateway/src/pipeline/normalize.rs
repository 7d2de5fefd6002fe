//! Normalization: a parsed, validated message → event bodies.
//!
//! Design:
//! - **Three shapes.** ADT messages become one `adt` event; ORU^R01 becomes
//!   one `observation` per OBX row that carries a value (IHE PCD-01 header
//!   rows — MDS, VMD, channel — are folded into the metrics below them);
//!   everything else becomes one `hl7_other` event, de-identified segment by
//!   segment. An ORU^R01 without a single value row falls back to
//!   `hl7_other`, so no message disappears.
//! - **Values only through [`Deid`].** Every field read here is handed to
//!   the de-identifier with its location; the profile decides what leaves.
//! - **Identity first.** [`identity`] picks the patient's local identifier
//!   (PID-3 by type: MR, PI, PT, then the first that is not a national id),
//!   the ABHA number for the network pseudonym, the visit number, and the
//!   date-shift subject, before any date is rendered.
//! - **PCD-01 containment** (ihe-pcd01.md §2): OBX-4 `MDS.VMD.CHAN.METRIC`;
//!   a header row's code and OBX-18 device apply to every metric under its
//!   prefix; the device falls back to MSH-3's EUI-64.

use std::borrow::Cow;

use std::sync::Arc;

use wardlink_sync::{
    AdtAction, AdtBody, Body, Code, Event, Hl7OtherBody, Issue, Location, ObservationBody, Text,
};

use super::deidentify::{age_text, age_years, device_id_of, postal_prefix, Deid, Loc};
use super::detect;
use super::hl7::{Message, Segment, Ts, Value};
use super::profile::Action;
use super::pseudonym::IdKind;
use super::validate::{self, issue, TimeLimits};
use super::{PipelineContext, Scope};

/// Who the message is about.
#[derive(Debug, Default)]
pub struct Identity {
    /// Exported patient pseudonym (per the profile's PID-3 action).
    pub patient: Option<Text>,
    /// Exported network pseudonym (network scope and an ABHA number).
    pub patient_network: Option<Text>,
    /// Exported encounter pseudonym (per the profile's PV1-19 action).
    pub encounter: Option<Text>,
    /// The encounter pseudonym used for reference checks (always computed when
    /// a visit number exists; stays on the box).
    pub encounter_internal: Option<String>,
    /// Whether a patient identifier was found at all.
    pub has_patient_id: bool,
    /// The date-shift subject.
    pub subject: String,
}

/// A PID-3 repetition that carries an ABHA number or address.
pub fn is_abha_rep(rep: &Value<'_>) -> bool {
    let ty = rep.comp(5).raw().trim_ascii().to_ascii_uppercase();
    let auth = rep.comp(4).decoded().to_ascii_uppercase();
    matches!(ty.as_str(), "ABHA" | "HIN" | "ABHAN" | "PHR")
        || auth.contains("ABDM")
        || auth.contains("ABHA")
        || auth.contains("NDHM")
}

/// A PID-3 repetition that carries an Aadhaar number.
pub fn is_aadhaar_rep(rep: &Value<'_>) -> bool {
    let ty = rep.comp(5).raw().trim_ascii().to_ascii_uppercase();
    let auth = rep.comp(4).decoded().to_ascii_uppercase();
    matches!(ty.as_str(), "AADHAAR" | "UID" | "UIDAI")
        || auth.contains("UIDAI")
        || auth.contains("AADHAAR")
}

fn is_national_type(ty: &str) -> bool {
    matches!(
        ty,
        "SS" | "NI" | "NN" | "PPN" | "DL" | "PEN" | "VS" | "HC" | "MB"
    )
}

/// Finds the patient, network patient and encounter pseudonyms and the date subject.
pub fn identity(
    msg: &Message<'_>,
    deid: &mut Deid<'_, '_, '_>,
    scope: Scope,
    source: &str,
    issues: &mut Vec<Issue>,
) -> Identity {
    let mut id = Identity::default();
    let mut subject: Option<String> = None;
    let keys = deid.keys();
    if let Some(pid) = msg.first("PID") {
        let pid3 = pid.field(3);
        let mut best: Option<(u8, Value<'_>)> = None;
        let mut abha: Option<String> = None;
        for rep in pid3.reps() {
            let idv = rep.comp(1).decoded();
            let idt = idv.trim_ascii();
            if idt.is_empty() {
                continue;
            }
            if is_abha_rep(&rep) {
                if detect::is_abha_number(idt) {
                    abha = Some(idt.chars().filter(char::is_ascii_digit).collect());
                } else if detect::is_abha_address(idt) {
                    abha.get_or_insert_with(|| idt.to_ascii_lowercase());
                } else {
                    issues.push(issue(
                        "ABHA_INVALID",
                        Some("PID-3".into()),
                        "ABHA identifier is neither a 14-digit number nor an ABHA address",
                    ));
                }
                continue;
            }
            if is_aadhaar_rep(&rep) {
                if !detect::is_aadhaar(idt) {
                    issues.push(issue(
                        "AADHAAR_INVALID",
                        Some("PID-3".into()),
                        "Aadhaar identifier fails the format or Verhoeff check",
                    ));
                }
                continue;
            }
            let ty = rep.comp(5).raw().trim_ascii().to_ascii_uppercase();
            if is_national_type(&ty) {
                continue;
            }
            let rank = match ty.as_str() {
                "MR" => 0,
                "PI" => 1,
                "PT" => 2,
                _ => 3,
            };
            if best.as_ref().is_none_or(|(r, _)| rank < *r) {
                best = Some((rank, rep));
            }
        }
        let pid19 = pid.field(19).comp(1).decoded();
        let digits19 = pid19.chars().filter(char::is_ascii_digit).count();
        if digits19 == 12 && !detect::is_aadhaar(&pid19) {
            issues.push(issue(
                "AADHAAR_INVALID",
                Some("PID-19".into()),
                "12-digit national id fails the Aadhaar format or Verhoeff check",
            ));
        }
        let (loc, rep) = match best {
            Some((_, rep)) => (Loc::field("PID", 3), Some(rep)),
            None => {
                let alt = [2usize, 4]
                    .into_iter()
                    .map(|f| (f, pid.field(f).rep(0)))
                    .find(|(_, v)| !v.comp(1).raw().trim_ascii().is_empty());
                match alt {
                    Some((f, v)) => (Loc::field("PID", f), Some(v)),
                    None => (Loc::field("PID", 3), None),
                }
            }
        };
        if let Some(rep) = rep {
            let auth = rep.comp(4).decoded();
            let ty = rep.comp(5).decoded();
            let idv = rep.comp(1).decoded();
            id.has_patient_id = true;
            let internal = keys.pseudonym_text(IdKind::Patient, &[&auth, &ty, &idv]);
            id.patient = deid.ident_with(loc, &internal, &idv);
            subject = Some(String::from(&*internal));
        }
        if let (Scope::Network, Some(a)) = (scope, abha.as_ref()) {
            if deid.action(&Loc::field("PID", 3)).0 == Action::Pseudonymize {
                id.patient_network = keys
                    .network_pseudonym(IdKind::NetworkPatient, &[a])
                    .map(Text::from);
                deid.note(
                    Loc::field("PID", 3),
                    Action::Pseudonymize,
                    "network scope: ABHA number with the network key",
                    id.patient_network.as_deref(),
                );
            }
            if subject.is_none() {
                subject = Some(keys.pseudonym(IdKind::NetworkPatient, &[a]));
                id.has_patient_id = true;
            }
        } else if let (None, Some(a)) = (&subject, abha) {
            // Only an ABHA id: it keys the patient locally (site key).
            id.has_patient_id = true;
            let internal = keys.pseudonym(IdKind::Patient, &["ABDM", "ABHA", &a]);
            id.patient = deid.ident(
                Loc::field("PID", 3),
                IdKind::Patient,
                &["ABDM", "ABHA", &a],
                &a,
            );
            subject = Some(internal);
        }
    }
    if let Some(pv1) = msg.first("PV1") {
        let v = pv1.field(19).rep(0);
        let visit = v.comp(1).decoded();
        if !visit.trim_ascii().is_empty() {
            let auth = v.comp(4).decoded();
            let internal = keys.pseudonym_text(IdKind::Visit, &[&auth, &visit]);
            id.encounter = deid.ident_with(Loc::field("PV1", 19), &internal, &visit);
            id.encounter_internal = Some(String::from(&*internal));
        } else if let (Some(s), Some(admit)) = (&subject, pv1.field(44).comp(1).text()) {
            // No visit number: key the stay by patient and admit time (hl7v2-mllp.md §6).
            let parts = ["ADMIT", s.as_str(), admit.as_ref()];
            id.encounter_internal = Some(keys.pseudonym(IdKind::Visit, &parts));
            id.encounter = deid.ident(Loc::field("PV1", 19), IdKind::Visit, &parts, &admit);
        }
    }
    id.subject = subject
        .or_else(|| id.encounter_internal.clone())
        .or_else(|| {
            device_id_of(msg.msh().field(3), true).map(|d| keys.pseudonym(IdKind::Device, &[&d]))
        })
        .or_else(|| {
            msg.segments()
                .filter(|s| s.id() == "OBX")
                .find_map(|s| device_id_of(s.field(18).rep(0), false))
                .map(|d| keys.pseudonym(IdKind::Device, &[&d]))
        })
        .unwrap_or_else(|| format!("source:{source}"));
    id
}

/// A PL field (PV1-3, PV1-6) as a de-identified location.
pub fn location(deid: &mut Deid<'_, '_, '_>, base: Loc<'_>, pl: Value<'_>) -> Option<Location> {
    if pl.is_empty() {
        return None;
    }
    let [c1, c2, c3, c4] = pl.comps_n::<4>();
    let fac_raw = c4.sub(1).decoded();
    let ward_raw = c1.decoded();
    let room_raw = c2.decoded();
    let bed_raw = c3.decoded();
    let loc = Location {
        facility: deid
            .text_str(base.comp(4), &fac_raw)
            .filter(|s| !s.is_empty()),
        ward: deid
            .text_str(base.comp(1), &ward_raw)
            .filter(|s| !s.is_empty()),
        room: deid.ident(
            base.comp(2),
            IdKind::Location,
            &[&fac_raw, &ward_raw, &room_raw],
            &room_raw,
        ),
        bed: deid.ident(
            base.comp(3),
            IdKind::Location,
            &[&fac_raw, &ward_raw, &room_raw, &bed_raw],
            &bed_raw,
        ),
    };
    (!loc.is_empty()).then_some(loc)
}

fn adt_action(trigger: &str) -> AdtAction {
    match trigger {
        "A01" => AdtAction::Admit,
        "A02" => AdtAction::Transfer,
        "A03" => AdtAction::Discharge,
        "A04" => AdtAction::Register,
        "A05" => AdtAction::PreAdmit,
        "A06" | "A07" => AdtAction::ChangeClass,
        "A08" => AdtAction::Update,
        "A11" => AdtAction::CancelAdmit,
        "A12" => AdtAction::CancelTransfer,
        "A13" => AdtAction::CancelDischarge,
        "A21" | "A22" => AdtAction::LeaveOfAbsence,
        "A34" | "A35" | "A36" | "A40" | "A41" | "A42" => AdtAction::Merge,
        _ => AdtAction::Other,
    }
}

fn code_of(deid: &mut Deid<'_, '_, '_>, base: Loc<'_>, v: Value<'_>) -> Option<Code> {
    let [c1, c2, c3] = v.comps_n::<3>();
    let code = deid.text(base.comp(1), c1)?;
    Some(Code {
        code,
        system: deid.text(base.comp(3), c3),
        display: deid.text(base.comp(2), c2),
    })
}

/// Everything an ADT event needs; returns the body and its own issues.
#[expect(
    clippy::too_many_arguments,
    reason = "one call site, all distinct inputs"
)]
pub fn adt(
    msg: &Message<'_>,
    deid: &mut Deid<'_, '_, '_>,
    ident: &Identity,
    trigger: &str,
    limits: &TimeLimits,
    msh7: Option<&Ts>,
    ctx: &dyn PipelineContext,
    issues: &mut Vec<Issue>,
    new_encounters: &mut Vec<String>,
) -> Body {
    let evn = msg.first("EVN");
    let pid = msg.first("PID");
    let pv1 = msg.first("PV1");
    let ts_field =
        |seg: Option<Segment<'_, '_>>, name: &str, f: usize, age: bool, issues: &mut Vec<Issue>| {
            let s = seg?;
            validate::timestamp(
                s.field(f).comp(1).raw(),
                || format!("{name}-{f}"),
                "TS_INVALID",
                limits,
                age,
                issues,
            )
        };
    let evn2 = ts_field(evn, "EVN", 2, true, issues);
    let evn6 = ts_field(evn, "EVN", 6, true, issues);
    let admit = ts_field(pv1, "PV1", 44, false, issues);
    let discharge = ts_field(pv1, "PV1", 45, false, issues);
    let death = ts_field(pid, "PID", 29, false, issues);
    let (event_ts, event_loc) = match (evn6, evn2) {
        (Some(t), _) => (Some(t), Loc::field("EVN", 6)),
        (None, Some(t)) => (Some(t), Loc::field("EVN", 2)),
        (None, None) => (msh7.copied(), Loc::field("MSH", 7)),
    };
    let reference = event_ts.unwrap_or_else(|| Ts::from_epoch_utc(limits.received));
    deid.reference = Some(reference);
    let mut body = AdtBody {
        trigger: Text::from(trigger),
        action: adt_action(trigger),
        patient_class: None,
        location: None,
        prior_location: None,
        event_at: deid.date(event_loc, event_ts.as_ref()),
        admit_at: deid.date(Loc::field("PV1", 44), admit.as_ref()),
        discharge_at: deid.date(Loc::field("PV1", 45), discharge.as_ref()),
        sex: None,
        age: None,
        postal_prefix: None,
        state: None,
        country: None,
        admission_type: None,
        hospital_service: None,
        discharge_disposition: None,
        deceased: None,
        death_at: deid.date(Loc::field("PID", 29), death.as_ref()),
        prior_patient: None,
    };
    if let Some(pid) = pid {
        let sex = pid.field(8).comp(1);
        if let Some(s) = sex.text() {
            if !validate::sex_known(&s) {
                issues.push(issue(
                    "SEX_INVALID",
                    Some("PID-8".into()),
                    format!("sex {:?} is not in table 0001", validate::short(&s)),
                ));
            }
        }
        body.sex = deid.text(Loc::field("PID", 8), sex);
        let dob_raw = pid.field(7).comp(1);
        if !dob_raw.is_empty() {
            let mut tmp = Vec::new();
            let dob = validate::timestamp(
                dob_raw.raw(),
                || "PID-7".to_owned(),
                "TS_INVALID",
                limits,
                false,
                &mut tmp,
            );
            issues.extend(tmp.into_iter().filter(|i| i.code != "TS_FUTURE"));
            if let Some(dob) = dob {
                let loc = Loc::field("PID", 7);
                let (action, _) = deid.action(&loc);
                match age_years(&dob, &reference) {
                    None => issues.push(issue(
                        "DOB_IN_FUTURE",
                        Some("PID-7".into()),
                        "birth date is after the event time",
                    )),
                    Some(years) => {
                        let out = (action != Action::Remove).then(|| Text::from(age_text(years)));
                        deid.note(
                            loc,
                            action,
                            "birth date → age in whole years (90+)",
                            out.as_deref(),
                        );
                        body.age = out;
                    }
                }
            }
        }
        let addr = pid.field(11).rep(0);
        body.state = deid.text(Loc::field("PID", 11).comp(4), addr.comp(4));
        body.country = deid.text(Loc::field("PID", 11).comp(6), addr.comp(6));
        if let Some(zip) = addr.comp(5).text() {
            let country = addr.comp(6).raw().trim_ascii().to_ascii_uppercase();
            if matches!(country.as_str(), "IND" | "IN" | "INDIA") && !detect::is_pin(&zip) {
                issues.push(issue(
                    "PIN_INVALID",
                    Some("PID-11.5".into()),
                    "not a 6-digit PIN starting 1-9",
                ));
            }
            let loc = Loc::field("PID", 11).comp(5);
            let (action, _) = deid.action(&loc);
            body.postal_prefix = match action {
                Action::Generalize => {
                    let out = postal_prefix(&zip).map(Text::from);
                    deid.note(loc, action, "PIN/ZIP → first 3 digits", out.as_deref());
                    out
                }
                _ => deid.text_str(loc, &zip),
            };
        }
        body.deceased = match pid.field(30).raw().trim_ascii() {
            "Y" => Some(true),
            "N" => Some(false),
            _ => None,
        };
    }
    if let Some(pv1) = pv1 {
        let class = pv1.field(2).comp(1);
        if let Some(c) = class.text() {
            if !validate::patient_class_known(&c) {
                issues.push(issue(
                    "PATIENT_CLASS_INVALID",
                    Some("PV1-2".into()),
                    format!("class {:?} is not in table 0004", validate::short(&c)),
                ));
            }
        }
        body.patient_class = deid.text(Loc::field("PV1", 2), class);
        body.location = location(deid, Loc::field("PV1", 3), pv1.field(3).rep(0));
        body.prior_location = location(deid, Loc::field("PV1", 6), pv1.field(6).rep(0));
        body.admission_type = deid.text(Loc::field("PV1", 4), pv1.field(4).comp(1));
        body.hospital_service = deid.text(Loc::field("PV1", 10), pv1.field(10).comp(1));
        body.discharge_disposition = deid.text(Loc::field("PV1", 36), pv1.field(36).comp(1));
    }
    if let Some(mrg) = msg.first("MRG") {
        let rep = mrg.field(1).rep(0);
        let idv = rep.comp(1).decoded();
        let auth = rep.comp(4).decoded();
        let ty = rep.comp(5).decoded();
        body.prior_patient = deid.ident(
            Loc::field("MRG", 1),
            IdKind::Patient,
            &[&auth, &ty, &idv],
            &idv,
        );
    }
    if !ident.has_patient_id {
        issues.push(issue(
            "PATIENT_ID_MISSING",
            Some("PID-3".into()),
            "no usable patient identifier",
        ));
    }
    let needs_encounter = pv1.is_some() && validate::adt_requires_pv1(trigger);
    match &ident.encounter_internal {
        None if needs_encounter => {
            issues.push(issue(
                "ENCOUNTER_MISSING",
                Some("PV1-19".into()),
                "no visit number and no admit time",
            ));
        }
        Some(enc) if !ctx.encounter_known(enc) => {
            if trigger == "A02" {
                issues.push(issue(
                    "ENCOUNTER_UNKNOWN",
                    Some("PV1-19".into()),
                    "transfer for an encounter never seen",
                ));
            }
            new_encounters.push(enc.clone());
        }
        _ => {}
    }
    Body::Adt(body)
}

/// Maps a unit (OBX-6) to UCUM.
pub fn ucum(code: &str, text: &str, system: &str) -> Option<Cow<'static, str>> {
    let by_num = |c: &str| -> Option<&'static str> {
        let n: u32 = c.parse().ok()?;
        Some(match n {
            262656 => "1",
            262688 => "%",
            268384 => "%{vol}",
            264864 | 264928 => "/min",
            266016 => "mm[Hg]",
            265987 => "kPa",
            266048 => "cm[H2O]",
            263744 => "L",
            263762 => "mL",
            265216 => "L/min",
            265234 => "mL/min",
            268032 => "L/cm[H2O]",
            268050 => "mL/cm[H2O]",
            268064 => "cm[H2O]/(L/s)",
            268192 => "Cel",
            264320 => "s",
            264338 => "ms",
            264352 => "min",
            263875 => "kg",
            _ => return None,
        })
    };
    let by_mdc = |c: &str| -> Option<&'static str> {
        if c.as_bytes().first().is_some_and(u8::is_ascii_digit) {
            return by_num(c);
        }
        Some(match c {
            "MDC_DIM_DIMLESS" => "1",
            "MDC_DIM_PERCENT" => "%",
            "MDC_DIM_VOL_PERCENT" => "%{vol}",
            "MDC_DIM_BEAT_PER_MIN" | "MDC_DIM_RESP_PER_MIN" => "/min",
            "MDC_DIM_MMHG" => "mm[Hg]",
            "MDC_DIM_KILO_PASCAL" => "kPa",
            "MDC_DIM_CM_H2O" => "cm[H2O]",
            "MDC_DIM_X_L" => "L",
            "MDC_DIM_MILLI_L" => "mL",
            "MDC_DIM_X_L_PER_MIN" => "L/min",
            "MDC_DIM_MILLI_L_PER_MIN" => "mL/min",
            "MDC_DIM_DEGC" => "Cel",
            "MDC_DIM_SEC" => "s",
            "MDC_DIM_MILLI_SEC" => "ms",
            "MDC_DIM_MIN" => "min",
            "MDC_DIM_KILO_G" => "kg",
            _ => return None,
        })
    };
    let by_text = |t: &str| -> Option<&'static str> {
        Some(match t {
            "%" | "percent" => "%",
            "bpm" | "/min" | "1/min" | "{beats}/min" | "beats/min" | "{beat}/min" | "rpm"
            | "br/min" | "breaths/min" | "resp/min" | "{breaths}/min" | "{resp}/min" => "/min",
            "mmHg" | "mm[Hg]" | "mmhg" => "mm[Hg]",
            "kPa" | "kpa" => "kPa",
            "cmH2O" | "cm[H2O]" | "cmh2o" => "cm[H2O]",
            "mbar" => "mbar",
            "hPa" => "hPa",
            "mL" | "ml" => "mL",
            "L" | "l" => "L",
            "L/min" | "l/min" => "L/min",
            "mL/min" | "ml/min" => "mL/min",
            "Cel" | "°C" | "degC" | "C" | "cel" => "Cel",
            "[degF]" | "°F" | "degF" | "F" => "[degF]",
            "s" | "sec" => "s",
            "ms" => "ms",
            "min" => "min",
            "kg" => "kg",
            "g" => "g",
            "mg/dL" => "mg/dL",
            "mmol/L" => "mmol/L",
            _ => return None,
        })
    };
    let sys = system.trim_ascii();
    if sys.eq_ignore_ascii_case("UCUM") && !code.is_empty() {
        return Some(by_text(code).map_or_else(|| Cow::Owned(code.to_owned()), Cow::Borrowed));
    }
    if let Some(u) = by_mdc(code) {
        return Some(Cow::Borrowed(u));
    }
    by_mdc(text)
        .or_else(|| by_text(code))
        .or_else(|| by_text(text))
        .map(Cow::Borrowed)
}

/// Remembers short keys (OBX-4 paths, times) without copying them.
fn key_hash(s: &str) -> u64 {
    super::hl7::hash64(s)
}

#[derive(Default)]
struct Tree {
    /// (hash of the OBX-4 prefix, containment code, normalized device id)
    nodes: Vec<(u64, Text, Option<String>)>,
}

impl Tree {
    fn get(&self, prefix: &str) -> Option<&(u64, Text, Option<String>)> {
        let h = key_hash(prefix);
        self.nodes.iter().rev().find(|(p, _, _)| *p == h)
    }
}

/// The containment level of a header row's OBX-4 (`1.0.0.0` → MDS prefix `1`).
fn header_prefix(sub_id: &str) -> Option<(usize, &str)> {
    let parts: Vec<&str> = sub_id.split('.').collect();
    if parts.len() < 2 {
        return None;
    }
    let nonzero = parts.iter().rposition(|p| *p != "0")?;
    if nonzero + 1 >= parts.len() || nonzero >= 3 {
        return None;
    }
    let end: usize = parts[..=nonzero].iter().map(|p| p.len()).sum::<usize>() + nonzero;
    Some((nonzero + 1, &sub_id[..end]))
}

fn prefixes(sub_id: &str) -> [Option<&str>; 3] {
    let mut out = [None; 3];
    let mut idx = 0;
    for (i, b) in sub_id.bytes().enumerate() {
        if b == b'.' && idx < 3 {
            out[idx] = Some(&sub_id[..i]);
            idx += 1;
        }
    }
    out
}

/// Everything ORU^R01 needs: one observation body per value row.
pub fn observations(
    msg: &Message<'_>,
    deid: &mut Deid<'_, '_, '_>,
    limits: &TimeLimits,
    msh7: Option<&Ts>,
    msg_issues: &mut Vec<Issue>,
    out: &mut Vec<Event>,
    stamp: &dyn Fn(Body, Vec<Issue>) -> Event,
) {
    deid.reference = Some(
        msh7.copied()
            .unwrap_or_else(|| Ts::from_epoch_utc(limits.received)),
    );
    let location = msg
        .first("PV1")
        .and_then(|pv1| location(deid, Loc::field("PV1", 3), pv1.field(3).rep(0)))
        .map(Arc::new);
    let msh_device = device_id_of(msg.msh().field(3), true);
    let mut devices: Vec<(String, Option<Text>)> = Vec::new();
    let mut tree = Tree::default();
    let mut panel: Option<Arc<Code>> = None;
    let mut obr7: Option<Ts> = None;
    let mut obr_n = 0usize;
    let mut obx_n = 0usize;
    let mut sub_ids: Vec<(usize, u64)> = Vec::new();
    let mut last_time: Option<(u64, Option<Text>)> = None;
    for seg in msg.segments() {
        match seg.id() {
            "OBR" => {
                obr_n += 1;
                obr7 = validate::timestamp(
                    seg.field(7).comp(1).raw(),
                    || format!("OBR[{obr_n}]-7"),
                    "TS_INVALID",
                    limits,
                    true,
                    msg_issues,
                );
                panel = code_of(deid, Loc::field("OBR", 4).at(obr_n), seg.field(4)).map(Arc::new);
                tree = Tree::default();
            }
            "OBX" => {
                obx_n += 1;
                if let Some(b) = observation(
                    msg,
                    seg,
                    obx_n,
                    obr_n,
                    deid,
                    limits,
                    msh7,
                    obr7.as_ref(),
                    &mut tree,
                    &mut devices,
                    msh_device.as_deref(),
                    &mut sub_ids,
                    &mut last_time,
                    msg_issues,
                ) {
                    let (mut body, row_issues) = b;
                    body.location = location.clone();
                    body.panel = panel.clone();
                    out.push(stamp(Body::Observation(body), row_issues));
                }
            }
            _ => {}
        }
    }
}

#[expect(
    clippy::too_many_arguments,
    reason = "the row needs the message's running state"
)]
fn observation(
    _msg: &Message<'_>,
    seg: Segment<'_, '_>,
    n: usize,
    obr_n: usize,
    deid: &mut Deid<'_, '_, '_>,
    limits: &TimeLimits,
    msh7: Option<&Ts>,
    obr7: Option<&Ts>,
    tree: &mut Tree,
    devices: &mut Vec<(String, Option<Text>)>,
    msh_device: Option<&str>,
    sub_ids: &mut Vec<(usize, u64)>,
    last_time: &mut Option<(u64, Option<Text>)>,
    msg_issues: &mut Vec<Issue>,
) -> Option<(ObservationBody, Vec<Issue>)> {
    let mut issues = Vec::new();
    let vt_raw = seg.field(2).raw().trim_ascii();
    let value = seg.field(5);
    let code_v = seg.field(3);
    let sub_id = seg.field(4).decoded();
    let sub_id = sub_id.trim_ascii();
    let label = |f: usize| format!("OBX[{n}]-{f}");
    if code_v.comp(1).raw().trim_ascii().is_empty() {
        if !value.is_empty() {
            msg_issues.push(issue(
                "OBX_CODE_MISSING",
                Some(label(3)),
                "observation identifier is empty",
            ));
        }
        return None;
    }
    let own_device = device_id_of(seg.field(18).rep(0), false);
    // PCD-01 header rows (MDS/VMD/CHAN): remember code and device, no event.
    if vt_raw.is_empty() && value.is_empty() {
        if let Some((_, prefix)) = header_prefix(sub_id) {
            tree.nodes.push((
                key_hash(prefix),
                deid.intern(code_v.comp(1).raw().trim_ascii()),
                own_device,
            ));
        }
        return None;
    }
    if !vt_raw.is_empty() && !validate::value_type_known(vt_raw) {
        issues.push(issue(
            "OBX_VALUE_TYPE_UNKNOWN",
            Some(label(2)),
            format!(
                "value type {:?} is not in table 0125",
                validate::short(vt_raw)
            ),
        ));
    }
    if !sub_id.is_empty() {
        let h = key_hash(sub_id);
        if sub_ids.iter().any(|(o, s)| *o == obr_n && *s == h) {
            issues.push(issue(
                "OBX_SUB_ID_DUPLICATE",
                Some(label(4)),
                "sub-id repeats within the order",
            ));
        } else {
            sub_ids.push((obr_n, h));
        }
    }
    // Unknown or missing value types are scrubbed like ST, never kept blindly.
    let vt = if validate::value_type_known(vt_raw) {
        vt_raw
    } else {
        "ST"
    };
    let base = Loc::field("OBX", 5).at(n).vt(vt);
    let code = code_of(deid, Loc::field("OBX", 3).at(n), code_v)?;
    let units = seg.field(6);
    let [u1, u2, u3] = units.comps_n::<3>();
    let unit = ucum(
        u1.raw().trim_ascii(),
        u2.raw().trim_ascii(),
        u3.raw().trim_ascii(),
    );
    let unit_sent_raw = if u1.is_empty() { u2 } else { u1 };
    let mut body = ObservationBody {
        code,
        value_type: deid.text_str(Loc::field("OBX", 2).at(n), vt_raw),
        value_num: None,
        value_code: None,
        value_text: None,
        unit: unit.map(|u| super::deidentify::shared_text(&u)),
        unit_sent: deid.text(Loc::field("OBX", 6).at(n), unit_sent_raw),
        reference_range: deid.text(Loc::field("OBX", 7).at(n), seg.field(7)),
        abnormal_flags: Vec::new(),
        result_status: None,
        observed_at: None,
        sub_id: deid.text_str(Loc::field("OBX", 4).at(n), sub_id),
        device: None,
        device_mds: None,
        device_vmd: None,
        device_channel: None,
        location: None,
        panel: None,
    };
    match vt {
        "NM" => {
            if let Some(t) = value.rep(0).text() {
                match t.parse::<f64>() {
                    Ok(x) if x.is_finite() => {
                        if deid.action(&base).0 == Action::Keep {
                            body.value_num = Some(x);
                        } else {
                            body.value_text = deid.text_str(base, &t);
                        }
                        let known = validate::vital(&body.code.code).or_else(|| {
                            // A LOINC alternate code (OBX-3.4/.6) also counts.
                            let sys = code_v.comp(6).raw();
                            (sys == "LN" || sys == "MDC")
                                .then(|| validate::vital(code_v.comp(4).raw().trim_ascii()))
                                .flatten()
                        });
                        if let Some(v) = known {
                            validate::check_value(v, x, body.unit.as_deref(), label, &mut issues);
                        }
                    }
                    _ => issues.push(issue(
                        "NM_NOT_NUMERIC",
                        Some(label(5)),
                        "numeric value is not a number; kept as missing",
                    )),
                }
            }
        }
        "SN" => {
            let v = value.rep(0);
            let parts: Vec<Cow<'_, str>> = (1..=4).map(|c| v.comp(c).decoded()).collect();
            if parts[0].is_empty() || parts[0] == "=" {
                body.value_num = parts[1]
                    .trim_ascii()
                    .parse::<f64>()
                    .ok()
                    .filter(|x| x.is_finite());
            }
            let joined: String = parts.concat();
            body.value_text = deid.text_str(base, &joined);
        }
        "CWE" | "CE" | "CNE" | "CF" => {
            body.value_code = code_of(deid, base, value.rep(0));
        }
        "DT" | "DTM" | "TS" => {
            let ts = Ts::parse(value.rep(0).comp(1).raw());
            body.value_text = deid.date(base, ts.as_ref());
        }
        "NA" | "MA" => {
            let raw = value.rep(0).raw();
            let numeric = value.rep(0).comps().all(|c| {
                c.raw().trim_ascii().is_empty() || c.raw().trim_ascii().parse::<f64>().is_ok()
            });
            if numeric {
                body.value_text = deid.text_str(base, raw);
            }
        }
        "TX" | "FT" => {
            let mut joined = String::new();
            for (i, r) in value.reps().enumerate() {
                if i > 0 {
                    joined.push('\n');
                }
                joined.push_str(&r.decoded());
            }
            if !joined.trim_ascii().is_empty() {
                body.value_text = deid.text_str(base, joined.trim_ascii());
            }
        }
        _ => {
            body.value_text = deid.text(base, value.rep(0));
        }
    }
    for f in seg.field(8).reps() {
        if let Some(t) = f.text() {
            if !validate::abnormal_flag_known(&t) {
                issues.push(issue(
                    "ABNORMAL_FLAG_INVALID",
                    Some(label(8)),
                    format!("flag {:?} is not in table 0078", validate::short(&t)),
                ));
            }
            if let Some(k) = deid.text_str(Loc::field("OBX", 8).at(n), &t) {
                body.abnormal_flags.push(k);
            }
        }
    }
    if let Some(s) = seg.field(11).comp(1).text() {
        if !validate::result_status_known(&s) {
            issues.push(issue(
                "RESULT_STATUS_INVALID",
                Some(label(11)),
                format!("status {:?} is not in table 0085", validate::short(&s)),
            ));
        }
        body.result_status = deid.text_str(Loc::field("OBX", 11).at(n), &s);
    }
    // PCD rows of one message usually share OBX-14: a clean time seen on the
    // previous row is not parsed, checked and rendered again.
    let raw14 = seg.field(14).comp(1).raw();
    let key14 = key_hash(raw14);
    match last_time {
        Some((k, t)) if *k == key14 && !raw14.is_empty() && deid.trace.is_none() => {
            body.observed_at = t.clone()
        }
        _ => {
            let before = issues.len();
            let obx14 =
                validate::timestamp(raw14, || label(14), "TS_INVALID", limits, true, &mut issues);
            body.observed_at = match (obx14, obr7, msh7) {
                (Some(t), _, _) => deid.date(Loc::field("OBX", 14).at(n), Some(&t)),
                (None, Some(t), _) => deid.date(Loc::field("OBR", 7), Some(t)),
                (None, None, Some(t)) => deid.date(Loc::field("MSH", 7), Some(t)),
                _ => None,
            };
            *last_time = (issues.len() == before && obx14.is_some())
                .then(|| (key14, body.observed_at.clone()));
        }
    }
    // Containment (PCD-01): nearest header row with a device wins.
    let pre = prefixes(sub_id);
    let mut inherited: Option<&str> = None;
    for (i, p) in pre.iter().enumerate() {
        let Some(p) = p else { continue };
        if let Some((_, code, dev)) = tree.get(p) {
            let slot = match i {
                0 => &mut body.device_mds,
                1 => &mut body.device_vmd,
                _ => &mut body.device_channel,
            };
            *slot = Some(code.clone());
            if let Some(d) = dev {
                inherited = Some(d);
            }
        }
    }
    let (dev, dev_loc) = match (own_device.as_deref(), inherited, msh_device) {
        (Some(d), _, _) => (Some(d), Loc::field("OBX", 18).at(n)),
        (None, Some(d), _) => (Some(d), Loc::field("OBX", 18)),
        (None, None, Some(d)) => (Some(d), Loc::field("MSH", 3).comp(2)),
        _ => (None, Loc::field("OBX", 18)),
    };
    if let Some(d) = dev {
        body.device = match devices.iter().find(|(k, _)| k == d) {
            Some((_, p)) => p.clone(),
            None => {
                let p = deid.ident(dev_loc, IdKind::Device, &[d], d);
                devices.push((d.to_owned(), p.clone()));
                p
            }
        };
    }
    Some((body, issues))
}

/// The `hl7_other` body.
pub fn other(
    msg: &Message<'_>,
    deid: &mut Deid<'_, '_, '_>,
    msh7: Option<&Ts>,
    received: i64,
) -> Body {
    deid.reference = Some(
        msh7.copied()
            .unwrap_or_else(|| Ts::from_epoch_utc(received)),
    );
    let m9 = msg.msh().field(9);
    let code = m9.comp(1).decoded();
    let trigger = m9.comp(2).decoded();
    let mut message_type = validate::short(code.trim_ascii()).to_owned();
    if !trigger.trim_ascii().is_empty() {
        message_type.push('^');
        message_type.push_str(validate::short(trigger.trim_ascii()));
    }
    let message_type = deid
        .keep_code(&message_type)
        .map(|t| t.to_string())
        .unwrap_or_default();
    Body::Hl7Other(Hl7OtherBody {
        message_type,
        segments: deid.other_segments(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pcd_prefixes() {
        assert_eq!(header_prefix("1.0.0.0"), Some((1, "1")));
        assert_eq!(header_prefix("1.12.0.0"), Some((2, "1.12")));
        assert_eq!(header_prefix("1.5.1.0"), Some((3, "1.5.1")));
        assert_eq!(header_prefix("1.5.1.1"), None);
        assert_eq!(header_prefix("1"), None);
        assert_eq!(prefixes("1.5.1.1"), [Some("1"), Some("1.5"), Some("1.5.1")]);
        assert_eq!(prefixes(""), [None, None, None]);
    }

    #[test]
    fn units() {
        assert_eq!(
            ucum("266016", "MDC_DIM_MMHG", "MDC").as_deref(),
            Some("mm[Hg]")
        );
        assert_eq!(ucum("", "bpm", "").as_deref(), Some("/min"));
        assert_eq!(
            ucum("{beats}/min", "beats per minute", "UCUM").as_deref(),
            Some("/min")
        );
        assert_eq!(ucum("mg/dL", "", "UCUM").as_deref(), Some("mg/dL"));
        assert_eq!(ucum("furlongs", "", "").as_deref(), None);
    }
}
