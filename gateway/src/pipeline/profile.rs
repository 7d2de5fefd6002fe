//! The de-identification profile: a table of per-field actions.
//!
//! Design:
//! - **Data, not code.** The default profile (HIPAA Safe Harbor, with the
//!   India additions of protocols/deidentification.md §2 and §6) is the
//!   [`DEFAULT_RULES`] table below; [`default_profile_text`] prints it for
//!   `wardlink deid --print-profile`, and `docs/deidentification.md` explains it.
//! - **Keys** are `SEG-F`, `SEG-F.C` (a component) or `OBX-5:VT` (OBX-5 for
//!   one value type). Lookup goes from the most to the least specific:
//!   component+type, component, field+type, field, then the segment's
//!   default, then the default for segments the profile does not list
//!   ([`Action::KeepCode`]: "drop free-text fields").
//! - **Site overrides** ([`FieldOverride`], e.g. `PID-11.5` → `remove`) are
//!   merged over the defaults when the pipeline is built; a bad key is an
//!   error then, never a silent no-op.
//! - **Lookups are binary searches** over keys packed into a `u64`, because
//!   the normalizer asks for ~10 actions per OBX row at 50k messages/s.

use std::fmt;

use super::pseudonym::IdKind;

/// What to do with a field (or component).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    /// Keep as sent (codes, values, units).
    Keep,
    /// Keep only if the value looks like a code (no spaces, ≤ 20 characters,
    /// not a long number, no identifier detected); otherwise remove. The
    /// default for fields the profile does not list, so free text is dropped.
    KeepCode,
    /// Remove.
    Remove,
    /// Replace with a keyed pseudonym.
    Pseudonymize,
    /// Coarsen: birth date → age (90+), PIN/ZIP → first 3 digits, other dates → year.
    Generalize,
    /// Move dates by the patient's offset (or to the year, per the date policy).
    ShiftDate,
    /// Free text: remove detected identifiers and this message's names and ids.
    Scrub,
}

impl Action {
    /// The name used in profiles, overrides and explanations.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Keep => "keep",
            Action::KeepCode => "keep-code",
            Action::Remove => "remove",
            Action::Pseudonymize => "pseudonymize",
            Action::Generalize => "generalize",
            Action::ShiftDate => "shift-date",
            Action::Scrub => "scrub",
        }
    }

    /// Parses an action name (case-insensitive; `_` and `-` are equal).
    pub fn parse(s: &str) -> Option<Action> {
        let s = s.trim().to_ascii_lowercase().replace('_', "-");
        Some(match s.as_str() {
            "keep" => Action::Keep,
            "keep-code" | "keepcode" => Action::KeepCode,
            "remove" | "drop" => Action::Remove,
            "pseudonymize" | "pseudonymise" | "hash" => Action::Pseudonymize,
            "generalize" | "generalise" => Action::Generalize,
            "shift-date" | "shift" => Action::ShiftDate,
            "scrub" => Action::Scrub,
            _ => return None,
        })
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// OBX-2 value types that may carry their own OBX-5 rule.
const VALUE_TYPES: &[&str] = &[
    "AD", "CE", "CF", "CNE", "CP", "CWE", "CX", "DR", "DT", "DTM", "ED", "FT", "ID", "IS", "MA",
    "NA", "NM", "PN", "RP", "SN", "ST", "TM", "TN", "TS", "TX", "XAD", "XCN", "XON", "XPN", "XTN",
];

fn vt_index(vt: &str) -> u8 {
    // Value types are 2-3 ASCII letters: compare them as integers (this is
    // on the hot path for every OBX-5).
    fn key(b: &[u8]) -> u32 {
        b.iter().fold(0u32, |k, &c| k << 8 | u32::from(c))
    }
    let b = vt.as_bytes();
    if !(2..=3).contains(&b.len()) {
        return 0;
    }
    let k = key(b);
    VALUE_TYPES
        .iter()
        .position(|v| key(v.as_bytes()) == k)
        .map_or(0, |i| i as u8 + 1)
}

fn seg_code(seg: &str) -> Option<u32> {
    let b = seg.as_bytes();
    if b.len() != 3
        || !b
            .iter()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit())
    {
        return None;
    }
    Some(u32::from(b[0]) << 16 | u32::from(b[1]) << 8 | u32::from(b[2]))
}

fn pack(seg: u32, field: u16, comp: u8, vt: u8) -> u64 {
    u64::from(seg) << 32 | u64::from(field) << 16 | u64::from(comp) << 8 | u64::from(vt)
}

/// A parsed profile key: `SEG-F[.C][:VT]` (field 0 = the segment default `SEG`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldKey {
    /// Segment id.
    pub segment: String,
    /// Field number (0 = whole segment default).
    pub field: u16,
    /// Component number, if the rule is for one component.
    pub component: Option<u8>,
    /// OBX-2 value type, if the rule is for one value type.
    pub value_type: Option<String>,
}

impl FieldKey {
    /// Parses `SEG`, `SEG-F`, `SEG-F.C` and `SEG-F:VT`.
    pub fn parse(s: &str) -> Option<FieldKey> {
        let s = s.trim();
        let (main, vt) = match s.split_once(':') {
            Some((m, v)) => (m, Some(v.to_ascii_uppercase())),
            None => (s, None),
        };
        if let Some(v) = &vt {
            vt_index(v).checked_sub(1)?;
        }
        let (seg, rest) = match main.split_once('-') {
            Some((a, b)) => (a, Some(b)),
            None => (main, None),
        };
        let segment = seg.to_ascii_uppercase();
        seg_code(&segment)?;
        let (field, component) = match rest {
            None => (0, None),
            Some(r) => match r.split_once('.') {
                Some((f, c)) => (f.parse().ok()?, Some(c.parse().ok()?)),
                None => (r.parse().ok()?, None),
            },
        };
        if (rest.is_some() && field == 0) || component == Some(0) || (field == 0 && vt.is_some()) {
            return None;
        }
        Some(FieldKey {
            segment,
            field,
            component,
            value_type: vt,
        })
    }

    fn packed(&self) -> Option<u64> {
        Some(pack(
            seg_code(&self.segment)?,
            self.field,
            self.component.unwrap_or(0),
            self.value_type.as_deref().map_or(0, vt_index),
        ))
    }
}

impl fmt::Display for FieldKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.segment)?;
        if self.field > 0 {
            write!(f, "-{}", self.field)?;
        }
        if let Some(c) = self.component {
            write!(f, ".{c}")?;
        }
        if let Some(v) = &self.value_type {
            write!(f, ":{v}")?;
        }
        Ok(())
    }
}

/// A site's override of one field's action (from the config, wired by the lead).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldOverride {
    /// The key, e.g. `PID-11.5`, `NTE-3`, `OBX-5:TX`.
    pub field: String,
    /// The action that replaces the default.
    pub action: Action,
}

impl FieldOverride {
    /// Builds an override from text, e.g. `("PID-11.5", "remove")`.
    pub fn parse(field: &str, action: &str) -> Option<FieldOverride> {
        FieldKey::parse(field)?;
        Some(FieldOverride {
            field: field.trim().to_owned(),
            action: Action::parse(action)?,
        })
    }
}

/// One line of the default profile: key, action, and why (the Safe Harbor
/// identifier letter or the reason it is kept).
pub type DefaultRule = (&'static str, Action, &'static str);

use Action::{
    Generalize as G, Keep as K, KeepCode as C, Pseudonymize as P, Remove as R, Scrub as S,
    ShiftDate as D,
};

/// The default profile: HIPAA Safe Harbor plus India identifiers.
/// `SEG` alone is the segment's default for fields not listed.
pub const DEFAULT_RULES: &[DefaultRule] = &[
    // MSH: routing and technical fields are codes; ids that can be IPs or EUI-64s are not.
    ("MSH", C, "technical header fields: codes only"),
    ("MSH-3.2", P, "M/O: sending device EUI-64 or IP"),
    ("MSH-4.2", R, "O: universal id may be an IP address"),
    ("MSH-5.2", R, "O: universal id may be an IP address"),
    ("MSH-6.2", R, "O: universal id may be an IP address"),
    ("MSH-7", D, "C: message time tracks the event time"),
    (
        "MSH-10",
        R,
        "R: control id (exported only as control_id_hash)",
    ),
    // EVN
    ("EVN", C, "event codes"),
    ("EVN-2", D, "C: recorded time"),
    ("EVN-3", D, "C: planned time"),
    ("EVN-5", R, "A: operator name/id"),
    ("EVN-6", D, "C: event occurred"),
    // PID: allow-list; everything not listed is removed.
    (
        "PID",
        R,
        "A-R: patient identification: remove unless listed",
    ),
    ("PID-1", K, "set id"),
    ("PID-2", P, "H: external patient id"),
    (
        "PID-3",
        P,
        "H/G/R: identifier list (MRN kept as pseudonym; Aadhaar/ABHA never raw)",
    ),
    ("PID-4", P, "H: alternate patient id"),
    ("PID-5", R, "A: patient name"),
    ("PID-6", R, "A: mother's maiden name"),
    ("PID-7", G, "C: birth date → age in years, 90+"),
    ("PID-8", K, "administrative sex (not an identifier)"),
    ("PID-9", R, "A: alias"),
    ("PID-10", C, "race code"),
    ("PID-11", R, "B: address"),
    ("PID-11.4", K, "B: state/province is allowed"),
    ("PID-11.5", G, "B: PIN/ZIP → first 3 digits"),
    ("PID-11.6", K, "B: country is allowed"),
    ("PID-13", R, "D/E/F: home phone, fax, email"),
    ("PID-14", R, "D/E/F: business phone"),
    ("PID-18", R, "J: account number (issue 3: removed)"),
    ("PID-19", R, "G: SSN / Aadhaar"),
    ("PID-20", R, "K: driver's licence"),
    ("PID-21", R, "R: mother's identifier"),
    ("PID-22", C, "ethnic group code"),
    ("PID-29", D, "C: death date"),
    ("PID-30", K, "death indicator"),
    // PD1, NK1, GT1, IN1, IN2: people and payers around the patient.
    (
        "PD1",
        R,
        "A-R: additional demographics, primary care provider",
    ),
    ("NK1", R, "A-R: next of kin: names, addresses, phones, ids"),
    ("NK1-1", K, "set id"),
    ("NK1-3", C, "relationship code"),
    ("GT1", R, "A-R: guarantor"),
    ("GT1-1", K, "set id"),
    (
        "IN1",
        R,
        "I/J: insurance: beneficiary and policy numbers, insured's details",
    ),
    ("IN1-1", K, "set id"),
    ("IN1-2", C, "insurance plan code"),
    ("IN2", R, "I/J: insurance additional info"),
    // PV1: the visit; ward kept, room and bed pseudonymized, staff removed.
    ("PV1", C, "visit codes"),
    ("PV1-3", C, "location: see components"),
    ("PV1-3.2", P, "room (row-level export)"),
    ("PV1-3.3", P, "bed (row-level export)"),
    ("PV1-3.9", R, "location description (free text)"),
    ("PV1-6.2", P, "prior room"),
    ("PV1-6.3", P, "prior bed"),
    ("PV1-6.9", R, "location description (free text)"),
    ("PV1-7", R, "A: attending doctor (personal data under DPDP)"),
    ("PV1-8", R, "A: referring doctor"),
    ("PV1-9", R, "A: consulting doctor"),
    ("PV1-11", R, "temporary location"),
    ("PV1-17", R, "A: admitting doctor"),
    ("PV1-19", P, "J: visit number"),
    ("PV1-42", R, "pending location"),
    ("PV1-43", R, "prior temporary location"),
    ("PV1-44", D, "C: admit time"),
    ("PV1-45", D, "C: discharge time"),
    ("PV1-50", P, "J: alternate visit id"),
    ("PV1-52", R, "A: other healthcare provider"),
    // PV2
    ("PV2", C, "visit codes; free text dropped"),
    ("PV2-8", D, "C: expected admit"),
    ("PV2-9", D, "C: expected discharge"),
    ("PV2-12", R, "visit description (free text)"),
    // ORC / OBR: orders; order numbers are accession-like identifiers.
    ("ORC", C, "order codes"),
    ("ORC-2", P, "R: placer order number"),
    ("ORC-3", P, "R: filler order number"),
    ("ORC-4", P, "R: placer group number"),
    ("ORC-9", D, "C: transaction time"),
    ("ORC-10", R, "A: entered by"),
    ("ORC-11", R, "A: verified by"),
    ("ORC-12", R, "A: ordering provider"),
    ("ORC-13", R, "enterer's location"),
    ("ORC-14", R, "D: call back phone"),
    ("ORC-15", D, "C: order effective time"),
    ("ORC-19", R, "A: action by"),
    ("ORC-21", R, "ordering facility name"),
    ("ORC-22", R, "B: ordering facility address"),
    ("ORC-23", R, "D: ordering facility phone"),
    ("ORC-24", R, "B: ordering provider address"),
    ("OBR", C, "order codes"),
    ("OBR-2", P, "R: placer order number"),
    ("OBR-3", P, "R: filler order number / accession"),
    ("OBR-4", K, "universal service id (code and text)"),
    ("OBR-6", D, "C: requested time"),
    ("OBR-7", D, "C: observation time"),
    ("OBR-8", D, "C: observation end"),
    ("OBR-10", R, "A: collector"),
    ("OBR-13", R, "relevant clinical info (free text)"),
    ("OBR-14", D, "C: specimen received"),
    ("OBR-16", R, "A: ordering provider"),
    ("OBR-17", R, "D: order callback phone"),
    ("OBR-22", D, "C: results reported"),
    ("OBR-28", R, "A: result copies to"),
    ("OBR-32", R, "A: principal interpreter"),
    ("OBR-33", R, "A: assistant interpreter"),
    ("OBR-34", R, "A: technician"),
    ("OBR-35", R, "A: transcriptionist"),
    // OBX: the clinical payload.
    ("OBX", C, "observation codes"),
    ("OBX-3", K, "observation identifier"),
    ("OBX-4", K, "sub-id / PCD containment path"),
    ("OBX-5", K, "value (numeric, coded, structured)"),
    ("OBX-5:ST", S, "short text value: identifiers scrubbed"),
    ("OBX-5:TX", R, "free text: dropped (override to scrub)"),
    ("OBX-5:FT", R, "formatted text: dropped (override to scrub)"),
    ("OBX-5:ED", R, "P/Q: encapsulated data (reports, images)"),
    ("OBX-5:RP", R, "N: reference pointer (URLs)"),
    ("OBX-5:DT", D, "C: date value"),
    ("OBX-5:DTM", D, "C: date/time value"),
    ("OBX-5:TS", D, "C: date/time value"),
    ("OBX-5:PN", R, "A: person name value"),
    ("OBX-5:XPN", R, "A: person name value"),
    ("OBX-5:XAD", R, "B: address value"),
    ("OBX-5:AD", R, "B: address value"),
    ("OBX-5:XTN", R, "D/F: phone/email value"),
    ("OBX-5:TN", R, "D: phone value"),
    ("OBX-5:CX", R, "H/R: identifier value"),
    ("OBX-5:XCN", R, "A: person value"),
    ("OBX-5:XON", R, "organization value"),
    ("OBX-6", K, "units"),
    ("OBX-7", K, "reference range"),
    ("OBX-8", K, "abnormal flags"),
    ("OBX-11", K, "result status"),
    ("OBX-12", D, "C: last normal value date"),
    ("OBX-14", D, "C: observation time"),
    ("OBX-15", R, "producer id"),
    ("OBX-16", R, "A: responsible observer"),
    ("OBX-17", K, "observation method"),
    ("OBX-18", P, "M: equipment instance id (EUI-64)"),
    ("OBX-19", D, "C: analysis time"),
    ("OBX-23", R, "performing organization name"),
    ("OBX-24", R, "B: performing organization address"),
    ("OBX-25", R, "A: performing medical director"),
    // NTE: comments.
    ("NTE", K, "comment set id, source, type"),
    ("NTE-3", R, "free-text comment: dropped (override to scrub)"),
    ("NTE-5", R, "A: entered by"),
    ("NTE-6", D, "C: entered time"),
    // DG1: diagnoses.
    ("DG1", C, "diagnosis codes"),
    ("DG1-3", K, "diagnosis code"),
    ("DG1-4", R, "diagnosis description (free text)"),
    ("DG1-5", D, "C: diagnosis time"),
    ("DG1-16", R, "A: diagnosing clinician"),
    ("DG1-19", D, "C: attestation time"),
    // MRG: merged identifiers.
    ("MRG", R, "H: prior identifiers"),
    ("MRG-1", P, "H: prior patient identifier list"),
    ("MRG-2", P, "H: prior alternate patient id"),
    ("MRG-3", R, "J: prior account number"),
    ("MRG-4", P, "H: prior patient id"),
    ("MRG-5", P, "J: prior visit number"),
    ("MRG-6", P, "J: prior alternate visit id"),
    ("MRG-7", R, "A: prior patient name"),
    // NPU: bed status (A20).
    ("NPU", C, "bed status"),
    ("NPU-1.2", P, "room"),
    ("NPU-1.3", P, "bed"),
];

/// The action for fields of segments the profile does not list (Z-segments
/// and others): keep code-like values, drop free text.
pub const UNLISTED_SEGMENT_ACTION: Action = Action::KeepCode;

/// Where a resolved action came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// A line of the default profile.
    Default(usize),
    /// A site override.
    Override(usize),
    /// The unlisted-segment rule.
    Unlisted,
}

/// Which IdKind a pseudonymized field stands for.
pub fn pseudonym_kind(segment: &str, field: usize, component: Option<usize>) -> IdKind {
    match (segment, field, component) {
        ("PID", 2..=4, _) | ("MRG", 1 | 2 | 4, _) => IdKind::Patient,
        ("PID", 18, _) | ("MRG", 3, _) => IdKind::Account,
        ("PV1", 19 | 50, _) | ("MRG", 5 | 6, _) => IdKind::Visit,
        ("ORC" | "OBR", 2..=4, _) => IdKind::Order,
        ("OBX", 18, _) | ("MSH", 3, _) => IdKind::Device,
        ("PV1", 3 | 6, _) | ("NPU", 1, _) => IdKind::Location,
        _ => IdKind::Other,
    }
}

/// A resolved profile: defaults merged with the site's overrides.
#[derive(Debug, Clone)]
pub struct Profile {
    /// (packed key, action, origin), sorted by key.
    table: Vec<(u64, Action, Origin)>,
    overrides: Vec<FieldOverride>,
    /// Resolved actions for the hot segments' fields and components
    /// (index: segment × field × component), so the normalizer's ~100
    /// lookups per message are array reads.
    dense: Vec<(Action, Origin)>,
    /// Resolved OBX-5 actions per value type (index: `vt_index`).
    obx5: Vec<(Action, Origin)>,
}

/// Segments whose lookups are precomputed.
const HOT: [&str; 8] = ["MSH", "EVN", "PID", "PV1", "OBR", "OBX", "ORC", "NTE"];
const HOT_FIELDS: usize = 53;
const HOT_COMPS: usize = 10;

fn hot_index(segment: &str) -> Option<usize> {
    let b = segment.as_bytes();
    if b.len() != 3 {
        return None;
    }
    // Compare as one integer rather than three-byte string compares.
    let k = u32::from(b[0]) << 16 | u32::from(b[1]) << 8 | u32::from(b[2]);
    const fn id(s: &[u8; 3]) -> u32 {
        (s[0] as u32) << 16 | (s[1] as u32) << 8 | s[2] as u32
    }
    Some(match k {
        x if x == id(b"MSH") => 0,
        x if x == id(b"EVN") => 1,
        x if x == id(b"PID") => 2,
        x if x == id(b"PV1") => 3,
        x if x == id(b"OBR") => 4,
        x if x == id(b"OBX") => 5,
        x if x == id(b"ORC") => 6,
        x if x == id(b"NTE") => 7,
        _ => return None,
    })
}

/// An override key that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("bad de-identification override key {key:?}: expected SEG-F, SEG-F.C or OBX-5:VT")]
pub struct BadOverride {
    /// The key as given.
    pub key: String,
}

impl Profile {
    /// The default profile with `overrides` applied on top.
    ///
    /// # Errors
    /// [`BadOverride`] for a key that does not parse.
    pub fn new(overrides: &[FieldOverride]) -> Result<Profile, BadOverride> {
        let mut table: Vec<(u64, Action, Origin)> =
            Vec::with_capacity(DEFAULT_RULES.len() + overrides.len());
        for (i, (key, action, _)) in DEFAULT_RULES.iter().enumerate() {
            let k = FieldKey::parse(key)
                .and_then(|k| k.packed())
                .ok_or_else(|| BadOverride {
                    key: (*key).to_owned(),
                })?;
            table.push((k, *action, Origin::Default(i)));
        }
        for (i, o) in overrides.iter().enumerate() {
            let k = FieldKey::parse(&o.field)
                .and_then(|k| k.packed())
                .ok_or_else(|| BadOverride {
                    key: o.field.clone(),
                })?;
            match table.iter_mut().find(|(t, _, _)| *t == k) {
                Some(e) => {
                    e.1 = o.action;
                    e.2 = Origin::Override(i);
                }
                None => table.push((k, o.action, Origin::Override(i))),
            }
        }
        table.sort_by_key(|e| e.0);
        let mut p = Profile {
            table,
            overrides: overrides.to_vec(),
            dense: Vec::new(),
            obx5: Vec::new(),
        };
        let mut dense = Vec::with_capacity(HOT.len() * HOT_FIELDS * HOT_COMPS);
        for seg in HOT {
            for f in 0..HOT_FIELDS {
                for c in 0..HOT_COMPS {
                    dense.push(p.lookup_slow(seg, f, (c > 0).then_some(c), None));
                }
            }
        }
        let mut obx5 = vec![p.lookup_slow("OBX", 5, None, None)];
        for vt in VALUE_TYPES {
            obx5.push(p.lookup_slow("OBX", 5, None, Some(vt)));
        }
        p.dense = dense;
        p.obx5 = obx5;
        Ok(p)
    }

    fn get(&self, k: u64) -> Option<(Action, Origin)> {
        self.table
            .binary_search_by_key(&k, |e| e.0)
            .ok()
            .map(|i| (self.table[i].1, self.table[i].2))
    }

    /// The action for `segment`-`field`[.`component`] with OBX-2 value type `vt`.
    pub fn lookup(
        &self,
        segment: &str,
        field: usize,
        component: Option<usize>,
        vt: Option<&str>,
    ) -> (Action, Origin) {
        let c = component.unwrap_or(0);
        let v = vt.map_or(0, vt_index);
        if let Some(h) = hot_index(segment) {
            if field < HOT_FIELDS && c < HOT_COMPS {
                if v == 0 {
                    if let Some(r) = self.dense.get((h * HOT_FIELDS + field) * HOT_COMPS + c) {
                        return *r;
                    }
                } else if segment == "OBX" && field == 5 && c == 0 {
                    if let Some(r) = self.obx5.get(usize::from(v)) {
                        return *r;
                    }
                }
            }
        }
        self.lookup_slow(segment, field, component, vt)
    }

    fn lookup_slow(
        &self,
        segment: &str,
        field: usize,
        component: Option<usize>,
        vt: Option<&str>,
    ) -> (Action, Origin) {
        let Some(seg) = seg_code(segment) else {
            return (UNLISTED_SEGMENT_ACTION, Origin::Unlisted);
        };
        let f = u16::try_from(field).unwrap_or(u16::MAX);
        let c = component.and_then(|c| u8::try_from(c).ok()).unwrap_or(0);
        let v = vt.map_or(0, vt_index);
        // All rules of this field sit together in the sorted table: find the
        // most specific one in a single scan.
        let lo = pack(seg, f, 0, 0);
        let hi = pack(seg, f, 255, 255);
        let mut best: Option<(u8, Action, Origin)> = None;
        let start = self.table.partition_point(|e| e.0 < lo);
        for &(k, a, o) in self.table[start..].iter().take_while(|e| e.0 <= hi) {
            let (kc, kv) = (((k >> 8) & 0xFF) as u8, (k & 0xFF) as u8);
            let rank = match (kc, kv) {
                (0, 0) => 1,
                (0, x) if x == v => 2,
                (x, 0) if x == c => 3,
                (x, y) if x == c && y == v => 4,
                _ => continue,
            };
            if best.is_none_or(|(r, _, _)| rank > r) {
                best = Some((rank, a, o));
            }
        }
        if let Some((_, a, o)) = best {
            return (a, o);
        }
        self.get(pack(seg, 0, 0, 0))
            .unwrap_or((UNLISTED_SEGMENT_ACTION, Origin::Unlisted))
    }

    /// True when some rule targets a component of this field (so the field
    /// must be processed component by component).
    pub fn has_component_rules(&self, segment: &str, field: usize) -> bool {
        let Some(seg) = seg_code(segment) else {
            return false;
        };
        let f = u16::try_from(field).unwrap_or(u16::MAX);
        let lo = pack(seg, f, 1, 0);
        let hi = pack(seg, f, 255, 255);
        let i = self.table.partition_point(|e| e.0 < lo);
        self.table.get(i).is_some_and(|e| e.0 <= hi)
    }

    /// A human-readable reason for an origin.
    pub fn describe(&self, origin: Origin) -> String {
        match origin {
            Origin::Default(i) => match DEFAULT_RULES.get(i) {
                Some((k, _, why)) => format!("default {k}: {why}"),
                None => "default".to_owned(),
            },
            Origin::Override(i) => match self.overrides.get(i) {
                Some(o) => format!("site override {}", o.field),
                None => "site override".to_owned(),
            },
            Origin::Unlisted => "unlisted segment: codes only, free text dropped".to_owned(),
        }
    }
}

/// The default profile as text, for `wardlink deid --print-profile`.
pub fn default_profile_text() -> String {
    use std::fmt::Write;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "# wardlink default de-identification profile: HIPAA Safe Harbor + India identifiers"
    );
    let _ = writeln!(
        s,
        "# key            action        why (Safe Harbor identifier letter A-R where it applies)"
    );
    let _ = writeln!(
        s,
        "# SEG alone is the default for that segment's fields not listed."
    );
    for (key, action, why) in DEFAULT_RULES {
        let _ = writeln!(s, "{key:<16} {:<13} {why}", action.as_str());
    }
    let _ = writeln!(
        s,
        "{:<16} {:<13} segments not listed: code-like values kept, free text dropped",
        "(other segments)",
        UNLISTED_SEGMENT_ACTION.as_str(),
    );
    let _ = writeln!(
        s,
        "# free text everywhere it is kept: Aadhaar, ABHA, PAN, voter id, mobile, email, URL, IP,"
    );
    let _ = writeln!(
        s,
        "# PIN, dates, long numbers, and this message's own names and identifiers are removed."
    );
    s
}

#[cfg(test)]
#[expect(clippy::unwrap_used, reason = "tests fail loudly")]
mod tests {
    use super::*;

    #[test]
    fn dense_lookup_agrees_with_the_table() {
        for (i, h) in HOT.iter().enumerate() {
            assert_eq!(hot_index(h), Some(i));
        }
        let o = vec![
            FieldOverride::parse("OBX-5:ST", "remove").unwrap(),
            FieldOverride::parse("PV1-3.1", "pseudonymize").unwrap(),
        ];
        let p = Profile::new(&o).unwrap();
        for seg in HOT.iter().chain(["NK1", "ZPI", "DG1"].iter()) {
            for f in 0..60 {
                for c in [None, Some(1), Some(2), Some(5), Some(12)] {
                    for vt in [None, Some("ST"), Some("NM"), Some("TX")] {
                        assert_eq!(
                            p.lookup(seg, f, c, vt),
                            p.lookup_slow(seg, f, c, vt),
                            "{seg}-{f} {c:?} {vt:?}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn default_rules_all_parse_and_are_unique() {
        let p = Profile::new(&[]).unwrap();
        let mut keys: Vec<u64> = p.table.iter().map(|e| e.0).collect();
        keys.dedup();
        assert_eq!(keys.len(), DEFAULT_RULES.len());
    }

    #[test]
    fn lookup_specificity_and_overrides() {
        let p = Profile::new(&[]).unwrap();
        assert_eq!(p.lookup("PID", 5, None, None).0, Action::Remove);
        assert_eq!(p.lookup("PID", 11, Some(5), None).0, Action::Generalize);
        assert_eq!(p.lookup("PID", 11, Some(1), None).0, Action::Remove);
        assert_eq!(p.lookup("PID", 25, None, None).0, Action::Remove);
        assert_eq!(p.lookup("OBX", 5, None, Some("NM")).0, Action::Keep);
        assert_eq!(p.lookup("OBX", 5, None, Some("TX")).0, Action::Remove);
        assert_eq!(
            p.lookup("ZPI", 3, None, None),
            (Action::KeepCode, Origin::Unlisted)
        );
        assert!(p.has_component_rules("PV1", 3));
        assert!(!p.has_component_rules("PV1", 19));
        let o = vec![
            FieldOverride::parse("PID-11.5", "remove").unwrap(),
            FieldOverride::parse("NTE-3", "scrub").unwrap(),
        ];
        let p = Profile::new(&o).unwrap();
        assert_eq!(p.lookup("PID", 11, Some(5), None).0, Action::Remove);
        let (a, origin) = p.lookup("NTE", 3, None, None);
        assert_eq!(a, Action::Scrub);
        assert!(p.describe(origin).contains("site override NTE-3"));
    }

    #[test]
    fn bad_keys() {
        for k in [
            "", "pid", "PI-1", "PID-x", "PID-0", "PID-1.0", "OBX-5:QQ", "PID:ST",
        ] {
            assert!(FieldKey::parse(k).is_none() || k == "pid", "{k}");
        }
        assert!(Profile::new(&[FieldOverride {
            field: "nope".into(),
            action: Action::Keep
        }])
        .is_err());
        assert_eq!(FieldKey::parse("obx-5:tx").unwrap().to_string(), "OBX-5:TX");
    }

    #[test]
    fn printable() {
        let t = default_profile_text();
        assert!(t.contains("PID-5") && t.contains("remove"));
        assert!(t.lines().count() > DEFAULT_RULES.len());
    }
}
