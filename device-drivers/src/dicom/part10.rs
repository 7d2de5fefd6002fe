//! The DICOM Part 10 file header (PS3.10 §7.1): what goes before the data
//! set in a DICOM file. Pure: bytes in, bytes out.
//!
//! Layout: a 128-byte zero preamble, the magic `DICM`, then the File Meta
//! Information, group 0002, always in Explicit VR Little Endian whatever
//! the data set's transfer syntax (PS3.10 §7.1):
//! (0002,0000) group length (UL, the bytes of the elements after it),
//! (0002,0001) version `00\01` (OB), (0002,0002)/(0002,0003) Media Storage
//! SOP Class/Instance UID, (0002,0010) Transfer Syntax UID, (0002,0012)/
//! (0002,0013) wardlink's Implementation Class UID and Version Name,
//! (0002,0016) Source Application Entity Title (the calling AE), and
//! optionally (0002,0100)/(0002,0102) Private Information Creator UID and
//! Private Information. Values are padded to even length: UIDs with NUL,
//! text with a space (PS3.5 §6.2).
//!
//! Used by [`super::stored`] (the envelope kept in the store) and
//! [`super::spool`] (whole objects kept as files).

use super::uids;

/// The values of one file's meta group.
#[derive(Debug, Clone, Copy)]
pub struct FileMeta<'a> {
    /// (0002,0002) Media Storage SOP Class UID.
    pub sop_class: &'a str,
    /// (0002,0003) Media Storage SOP Instance UID.
    pub sop_instance: &'a str,
    /// (0002,0010) the transfer syntax of the data set that follows.
    pub transfer_syntax: &'a str,
    /// (0002,0016) Source Application Entity Title: who sent the object.
    pub calling_ae: &'a str,
    /// (0002,0100) creator UID and (0002,0102) bytes of private
    /// information; `None` for a plain file.
    pub private: Option<(&'a str, &'a [u8])>,
}

impl FileMeta<'_> {
    /// Preamble, `DICM` and the meta group: the data set follows directly.
    pub fn header(&self) -> Vec<u8> {
        let mut meta = Vec::with_capacity(512);
        put(&mut meta, 0x0001, b"OB", &[0, 1], 0);
        put(&mut meta, 0x0002, b"UI", self.sop_class.as_bytes(), 0);
        put(&mut meta, 0x0003, b"UI", self.sop_instance.as_bytes(), 0);
        put(&mut meta, 0x0010, b"UI", self.transfer_syntax.as_bytes(), 0);
        put(
            &mut meta,
            0x0012,
            b"UI",
            uids::IMPLEMENTATION_CLASS.as_bytes(),
            0,
        );
        put(
            &mut meta,
            0x0013,
            b"SH",
            uids::IMPLEMENTATION_VERSION.as_bytes(),
            b' ',
        );
        put(&mut meta, 0x0016, b"AE", self.calling_ae.as_bytes(), b' ');
        if let Some((creator, info)) = self.private {
            put(&mut meta, 0x0100, b"UI", creator.as_bytes(), 0);
            put(&mut meta, 0x0102, b"OB", info, 0);
        }
        let mut out = Vec::with_capacity(132 + 12 + meta.len());
        out.resize(128, 0);
        out.extend_from_slice(b"DICM");
        put(
            &mut out,
            0x0000,
            b"UL",
            &u32::try_from(meta.len()).unwrap_or(0).to_le_bytes(),
            0,
        );
        out.extend_from_slice(&meta);
        out
    }
}

/// One Explicit VR LE element of group 0002, value padded to even length
/// with `pad`. OB has the 2 reserved bytes and a 4-byte length; the other
/// VRs used here a 2-byte length (PS3.5 §7.1.2). A value too long for its
/// length field is written with length 0 (it comes from a peer's UID or AE
/// title, which are at most 64 and 16 characters when valid).
fn put(out: &mut Vec<u8>, element: u16, vr: &[u8; 2], value: &[u8], pad: u8) {
    let padded = value.len() + (value.len() & 1);
    let long = vr == b"OB";
    let (value, padded) = match (long, u16::try_from(padded)) {
        (false, Err(_)) => (&[][..], 0),
        _ => (value, padded),
    };
    out.extend_from_slice(&2u16.to_le_bytes());
    out.extend_from_slice(&element.to_le_bytes());
    out.extend_from_slice(vr);
    if long {
        out.extend_from_slice(&[0, 0]);
        out.extend_from_slice(&u32::try_from(padded).unwrap_or(0).to_le_bytes());
    } else {
        out.extend_from_slice(&u16::try_from(padded).unwrap_or(0).to_le_bytes());
    }
    out.extend_from_slice(value);
    if value.len() & 1 == 1 {
        out.push(pad);
    }
}

#[cfg(test)]
mod tests {
    use dicom_object::meta::FileMetaTable;

    use super::*;

    fn meta<'a>(instance: &'a str, private: Option<(&'a str, &'a [u8])>) -> FileMeta<'a> {
        FileMeta {
            sop_class: uids::CT_IMAGE,
            sop_instance: instance,
            transfer_syntax: uids::EXPLICIT_VR_LE,
            calling_ae: "CT1",
            private,
        }
    }

    #[test]
    fn dicom_rs_reads_the_meta_group_back() {
        // Odd and even lengths: "1.2.3.4.5" (9) and "1.2.3.4.56" (10).
        for instance in ["1.2.3.4.5", "1.2.3.4.56"] {
            let bytes = meta(instance, None).header();
            assert_eq!(&bytes[..128], &[0u8; 128][..]);
            assert_eq!(&bytes[128..132], b"DICM");
            let table = FileMetaTable::from_reader(&bytes[128..])
                .unwrap_or_else(|e| panic!("{instance}: {e}"));
            assert_eq!(table.media_storage_sop_class_uid(), uids::CT_IMAGE);
            assert_eq!(table.media_storage_sop_instance_uid(), instance);
            assert_eq!(table.transfer_syntax(), uids::EXPLICIT_VR_LE);
            assert_eq!(table.implementation_class_uid(), uids::IMPLEMENTATION_CLASS);
            assert_eq!(
                table.implementation_version_name(),
                Some(uids::IMPLEMENTATION_VERSION)
            );
            assert_eq!(table.source_application_entity_title(), Some("CT1"));
            assert_eq!(table.information_version, [0, 1]);
            assert!(table.private_information_creator_uid().is_none());
            // The group length counts every byte after its own element.
            assert_eq!(
                table.information_group_length as usize,
                bytes.len() - 132 - 12
            );
            assert_eq!(bytes.len() % 2, 0);
        }
    }

    #[test]
    fn private_information_is_optional_and_read_back() {
        let info = b"op=C-STORE\n";
        let bytes = meta("1.2.3", Some(("2.25.1", info))).header();
        let table = FileMetaTable::from_reader(&bytes[128..]).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(table.private_information_creator_uid(), Some("2.25.1"));
        // Odd length: padded with one NUL.
        assert_eq!(
            table.private_information.as_deref(),
            Some(&b"op=C-STORE\n\0"[..])
        );
        assert_eq!(
            table.information_group_length as usize,
            bytes.len() - 132 - 12
        );
    }

    #[test]
    fn a_value_too_long_for_its_length_field_is_written_empty() {
        let long = "1".repeat(70_000);
        let bytes = meta(&long, None).header();
        assert!(bytes.len() < 1024, "{}", bytes.len());
        let group_length = u32::from_le_bytes([bytes[140], bytes[141], bytes[142], bytes[143]]);
        assert_eq!(group_length as usize, bytes.len() - 144);
        // (0002,0003) UI with length 0 right after (0002,0002).
        let at = bytes
            .windows(4)
            .position(|w| w == [2, 0, 3, 0])
            .unwrap_or_else(|| panic!("no (0002,0003)"));
        assert_eq!(&bytes[at + 4..at + 8], b"UI\0\0");
    }
}
