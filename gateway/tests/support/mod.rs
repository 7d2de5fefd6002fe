//! Message generators shared by the pipeline tests and the bench
//! (`benches/pipeline.rs` includes this file by path).
#![allow(dead_code)]

use std::fmt::Write;

/// A small deterministic PRNG (splitmix64): tests must be reproducible.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    pub fn pick<'a, T>(&mut self, xs: &'a [T]) -> &'a T {
        &xs[self.below(xs.len() as u64) as usize]
    }
    pub fn digits(&mut self, n: usize) -> String {
        (0..n)
            .map(|_| char::from(b'0' + self.below(10) as u8))
            .collect()
    }
    pub fn letters(&mut self, n: usize) -> String {
        (0..n)
            .map(|_| char::from(b'a' + self.below(26) as u8))
            .collect()
    }
}

// --- Verhoeff, independent of the crate under test -------------------------

const D: [[u8; 10]; 10] = [
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
const P: [[u8; 10]; 8] = [
    [0, 1, 2, 3, 4, 5, 6, 7, 8, 9],
    [1, 5, 7, 6, 2, 8, 3, 0, 9, 4],
    [5, 8, 0, 3, 7, 9, 6, 1, 4, 2],
    [8, 9, 1, 6, 0, 4, 3, 5, 2, 7],
    [9, 4, 5, 3, 1, 2, 6, 8, 7, 0],
    [4, 2, 8, 6, 5, 7, 3, 9, 0, 1],
    [2, 7, 9, 3, 8, 0, 6, 4, 1, 5],
    [7, 0, 4, 6, 9, 1, 3, 2, 5, 8],
];
const INV: [u8; 10] = [0, 4, 3, 2, 1, 5, 6, 7, 8, 9];

/// A synthetic Aadhaar number with a valid Verhoeff check digit, `XXXX XXXX XXXX`.
pub fn aadhaar(rng: &mut Rng) -> String {
    let mut d: Vec<u8> = vec![2 + rng.below(8) as u8];
    for _ in 0..10 {
        d.push(rng.below(10) as u8);
    }
    let mut c = 0u8;
    for (i, x) in d.iter().rev().enumerate() {
        c = D[c as usize][P[(i + 1) % 8][*x as usize] as usize];
    }
    d.push(INV[c as usize]);
    let s: String = d.iter().map(|x| char::from(b'0' + x)).collect();
    format!("{} {} {}", &s[0..4], &s[4..8], &s[8..12])
}

const SYLLABLES: &[&str] = &[
    "Śrī", "ni", "vās", "Ña", "ñez", "Ra", "mesh", "Ku", "mār", "Lak", "ṣmī", "Anan", "ya", "Gup",
    "ta", "Çe", "lik", "Mül", "ler", "Dé", "vī", "Ṛṣi", "kesh", "Jo", "sé", "Zo", "ë", "Ay", "şe",
    "Pra", "kāś", "Bha", "ga", "vat", "Sel", "vam", "Nāra", "yaṇ", "Fer", "nán", "dez", "Ōku",
    "bo",
];

/// A random, practically unique name of 3–4 syllables plus two random letters.
pub fn name(rng: &mut Rng) -> String {
    let n = 3 + rng.below(2) as usize;
    let mut s = String::new();
    for _ in 0..n {
        let syllable: &&str = rng.pick(SYLLABLES);
        s.push_str(syllable);
    }
    s.push_str(&rng.letters(2));
    // Capitalize (first char may be multibyte).
    let mut c = s.chars();
    match c.next() {
        Some(f) => f
            .to_uppercase()
            .chain(c.flat_map(char::to_lowercase))
            .collect(),
        None => s,
    }
}

/// Identifiers planted in one message, and what must survive.
#[derive(Debug, Default, Clone)]
pub struct Planted {
    /// Strings that must not appear in any exported event.
    pub secrets: Vec<String>,
    /// (code, numeric value, UCUM unit) that must appear as an observation.
    pub clinical: Vec<(String, f64, String)>,
    /// Coded values that must appear (ward, patient class, sex, trigger).
    pub codes: Vec<String>,
}

pub struct Person {
    pub family: String,
    pub given: String,
    pub mrn: String,
    pub aadhaar: String,
    pub abha: String,
    pub abha_addr: String,
    pub phone: String,
    pub email: String,
    pub street: String,
    pub city: String,
    pub pin: String,
    pub dob: String,
    pub dob_text: String,
    pub account: String,
    pub visit: String,
    pub pan: String,
}

pub fn person(rng: &mut Rng) -> Person {
    let family = name(rng);
    let given = name(rng);
    let y = 1935 + rng.below(80);
    let m = 1 + rng.below(12);
    let d = 1 + rng.below(28);
    let handle = format!("{}.{}", rng.letters(5), rng.digits(3));
    let pan = format!(
        "{}{}{}{}{}",
        rng.letters(3).to_uppercase(),
        "P",
        rng.letters(1).to_uppercase(),
        rng.digits(4),
        rng.letters(1).to_uppercase()
    );
    Person {
        mrn: format!("UH{}", rng.digits(8)),
        aadhaar: aadhaar(rng),
        abha: format!(
            "{}-{}-{}-{}",
            rng.digits(2),
            rng.digits(4),
            rng.digits(4),
            rng.digits(4)
        ),
        abha_addr: format!("{}@abdm", handle),
        phone: format!(
            "+91 {}{} {}",
            6 + rng.below(4),
            rng.digits(4),
            rng.digits(5)
        ),
        email: format!(
            "{}.{}@mail{}.in",
            rng.letters(6),
            rng.digits(2),
            rng.letters(3)
        ),
        street: name(rng),
        city: name(rng),
        pin: format!("{}{}", 1 + rng.below(8), rng.digits(5)),
        dob: format!("{y:04}{m:02}{d:02}"),
        dob_text: format!("{d:02}/{m:02}/{y:04}"),
        account: format!("AC{}", rng.digits(9)),
        visit: format!("V{}", rng.digits(8)),
        pan,
        family,
        given,
    }
}

impl Person {
    /// Everything that identifies this person, as planted strings and their
    /// separator-free digit forms.
    pub fn secrets(&self) -> Vec<String> {
        let mut v = vec![
            self.family.clone(),
            self.given.clone(),
            self.mrn.clone(),
            self.aadhaar.clone(),
            self.abha.clone(),
            self.abha_addr.clone(),
            self.phone.clone(),
            self.email.clone(),
            self.street.clone(),
            self.city.clone(),
            self.pin.clone(),
            self.dob.clone(),
            self.dob_text.clone(),
            self.account.clone(),
            self.visit.clone(),
            self.pan.clone(),
        ];
        for s in [
            &self.mrn,
            &self.aadhaar,
            &self.abha,
            &self.phone,
            &self.dob_text,
            &self.account,
            &self.visit,
        ] {
            let d: String = s.chars().filter(char::is_ascii_digit).collect();
            v.push(d.clone());
            if s == &self.phone {
                v.push(d[d.len() - 10..].to_owned());
            }
        }
        v
    }

    /// Free text that mentions every identifier of this person.
    pub fn free_text(&self, nok: &Person) -> String {
        format!(
            "Pt {} {} (MRN {}) seen; Aadhaar {} ABHA {} / {}; mob {}; mail {}; \
             lives at 12 {} Nagar, {} {}; DOB {}; acct {}; PAN {}; NOK {} {} ph {}; {} called",
            self.given,
            self.family.to_uppercase(),
            self.mrn,
            self.aadhaar,
            self.abha,
            self.abha_addr,
            self.phone,
            self.email,
            self.street,
            self.city,
            self.pin,
            self.dob_text,
            self.account,
            self.pan,
            nok.given,
            nok.family,
            nok.phone,
            self.given.to_lowercase(),
        )
    }
}

/// HL7-escapes a value for the standard delimiters.
pub fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '|' => o.push_str("\\F\\"),
            '^' => o.push_str("\\S\\"),
            '&' => o.push_str("\\T\\"),
            '~' => o.push_str("\\R\\"),
            '\\' => o.push_str("\\E\\"),
            c => o.push(c),
        }
    }
    o
}

/// A time on 2024-05-31 (India), within a day before the tests' receive
/// time of 2024-06-01T00:00:00Z, as a live feed would be.
fn ts(rng: &mut Rng) -> String {
    format!(
        "20240531{:02}{:02}{:02}+0530",
        rng.below(24),
        rng.below(60),
        rng.below(60)
    )
}

/// The PID, NK1, PV1 block with PHI in every PHI-bearing field.
fn phi_demographics(
    out: &mut String,
    p: &Person,
    nok: &Person,
    doc: &Person,
    ward: &str,
    class: &str,
) {
    let _ = write!(
        out,
        "PID|1|{ext}|{mrn}^^^HOSP^MR~{aad}^^^UIDAI^AADHAAR~{abha}^^^ABDM^ABHA~{abhaaddr}^^^ABDM^ABHA||{fam}^{giv}^{nokg}^^Mr.||{dob}|M|{alias}^{giv}|2106-3|12 {street} Nagar^Near {city} Temple^{city}^KA^{pin}^IND||{phone}^PRN^CP^{email}~^NET^Internet^{email}|{phone}^WPN^PH|||{acct}^^^HOSP^AN|{aad}|{pan}|||Born in {city}\r",
        ext = esc(&p.account),
        mrn = esc(&p.mrn),
        aad = p.aadhaar,
        abha = p.abha,
        abhaaddr = p.abha_addr,
        fam = esc(&p.family),
        giv = esc(&p.given),
        nokg = esc(&nok.given),
        dob = p.dob,
        alias = esc(&nok.family),
        street = esc(&p.street),
        city = esc(&p.city),
        pin = p.pin,
        phone = p.phone,
        email = p.email,
        acct = p.account,
        pan = p.pan,
    );
    let _ = write!(
        out,
        "NK1|1|{fam}^{giv}|SPO^Spouse|44 {street} Road^^{city}^KA^{pin}^IND|{phone}||||||||||||||||||||||||||||{mrn}\r",
        fam = esc(&nok.family),
        giv = esc(&nok.given),
        street = esc(&nok.street),
        city = esc(&nok.city),
        pin = nok.pin,
        phone = nok.phone,
        mrn = nok.mrn,
    );
    let mut pv1: Vec<String> = vec![String::new(); 46];
    pv1[0] = "PV1".into();
    pv1[1] = "1".into();
    pv1[2] = class.into();
    pv1[3] = format!("{ward}^R{}^B{}^HOSP", 100 + p.pin.len(), &p.pin[..2]);
    pv1[7] = format!("{}^{}^{}^^^Dr.", doc.mrn, esc(&doc.family), esc(&doc.given));
    pv1[10] = "MED".into();
    pv1[19] = format!("{}^^^HOSP^VN", p.visit);
    pv1[44] = "20240101083000+0530".into();
    out.push_str(&pv1.join("|"));
    out.push('\r');
}

/// An ADT message with PHI everywhere; returns the text and what was planted.
pub fn phi_adt(rng: &mut Rng, i: usize) -> (String, Planted) {
    let p = person(rng);
    let nok = person(rng);
    let doc = person(rng);
    let trigger = *rng.pick(&["A01", "A02", "A03", "A04", "A08", "A11", "A12", "A13"]);
    let ward = format!("W{}", rng.below(20));
    let class = *rng.pick(&["I", "E", "O"]);
    let mut m = format!(
        "MSH|^~\\&|HIS|HOSP|WARDLINK|EDGE|{}||ADT^{trigger}^ADT_A01|CTL{}{}|P|2.5.1|||AL|NE||UNICODE UTF-8\r",
        ts(rng),
        i,
        rng.digits(6)
    );
    let _ = write!(
        m,
        "EVN|{trigger}|{}|||{}^{}^{}|20240101083000+0530\r",
        ts(rng),
        doc.mrn,
        esc(&doc.family),
        esc(&doc.given),
    );
    phi_demographics(&mut m, &p, &nok, &doc, &ward, class);
    let _ = write!(
        m,
        "PV2|||^{}||||||||||Visit for {} {}\r",
        esc(&p.given),
        esc(&p.family),
        esc(&p.city)
    );
    let _ = write!(m, "IN1|1|PLAN7|INS01|Star Health||||||||||||{}^{}|SEL|{}|12 {} Nagar^^{}^KA^{}|||||||||||||||||{}|||||||||||||{}\r",
        esc(&p.family), esc(&p.given), p.dob, esc(&p.street), esc(&p.city), p.pin, p.account, p.mrn);
    let _ = write!(m, "NTE|1||{}\r", esc(&p.free_text(&nok)));
    let _ = write!(m, "ZPI|1|{}|{}|{}\r", p.mrn, esc(&p.family), p.phone);
    let mut planted = Planted::default();
    planted.secrets.extend(p.secrets());
    planted.secrets.extend(nok.secrets());
    planted
        .secrets
        .extend([doc.mrn.clone(), doc.family.clone(), doc.given.clone()]);
    planted.codes = vec![trigger.to_owned(), ward, class.to_owned()];
    (m, planted)
}

/// The vital-sign rows of a PCD-01 message: (code, refid, unit code, unit refid, ucum, lo, hi, decimals).
/// (code, refid, unit code, unit refid, UCUM, low, high, decimals).
pub type Metric = (
    &'static str,
    &'static str,
    &'static str,
    &'static str,
    &'static str,
    f64,
    f64,
    u32,
);

pub const METRICS: &[Metric] = &[
    (
        "147842",
        "MDC_ECG_HEART_RATE",
        "264864",
        "MDC_DIM_BEAT_PER_MIN",
        "/min",
        50.0,
        130.0,
        0,
    ),
    (
        "150456",
        "MDC_PULS_OXIM_SAT_O2",
        "262688",
        "MDC_DIM_PERCENT",
        "%",
        85.0,
        100.0,
        0,
    ),
    (
        "149530",
        "MDC_PULS_OXIM_PULS_RATE",
        "264864",
        "MDC_DIM_BEAT_PER_MIN",
        "/min",
        50.0,
        130.0,
        0,
    ),
    (
        "150021",
        "MDC_PRESS_BLD_NONINV_SYS",
        "266016",
        "MDC_DIM_MMHG",
        "mm[Hg]",
        90.0,
        170.0,
        0,
    ),
    (
        "150022",
        "MDC_PRESS_BLD_NONINV_DIA",
        "266016",
        "MDC_DIM_MMHG",
        "mm[Hg]",
        50.0,
        100.0,
        0,
    ),
    (
        "150023",
        "MDC_PRESS_BLD_NONINV_MEAN",
        "266016",
        "MDC_DIM_MMHG",
        "mm[Hg]",
        60.0,
        120.0,
        0,
    ),
    (
        "151562",
        "MDC_RESP_RATE",
        "264928",
        "MDC_DIM_RESP_PER_MIN",
        "/min",
        8.0,
        30.0,
        0,
    ),
    (
        "150344",
        "MDC_TEMP",
        "268192",
        "MDC_DIM_DEGC",
        "Cel",
        35.5,
        39.5,
        1,
    ),
];

fn value(rng: &mut Rng, lo: f64, hi: f64, decimals: u32) -> f64 {
    let scale = 10f64.powi(decimals as i32);
    let v = lo + (hi - lo) * (rng.below(10_000) as f64 / 10_000.0);
    (v * scale).round() / scale
}

/// A realistic IHE PCD-01 ORU^R01 from a bedside monitor (about 1 KB):
/// MDS/VMD/CHAN header rows, eight vital-sign metrics, EUI-64 in MSH-3 and OBX-18.
pub fn pcd_oru(rng: &mut Rng, i: usize) -> (String, Planted) {
    pcd_oru_n(rng, i, METRICS.len())
}

/// Like [`pcd_oru`] with the first `metrics` vital signs (6 give about 1 KB).
///
/// Like a real ICU, 64 bedside monitors report: each message comes from one
/// of them (its EUI-64, bed and current patient), with fresh values and times.
pub fn pcd_oru_n(rng: &mut Rng, i: usize, metrics: usize) -> (String, Planted) {
    let monitor = rng.below(64);
    let eui = format!("0012AB{:010X}", 0x00FF_FE00_0000 + monitor);
    let t = ts(rng);
    let mut m = format!(
        "MSH|^~\\&|MONITOR^{eui}^EUI-64|ICU-3|||{t}||ORU^R01^ORU_R01|M{i}{}|P|2.6|||NE|AL||UNICODE UTF-8|||IHE_PCD_001^IHE PCD^1.3.6.1.4.1.19376.1.6.1.1.1^ISO\r",
        rng.digits(5)
    );
    let _ = write!(
        m,
        "PID|||UH{:08}^^^HOSP^MR||DOE^JANE^^^^^L|||F\r",
        40_000_000 + monitor,
    );
    let _ = write!(
        m,
        "PV1||I|ICU3^R{}^B{:02}^HOSP||||||||||||||||V{:08}^^^HOSP^VN\r",
        monitor / 4,
        monitor,
        70_000_000 + monitor,
    );
    let _ = write!(
        m,
        "OBR|1|{i}^MONITOR^{eui}^EUI-64||182777000^monitoring of patient^SCT|||{t}\r"
    );
    let _ = write!(m, "OBX|1||69965^MDC_DEV_MON_PHYSIO_MULTI_PARAM_MDS^MDC|1.0.0.0|||||||X|||||||{eui}^^{eui}^EUI-64\r");
    let _ = write!(m, "OBX|2||69798^MDC_DEV_ECG_VMD^MDC|1.1.0.0|||||||X\r");
    let mut planted = Planted::default();
    for (n, (k, (code, refid, ucode, uref, ucum, lo, hi, dec))) in
        (3..).zip(METRICS.iter().take(metrics).enumerate())
    {
        let v = value(rng, *lo, *hi, *dec);
        let vs = if *dec == 0 {
            format!("{v:.0}")
        } else {
            format!("{v:.1}")
        };
        let _ = write!(
            m,
            "OBX|{n}|NM|{code}^{refid}^MDC|1.{}.1.{}|{vs}|{ucode}^{uref}^MDC|||||R|||{t}\r",
            1 + k / 3,
            1 + k % 3
        );
        planted
            .clinical
            .push(((*code).to_owned(), v, (*ucum).to_owned()));
    }
    (m, planted)
}

/// An ORU^R01 with PHI everywhere, including free text in OBX ST/TX/FT and NTE.
pub fn phi_oru(rng: &mut Rng, i: usize) -> (String, Planted) {
    let p = person(rng);
    let nok = person(rng);
    let doc = person(rng);
    let (base, mut planted) = pcd_oru(rng, i);
    let mut lines: Vec<&str> = base.split('\r').filter(|l| !l.is_empty()).collect();
    // Replace the plain PID/PV1 with PHI-laden ones.
    lines.retain(|l| !l.starts_with("PID") && !l.starts_with("PV1"));
    let mut demo = String::new();
    phi_demographics(&mut demo, &p, &nok, &doc, "ICU3", "I");
    let mut m = String::new();
    m.push_str(lines[0]);
    m.push('\r');
    m.push_str(&demo);
    let _ = write!(
        m,
        "ORC|RE|{}^HIS|{}^LAB|||||||{}^{}^{}|||{}^{}^{}|||||||{} Clinic|1 {} Road^^{}^KA^{}|{}\r",
        p.account,
        p.visit,
        doc.mrn,
        esc(&doc.family),
        esc(&doc.given),
        doc.mrn,
        esc(&doc.family),
        esc(&doc.given),
        esc(&doc.family),
        esc(&doc.street),
        esc(&doc.city),
        doc.pin,
        doc.phone
    );
    for l in &lines[1..] {
        m.push_str(l);
        m.push('\r');
    }
    let text = esc(&p.free_text(&nok));
    let _ = write!(
        m,
        "OBX|20|ST|NOTE^Nursing note^L|1.9.1.1|{text}||||||F|||20240101120000+0530|{}^{}^{}\r",
        doc.mrn,
        esc(&doc.family),
        esc(&doc.given)
    );
    let _ = write!(
        m,
        "OBX|21|TX|TXT^Narrative^L|1.9.1.2|{text}~second line {}||||||F\r",
        esc(&p.family)
    );
    let _ = write!(
        m,
        "OBX|22|FT|FTX^Formatted^L|1.9.1.3|{text}\\.br\\{}||||||F\r",
        p.email
    );
    let _ = write!(
        m,
        "OBX|23|ST|ADDR^Address^L|1.9.1.4|{} {}||||||F\r",
        esc(&p.street),
        p.pin
    );
    let _ = write!(m, "NTE|1|L|{text}\r");
    planted.secrets.extend(p.secrets());
    planted.secrets.extend(nok.secrets());
    planted.secrets.extend([
        doc.mrn.clone(),
        doc.family.clone(),
        doc.given.clone(),
        doc.phone.clone(),
        doc.street.clone(),
        doc.city.clone(),
    ]);
    planted.codes = vec!["ICU3".to_owned()];
    (m, planted)
}
