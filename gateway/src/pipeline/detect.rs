//! Free-text identifier detectors (protocols/deidentification.md §2, §5).
//!
//! Design:
//! - **Hand-written scanners, no regex.** One pass finds digit runs (groups
//!   of digits joined by single separators), `@` and URL starts, and word
//!   tokens; each candidate is checked against the Indian and general
//!   identifier formats. Free text is rare in device traffic, so this only
//!   has to be reasonable, not heroic.
//! - **Validated patterns first, then broad ones** (§2.3 detection order):
//!   Aadhaar needs a valid Verhoeff digit and a first digit 2–9; a mobile
//!   number needs 10 digits starting 6–9 after an optional `+91`/`0091`/`0`.
//!   [`Mode::Full`] (free text) adds labelled values (`Aadhaar:`, `Mob`,
//!   `MRN` …), PIN codes, dates, and any run of 7+ digits; [`Mode::Strict`]
//!   (short coded fields) keeps only the validated and structural detectors
//!   so codes such as `150456` survive.
//! - **The message's own identifiers.** [`Dictionary`] holds the names,
//!   identifiers, streets and phone numbers found in the same message (PID,
//!   NK1, GT1, IN1, PV1 staff …); names match word by word, case- and
//!   diacritic-insensitively, identifiers match on their alphanumeric
//!   characters whatever separators the text uses.
//! - **Hits are spans, output is placeholders** like `[AADHAAR]`, so a
//!   reviewer sees what was removed without seeing it; [`scrub`] reports
//!   which detectors fired (counts only, never values).

use std::collections::HashSet;

/// A kind of identifier the scrubber removes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Detector {
    /// Aadhaar number (12 digits, Verhoeff).
    Aadhaar,
    /// ABHA number (14 digits, 2-4-4-4).
    AbhaNumber,
    /// ABHA address (`handle@abdm`, `handle@sbx`).
    AbhaAddress,
    /// PAN (`AAAAA9999A`).
    Pan,
    /// Voter id / EPIC (`AAA9999999`).
    VoterId,
    /// Indian mobile number.
    Mobile,
    /// E-mail address.
    Email,
    /// URL.
    Url,
    /// IPv4 address.
    Ip,
    /// PIN code (6 digits).
    Pin,
    /// A date in free text.
    Date,
    /// Any other long number (7+ digits) or digit-bearing code with 6+ digits.
    Number,
    /// A value after an identifier label (`MRN:`, `Aadhaar`, `Ph` …).
    Labelled,
    /// A name from this message.
    Name,
    /// An identifier, address or phone from this message.
    Known,
}

impl Detector {
    /// The placeholder that replaces a hit.
    pub fn placeholder(self) -> &'static str {
        match self {
            Detector::Aadhaar => "[AADHAAR]",
            Detector::AbhaNumber | Detector::AbhaAddress => "[ABHA]",
            Detector::Pan => "[PAN]",
            Detector::VoterId => "[VOTER_ID]",
            Detector::Mobile => "[PHONE]",
            Detector::Email => "[EMAIL]",
            Detector::Url => "[URL]",
            Detector::Ip => "[IP]",
            Detector::Pin => "[PIN]",
            Detector::Date => "[DATE]",
            Detector::Number | Detector::Labelled | Detector::Known => "[ID]",
            Detector::Name => "[NAME]",
        }
    }

    /// A stable name for explanations.
    pub fn name(self) -> &'static str {
        match self {
            Detector::Aadhaar => "aadhaar",
            Detector::AbhaNumber => "abha_number",
            Detector::AbhaAddress => "abha_address",
            Detector::Pan => "pan",
            Detector::VoterId => "voter_id",
            Detector::Mobile => "mobile",
            Detector::Email => "email",
            Detector::Url => "url",
            Detector::Ip => "ip",
            Detector::Pin => "pin",
            Detector::Date => "date",
            Detector::Number => "long_number",
            Detector::Labelled => "labelled_id",
            Detector::Name => "name",
            Detector::Known => "message_identifier",
        }
    }
}

/// Which detectors run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Validated and structural detectors only (coded fields).
    Strict,
    /// Everything (free text).
    Full,
}

/// One hit: a byte span of the text and what it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hit {
    /// Start byte.
    pub start: usize,
    /// End byte (exclusive).
    pub end: usize,
    /// What was found.
    pub kind: Detector,
}

// --- Verhoeff (deidentification.md §2.1) -----------------------------------

const VD: [[u8; 10]; 10] = [
    [0, 1, 2, 3, 4, 5, 6, 7, 8, 9],
    [1, 2, 3, 4, 0, 6, 7, 8, 9, 5],
    [2, 3, 4, 0, 1, 7, 8, 9, 5, 6],
    [3, 4, 0, 1, 2, 8, 9, 5, 6, 7],
    [4, 0, 1, 2, 3, 9, 5, 6, 7, 8],
    [5, 9, 8, 7, 6, 0, 4, 3, 2, 1],
    [6, 5, 9, 8, 7, 1, 0, 4, 3, 2],
    [7, 6, 5, 9, 8, 2, 1, 0, 4, 3],
    [8, 7, 6, 5, 9, 3, 2, 1, 0, 4],
    [9, 8, 7, 6, 5, 4, 3, 2, 1, 0],
];
const VP: [[u8; 10]; 8] = [
    [0, 1, 2, 3, 4, 5, 6, 7, 8, 9],
    [1, 5, 7, 6, 2, 8, 3, 0, 9, 4],
    [5, 8, 0, 3, 7, 9, 6, 1, 4, 2],
    [8, 9, 1, 6, 0, 4, 3, 5, 2, 7],
    [9, 4, 5, 3, 1, 2, 6, 8, 7, 0],
    [4, 2, 8, 6, 5, 7, 3, 9, 0, 1],
    [2, 7, 9, 3, 8, 0, 6, 4, 1, 5],
    [7, 0, 4, 6, 9, 1, 3, 2, 5, 8],
];
const VINV: [u8; 10] = [0, 4, 3, 2, 1, 5, 6, 7, 8, 9];

/// True when the ASCII digits pass the Verhoeff check (non-digits → false).
pub fn verhoeff_valid(digits: &[u8]) -> bool {
    let mut c = 0u8;
    for (i, &b) in digits.iter().rev().enumerate() {
        if !b.is_ascii_digit() {
            return false;
        }
        c = VD[usize::from(c)][usize::from(VP[i % 8][usize::from(b - b'0')])];
    }
    !digits.is_empty() && c == 0
}

/// The Verhoeff check digit (as an ASCII digit) for a payload of ASCII digits.
pub fn verhoeff_check_digit(payload: &[u8]) -> u8 {
    let mut c = 0u8;
    for (i, &b) in payload.iter().rev().enumerate() {
        let d = if b.is_ascii_digit() { b - b'0' } else { 0 };
        c = VD[usize::from(c)][usize::from(VP[(i + 1) % 8][usize::from(d)])];
    }
    b'0' + VINV[usize::from(c)]
}

fn compact_digits(s: &str) -> Option<Vec<u8>> {
    let mut v = Vec::with_capacity(16);
    for b in s.trim().bytes() {
        match b {
            b'0'..=b'9' => v.push(b),
            b' ' | b'-' => {}
            _ => return None,
        }
    }
    Some(v)
}

/// An Aadhaar number (spaces and hyphens allowed): 12 digits, first 2–9, Verhoeff valid.
pub fn is_aadhaar(s: &str) -> bool {
    compact_digits(s).is_some_and(|d| d.len() == 12 && d[0] >= b'2' && verhoeff_valid(&d))
}

/// An ABHA number: 14 digits, plain or grouped `XX-XXXX-XXXX-XXXX`.
pub fn is_abha_number(s: &str) -> bool {
    let t = s.trim();
    let groups: Vec<&str> = t.split(['-', ' ']).collect();
    let shape_ok = groups.len() == 1 || groups.iter().map(|g| g.len()).eq([2, 4, 4, 4]);
    shape_ok && compact_digits(t).is_some_and(|d| d.len() == 14)
}

/// An ABHA address: `handle@abdm` or `handle@sbx`, handle ≥ 4 chars of
/// letters, digits and `.`, not starting with a digit or `.`, not ending
/// with `.`; or the 14-digit ABHA number itself as handle.
pub fn is_abha_address(s: &str) -> bool {
    let t = s.trim();
    let Some((handle, domain)) = t.rsplit_once('@') else {
        return false;
    };
    if !(domain.eq_ignore_ascii_case("abdm") || domain.eq_ignore_ascii_case("sbx")) {
        return false;
    }
    if handle.len() == 14 && handle.bytes().all(|b| b.is_ascii_digit()) {
        return true;
    }
    let hb = handle.as_bytes();
    hb.len() >= 4
        && hb.iter().all(|b| b.is_ascii_alphanumeric() || *b == b'.')
        && hb[0].is_ascii_alphabetic()
        && hb[hb.len() - 1] != b'.'
}

/// A PIN code: 6 digits, first 1–9 (one space after the third digit allowed).
pub fn is_pin(s: &str) -> bool {
    let t = s.trim();
    let d: Vec<u8> = t.bytes().filter(|b| *b != b' ').collect();
    let spaces_ok = !t.contains(' ') || (t.len() == 7 && t.as_bytes()[3] == b' ');
    spaces_ok && d.len() == 6 && d.iter().all(u8::is_ascii_digit) && d[0] != b'0'
}

/// A PAN: `AAAAA9999A` with the 4th letter a holder type.
pub fn is_pan(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 10
        && b[..5].iter().all(u8::is_ascii_uppercase)
        && b"ABCFGHJLPT".contains(&b[3])
        && b[5..9].iter().all(u8::is_ascii_digit)
        && b[9].is_ascii_uppercase()
}

fn is_voter_id(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 10
        && b[..3].iter().all(u8::is_ascii_uppercase)
        && b[3..].iter().all(u8::is_ascii_digit)
}

// --- the scanner -------------------------------------------------------------

#[derive(Debug, Clone, Copy)]
struct Group {
    start: usize,
    end: usize,
    /// Separator before this group (0 for the first).
    sep: u8,
}

fn is_word_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b >= 0x80
}

/// Finds identifier hits in `text`, sorted and non-overlapping.
pub fn find(text: &str, mode: Mode, dict: Option<&Dictionary>) -> Vec<Hit> {
    let mut hits = Vec::new();
    let b = text.as_bytes();
    find_urls(text, &mut hits);
    find_emails(b, &mut hits);
    find_digit_runs(text, mode, &mut hits);
    find_word_tokens(text, mode, &mut hits);
    if mode == Mode::Full {
        find_labelled(text, &mut hits);
    }
    if let Some(d) = dict {
        d.find(text, &mut hits);
    }
    normalize_hits(hits)
}

fn normalize_hits(mut hits: Vec<Hit>) -> Vec<Hit> {
    hits.sort_by(|a, b| a.start.cmp(&b.start).then(b.end.cmp(&a.end)));
    let mut out: Vec<Hit> = Vec::with_capacity(hits.len());
    for h in hits {
        match out.last_mut() {
            Some(last) if h.start < last.end => {
                if h.end > last.end {
                    last.end = h.end;
                }
            }
            _ => out.push(h),
        }
    }
    out
}

/// Replaces every hit with its placeholder. Returns the scrubbed text and
/// the detectors that fired (with counts); borrows nothing from the input
/// in the result when something was found.
pub fn scrub(text: &str, mode: Mode, dict: Option<&Dictionary>) -> (String, Vec<(Detector, u32)>) {
    let hits = find(text, mode, dict);
    apply(text, &hits)
}

fn apply(text: &str, hits: &[Hit]) -> (String, Vec<(Detector, u32)>) {
    let mut out = String::with_capacity(text.len());
    let mut pos = 0;
    let mut counts: Vec<(Detector, u32)> = Vec::new();
    for h in hits {
        let (s, e) = (h.start.min(text.len()), h.end.min(text.len()));
        if s < pos || !text.is_char_boundary(s) || !text.is_char_boundary(e) {
            continue;
        }
        out.push_str(&text[pos..s]);
        out.push_str(h.kind.placeholder());
        pos = e;
        match counts.iter_mut().find(|(d, _)| *d == h.kind) {
            Some((_, n)) => *n += 1,
            None => counts.push((h.kind, 1)),
        }
    }
    out.push_str(&text[pos..]);
    (out, counts)
}

fn find_urls(text: &str, hits: &mut Vec<Hit>) {
    let lower = text.to_ascii_lowercase();
    for pat in ["http://", "https://", "ftp://", "www."] {
        let mut from = 0;
        while let Some(p) = lower[from..].find(pat) {
            let start = from + p;
            if start > 0 && is_word_byte(lower.as_bytes()[start - 1]) && pat == "www." {
                from = start + pat.len();
                continue;
            }
            let mut end = lower[start..]
                .find(|c: char| c.is_whitespace() || c == '"' || c == '<' || c == '>')
                .map_or(lower.len(), |e| start + e);
            while end > start && matches!(lower.as_bytes()[end - 1], b'.' | b',' | b';' | b')') {
                end -= 1;
            }
            hits.push(Hit {
                start,
                end,
                kind: Detector::Url,
            });
            from = end.max(start + pat.len());
        }
    }
}

fn find_emails(b: &[u8], hits: &mut Vec<Hit>) {
    for (at, _) in b.iter().enumerate().filter(|(_, c)| **c == b'@') {
        let mut s = at;
        while s > 0 && (b[s - 1].is_ascii_alphanumeric() || b"._%+-".contains(&b[s - 1])) {
            s -= 1;
        }
        let mut e = at + 1;
        while e < b.len() && (b[e].is_ascii_alphanumeric() || b".-".contains(&b[e])) {
            e += 1;
        }
        while e > at + 1 && b[e - 1] == b'.' {
            e -= 1;
        }
        if s == at || e == at + 1 {
            continue;
        }
        let domain = &b[at + 1..e];
        let kind = if domain.eq_ignore_ascii_case(b"abdm") || domain.eq_ignore_ascii_case(b"sbx") {
            Detector::AbhaAddress
        } else if domain.contains(&b'.') {
            Detector::Email
        } else {
            continue;
        };
        hits.push(Hit {
            start: s,
            end: e,
            kind,
        });
    }
}

fn digits_of(text: &[u8], groups: &[Group]) -> Vec<u8> {
    let mut d = Vec::with_capacity(16);
    for g in groups {
        d.extend_from_slice(&text[g.start..g.end]);
    }
    d
}

fn mobile_digits(d: &[u8]) -> bool {
    let core: &[u8] = match d.len() {
        10 => d,
        11 if d[0] == b'0' => &d[1..],
        12 if d.starts_with(b"91") => &d[2..],
        14 if d.starts_with(b"0091") => &d[4..],
        _ => return false,
    };
    (b'6'..=b'9').contains(&core[0])
}

fn date_groups(text: &[u8], g: &[Group]) -> bool {
    if g.len() != 3 || g[1].sep != g[2].sep || !matches!(g[1].sep, b'/' | b'-' | b'.') {
        return false;
    }
    let n = |x: &Group| -> (usize, u32) {
        let s = &text[x.start..x.end];
        let v = s.iter().fold(0u32, |a, c| {
            a.saturating_mul(10).saturating_add(u32::from(c - b'0'))
        });
        (s.len(), v)
    };
    let (l0, v0) = n(&g[0]);
    let (l1, v1) = n(&g[1]);
    let (l2, v2) = n(&g[2]);
    let dm = |d: u32, m: u32| (1..=31).contains(&d) && (1..=12).contains(&m);
    if l0 == 4 && l1 <= 2 && l2 <= 2 {
        return (1..=12).contains(&v1) && (1..=31).contains(&v2);
    }
    l0 <= 2 && l1 <= 2 && (l2 == 2 || l2 == 4) && (dm(v0, v1) || dm(v1, v0))
}

fn yyyymmdd(d: &[u8]) -> bool {
    if d.len() != 8 {
        return false;
    }
    let v = |r: std::ops::Range<usize>| d[r].iter().fold(0u32, |a, c| a * 10 + u32::from(c - b'0'));
    let (y, m, dd) = (v(0..4), v(4..6), v(6..8));
    (1900..=2099).contains(&y) && (1..=12).contains(&m) && (1..=31).contains(&dd)
}

/// Dotted quads whose first octet is below 10 are not taken as IPs: IHE PCD
/// containment paths (`1.5.1.1`) look exactly like them.
fn ip_groups(text: &[u8], g: &[Group]) -> bool {
    let first = &text[g[0].start..g[0].end];
    g.len() == 4
        && first.len() >= 2
        && g[1..].iter().all(|x| x.sep == b'.')
        && g.iter().all(|x| {
            let s = &text[x.start..x.end];
            s.len() <= 3 && s.iter().fold(0u32, |a, c| a * 10 + u32::from(c - b'0')) <= 255
        })
}

fn preceded_by_label(text: &str, start: usize, labels: &[&str]) -> bool {
    let from = text[..start]
        .char_indices()
        .rev()
        .nth(15)
        .map_or(0, |(i, _)| i);
    let window = text[from..start].to_ascii_lowercase();
    labels.iter().any(|l| window.contains(l))
}

/// Classifies the first `k` groups of a run; returns the detector on a match.
fn classify(text: &str, g: &[Group], plus_before: bool, mode: Mode) -> Option<Detector> {
    let b = text.as_bytes();
    let d = digits_of(b, g);
    let k = g.len();
    let lens: Vec<usize> = g.iter().map(|x| x.end - x.start).collect();
    let seps_space_dash = g[1..].iter().all(|x| matches!(x.sep, b' ' | b'-'));
    let same_sep = g[1..].windows(2).all(|w| w[0].sep == w[1].sep);
    if k == 4 && ip_groups(b, g) {
        return Some(Detector::Ip);
    }
    if k == 3 && date_groups(b, g) {
        return (mode == Mode::Full).then_some(Detector::Date);
    }
    if !seps_space_dash {
        return None;
    }
    if d.len() == 12
        && (k == 1 || (k == 3 && lens == [4, 4, 4] && same_sep))
        && d[0] >= b'2'
        && verhoeff_valid(&d)
    {
        return Some(Detector::Aadhaar);
    }
    if d.len() == 14 && (k == 1 || (lens == [2, 4, 4, 4] && same_sep)) {
        return Some(Detector::AbhaNumber);
    }
    if mobile_digits(&d) && k <= 4 && (k == 1 || plus_before || d.len() >= 10) {
        return Some(Detector::Mobile);
    }
    if mode == Mode::Full {
        if k == 1 && yyyymmdd(&d) {
            return Some(Detector::Date);
        }
        if k == 1 && lens[0] == 6 && d[0] != b'0' {
            return Some(Detector::Pin);
        }
        if k == 2
            && lens == [3, 3]
            && g[1].sep == b' '
            && d[0] != b'0'
            && preceded_by_label(text, g[0].start, &["pin", "postal", "zip"])
        {
            return Some(Detector::Pin);
        }
        if d.len() >= 7 && (k == 1 || g[1..].iter().all(|x| x.sep == b'-')) {
            return Some(Detector::Number);
        }
    }
    None
}

fn find_digit_runs(text: &str, mode: Mode, hits: &mut Vec<Hit>) {
    let b = text.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if !b[i].is_ascii_digit()
            || (i > 0 && (is_word_byte(b[i - 1]) && !b[i - 1].is_ascii_digit()))
        {
            // Digits glued to letters are handled as word tokens.
            if b[i].is_ascii_digit() {
                while i < b.len() && is_word_byte(b[i]) {
                    i += 1;
                }
            } else {
                i += 1;
            }
            continue;
        }
        // Collect groups: digits, then a single separator, then digits …
        let mut groups: Vec<Group> = Vec::with_capacity(6);
        let mut j = i;
        let mut sep = 0u8;
        loop {
            let s = j;
            while j < b.len() && b[j].is_ascii_digit() {
                j += 1;
            }
            groups.push(Group {
                start: s,
                end: j,
                sep,
            });
            if groups.len() >= 8 || j + 1 >= b.len() {
                break;
            }
            let c = b[j];
            if matches!(c, b' ' | b'-' | b'.' | b'/') && b[j + 1].is_ascii_digit() {
                sep = c;
                j += 1;
            } else {
                break;
            }
        }
        // Glued to letters after the run: treat the whole thing as a word token.
        let last_end = groups.last().map_or(i, |g| g.end);
        if last_end < b.len() && is_word_byte(b[last_end]) && !b[last_end].is_ascii_digit() {
            i = last_end;
            while i < b.len() && is_word_byte(b[i]) {
                i += 1;
            }
            continue;
        }
        let plus_before = i > 0 && b[i - 1] == b'+';
        let mut gi = 0;
        while gi < groups.len() {
            let mut matched = None;
            for k in (1..=(groups.len() - gi).min(5)).rev() {
                let slice = &groups[gi..gi + k];
                let mut slice_v: Vec<Group> = slice.to_vec();
                slice_v[0].sep = 0;
                if let Some(kind) = classify(text, &slice_v, plus_before && gi == 0, mode) {
                    matched = Some((k, kind));
                    break;
                }
            }
            match matched {
                Some((k, kind)) => {
                    let start = if kind == Detector::Mobile && plus_before && gi == 0 {
                        groups[gi].start - 1
                    } else {
                        groups[gi].start
                    };
                    hits.push(Hit {
                        start,
                        end: groups[gi + k - 1].end,
                        kind,
                    });
                    gi += k;
                }
                None => gi += 1,
            }
        }
        i = last_end.max(i + 1);
    }
}

fn find_word_tokens(text: &str, mode: Mode, hits: &mut Vec<Hit>) {
    let b = text.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if !b[i].is_ascii_alphanumeric() {
            i += 1;
            continue;
        }
        let s = i;
        while i < b.len() && (b[i].is_ascii_alphanumeric() || matches!(b[i], b'-' | b'_' | b'/')) {
            i += 1;
        }
        let mut e = i;
        while e > s && matches!(b[e - 1], b'-' | b'_' | b'/') {
            e -= 1;
        }
        let tok = &text[s..e];
        let letters = tok.bytes().filter(u8::is_ascii_alphabetic).count();
        let digits = tok.bytes().filter(u8::is_ascii_digit).count();
        if letters == 0 || digits == 0 {
            continue;
        }
        let kind = if is_pan(tok) {
            Some(Detector::Pan)
        } else if is_voter_id(tok) {
            Some(Detector::VoterId)
        } else if mode == Mode::Full && digits >= 6 {
            Some(Detector::Number)
        } else if mode == Mode::Full
            && tok.len() == 8
            && tok.as_bytes()[0].is_ascii_uppercase()
            && tok[1..].bytes().all(|c| c.is_ascii_digit())
        {
            // Passport (§2.3).
            Some(Detector::Number)
        } else {
            None
        };
        if let Some(kind) = kind {
            hits.push(Hit {
                start: s,
                end: e,
                kind,
            });
        }
    }
}

const LABELS: &[&str] = &[
    "aadhaar", "aadhar", "uid", "abha", "pan", "epic", "voter", "mob", "mobile", "ph", "phone",
    "tel", "mrn", "uhid", "ipno", "opno", "passport", "licence", "license", "account", "acct",
    "a/c", "pin", "pincode", "ssn", "id",
];

fn find_labelled(text: &str, hits: &mut Vec<Hit>) {
    let b = text.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if !b[i].is_ascii_alphabetic() || (i > 0 && is_word_byte(b[i - 1])) {
            i += 1;
            continue;
        }
        let s = i;
        while i < b.len() && (b[i].is_ascii_alphabetic() || b[i] == b'/') {
            i += 1;
        }
        let word = text[s..i].to_ascii_lowercase();
        if !LABELS.contains(&word.as_str()) {
            continue;
        }
        // Skip ": # . - no number" between the label and the value.
        let mut j = i;
        loop {
            while j < b.len() && matches!(b[j], b' ' | b':' | b'#' | b'.' | b'-' | b'=') {
                j += 1;
            }
            let rest = text[j..].to_ascii_lowercase();
            let skip = ["number", "num", "no"].iter().find(|w| {
                rest.starts_with(*w)
                    && !rest
                        .as_bytes()
                        .get(w.len())
                        .is_some_and(|c| c.is_ascii_alphanumeric())
            });
            match skip {
                Some(w) => j += w.len(),
                None => break,
            }
        }
        // Up to 4 tokens that contain a digit.
        let vstart = j;
        let mut vend = j;
        let mut tokens = 0;
        let mut k = j;
        while tokens < 4 && k < b.len() {
            let ts = k;
            while k < b.len()
                && (b[k].is_ascii_alphanumeric() || matches!(b[k], b'-' | b'/' | b'+'))
            {
                k += 1;
            }
            let tok = &text[ts..k];
            let has_digit = tok.bytes().any(|c| c.is_ascii_digit());
            // A short upper-case prefix ("AB 1234") belongs to the value.
            let prefix = !has_digit
                && tok.len() <= 4
                && tok.bytes().all(|c| c.is_ascii_uppercase())
                && k + 1 < b.len()
                && b[k] == b' '
                && b[k + 1].is_ascii_digit();
            if k == ts || !(has_digit || prefix) {
                break;
            }
            if has_digit {
                vend = k;
            }
            tokens += 1;
            if k < b.len() && b[k] == b' ' && k + 1 < b.len() && b[k + 1].is_ascii_digit() {
                k += 1;
            } else {
                break;
            }
        }
        if vend > vstart {
            hits.push(Hit {
                start: vstart,
                end: vend,
                kind: Detector::Labelled,
            });
            i = vend;
        }
    }
}

// --- the message dictionary ----------------------------------------------------

/// Folds a string for matching: lower case, common Latin diacritics and
/// Indic transliteration marks removed.
pub fn fold(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars().flat_map(char::to_lowercase) {
        let r: &str = match c {
            'à' | 'á' | 'â' | 'ã' | 'ä' | 'å' | 'ā' | 'ă' | 'ą' => "a",
            'ç' | 'ć' | 'ĉ' | 'ċ' | 'č' => "c",
            'ď' | 'đ' | 'ḍ' => "d",
            'è' | 'é' | 'ê' | 'ë' | 'ē' | 'ĕ' | 'ė' | 'ę' | 'ě' => "e",
            'ĝ' | 'ğ' | 'ġ' | 'ģ' => "g",
            'ĥ' | 'ħ' | 'ḥ' => "h",
            'ì' | 'í' | 'î' | 'ï' | 'ĩ' | 'ī' | 'ĭ' | 'į' | 'ı' => "i",
            'ĵ' => "j",
            'ķ' => "k",
            'ĺ' | 'ļ' | 'ľ' | 'ŀ' | 'ł' | 'ḷ' => "l",
            'ṃ' | 'ṁ' => "m",
            'ñ' | 'ń' | 'ņ' | 'ň' | 'ṇ' | 'ṅ' => "n",
            'ò' | 'ó' | 'ô' | 'õ' | 'ö' | 'ø' | 'ō' | 'ŏ' | 'ő' => "o",
            'ŕ' | 'ŗ' | 'ř' | 'ṛ' => "r",
            'ś' | 'ŝ' | 'ş' | 'š' | 'ș' | 'ṣ' => "s",
            'ţ' | 'ť' | 'ŧ' | 'ț' | 'ṭ' => "t",
            'ù' | 'ú' | 'û' | 'ü' | 'ũ' | 'ū' | 'ŭ' | 'ů' | 'ű' | 'ų' => "u",
            'ŵ' => "w",
            'ý' | 'ÿ' | 'ŷ' => "y",
            'ź' | 'ż' | 'ž' => "z",
            'ß' => "ss",
            'æ' => "ae",
            'œ' => "oe",
            '\u{0300}'..='\u{036f}' => "",
            _ => {
                out.push(c);
                continue;
            }
        };
        out.push_str(r);
    }
    out
}

fn compact_upper(s: &str) -> String {
    s.chars()
        .filter(|c| c.is_alphanumeric())
        .flat_map(char::to_uppercase)
        .collect()
}

/// The names and identifiers of one message, for replacement wherever they recur.
#[derive(Debug, Default, Clone)]
pub struct Dictionary {
    names: HashSet<String>,
    ids: Vec<String>,
    /// Every identifier, however short, for exact comparison with a whole
    /// value (a 3-digit MRN in a Z-segment field).
    exact: HashSet<String>,
}

impl Dictionary {
    /// An empty dictionary.
    pub fn new() -> Self {
        Self::default()
    }

    /// True when nothing was added.
    pub fn is_empty(&self) -> bool {
        self.names.is_empty() && self.ids.is_empty() && self.exact.is_empty()
    }

    /// Adds a person's name (or a street/city): every word of 2+ letters.
    pub fn add_name(&mut self, s: &str) {
        for w in s.split(|c: char| !c.is_alphanumeric()) {
            if w.chars().count() >= 2 && w.chars().any(char::is_alphabetic) {
                self.names.insert(fold(w));
            }
        }
    }

    /// Adds an identifier (MRN, account, phone …): matched on its
    /// alphanumerics (at least 4), whatever separators the text uses.
    pub fn add_id(&mut self, s: &str) {
        let c = compact_upper(s);
        if !c.is_empty() {
            self.exact.insert(c.clone());
        }
        // A phone written with a country prefix also recurs without it.
        if c.len() > 10 && c.bytes().all(|b| b.is_ascii_digit()) {
            let tail = c[c.len() - 10..].to_owned();
            if !self.ids.contains(&tail) {
                self.ids.push(tail);
            }
        }
        if c.chars().count() >= 4 && !self.ids.contains(&c) {
            self.ids.push(c);
        }
    }

    /// True when a value contains one of the known names or identifiers.
    pub fn matches(&self, text: &str) -> bool {
        if !self.exact.is_empty() && self.exact.contains(&compact_upper(text)) {
            return true;
        }
        let mut hits = Vec::new();
        self.find(text, &mut hits);
        !hits.is_empty()
    }

    fn find(&self, text: &str, hits: &mut Vec<Hit>) {
        if !self.names.is_empty() {
            let mut start = None;
            for (i, c) in text
                .char_indices()
                .chain(std::iter::once((text.len(), ' ')))
            {
                if c.is_alphanumeric() {
                    if start.is_none() {
                        start = Some(i);
                    }
                } else if let Some(s) = start.take() {
                    if self.names.contains(&fold(&text[s..i])) {
                        hits.push(Hit {
                            start: s,
                            end: i,
                            kind: Detector::Name,
                        });
                    }
                }
            }
        }
        if !self.ids.is_empty() {
            // Compact the text to upper-case alphanumerics, remembering where each came from.
            let mut compact = String::with_capacity(text.len());
            let mut origin: Vec<(usize, usize)> = Vec::with_capacity(text.len());
            for (i, c) in text.char_indices() {
                if c.is_alphanumeric() {
                    for u in c.to_uppercase() {
                        compact.push(u);
                        for _ in 0..u.len_utf8() {
                            origin.push((i, i + c.len_utf8()));
                        }
                    }
                }
            }
            for id in &self.ids {
                let mut from = 0;
                while let Some(p) = compact.get(from..).and_then(|s| s.find(id.as_str())) {
                    let s = from + p;
                    let e = s + id.len();
                    if let (Some(a), Some(z)) = (origin.get(s), origin.get(e - 1)) {
                        hits.push(Hit {
                            start: a.0,
                            end: z.1,
                            kind: Detector::Known,
                        });
                    }
                    from = e;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verhoeff_vectors_from_the_reference() {
        assert_eq!(verhoeff_check_digit(b"236"), b'3');
        assert!(verhoeff_valid(b"2363"));
        assert_eq!(verhoeff_check_digit(b"23456789012"), b'4');
        assert!(verhoeff_valid(b"234567890124"));
        assert!(!verhoeff_valid(b"234567890125"));
        assert!(is_aadhaar("2345 6789 0124"));
        assert!(is_aadhaar("2345-6789-0124"));
        assert!(!is_aadhaar("1345 6789 0124"));
        assert!(!is_aadhaar("2345 6789 0125"));
    }

    #[test]
    fn abha_pin_pan() {
        assert!(is_abha_number("91-1234-5678-9012"));
        assert!(is_abha_number("91123456789012"));
        assert!(!is_abha_number("911-234-5678-9012"));
        assert!(!is_abha_number("9112345678901"));
        assert!(is_abha_address("ravi.kumar@abdm"));
        assert!(is_abha_address("91123456789012@sbx"));
        assert!(!is_abha_address("1ravi@abdm"));
        assert!(!is_abha_address("ravi.@abdm"));
        assert!(!is_abha_address("ab@abdm"));
        assert!(is_pin("560034") && is_pin("560 034"));
        assert!(!is_pin("060034") && !is_pin("56003"));
        assert!(is_pan("ABCPE1234F") && !is_pan("ABCQE1234F"));
    }

    fn scrubbed(t: &str) -> String {
        scrub(t, Mode::Full, None).0
    }

    #[test]
    fn free_text_detectors() {
        assert_eq!(scrubbed("UID 2345 6789 0124 ok"), "UID [AADHAAR] ok");
        assert_eq!(scrubbed("abha 91-1234-5678-9012."), "abha [ABHA].");
        assert_eq!(scrubbed("call +91 98765 43210 now"), "call [PHONE] now");
        assert_eq!(scrubbed("call 09876543210"), "call [PHONE]");
        assert_eq!(
            scrubbed("mail a.b@x.co.in, or ravi.k@abdm"),
            "mail [EMAIL], or [ABHA]"
        );
        assert_eq!(scrubbed("see https://x.org/a?b=1. then"), "see [URL]. then");
        assert_eq!(scrubbed("host 10.1.2.3 down"), "host [IP] down");
        assert_eq!(
            scrubbed("PAN ABCPE1234F voter XYZ1234567"),
            "PAN [PAN] voter [VOTER_ID]"
        );
        assert_eq!(
            scrubbed("12 MG Road, Bengaluru 560034"),
            "12 MG Road, Bengaluru [PIN]"
        );
        assert_eq!(
            scrubbed("DOB 12/03/1987 or 1987-03-12"),
            "DOB [DATE] or [DATE]"
        );
        assert_eq!(scrubbed("acct 080-12345678"), "acct [PHONE]");
        assert_eq!(scrubbed("acct 1234-5678901"), "acct [ID]");
        assert_eq!(scrubbed("MRN: AB 12"), "MRN: [ID]");
        // Clinical text survives.
        assert_eq!(
            scrubbed("HR 80 bpm, BP 120/80, SpO2 98%, temp 36.5"),
            "HR 80 bpm, BP 120/80, SpO2 98%, temp 36.5"
        );
    }

    #[test]
    fn strict_mode_keeps_codes() {
        for code in [
            "150456",
            "MDC_PULS_OXIM_SAT_O2",
            "8867-4",
            "182777000",
            "1.5.1.1",
        ] {
            assert!(find(code, Mode::Strict, None).is_empty(), "{code}");
        }
        assert!(!find("ABCPE1234F", Mode::Strict, None).is_empty());
        assert!(!find("234567890124", Mode::Strict, None).is_empty());
    }

    #[test]
    fn dictionary_names_and_ids() {
        let mut d = Dictionary::new();
        d.add_name("Şrīnivās Ñáñez");
        d.add_id("MRN-0042-77");
        d.add_id("+91 98450 12345");
        let (s, counts) = scrub(
            "seen by srinivas NANEZ; id mrn004277, ph 98450-12345",
            Mode::Strict,
            Some(&d),
        );
        assert_eq!(s, "seen by [NAME] [NAME]; id [ID], ph [PHONE]");
        assert!(counts.iter().any(|(k, n)| *k == Detector::Name && *n == 2));
    }

    #[test]
    fn never_panics_on_odd_text() {
        for t in [
            "",
            "@",
            "a@",
            "@b.c",
            "+",
            "+9",
            "1-",
            "1 2 3 4 5 6 7 8 9 0 1",
            "ṇ1é@",
            "www.",
            "http://",
        ] {
            let _ = scrub(t, Mode::Full, None);
        }
    }
}
