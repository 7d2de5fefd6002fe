//! PS3.15 Annex E, the Basic Application Level Confidentiality Profile, as a
//! table of per-attribute actions shipped in the binary
//! (`wardlink deid --print-profile dicom` prints it).
//!
//! Actions (PS3.15 E.1.1): D replace with a dummy, Z replace with an empty
//! value, X remove, K keep, C clean (dates: moved by the patient's offset
//! under the date policy; text: identifiers and names removed), U replace a
//! UID with a keyed `2.25.` UID. For the compound codes of Table E.1-1
//! (X/Z, X/D, Z/D, X/Z/D, X/Z/U*) this table takes the strongest action that
//! still leaves a valid export (X, since wardlink exports events, not
//! objects). The options of Table E.1-1 change single rows:
//! Retain Longitudinal Temporal Information with Modified Dates (dates → C),
//! Retain Device Identity (→ K, AE titles → C), Retain Patient
//! Characteristics (→ K), Clean Descriptors (→ C).
//!
//! Rules outside the table: every private attribute (odd group) is removed;
//! curves (50xx) and overlays (60xx,3000 / 60xx,4000) are removed; an
//! attribute not listed is kept (the pixel module, Modality, Manufacturer…).
//! The rows are those of the 2013 Table E.1-1 for the attributes wardlink
//! meets in modality output, re-checked against the 2024 edition; an
//! attribute of the current table that is not listed here is one wardlink's
//! events never read, and it is never exported.

use std::fmt::Write as _;

use wardlink_config::DicomDeidConfig;

/// An Annex E action.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Code {
    /// Replace with a dummy value.
    D,
    /// Replace with a zero-length value.
    Z,
    /// Remove.
    X,
    /// Keep.
    K,
    /// Clean.
    C,
    /// Replace the UID.
    U,
}

impl Code {
    /// The letter.
    pub fn as_str(self) -> &'static str {
        match self {
            Code::D => "D",
            Code::Z => "Z",
            Code::X => "X",
            Code::K => "K",
            Code::C => "C",
            Code::U => "U",
        }
    }
}

/// An option of Table E.1-1.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Opt {
    /// Retain Longitudinal Temporal Information with Modified Dates (113107).
    Dates,
    /// Retain Device Identity (113109).
    Device,
    /// Retain Patient Characteristics (113108).
    Patient,
    /// Clean Descriptors (113105).
    Descriptors,
}

impl Opt {
    fn name(self) -> &'static str {
        match self {
            Opt::Dates => "retain_longitudinal_modified_dates",
            Opt::Device => "retain_device_identity",
            Opt::Patient => "retain_patient_characteristics",
            Opt::Descriptors => "clean_descriptors",
        }
    }

    fn on(self, o: &DicomDeidConfig) -> bool {
        match self {
            Opt::Dates => o.retain_longitudinal_modified_dates,
            Opt::Device => o.retain_device_identity,
            Opt::Patient => o.retain_patient_characteristics,
            Opt::Descriptors => o.clean_descriptors,
        }
    }
}

/// One row: tag, keyword, the Basic action (as in the standard) and the
/// action wardlink applies for it, and the option that changes it.
#[derive(Debug, Clone, Copy)]
pub struct Row {
    /// (group, element).
    pub tag: (u16, u16),
    /// The DICOM keyword.
    pub name: &'static str,
    /// As written in Table E.1-1 (e.g. `X/Z/D`).
    pub basic: &'static str,
    /// What wardlink does under the Basic profile.
    pub action: Code,
    /// An option and the action it selects instead.
    pub option: Option<(Opt, Code)>,
}

const fn row(
    tag: (u16, u16),
    name: &'static str,
    basic: &'static str,
    action: Code,
    option: Option<(Opt, Code)>,
) -> Row {
    Row {
        tag,
        name,
        basic,
        action,
        option,
    }
}

use Code::{C, K, U, X, Z};
use Opt::{Dates, Descriptors, Device, Patient};

/// The table (sorted by tag).
pub const TABLE: &[Row] = &[
    row((0x0008, 0x0014), "InstanceCreatorUID", "U", U, None),
    row((0x0008, 0x0018), "SOPInstanceUID", "U", U, None),
    row((0x0008, 0x0020), "StudyDate", "Z", Z, Some((Dates, C))),
    row((0x0008, 0x0021), "SeriesDate", "X/D", X, Some((Dates, C))),
    row(
        (0x0008, 0x0022),
        "AcquisitionDate",
        "X/Z",
        X,
        Some((Dates, C)),
    ),
    row((0x0008, 0x0023), "ContentDate", "Z/D", Z, Some((Dates, C))),
    row(
        (0x0008, 0x002A),
        "AcquisitionDateTime",
        "X/Z/D",
        X,
        Some((Dates, C)),
    ),
    row((0x0008, 0x0030), "StudyTime", "Z", Z, Some((Dates, C))),
    row((0x0008, 0x0031), "SeriesTime", "X/D", X, Some((Dates, C))),
    row(
        (0x0008, 0x0032),
        "AcquisitionTime",
        "X/Z",
        X,
        Some((Dates, C)),
    ),
    row((0x0008, 0x0033), "ContentTime", "Z/D", Z, Some((Dates, C))),
    row((0x0008, 0x0050), "AccessionNumber", "Z", Z, None),
    row(
        (0x0008, 0x0055),
        "StationAETitle",
        "X",
        X,
        Some((Device, C)),
    ),
    row((0x0008, 0x0080), "InstitutionName", "X/Z/D", X, None),
    row((0x0008, 0x0081), "InstitutionAddress", "X", X, None),
    row(
        (0x0008, 0x0082),
        "InstitutionCodeSequence",
        "X/Z/D",
        X,
        None,
    ),
    row((0x0008, 0x0090), "ReferringPhysicianName", "Z", Z, None),
    row((0x0008, 0x0092), "ReferringPhysicianAddress", "X", X, None),
    row(
        (0x0008, 0x0094),
        "ReferringPhysicianTelephoneNumbers",
        "X",
        X,
        None,
    ),
    row(
        (0x0008, 0x0096),
        "ReferringPhysicianIdentificationSequence",
        "X",
        X,
        None,
    ),
    row(
        (0x0008, 0x0201),
        "TimezoneOffsetFromUTC",
        "X",
        X,
        Some((Dates, K)),
    ),
    row(
        (0x0008, 0x1010),
        "StationName",
        "X/Z/D",
        X,
        Some((Device, K)),
    ),
    row(
        (0x0008, 0x1030),
        "StudyDescription",
        "X",
        X,
        Some((Descriptors, C)),
    ),
    row(
        (0x0008, 0x103E),
        "SeriesDescription",
        "X",
        X,
        Some((Descriptors, C)),
    ),
    row(
        (0x0008, 0x1040),
        "InstitutionalDepartmentName",
        "X",
        X,
        None,
    ),
    row((0x0008, 0x1048), "PhysiciansOfRecord", "X", X, None),
    row((0x0008, 0x1050), "PerformingPhysicianName", "X", X, None),
    row(
        (0x0008, 0x1060),
        "NameOfPhysiciansReadingStudy",
        "X",
        X,
        None,
    ),
    row((0x0008, 0x1070), "OperatorsName", "X/Z/D", X, None),
    row(
        (0x0008, 0x1080),
        "AdmittingDiagnosesDescription",
        "X",
        X,
        Some((Patient, C)),
    ),
    row(
        (0x0008, 0x1111),
        "ReferencedPerformedProcedureStepSequence",
        "X/Z/D",
        X,
        None,
    ),
    row((0x0008, 0x1120), "ReferencedPatientSequence", "X", X, None),
    row(
        (0x0008, 0x1140),
        "ReferencedImageSequence",
        "X/Z/U*",
        X,
        None,
    ),
    row((0x0008, 0x1155), "ReferencedSOPInstanceUID", "U", U, None),
    row(
        (0x0008, 0x2111),
        "DerivationDescription",
        "X",
        X,
        Some((Descriptors, C)),
    ),
    row((0x0010, 0x0010), "PatientName", "Z", Z, None),
    row((0x0010, 0x0020), "PatientID", "Z", Z, None),
    row((0x0010, 0x0021), "IssuerOfPatientID", "X", X, None),
    row((0x0010, 0x0030), "PatientBirthDate", "Z", Z, None),
    row((0x0010, 0x0032), "PatientBirthTime", "X", X, None),
    row((0x0010, 0x0040), "PatientSex", "Z", Z, Some((Patient, K))),
    row((0x0010, 0x1000), "OtherPatientIDs", "X", X, None),
    row((0x0010, 0x1001), "OtherPatientNames", "X", X, None),
    row((0x0010, 0x1002), "OtherPatientIDsSequence", "X", X, None),
    row((0x0010, 0x1005), "PatientBirthName", "X", X, None),
    row((0x0010, 0x1010), "PatientAge", "X", X, Some((Patient, K))),
    row((0x0010, 0x1020), "PatientSize", "X", X, Some((Patient, K))),
    row(
        (0x0010, 0x1030),
        "PatientWeight",
        "X",
        X,
        Some((Patient, K)),
    ),
    row((0x0010, 0x1040), "PatientAddress", "X", X, None),
    row((0x0010, 0x1060), "PatientMotherBirthName", "X", X, None),
    row((0x0010, 0x2150), "CountryOfResidence", "X", X, None),
    row((0x0010, 0x2152), "RegionOfResidence", "X", X, None),
    row((0x0010, 0x2154), "PatientTelephoneNumbers", "X", X, None),
    row((0x0010, 0x2160), "EthnicGroup", "X", X, Some((Patient, K))),
    row((0x0010, 0x2180), "Occupation", "X", X, None),
    row(
        (0x0010, 0x21A0),
        "SmokingStatus",
        "X",
        X,
        Some((Patient, K)),
    ),
    row((0x0010, 0x21B0), "AdditionalPatientHistory", "X", X, None),
    row(
        (0x0010, 0x21C0),
        "PregnancyStatus",
        "X",
        X,
        Some((Patient, K)),
    ),
    row(
        (0x0010, 0x4000),
        "PatientComments",
        "X",
        X,
        Some((Descriptors, C)),
    ),
    row(
        (0x0018, 0x1000),
        "DeviceSerialNumber",
        "X/Z/D",
        X,
        Some((Device, K)),
    ),
    row((0x0018, 0x1002), "DeviceUID", "U", U, Some((Device, K))),
    row(
        (0x0018, 0x1030),
        "ProtocolName",
        "X/D",
        X,
        Some((Descriptors, C)),
    ),
    row((0x0018, 0x700A), "DetectorID", "X/D", X, Some((Device, K))),
    row((0x0020, 0x000D), "StudyInstanceUID", "U", U, None),
    row((0x0020, 0x000E), "SeriesInstanceUID", "U", U, None),
    row((0x0020, 0x0010), "StudyID", "Z", Z, None),
    row((0x0020, 0x0052), "FrameOfReferenceUID", "U", U, None),
    row(
        (0x0020, 0x0200),
        "SynchronizationFrameOfReferenceUID",
        "U",
        U,
        None,
    ),
    row(
        (0x0020, 0x4000),
        "ImageComments",
        "X",
        X,
        Some((Descriptors, C)),
    ),
    row((0x0032, 0x1032), "RequestingPhysician", "X", X, None),
    row(
        (0x0032, 0x1060),
        "RequestedProcedureDescription",
        "X/Z",
        X,
        Some((Descriptors, C)),
    ),
    row((0x0038, 0x0010), "AdmissionID", "X", X, None),
    row((0x0038, 0x0300), "CurrentPatientLocation", "X", X, None),
    row(
        (0x0038, 0x0400),
        "PatientInstitutionResidence",
        "X",
        X,
        None,
    ),
    row(
        (0x0040, 0x0241),
        "PerformedStationAETitle",
        "X",
        X,
        Some((Device, C)),
    ),
    row(
        (0x0040, 0x0242),
        "PerformedStationName",
        "X",
        X,
        Some((Device, K)),
    ),
    row((0x0040, 0x0243), "PerformedLocation", "X", X, None),
    row(
        (0x0040, 0x0244),
        "PerformedProcedureStepStartDate",
        "X",
        X,
        Some((Dates, C)),
    ),
    row(
        (0x0040, 0x0245),
        "PerformedProcedureStepStartTime",
        "X",
        X,
        Some((Dates, C)),
    ),
    row(
        (0x0040, 0x0250),
        "PerformedProcedureStepEndDate",
        "X",
        X,
        Some((Dates, C)),
    ),
    row(
        (0x0040, 0x0251),
        "PerformedProcedureStepEndTime",
        "X",
        X,
        Some((Dates, C)),
    ),
    row((0x0040, 0x0253), "PerformedProcedureStepID", "X", X, None),
    row(
        (0x0040, 0x0254),
        "PerformedProcedureStepDescription",
        "X",
        X,
        Some((Descriptors, C)),
    ),
    row((0x0040, 0x0275), "RequestAttributesSequence", "X", X, None),
    row(
        (0x0040, 0x0280),
        "CommentsOnThePerformedProcedureStep",
        "X",
        X,
        Some((Descriptors, C)),
    ),
    row((0x0040, 0xA123), "PersonName", "D", X, None),
    row((0x0040, 0xA730), "ContentSequence", "X", X, None),
    row((0x0088, 0x0140), "StorageMediaFileSetUID", "U", U, None),
    row((0x0088, 0x0200), "IconImageSequence", "X", X, None),
    row(
        (0x3006, 0x0024),
        "ReferencedFrameOfReferenceUID",
        "U",
        U,
        None,
    ),
    row(
        (0x4008, 0x0114),
        "PhysicianApprovingInterpretation",
        "X",
        X,
        None,
    ),
];

/// Why an attribute gets its action: the code and the rule in words.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// The action applied.
    pub code: Code,
    /// Which rule chose it.
    pub rule: String,
}

/// The action for a tag under the options.
pub fn decide(tag: (u16, u16), options: &DicomDeidConfig) -> Decision {
    let (group, element) = tag;
    if group % 2 == 1 {
        return Decision {
            code: X,
            rule: "PS3.15 E.1-1: private attribute (X)".into(),
        };
    }
    if group & 0xFF00 == 0x5000 || (group & 0xFF00 == 0x6000 && matches!(element, 0x3000 | 0x4000))
    {
        return Decision {
            code: X,
            rule: "PS3.15 E.1-1: curve/overlay data (X)".into(),
        };
    }
    match TABLE.binary_search_by_key(&tag, |r| r.tag) {
        Ok(i) => {
            let r = &TABLE[i];
            match r.option {
                Some((opt, code)) if opt.on(options) => Decision {
                    code,
                    rule: format!(
                        "PS3.15 E.1-1 {}: {} with {}",
                        r.name,
                        code.as_str(),
                        opt.name()
                    ),
                },
                _ => Decision {
                    code: r.action,
                    rule: format!("PS3.15 E.1-1 {}: basic {}", r.name, r.basic),
                },
            }
        }
        Err(_) => Decision {
            code: K,
            rule: "not in Table E.1-1: kept".into(),
        },
    }
}

/// The profile as text, with the options in force.
pub fn profile_text(options: &DicomDeidConfig) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "# PS3.15 Annex E Basic Application Level Confidentiality Profile, as wardlink applies it"
    );
    let _ = writeln!(
        s,
        "# options: retain_longitudinal_modified_dates={} retain_device_identity={} \
         retain_patient_characteristics={} clean_descriptors={}",
        options.retain_longitudinal_modified_dates,
        options.retain_device_identity,
        options.retain_patient_characteristics,
        options.clean_descriptors
    );
    let _ = writeln!(
        s,
        "# actions: D dummy, Z empty, X remove, K keep, C clean, U new 2.25 UID"
    );
    let _ = writeln!(s, "# (gggg odd,xxxx)  all private attributes             X");
    let _ = writeln!(
        s,
        "# (50xx,xxxx) (60xx,3000) (60xx,4000) curves/overlays   X"
    );
    let _ = writeln!(s, "# any other attribute not listed                      K");
    let _ = writeln!(
        s,
        "{:<13} {:<42} {:<8} {:<7} option",
        "tag", "keyword", "basic", "applied"
    );
    for r in TABLE {
        let d = decide(r.tag, options);
        let option = r
            .option
            .map(|(o, c)| format!("{} -> {}", o.name(), c.as_str()))
            .unwrap_or_default();
        let _ = writeln!(
            s,
            "({:04X},{:04X})   {:<42} {:<8} {:<7} {}",
            r.tag.0,
            r.tag.1,
            r.name,
            r.basic,
            d.code.as_str(),
            option
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_is_sorted_and_unique() {
        assert!(TABLE.windows(2).all(|w| w[0].tag < w[1].tag));
    }

    #[test]
    fn options_change_single_rows() {
        let basic = DicomDeidConfig {
            retain_longitudinal_modified_dates: false,
            retain_device_identity: false,
            retain_patient_characteristics: false,
            clean_descriptors: false,
        };
        assert_eq!(decide((0x0010, 0x0010), &basic).code, Z);
        assert_eq!(decide((0x0008, 0x0020), &basic).code, Z);
        assert_eq!(decide((0x0008, 0x1010), &basic).code, X);
        assert_eq!(decide((0x0010, 0x4000), &basic).code, X);
        assert_eq!(decide((0x0011, 0x1001), &basic).code, X);
        assert_eq!(decide((0x6000, 0x3000), &basic).code, X);
        assert_eq!(decide((0x0008, 0x0060), &basic).code, K);
        let all = DicomDeidConfig {
            retain_longitudinal_modified_dates: true,
            retain_device_identity: true,
            retain_patient_characteristics: true,
            clean_descriptors: true,
        };
        assert_eq!(decide((0x0008, 0x0020), &all).code, C);
        assert_eq!(decide((0x0008, 0x1010), &all).code, K);
        assert_eq!(decide((0x0010, 0x0040), &all).code, K);
        assert_eq!(decide((0x0010, 0x4000), &all).code, C);
        assert_eq!(decide((0x0010, 0x0010), &all).code, Z, "names stay removed");
        assert!(profile_text(&all).contains("(0010,0010)   PatientName"));
    }
}
