//! MEDIBUS data codes → observation codes (IEEE 11073 MDC reference ids,
//! or `LOCAL` where MDC has none), UCUM units and labels.
//!
//! The codes are Dräger's codepage-1 measured-data and device-settings codes
//! of Evita-class ventilators (device-serial.md §1.5). Units are those the
//! device sends (mbar, not cmH2O: 1 mbar = 1.0197 cmH2O; the pipeline may
//! convert). The same table is printed in docs/devices.md; a test keeps the
//! two in step. Codes not in the table are still delivered, as
//! `LOCAL` code `MEDIBUS-<cmd>-<code>` without a unit, so nothing the device
//! sends is dropped silently; the pipeline flags the unknown unit.

/// One known data code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CodeInfo {
    /// The MEDIBUS data code (2 hex digits on the wire).
    pub medibus: u8,
    /// The observation code, e.g. `MDC_PRESS_AWAY_END_EXP_POS`.
    pub code: &'static str,
    /// `MDC` or `LOCAL`.
    pub system: &'static str,
    /// UCUM unit; `None` for a dimensionless number.
    pub unit: Option<&'static str>,
    /// Short label, e.g. `PEEP`.
    pub label: &'static str,
}

const fn c(
    medibus: u8,
    code: &'static str,
    system: &'static str,
    unit: Option<&'static str>,
    label: &'static str,
) -> CodeInfo {
    CodeInfo {
        medibus,
        code,
        system,
        unit,
        label,
    }
}

/// Current measured data, codepage 1 (command `0x24`).
pub const MEASURED_CP1: &[CodeInfo] = &[
    c(0x05, "MDC_PRESS_AWAY", "MDC", Some("mbar"), "Paw"),
    c(0x07, "MDC_COMPL_LUNG", "MDC", Some("L/bar"), "Cdyn"),
    c(0x08, "MDC_RES_AWAY", "MDC", Some("mbar.s/L"), "R"),
    c(
        0x73,
        "MDC_PRESS_AWAY_INSP_MEAN",
        "MDC",
        Some("mbar"),
        "Pmean",
    ),
    c(0x74, "MDC_PRESS_RESP_PLAT", "MDC", Some("mbar"), "Pplat"),
    c(
        0x78,
        "MDC_PRESS_AWAY_END_EXP_POS",
        "MDC",
        Some("mbar"),
        "PEEP",
    ),
    c(
        0x79,
        "MDC_PRESS_AWAY_END_EXP_POS_INTRINSIC",
        "MDC",
        Some("mbar"),
        "PEEPi",
    ),
    c(0x7D, "MDC_PRESS_AWAY_INSP_PEAK", "MDC", Some("mbar"), "PIP"),
    c(0x88, "MDC_VOL_AWAY_TIDAL", "MDC", Some("mL"), "VT"),
    c(0xB4, "MDC_VENT_RESP_RATE", "MDC", Some("/min"), "RR(p)"),
    c(0xB5, "MDC_RESP_RATE_SPONT", "MDC", Some("/min"), "RRspon"),
    c(
        0xB7,
        "MDC_VOL_MINUTE_AWAY_SPONT",
        "MDC",
        Some("L/min"),
        "MVspon",
    ),
    c(0xB8, "MDC_VOL_MINUTE_AWAY", "MDC", Some("L/min"), "MV"),
    c(0xC9, "MEDIBUS-RSBI", "LOCAL", Some("/min/L"), "RSBI"),
    c(0xD6, "MDC_RESP_RATE", "MDC", Some("/min"), "RR"),
    c(0xDB, "MDC_CONC_AWAY_CO2_ET", "MDC", Some("%"), "etCO2"),
    c(0xE6, "MDC_CONC_AWAY_CO2_ET", "MDC", Some("mm[Hg]"), "etCO2"),
    c(0xEB, "MDC_PULS_OXIM_SAT_O2", "MDC", Some("%"), "SpO2"),
    c(0xEF, "MDC_CONC_AWAY_O2_EXP", "MDC", Some("%"), "FeO2"),
    c(0xF0, "MDC_CONC_AWAY_O2_INSP", "MDC", Some("%"), "FiO2"),
];

/// Current device settings (command `0x29`); delivered with channel `setting`.
pub const SETTINGS: &[CodeInfo] = &[
    c(0x01, "MDC_CONC_AWAY_O2_INSP", "MDC", Some("%"), "O2 set"),
    c(0x04, "MDC_VOL_AWAY_TIDAL", "MDC", Some("L"), "VT set"),
    c(0x09, "MDC_VENT_RESP_RATE", "MDC", Some("/min"), "f IMV set"),
    c(
        0x0A,
        "MDC_VENT_RESP_RATE",
        "MDC",
        Some("/min"),
        "f IPPV set",
    ),
    c(
        0x0B,
        "MDC_PRESS_AWAY_END_EXP_POS",
        "MDC",
        Some("mbar"),
        "PEEP set",
    ),
    c(
        0x12,
        "MDC_PRESS_AWAY_INSP_SUPPORT",
        "MDC",
        Some("mbar"),
        "Psupp set",
    ),
    c(0x40, "MDC_VOL_AWAY_TIDAL", "MDC", Some("mL"), "VT set"),
    c(
        0x45,
        "MDC_PRESS_AWAY_INSP",
        "MDC",
        Some("mbar"),
        "Pinsp set",
    ),
];

/// The entry of `medibus` in `table`.
pub fn lookup(table: &[CodeInfo], medibus: u8) -> Option<&CodeInfo> {
    table.iter().find(|c| c.medibus == medibus)
}

/// The table as the Markdown rows of docs/devices.md (`| cmd | code | ... |`).
pub fn markdown_rows() -> Vec<String> {
    let mut rows = Vec::new();
    for (cmd, table) in [("24", MEASURED_CP1), ("29", SETTINGS)] {
        for e in table {
            rows.push(format!(
                "| `{cmd}` | `{:02X}` | {} | `{}` | {} | {} |",
                e.medibus,
                e.label,
                e.code,
                e.system,
                e.unit.map_or_else(|| "—".to_owned(), |u| format!("`{u}`"))
            ));
        }
    }
    rows
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_unique_per_table() {
        for table in [MEASURED_CP1, SETTINGS] {
            for (i, a) in table.iter().enumerate() {
                assert!(
                    table[i + 1..].iter().all(|b| b.medibus != a.medibus),
                    "{:02X} twice",
                    a.medibus
                );
            }
        }
        assert_eq!(lookup(MEASURED_CP1, 0x78).map(|c| c.label), Some("PEEP"));
        assert!(lookup(MEASURED_CP1, 0x00).is_none());
    }

    /// docs/devices.md lists exactly this table.
    #[test]
    fn docs_table_is_current() {
        let docs = include_str!("../../../docs/devices.md");
        for row in markdown_rows() {
            assert!(docs.contains(&row), "docs/devices.md lacks the row\n{row}");
        }
    }
}
