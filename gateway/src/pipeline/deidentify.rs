//! De-identification of one message: profile actions applied to values.
//!
//! Design:
//! - **Every exported value goes through [`Deid`]**, which looks up the
//!   field's action in the [`Profile`] (defaults plus site overrides) and
//!   applies it: keep, keep-code, remove, pseudonymize, generalize, shift
//!   date or scrub. The normalizer asks for exactly the fields an event
//!   needs; [`Deid::other_segments`] walks every field for `hl7_other`.
//! - **Dates.** Under [`DatePolicy::Shift`] every date of a message moves by
//!   the same whole number of days, derived from the patient's pseudonym
//!   (or, without a patient, the encounter, device or source), so intervals
//!   and time of day survive and the offset is the same in every message of
//!   that patient. Under [`DatePolicy::YearOnly`] only the year is kept.
//! - **Explanations cost nothing unless asked for.** With tracing on, each
//!   application records the field, the action, the rule that chose it and
//!   the *result* — never the input — so `wardlink deid` can show a privacy
//!   officer what happened without printing what was removed.

use std::borrow::Cow;

use wardlink_sync::{OtherSegment, Text};

use super::detect::{self, Dictionary, Mode};
use super::hl7::{escape_into, Message, Precision, Segment, Ts, Value};
use super::profile::{pseudonym_kind, Action, Origin, Profile};
use super::pseudonym::{IdKind, SiteKeys};
use super::{DatePolicy, FieldTrace};

/// Longest value kept in the cross-message cache.
const SHARED_MAX_LEN: usize = 40;
/// Slots of the cross-message cache (a power of two).
const SHARED_SLOTS: usize = 4096;

thread_local! {
    /// A small content-addressed cache of exported values, per thread: one
    /// `Text` per distinct code, display name, unit or sub-id instead of an
    /// allocation per observation. A slot collision simply replaces the old
    /// entry, so it is bounded (4096 values of at most 40 bytes) and holds
    /// only values the profile keeps (never an input that was removed).
    static SHARED: std::cell::RefCell<Vec<Option<(u64, Text)>>> =
        std::cell::RefCell::new(vec![None; SHARED_SLOTS]);
}

/// The shared `Text` for an exported value (see `SHARED`).
pub fn shared_text(s: &str) -> Text {
    let h = super::hl7::hash64(s);
    SHARED.with(|cell| {
        let Ok(mut slots) = cell.try_borrow_mut() else {
            return Text::from(s);
        };
        let i = (h as usize) & (SHARED_SLOTS - 1);
        match slots.get_mut(i) {
            Some(Some((k, t))) if *k == h && t.as_ref() == s => t.clone(),
            Some(slot) => {
                let t = Text::from(s);
                *slot = Some((h, t.clone()));
                t
            }
            None => Text::from(s),
        }
    })
}

/// Where a value sits, for profile lookup and explanations.
#[derive(Debug, Clone, Copy)]
pub struct Loc<'s> {
    /// Segment id.
    pub seg: &'s str,
    /// 1-based occurrence of the segment (0 = don't show).
    pub occ: usize,
    /// Field number.
    pub field: usize,
    /// Component, if one.
    pub comp: Option<usize>,
    /// OBX-2 value type for OBX-5.
    pub vt: Option<&'s str>,
}

impl<'s> Loc<'s> {
    /// A field location.
    pub fn field(seg: &'s str, field: usize) -> Self {
        Loc {
            seg,
            occ: 0,
            field,
            comp: None,
            vt: None,
        }
    }

    /// The same location at a component.
    pub fn comp(self, c: usize) -> Self {
        Loc {
            comp: Some(c),
            ..self
        }
    }

    /// The same location at occurrence `occ`.
    pub fn at(self, occ: usize) -> Self {
        Loc { occ, ..self }
    }

    /// The same location with a value type.
    pub fn vt(self, vt: &'s str) -> Self {
        Loc {
            vt: (!vt.is_empty()).then_some(vt),
            ..self
        }
    }

    /// `PID-11.5`, `OBX[3]-5:NM`.
    pub fn label(&self) -> String {
        let mut s = String::from(self.seg);
        if self.occ > 0 {
            s.push_str(&format!("[{}]", self.occ));
        }
        s.push_str(&format!("-{}", self.field));
        if let Some(c) = self.comp {
            s.push_str(&format!(".{c}"));
        }
        if let Some(v) = self.vt {
            s.push(':');
            s.push_str(v);
        }
        s
    }
}

/// Per-message de-identification state.
pub struct Deid<'p, 'm, 'a> {
    profile: &'p Profile,
    keys: &'p SiteKeys,
    policy: DatePolicy,
    msg: &'m Message<'a>,
    /// Day offset for this message's subject (0 under YearOnly).
    pub offset_days: i32,
    /// Epoch seconds of the message's reference time (for generalizing birth dates).
    pub reference: Option<Ts>,
    dict: Option<Dictionary>,
    /// keep-code results already computed for this message (values like
    /// `NM` or a ward code repeat on every row).
    code_memo: Vec<(Text, Option<Text>)>,
    /// Distinct short values of this message (see [`Deid::intern`]).
    interned: Vec<(u64, Text)>,
    /// Hash slots into `interned` (index + 1; at most half full).
    intern_slots: [u16; 256],
    /// Whether keep-code also rejects values containing this message's names
    /// and identifiers. On for `hl7_other` (fields of unknown meaning); off
    /// for the normalizer's known code fields (ward, class, value type …),
    /// where building the dictionary for every device message would cost
    /// more than the whole parse and protect against nothing plausible.
    pub codes_use_dictionary: bool,
    /// Field traces, when explaining.
    pub trace: Option<Vec<FieldTrace>>,
}

/// Normalizes an EUI-64 or other device id: upper-case hex/alnum, no separators.
pub fn normalize_device_id(s: &str) -> String {
    s.chars()
        .filter(char::is_ascii_alphanumeric)
        .map(|c| c.to_ascii_uppercase())
        .collect()
}

/// The device id of an EI value (OBX-18, MSH-3 as HD): the universal id when
/// typed EUI-64, else the entity/namespace id.
pub fn device_id_of(ei: Value<'_>, hd: bool) -> Option<String> {
    let [c1, c2, c3, c4] = ei.comps_n::<4>();
    let (id, uid, ty) = if hd { (c1, c2, c3) } else { (c1, c3, c4) };
    let pick = if ty.raw().eq_ignore_ascii_case("EUI-64") && !uid.is_empty() {
        uid
    } else if hd {
        // A bare HD namespace is an application name, not a device.
        return None;
    } else {
        id
    };
    let n = normalize_device_id(&pick.decoded());
    (!n.is_empty()).then_some(n)
}

impl<'p, 'm, 'a> Deid<'p, 'm, 'a> {
    /// State for one message.
    pub fn new(
        profile: &'p Profile,
        keys: &'p SiteKeys,
        policy: DatePolicy,
        msg: &'m Message<'a>,
        tracing: bool,
    ) -> Self {
        Deid {
            profile,
            keys,
            policy,
            msg,
            offset_days: 0,
            reference: None,
            dict: None,
            code_memo: Vec::new(),
            interned: Vec::with_capacity(32),
            intern_slots: [0; 256],
            codes_use_dictionary: false,
            trace: tracing.then(Vec::new),
        }
    }

    /// The keys (for identity pseudonyms computed by the normalizer).
    pub fn keys(&self) -> &'p SiteKeys {
        self.keys
    }

    /// Sets the date subject (patient, else encounter, device or source).
    pub fn set_subject(&mut self, subject: &str) {
        self.offset_days = match self.policy {
            DatePolicy::Shift { max_days } => self.keys.date_offset_days(subject, max_days),
            DatePolicy::YearOnly => 0,
        };
    }

    /// The action for a location.
    pub fn action(&self, loc: &Loc<'_>) -> (Action, Origin) {
        self.profile.lookup(loc.seg, loc.field, loc.comp, loc.vt)
    }

    fn record(&mut self, loc: &Loc<'_>, action: Action, origin: Origin, result: Option<&str>) {
        if let Some(t) = &mut self.trace {
            t.push(FieldTrace {
                field: loc.label(),
                action,
                rule: self.profile.describe(origin),
                result: result.map_or_else(|| "(removed)".to_owned(), str::to_owned),
            });
        }
    }

    fn record_scrub(
        &mut self,
        loc: &Loc<'_>,
        origin: Origin,
        result: Option<&str>,
        counts: &[(detect::Detector, u32)],
    ) {
        if self.trace.is_none() {
            return;
        }
        let mut rule = self.profile.describe(origin);
        if !counts.is_empty() {
            let list: Vec<String> = counts
                .iter()
                .map(|(d, n)| format!("{}×{n}", d.name()))
                .collect();
            rule.push_str(&format!("; detectors: {}", list.join(", ")));
        }
        let field = loc.label();
        if let Some(t) = &mut self.trace {
            t.push(FieldTrace {
                field,
                action: Action::Scrub,
                rule,
                result: result.map_or_else(|| "(removed)".to_owned(), str::to_owned),
            });
        }
    }

    /// Records a trace for a value the normalizer derived itself (age, postal
    /// prefix, network pseudonym).
    pub fn note(&mut self, loc: Loc<'_>, action: Action, why: &str, result: Option<&str>) {
        if self.trace.is_none() {
            return;
        }
        let (_, origin) = self.action(&loc);
        let rule = format!("{}; {why}", self.profile.describe(origin));
        let field = loc.label();
        if let Some(t) = &mut self.trace {
            t.push(FieldTrace {
                field,
                action,
                rule,
                result: result.map_or_else(|| "(removed)".to_owned(), str::to_owned),
            });
        }
    }

    /// The message's names and identifiers, built on first use.
    pub fn dictionary(&mut self) -> &Dictionary {
        let msg = self.msg;
        self.dict.get_or_insert_with(|| build_dictionary(msg))
    }

    /// A shared string for `s`: values repeat across the rows of a message
    /// (`NM`, `R`, `MDC`, units, the observation time), so each distinct
    /// value is allocated once per message.
    pub fn intern(&mut self, s: &str) -> Text {
        if s.len() > 40 {
            return Text::from(s);
        }
        let h = super::hl7::hash64(s);
        // Open addressing over 256 slots holding index + 1 (0 = empty).
        let mask = self.intern_slots.len() - 1;
        let mut i = (h as usize) & mask;
        for _ in 0..self.intern_slots.len() {
            match self.intern_slots[i] {
                0 => break,
                k => {
                    if let Some((kh, t)) = self.interned.get(usize::from(k) - 1) {
                        if *kh == h && t.as_ref() == s {
                            return t.clone();
                        }
                    }
                }
            }
            i = (i + 1) & mask;
        }
        let t = Text::from(s);
        if self.interned.len() < 128 && self.intern_slots[i] == 0 {
            self.interned.push((h, t.clone()));
            self.intern_slots[i] = self.interned.len() as u16;
        }
        t
    }

    /// Renders a parsed date per `action` and the date policy (ISO 8601).
    pub fn render_date(&self, ts: &Ts, action: Action) -> Option<String> {
        match action {
            Action::ShiftDate => Some(match self.policy {
                DatePolicy::Shift { .. } => ts.shift_days(self.offset_days).to_iso(),
                DatePolicy::YearOnly => format!("{:04}", ts.year),
            }),
            Action::Generalize => Some(format!("{:04}", ts.year)),
            Action::Keep => Some(ts.to_iso()),
            _ => None,
        }
    }

    /// A timestamp field for an event (ISO 8601 under the policy), traced.
    pub fn date(&mut self, loc: Loc<'_>, ts: Option<&Ts>) -> Option<Text> {
        let ts = ts?;
        let (action, origin) = self.action(&loc);
        let out = self.render_date(ts, action).map(|s| self.intern(&s));
        self.record(&loc, action, origin, out.as_deref());
        out
    }

    /// The receive time under the policy (there is no profile field for it:
    /// it follows the date policy like a shifted date).
    pub fn received(&self, ts: &Ts) -> String {
        self.render_date(ts, Action::ShiftDate).unwrap_or_default()
    }

    /// An identifier for an event: pseudonymized from `parts` when the
    /// profile says so, else per the action applied to `display`.
    pub fn ident(
        &mut self,
        loc: Loc<'_>,
        kind: IdKind,
        parts: &[&str],
        display: &str,
    ) -> Option<Text> {
        if display.trim_ascii().is_empty() {
            return None;
        }
        let (action, origin) = self.action(&loc);
        let out = match action {
            Action::Pseudonymize => Some(self.keys.pseudonym_text(kind, parts)),
            Action::Keep => Some(self.intern(display)),
            Action::KeepCode => self.keep_code(display),
            _ => None,
        };
        self.record(&loc, action, origin, out.as_deref());
        out
    }

    /// Like [`Deid::ident`] when the caller already computed the pseudonym
    /// (it also needs it internally): no second HMAC.
    pub fn ident_with(&mut self, loc: Loc<'_>, pseudonym: &Text, display: &str) -> Option<Text> {
        if display.trim_ascii().is_empty() {
            return None;
        }
        let (action, origin) = self.action(&loc);
        let out = match action {
            Action::Pseudonymize => Some(pseudonym.clone()),
            Action::Keep => Some(self.intern(display)),
            Action::KeepCode => self.keep_code(display),
            _ => None,
        };
        self.record(&loc, action, origin, out.as_deref());
        out
    }

    /// A code-like value must pass: ≤ 20 chars, no whitespace, no `@`, at
    /// most 5 digits (longer numbers are identifiers more often than codes:
    /// MRNs, visit and account numbers), no identifier detected.
    pub fn keep_code(&mut self, s: &str) -> Option<Text> {
        let t = s.trim_ascii();
        if t.is_empty() {
            return None;
        }
        if let Some((_, r)) = self
            .code_memo
            .iter()
            .find(|(k, _)| k.len() == t.len() && k.as_ref() == t)
        {
            return r.clone();
        }
        let n = t.chars().count();
        let digits = t.bytes().filter(u8::is_ascii_digit).count();
        let shape_ok =
            n <= 20 && !t.contains(char::is_whitespace) && !t.contains('@') && digits <= 5;
        // Every strict detector needs '@', '.', ':' or more than 5 digits,
        // except PAN: skip the scan when none can fire.
        let ok = shape_ok
            && !((t.contains(['.', ':']) || detect::is_pan(t))
                && !detect::find(t, Mode::Strict, None).is_empty())
            && !(self.codes_use_dictionary && self.dictionary().matches(t));
        let key = self.intern(t);
        let r = ok.then(|| key.clone());
        if self.code_memo.len() < 64 {
            self.code_memo.push((key, r.clone()));
        }
        r
    }

    /// Free text scrubbed with every detector and this message's dictionary.
    pub fn scrub_text(&mut self, s: &str) -> (String, Vec<(detect::Detector, u32)>) {
        let dict = self.dictionary().clone();
        detect::scrub(s, Mode::Full, Some(&dict))
    }

    /// A textual value for an event, per its action.
    pub fn text(&mut self, loc: Loc<'_>, v: Value<'_>) -> Option<Text> {
        let t = v.text()?;
        self.text_str(loc, &t)
    }

    /// Like [`Deid::text`] for an already decoded string.
    pub fn text_str(&mut self, loc: Loc<'_>, t: &str) -> Option<Text> {
        let (action, origin) = self.action(&loc);
        match action {
            Action::Scrub => {
                let (s, counts) = self.scrub_text(t);
                self.record_scrub(&loc, origin, Some(&s), &counts);
                Some(Text::from(s))
            }
            _ => {
                let out = self.apply_plain(&loc, action, t);
                self.record(&loc, action, origin, out.as_deref());
                out
            }
        }
    }

    fn apply_plain(&mut self, loc: &Loc<'_>, action: Action, t: &str) -> Option<Text> {
        match action {
            // Kept values (codes, display names, units, statuses, PCD paths)
            // repeat in every message of a device: share them across
            // messages. Only values the profile exports go there.
            Action::Keep if t.len() <= SHARED_MAX_LEN => Some(shared_text(t)),
            Action::Keep => Some(Text::from(t)),
            Action::KeepCode => self.keep_code(t),
            Action::Remove => None,
            Action::Scrub => Some(Text::from(self.scrub_text(t).0)),
            Action::Pseudonymize => Some(
                self.keys
                    .pseudonym_text(pseudonym_kind(loc.seg, loc.field, loc.comp), &[t]),
            ),
            Action::ShiftDate => {
                let ts = Ts::parse(t.split(['^', '&']).next().unwrap_or(""))?;
                self.render_date(&ts, Action::ShiftDate).map(Text::from)
            }
            Action::Generalize => self.generalize(loc, t).map(Text::from),
        }
    }

    /// Birth dates → year (removed when the person would be 90+), other
    /// dates → year, PIN/ZIP → first 3 digits, anything else → removed.
    fn generalize(&self, loc: &Loc<'_>, t: &str) -> Option<String> {
        if let Some(ts) = Ts::parse(t) {
            if loc.seg == "PID" && loc.field == 7 {
                let at = self.reference?;
                return match age_years(&ts, &at) {
                    Some(a) if a < 90 => Some(format!("{:04}", ts.year)),
                    _ => None,
                };
            }
            return Some(format!("{:04}", ts.year));
        }
        postal_prefix(t)
    }

    /// `hl7_other`: every segment, every field, after the profile.
    pub fn other_segments(&mut self) -> Vec<OtherSegment> {
        let msg = self.msg;
        self.codes_use_dictionary = true;
        self.code_memo.clear();
        let mut out = Vec::with_capacity(msg.segment_count());
        let mut occ: Vec<(&str, usize)> = Vec::new();
        for seg in msg.segments() {
            let id = seg.id();
            let n = match occ.iter_mut().find(|(s, _)| *s == id) {
                Some((_, n)) => {
                    *n += 1;
                    *n
                }
                None => {
                    occ.push((id, 1));
                    1
                }
            };
            // A malformed id is not a segment we can apply a profile to:
            // treat it as an unlisted segment named "???".
            let pid = if id.len() == 3 && id.bytes().all(|b| b.is_ascii_alphanumeric()) {
                id
            } else {
                "???"
            };
            let vt_owned = if pid == "OBX" {
                seg.field(2).raw().trim_ascii().to_owned()
            } else {
                String::new()
            };
            let mut fields: Vec<String> = Vec::with_capacity(seg.field_count());
            for f in 1..=seg.field_count() {
                if pid == "MSH" && f == 1 {
                    fields.push("|".to_owned());
                    continue;
                }
                if pid == "MSH" && f == 2 {
                    fields.push("^~\\&".to_owned());
                    continue;
                }
                let mut loc = Loc::field(pid, f).at(n);
                if pid == "OBX" && f == 5 {
                    loc = loc.vt(&vt_owned);
                }
                let v = self.other_field(&seg, loc);
                fields.push(v);
            }
            while fields.last().is_some_and(String::is_empty) {
                fields.pop();
            }
            out.push(OtherSegment {
                id: pid.to_owned(),
                fields,
            });
        }
        out
    }

    fn other_field(&mut self, seg: &Segment<'_, '_>, loc: Loc<'_>) -> String {
        let v = seg.field(loc.field);
        if v.is_empty() {
            return String::new();
        }
        let (action, origin) = self.action(&loc);
        let comp_rules = self.profile.has_component_rules(loc.seg, loc.field);
        let mut out = String::new();
        if !comp_rules {
            match action {
                Action::Remove => {
                    self.record(&loc, action, origin, None);
                    return out;
                }
                Action::Pseudonymize => {
                    let kind = pseudonym_kind(loc.seg, loc.field, None);
                    for (i, rep) in v.reps().enumerate() {
                        if i > 0 {
                            out.push('~');
                        }
                        if let Some(p) = self.pseudonym_of(kind, loc, rep) {
                            out.push_str(&p);
                        }
                    }
                    while out.ends_with('~') {
                        out.pop();
                    }
                    self.record(&loc, action, origin, Some(&out));
                    return out;
                }
                Action::ShiftDate | Action::Generalize => {
                    for (i, rep) in v.reps().enumerate() {
                        if i > 0 {
                            out.push('~');
                        }
                        let t = rep.comp(1).decoded();
                        if let Some(r) = self.hl7_date(&loc, action, &t) {
                            escape_into(&mut out, &r);
                        }
                    }
                    self.record(&loc, action, origin, Some(&out));
                    return out;
                }
                _ => {}
            }
        }
        // Component by component (subcomponents each get the component's action).
        for (ri, rep) in v.reps().enumerate() {
            if ri > 0 {
                out.push('~');
            }
            for (ci, comp) in rep.comps().enumerate() {
                if ci > 0 {
                    out.push('^');
                }
                let cloc = if comp_rules { loc.comp(ci + 1) } else { loc };
                let (a, o) = self.action(&cloc);
                let mut piece = String::new();
                if a == Action::Pseudonymize {
                    let kind = pseudonym_kind(loc.seg, loc.field, Some(ci + 1));
                    if let Some(p) = self.pseudonym_of(kind, cloc, rep) {
                        piece.push_str(&p);
                    }
                } else {
                    for (si, sub) in comp.subs().enumerate() {
                        if si > 0 {
                            piece.push('&');
                        }
                        let t = sub.decoded();
                        if t.is_empty() {
                            continue;
                        }
                        let r = match a {
                            Action::ShiftDate | Action::Generalize => {
                                self.hl7_date(&cloc, a, &t).map(Text::from)
                            }
                            Action::Scrub => Some(Text::from(self.scrub_text(&t).0)),
                            _ => self.apply_plain(&cloc, a, &t),
                        };
                        if let Some(r) = r {
                            escape_into(&mut piece, &r);
                        }
                    }
                    while piece.ends_with('&') {
                        piece.pop();
                    }
                }
                if comp_rules && !comp.is_empty() {
                    self.record(
                        &cloc,
                        a,
                        o,
                        if piece.is_empty() { None } else { Some(&piece) },
                    );
                }
                out.push_str(&piece);
            }
            while out.ends_with('^') {
                out.pop();
            }
        }
        if !comp_rules {
            self.record(
                &loc,
                action,
                origin,
                if out.is_empty() { None } else { Some(&out) },
            );
        }
        out
    }

    /// Dates inside `hl7_other` stay in HL7 form (shifted or year only).
    fn hl7_date(&self, loc: &Loc<'_>, action: Action, t: &str) -> Option<String> {
        let ts = Ts::parse(t)?;
        match action {
            Action::ShiftDate => Some(match self.policy {
                DatePolicy::Shift { .. } => ts.shift_days(self.offset_days).to_hl7(),
                DatePolicy::YearOnly => format!("{:04}", ts.year),
            }),
            Action::Generalize => self.generalize(loc, t),
            _ => None,
        }
    }

    /// The pseudonym of one repetition of an identifier field, with the same
    /// inputs the normalizer uses for events.
    fn pseudonym_of(&self, kind: IdKind, loc: Loc<'_>, rep: Value<'_>) -> Option<String> {
        match kind {
            IdKind::Patient | IdKind::Account => {
                let id = rep.comp(1).decoded();
                if id.trim_ascii().is_empty() {
                    return None;
                }
                // National ids never leave, not even as pseudonyms: Aadhaar
                // and ABHA repetitions of an identifier list are dropped (the
                // ABHA number reaches the collector only as `patient_network`).
                if super::normalize::is_aadhaar_rep(&rep)
                    || super::normalize::is_abha_rep(&rep)
                    || detect::is_aadhaar(&id)
                    || detect::is_abha_number(&id)
                {
                    return None;
                }
                let auth = rep.comp(4).decoded();
                let ty = rep.comp(5).decoded();
                Some(self.keys.pseudonym(kind, &[&auth, &ty, &id]))
            }
            IdKind::Visit => {
                let id = rep.comp(1).decoded();
                if id.trim_ascii().is_empty() {
                    return None;
                }
                let auth = rep.comp(4).decoded();
                Some(self.keys.pseudonym(kind, &[&auth, &id]))
            }
            IdKind::Order => {
                let id = rep.comp(1).decoded();
                if id.trim_ascii().is_empty() {
                    return None;
                }
                let ns = rep.comp(2).decoded();
                Some(self.keys.pseudonym(kind, &[&ns, &id]))
            }
            IdKind::Device => {
                let id = if loc.seg == "MSH" {
                    device_id_of(rep, true)
                } else {
                    device_id_of(rep, false)
                }?;
                Some(self.keys.pseudonym(kind, &[&id]))
            }
            IdKind::Location => {
                let c = loc.comp.unwrap_or(3).clamp(2, 3);
                let parts = location_parts(rep);
                if parts[c].trim_ascii().is_empty() {
                    return None;
                }
                let p: Vec<&str> = parts[..=c].iter().map(|s| s.as_ref()).collect();
                Some(self.keys.pseudonym(kind, &p))
            }
            _ => {
                let t = rep.decoded();
                (!t.trim_ascii().is_empty()).then(|| self.keys.pseudonym(kind, &[&t]))
            }
        }
    }
}

/// A PL value's parts in pseudonym order: facility, ward, room, bed.
pub fn location_parts<'v>(pl: Value<'v>) -> [Cow<'v, str>; 4] {
    [
        pl.comp(4).sub(1).decoded(),
        pl.comp(1).decoded(),
        pl.comp(2).decoded(),
        pl.comp(3).decoded(),
    ]
}

/// Whole years between a birth date and a reference date (None if negative).
pub fn age_years(dob: &Ts, at: &Ts) -> Option<u32> {
    let mut years = at.year - dob.year;
    let before_birthday = (dob.precision >= Precision::Day
        && (at.month, at.day) < (dob.month, dob.day))
        || (dob.precision == Precision::Month && at.month < dob.month);
    if before_birthday {
        years -= 1;
    }
    u32::try_from(years).ok()
}

/// Age text: whole years, `90+` from 90.
pub fn age_text(years: u32) -> String {
    if years >= 90 {
        "90+".to_owned()
    } else {
        years.to_string()
    }
}

/// The first 3 digits of a PIN (6 digits) or ZIP (5 or 9 digits).
pub fn postal_prefix(t: &str) -> Option<String> {
    let d: String = t.chars().filter(|c| !matches!(c, ' ' | '-')).collect();
    let ok = d.bytes().all(|b| b.is_ascii_digit()) && matches!(d.len(), 5 | 6 | 9);
    ok.then(|| d[..3].to_owned())
}

/// Collects the names, identifiers, address lines and phone numbers of a
/// message for replacement in its free text.
pub fn build_dictionary(msg: &Message<'_>) -> Dictionary {
    let mut d = Dictionary::new();
    let names = |d: &mut Dictionary, v: Value<'_>| {
        for rep in v.reps() {
            for c in 1..=3 {
                d.add_name(&rep.comp(c).decoded());
            }
        }
    };
    let xcn = |d: &mut Dictionary, v: Value<'_>| {
        for rep in v.reps() {
            d.add_id(&rep.comp(1).decoded());
            for c in 2..=4 {
                d.add_name(&rep.comp(c).decoded());
            }
        }
    };
    let ids = |d: &mut Dictionary, v: Value<'_>| {
        for rep in v.reps() {
            d.add_id(&rep.comp(1).decoded());
        }
    };
    let address = |d: &mut Dictionary, v: Value<'_>| {
        for rep in v.reps() {
            d.add_name(&rep.comp(1).decoded());
            d.add_name(&rep.comp(2).decoded());
            d.add_name(&rep.comp(3).decoded());
            d.add_id(&rep.comp(5).decoded());
        }
    };
    let phones = |d: &mut Dictionary, v: Value<'_>| {
        for rep in v.reps() {
            d.add_id(&rep.comp(1).decoded());
            d.add_id(&rep.comp(4).decoded());
            let full = format!(
                "{}{}{}",
                rep.comp(5).decoded(),
                rep.comp(6).decoded(),
                rep.comp(7).decoded()
            );
            d.add_id(&full);
            d.add_id(&rep.comp(7).decoded());
        }
    };
    for seg in msg.segments() {
        match seg.id() {
            "PID" => {
                for f in [2, 3, 4, 18, 19, 20, 21] {
                    ids(&mut d, seg.field(f));
                }
                for f in [5, 6, 9] {
                    names(&mut d, seg.field(f));
                }
                address(&mut d, seg.field(11));
                phones(&mut d, seg.field(13));
                phones(&mut d, seg.field(14));
            }
            "NK1" | "GT1" => {
                names(&mut d, seg.field(2));
                if seg.id() == "GT1" {
                    names(&mut d, seg.field(3));
                    address(&mut d, seg.field(5));
                    phones(&mut d, seg.field(6));
                    phones(&mut d, seg.field(7));
                    ids(&mut d, seg.field(2));
                } else {
                    address(&mut d, seg.field(4));
                    phones(&mut d, seg.field(5));
                    phones(&mut d, seg.field(6));
                    ids(&mut d, seg.field(33));
                }
            }
            "IN1" => {
                names(&mut d, seg.field(16));
                address(&mut d, seg.field(19));
                for f in [36, 49] {
                    ids(&mut d, seg.field(f));
                }
            }
            "PV1" => {
                for f in [7, 8, 9, 17, 52] {
                    xcn(&mut d, seg.field(f));
                }
                ids(&mut d, seg.field(19));
                ids(&mut d, seg.field(50));
            }
            "MRG" => {
                for f in 1..=6 {
                    ids(&mut d, seg.field(f));
                }
                names(&mut d, seg.field(7));
            }
            "ORC" => {
                for f in [10, 11, 12, 19] {
                    xcn(&mut d, seg.field(f));
                }
                for f in [2, 3, 4] {
                    ids(&mut d, seg.field(f));
                }
            }
            "OBR" => {
                for f in [16, 28, 32, 33, 34, 35] {
                    xcn(&mut d, seg.field(f));
                }
                for f in [2, 3] {
                    ids(&mut d, seg.field(f));
                }
            }
            "OBX" => xcn(&mut d, seg.field(16)),
            "PD1" => xcn(&mut d, seg.field(4)),
            "EVN" => xcn(&mut d, seg.field(5)),
            _ => {}
        }
    }
    d
}

impl Ts {
    /// HL7 DTM text at the precision given.
    pub fn to_hl7(&self) -> String {
        use std::fmt::Write;
        let mut s = String::with_capacity(24);
        let _ = write!(s, "{:04}", self.year);
        if self.precision >= Precision::Month {
            let _ = write!(s, "{:02}", self.month);
        }
        if self.precision >= Precision::Day {
            let _ = write!(s, "{:02}", self.day);
        }
        if self.precision >= Precision::Hour {
            let _ = write!(s, "{:02}", self.hour);
        }
        if self.precision >= Precision::Minute {
            let _ = write!(s, "{:02}", self.minute);
        }
        if self.precision >= Precision::Second {
            let _ = write!(s, "{:02}", self.second);
            if self.frac_digits > 0 {
                let _ = write!(s, ".{:0w$}", self.frac, w = usize::from(self.frac_digits));
            }
        }
        if let Some(off) = self.offset_min {
            let sign = if off < 0 { '-' } else { '+' };
            let a = off.unsigned_abs();
            let _ = write!(s, "{sign}{:02}{:02}", a / 60, a % 60);
        }
        s
    }
}

#[cfg(test)]
#[expect(clippy::unwrap_used, reason = "tests fail loudly")]
mod tests {
    use super::*;

    #[test]
    fn ages_and_postal() {
        let dob = Ts::parse("19340615").unwrap();
        assert_eq!(age_years(&dob, &Ts::parse("20240614").unwrap()), Some(89));
        assert_eq!(age_years(&dob, &Ts::parse("20240615").unwrap()), Some(90));
        assert_eq!(age_text(90), "90+");
        assert_eq!(age_text(7), "7");
        assert_eq!(
            age_years(&Ts::parse("2030").unwrap(), &Ts::parse("2024").unwrap()),
            None
        );
        assert_eq!(postal_prefix("560 034").as_deref(), Some("560"));
        assert_eq!(postal_prefix("02139").as_deref(), Some("021"));
        assert_eq!(postal_prefix("Bengaluru"), None);
        assert_eq!(
            Ts::parse("20240101115958.25+0530").unwrap().to_hl7(),
            "20240101115958.25+0530"
        );
    }
}
