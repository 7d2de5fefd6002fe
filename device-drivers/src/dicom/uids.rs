//! The UIDs the node speaks: SOP classes it serves and transfer syntaxes it
//! reads (PS3.6 Annex A).

/// wardlink's Implementation Class UID (a UUID-derived `2.25.` UID, fixed).
pub const IMPLEMENTATION_CLASS: &str = "2.25.56774252197641667696347389591560091820";
/// wardlink's Implementation Version Name (at most 16 characters).
pub const IMPLEMENTATION_VERSION: &str = "WARDLINK_0_1";

/// Verification SOP Class (C-ECHO).
pub const VERIFICATION: &str = "1.2.840.10008.1.1";
/// Modality Performed Procedure Step SOP Class (N-CREATE / N-SET).
pub const MPPS: &str = "1.2.840.10008.3.1.2.3.3";
/// CT Image Storage.
pub const CT_IMAGE: &str = "1.2.840.10008.5.1.4.1.1.2";

/// The Storage SOP classes accepted (C-STORE).
pub const STORAGE: &[&str] = &[
    "1.2.840.10008.5.1.4.1.1.1",     // Computed Radiography
    "1.2.840.10008.5.1.4.1.1.1.1",   // Digital X-Ray, for presentation
    "1.2.840.10008.5.1.4.1.1.1.1.1", // Digital X-Ray, for processing
    "1.2.840.10008.5.1.4.1.1.1.2",   // Digital Mammography, for presentation
    "1.2.840.10008.5.1.4.1.1.1.2.1", // Digital Mammography, for processing
    CT_IMAGE,                        // CT
    "1.2.840.10008.5.1.4.1.1.2.1",   // Enhanced CT
    "1.2.840.10008.5.1.4.1.1.3.1",   // Ultrasound Multi-frame
    "1.2.840.10008.5.1.4.1.1.4",     // MR
    "1.2.840.10008.5.1.4.1.1.4.1",   // Enhanced MR
    "1.2.840.10008.5.1.4.1.1.6.1",   // Ultrasound
    "1.2.840.10008.5.1.4.1.1.7",     // Secondary Capture
    "1.2.840.10008.5.1.4.1.1.12.1",  // X-Ray Angiographic
    "1.2.840.10008.5.1.4.1.1.20",    // Nuclear Medicine
    "1.2.840.10008.5.1.4.1.1.128",   // PET
    "1.2.840.10008.5.1.4.1.1.481.2", // RT Dose
    "1.2.840.10008.5.1.4.1.1.88.67", // X-Ray Radiation Dose SR
];

/// Implicit VR Little Endian (the default; always accepted).
pub const IMPLICIT_VR_LE: &str = "1.2.840.10008.1.2";
/// Explicit VR Little Endian.
pub const EXPLICIT_VR_LE: &str = "1.2.840.10008.1.2.1";

/// The transfer syntaxes accepted, in no order of preference (the
/// caller's order decides). The compressed ones are accepted as they come:
/// their data set is Explicit VR LE and wardlink never decodes pixels.
/// Deflate and Big Endian are not: their header cannot be read as it
/// streams.
pub const TRANSFER_SYNTAXES: &[&str] = &[
    IMPLICIT_VR_LE,
    EXPLICIT_VR_LE,
    "1.2.840.10008.1.2.4.50",  // JPEG Baseline
    "1.2.840.10008.1.2.4.51",  // JPEG Extended
    "1.2.840.10008.1.2.4.57",  // JPEG Lossless
    "1.2.840.10008.1.2.4.70",  // JPEG Lossless SV1
    "1.2.840.10008.1.2.4.80",  // JPEG-LS Lossless
    "1.2.840.10008.1.2.4.81",  // JPEG-LS Near-Lossless
    "1.2.840.10008.1.2.4.90",  // JPEG 2000 Lossless
    "1.2.840.10008.1.2.4.91",  // JPEG 2000
    "1.2.840.10008.1.2.4.201", // HTJ2K Lossless
    "1.2.840.10008.1.2.4.203", // HTJ2K
    "1.2.840.10008.1.2.5",     // RLE Lossless
];

/// Is this abstract syntax served?
pub fn supported_abstract_syntax(uid: &str) -> bool {
    uid == VERIFICATION || uid == MPPS || STORAGE.contains(&uid)
}
