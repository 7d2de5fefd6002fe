//! The bytes stored for a DICOM unit: a Part 10 stream (PS3.10 §7.1) whose
//! data set is what the node kept, with what the pipeline needs to know
//! about the exchange in the File Meta Information.
//!
//! Layout: 128-byte zero preamble, `DICM`, group 0002 in Explicit VR LE —
//! (0002,0001) version, (0002,0002)/(0002,0003) SOP class/instance,
//! (0002,0010) the presentation context's transfer syntax, (0002,0012)/(0002,0013)
//! wardlink's implementation, (0002,0016) the calling AE title, and
//! (0002,0100) Private Information Creator UID = [`ENVELOPE_UID`] with
//! (0002,0102) Private Information: `key=value` lines ([`Envelope`]) — then
//! the data set as received (for C-STORE only its header, up to Pixel Data).
//! Any DICOM reader opens it; `dcmdump` shows it. The header is written by
//! [`super::part10`].

use super::part10::FileMeta;

/// The Private Information Creator UID of wardlink's envelope (fixed).
pub const ENVELOPE_UID: &str = "2.25.56774252197641667696347389591560091821";

/// What the node knows about one stored unit beyond its data set.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Envelope {
    /// `C-STORE`, `N-CREATE` or `N-SET`.
    pub op: String,
    /// SOP class UID (from the command).
    pub sop_class: String,
    /// SOP instance UID (from the command; for N-CREATE the one answered).
    pub sop_instance: String,
    /// The transfer syntax of the data set.
    pub transfer_syntax: String,
    /// The calling AE title.
    pub calling_ae: String,
    /// The called AE title.
    pub called_ae: String,
    /// The device id (configured per calling AE title, else the title).
    pub device: String,
    /// Configured ward ("" = not set).
    pub ward: String,
    /// Configured room ("" = not set).
    pub room: String,
    /// Bytes of the whole data set as received.
    pub dataset_bytes: u64,
    /// Bytes from Pixel Data to the end of the data set (counted, not kept).
    pub pixel_bytes: u64,
    /// For MPPS: the step's state after this operation.
    pub mpps_state: String,
}

impl Envelope {
    fn info(&self) -> String {
        let mut s = String::new();
        for (k, v) in [
            ("op", self.op.as_str()),
            ("called_ae", &self.called_ae),
            ("device", &self.device),
            ("ward", &self.ward),
            ("room", &self.room),
            ("mpps_state", &self.mpps_state),
        ] {
            // Values come from config and AE titles: no newlines in them.
            s.push_str(k);
            s.push('=');
            s.extend(v.chars().filter(|c| *c != '\n'));
            s.push('\n');
        }
        s.push_str(&format!("dataset_bytes={}\n", self.dataset_bytes));
        s.push_str(&format!("pixel_bytes={}\n", self.pixel_bytes));
        s
    }

    /// The Part 10 bytes: preamble, meta group, then `dataset`.
    pub fn to_part10(&self, dataset: &[u8]) -> Vec<u8> {
        let info = self.info();
        let mut out = FileMeta {
            sop_class: &self.sop_class,
            sop_instance: &self.sop_instance,
            transfer_syntax: &self.transfer_syntax,
            calling_ae: &self.calling_ae,
            private: Some((ENVELOPE_UID, info.as_bytes())),
        }
        .header();
        out.reserve_exact(dataset.len());
        out.extend_from_slice(dataset);
        out
    }

    /// Reads the envelope of stored bytes: the envelope and where the data
    /// set starts. `None` if the bytes are not a stream this module wrote.
    pub fn parse(bytes: &[u8]) -> Option<(Envelope, usize)> {
        if bytes.get(128..132)? != b"DICM" {
            return None;
        }
        let mut at = 132;
        let mut env = Envelope::default();
        let mut end = None;
        let mut info = None;
        loop {
            if end.is_some_and(|e| at >= e) {
                break;
            }
            let group = u16::from_le_bytes([*bytes.get(at)?, *bytes.get(at + 1)?]);
            if group != 2 {
                break;
            }
            let element = u16::from_le_bytes([*bytes.get(at + 2)?, *bytes.get(at + 3)?]);
            let vr = bytes.get(at + 4..at + 6)?;
            let (len, start) = if matches!(vr, b"OB" | b"UN" | b"UT" | b"SQ" | b"OW") {
                let b = bytes.get(at + 8..at + 12)?;
                (
                    u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize,
                    at + 12,
                )
            } else {
                let b = bytes.get(at + 6..at + 8)?;
                (usize::from(u16::from_le_bytes([b[0], b[1]])), at + 8)
            };
            let value = bytes.get(start..start.checked_add(len)?)?;
            let text = || {
                String::from_utf8_lossy(value)
                    .trim_end_matches(['\0', ' '])
                    .to_owned()
            };
            match element {
                0x0000 if value.len() == 4 => {
                    let n = u32::from_le_bytes([value[0], value[1], value[2], value[3]]);
                    end = Some(start + 4 + n as usize);
                }
                0x0002 => env.sop_class = text(),
                0x0003 => env.sop_instance = text(),
                0x0010 => env.transfer_syntax = text(),
                0x0016 => env.calling_ae = text(),
                0x0102 => info = Some(text()),
                _ => {}
            }
            at = start + len;
        }
        // A Part 10 file not written by the node has no envelope: defaults.
        for line in info.unwrap_or_default().lines() {
            let Some((k, v)) = line.split_once('=') else {
                continue;
            };
            let v = v.to_owned();
            match k {
                "op" => env.op = v,
                "called_ae" => env.called_ae = v,
                "device" => env.device = v,
                "ward" => env.ward = v,
                "room" => env.room = v,
                "mpps_state" => env.mpps_state = v,
                "dataset_bytes" => env.dataset_bytes = v.parse().unwrap_or(0),
                "pixel_bytes" => env.pixel_bytes = v.parse().unwrap_or(0),
                _ => {}
            }
        }
        Some((env, at))
    }
}

#[cfg(test)]
mod tests {
    use super::super::uids;
    use super::*;

    #[test]
    fn the_envelope_reads_back() {
        let env = Envelope {
            op: "C-STORE".into(),
            sop_class: uids::CT_IMAGE.into(),
            sop_instance: "1.2.3.4.5".into(),
            transfer_syntax: uids::EXPLICIT_VR_LE.into(),
            calling_ae: "CT1".into(),
            called_ae: "WARDLINK".into(),
            device: "ct-1".into(),
            ward: "radiology".into(),
            room: "CT 3".into(),
            dataset_bytes: 524_800,
            pixel_bytes: 524_300,
            mpps_state: String::new(),
        };
        let bytes = env.to_part10(b"\x08\x00\x18\x00UI\x02\x001\0");
        let (back, at) = Envelope::parse(&bytes).unwrap_or_default();
        assert_eq!(back, env);
        assert_eq!(&bytes[at..], b"\x08\x00\x18\x00UI\x02\x001\0");
        assert!(Envelope::parse(b"MSH|^~\\&").is_none());
    }
}
