//! DIMSE command sets (PS3.7 §9.3 and §10.3), read and written by hand.
//!
//! A command set is group 0000 in Implicit VR Little Endian whatever the
//! presentation context's transfer syntax (PS3.7 §6.3.1): per element a tag
//! (group, element: u16 LE each), a u32 LE value length and the value. UIDs
//! are padded to even length with NUL, text with a space.
//!
//! Pure: bytes in, bytes out. Only the elements wardlink acts on are read;
//! the others are skipped by their length.

use std::fmt;

/// (0000,0000) CommandGroupLength.
const GROUP_LENGTH: u16 = 0x0000;
/// (0000,0002) AffectedSOPClassUID.
const AFFECTED_SOP_CLASS: u16 = 0x0002;
/// (0000,0003) RequestedSOPClassUID.
const REQUESTED_SOP_CLASS: u16 = 0x0003;
/// (0000,0100) CommandField.
const COMMAND_FIELD: u16 = 0x0100;
/// (0000,0110) MessageID.
const MESSAGE_ID: u16 = 0x0110;
/// (0000,0120) MessageIDBeingRespondedTo.
const RESPONDED_TO: u16 = 0x0120;
/// (0000,0800) CommandDataSetType.
const DATA_SET_TYPE: u16 = 0x0800;
/// (0000,0900) Status.
const STATUS: u16 = 0x0900;
/// (0000,0902) ErrorComment.
const ERROR_COMMENT: u16 = 0x0902;
/// (0000,1000) AffectedSOPInstanceUID.
const AFFECTED_SOP_INSTANCE: u16 = 0x1000;
/// (0000,1001) RequestedSOPInstanceUID.
const REQUESTED_SOP_INSTANCE: u16 = 0x1001;

/// CommandDataSetType value meaning "no data set follows" (PS3.7 E.1-1).
pub const NO_DATA_SET: u16 = 0x0101;

/// Command fields (PS3.7 E.1-1 and E.2-1).
pub mod field {
    /// C-STORE-RQ.
    pub const C_STORE_RQ: u16 = 0x0001;
    /// C-STORE-RSP.
    pub const C_STORE_RSP: u16 = 0x8001;
    /// C-ECHO-RQ.
    pub const C_ECHO_RQ: u16 = 0x0030;
    /// C-ECHO-RSP.
    pub const C_ECHO_RSP: u16 = 0x8030;
    /// N-SET-RQ.
    pub const N_SET_RQ: u16 = 0x0120;
    /// N-SET-RSP.
    pub const N_SET_RSP: u16 = 0x8120;
    /// N-CREATE-RQ.
    pub const N_CREATE_RQ: u16 = 0x0140;
    /// N-CREATE-RSP.
    pub const N_CREATE_RSP: u16 = 0x8140;
    /// C-CANCEL-RQ.
    pub const C_CANCEL_RQ: u16 = 0x0FFF;
}

/// DIMSE statuses wardlink sends (PS3.7 Annex C, PS3.4 B.2.3 and F.7.2).
pub mod status {
    /// Success.
    pub const SUCCESS: u16 = 0x0000;
    /// C-STORE refused: out of resources (store full or failing, header too large).
    pub const OUT_OF_RESOURCES: u16 = 0xA700;
    /// C-STORE error: cannot understand (the data set cannot be parsed).
    pub const CANNOT_UNDERSTAND: u16 = 0xC000;
    /// N-SET: processing failure (an MPPS that may no longer be updated).
    pub const PROCESSING_FAILURE: u16 = 0x0110;
    /// N-CREATE: duplicate SOP instance.
    pub const DUPLICATE_INSTANCE: u16 = 0x0111;
    /// N-SET: no such SOP instance.
    pub const NO_SUCH_INSTANCE: u16 = 0x0112;
    /// Invalid attribute value.
    pub const INVALID_ATTRIBUTE_VALUE: u16 = 0x0106;
    /// Missing attribute.
    pub const MISSING_ATTRIBUTE: u16 = 0x0120;
    /// No such SOP class.
    pub const NO_SUCH_SOP_CLASS: u16 = 0x0118;
    /// Unrecognized operation.
    pub const UNRECOGNIZED_OPERATION: u16 = 0x0211;
}

/// The elements of a request command set wardlink acts on.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Command {
    /// (0000,0100).
    pub field: u16,
    /// (0000,0110).
    pub message_id: u16,
    /// (0000,0002).
    pub affected_sop_class: Option<String>,
    /// (0000,0003).
    pub requested_sop_class: Option<String>,
    /// (0000,1000).
    pub affected_sop_instance: Option<String>,
    /// (0000,1001).
    pub requested_sop_instance: Option<String>,
    /// (0000,0800): `NO_DATA_SET` or anything else (a data set follows).
    pub data_set_type: u16,
}

impl Command {
    /// Does a data set follow this command?
    pub fn has_data_set(&self) -> bool {
        self.data_set_type != NO_DATA_SET
    }
}

/// Why a command set could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommandError {
    /// An element runs past the end of the bytes.
    Truncated,
    /// An element outside group 0000.
    NotGroupZero(u16),
    /// (0000,0100) is absent.
    NoCommandField,
}

impl fmt::Display for CommandError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CommandError::Truncated => f.write_str("command set truncated"),
            CommandError::NotGroupZero(g) => {
                write!(f, "command set has an element of group {g:04X}")
            }
            CommandError::NoCommandField => f.write_str("command set has no CommandField"),
        }
    }
}

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes([*b.get(at)?, *b.get(at + 1)?]))
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes([
        *b.get(at)?,
        *b.get(at + 1)?,
        *b.get(at + 2)?,
        *b.get(at + 3)?,
    ]))
}

/// A UI or AE value without its padding.
fn text(value: &[u8]) -> String {
    String::from_utf8_lossy(value)
        .trim_end_matches(['\0', ' '])
        .trim_start_matches(' ')
        .to_owned()
}

/// Reads a request command set.
///
/// # Errors
/// [`CommandError`] for a truncated set, an element of another group or no
/// CommandField.
pub fn parse(bytes: &[u8]) -> Result<Command, CommandError> {
    let mut command = Command {
        data_set_type: NO_DATA_SET,
        ..Command::default()
    };
    let mut have_field = false;
    let mut at = 0;
    while at < bytes.len() {
        let group = u16_at(bytes, at).ok_or(CommandError::Truncated)?;
        let element = u16_at(bytes, at + 2).ok_or(CommandError::Truncated)?;
        let len = u32_at(bytes, at + 4).ok_or(CommandError::Truncated)? as usize;
        if group != 0 {
            return Err(CommandError::NotGroupZero(group));
        }
        let start = at + 8;
        let end = start.checked_add(len).ok_or(CommandError::Truncated)?;
        let value = bytes.get(start..end).ok_or(CommandError::Truncated)?;
        match element {
            AFFECTED_SOP_CLASS => command.affected_sop_class = Some(text(value)),
            REQUESTED_SOP_CLASS => command.requested_sop_class = Some(text(value)),
            AFFECTED_SOP_INSTANCE => command.affected_sop_instance = Some(text(value)),
            REQUESTED_SOP_INSTANCE => command.requested_sop_instance = Some(text(value)),
            COMMAND_FIELD => {
                command.field = u16_at(value, 0).ok_or(CommandError::Truncated)?;
                have_field = true;
            }
            MESSAGE_ID => command.message_id = u16_at(value, 0).ok_or(CommandError::Truncated)?,
            DATA_SET_TYPE => {
                command.data_set_type = u16_at(value, 0).ok_or(CommandError::Truncated)?;
            }
            _ => {}
        }
        at = end;
    }
    if !have_field {
        return Err(CommandError::NoCommandField);
    }
    Ok(command)
}

/// A response command set, built field by field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// (0000,0100): the `*_RSP` field.
    pub field: u16,
    /// (0000,0120): the request's MessageID.
    pub responding_to: u16,
    /// (0000,0002).
    pub affected_sop_class: Option<String>,
    /// (0000,1000).
    pub affected_sop_instance: Option<String>,
    /// (0000,0900).
    pub status: u16,
    /// (0000,0902): a short reason for a failure (at most 64 characters).
    pub error_comment: Option<String>,
}

fn put_element(out: &mut Vec<u8>, element: u16, value: &[u8], pad: u8) {
    let padded = value.len() + (value.len() & 1);
    out.extend_from_slice(&0u16.to_le_bytes());
    out.extend_from_slice(&element.to_le_bytes());
    // Command values are short (UIDs ≤ 64, comments ≤ 64 bytes).
    out.extend_from_slice(&u32::try_from(padded).unwrap_or(0).to_le_bytes());
    out.extend_from_slice(value);
    if value.len() & 1 == 1 {
        out.push(pad);
    }
}

impl Response {
    /// The command set bytes, elements in tag order, group length first.
    pub fn encode(&self) -> Vec<u8> {
        let mut body = Vec::with_capacity(160);
        if let Some(uid) = &self.affected_sop_class {
            put_element(&mut body, AFFECTED_SOP_CLASS, uid.as_bytes(), 0);
        }
        put_element(&mut body, COMMAND_FIELD, &self.field.to_le_bytes(), 0);
        put_element(
            &mut body,
            RESPONDED_TO,
            &self.responding_to.to_le_bytes(),
            0,
        );
        put_element(&mut body, DATA_SET_TYPE, &NO_DATA_SET.to_le_bytes(), 0);
        put_element(&mut body, STATUS, &self.status.to_le_bytes(), 0);
        if let Some(comment) = &self.error_comment {
            let comment: String = comment
                .chars()
                .filter(|c| c.is_ascii() && !c.is_ascii_control() && *c != '\\')
                .take(64)
                .collect();
            put_element(&mut body, ERROR_COMMENT, comment.as_bytes(), b' ');
        }
        if let Some(uid) = &self.affected_sop_instance {
            put_element(&mut body, AFFECTED_SOP_INSTANCE, uid.as_bytes(), 0);
        }
        let mut out = Vec::with_capacity(body.len() + 12);
        put_element(
            &mut out,
            GROUP_LENGTH,
            &u32::try_from(body.len()).unwrap_or(0).to_le_bytes(),
            0,
        );
        out.extend_from_slice(&body);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A C-ECHO-RQ as dcmtk's echoscu sends it.
    fn echo_rq() -> Vec<u8> {
        let mut body = Vec::new();
        put_element(&mut body, AFFECTED_SOP_CLASS, b"1.2.840.10008.1.1", 0);
        put_element(&mut body, COMMAND_FIELD, &field::C_ECHO_RQ.to_le_bytes(), 0);
        put_element(&mut body, MESSAGE_ID, &7u16.to_le_bytes(), 0);
        put_element(&mut body, DATA_SET_TYPE, &NO_DATA_SET.to_le_bytes(), 0);
        let mut out = Vec::new();
        put_element(
            &mut out,
            GROUP_LENGTH,
            &(body.len() as u32).to_le_bytes(),
            0,
        );
        out.extend_from_slice(&body);
        out
    }

    #[test]
    fn reads_a_request() -> Result<(), CommandError> {
        let c = parse(&echo_rq())?;
        assert_eq!(c.field, field::C_ECHO_RQ);
        assert_eq!(c.message_id, 7);
        assert_eq!(c.affected_sop_class.as_deref(), Some("1.2.840.10008.1.1"));
        assert!(!c.has_data_set());
        Ok(())
    }

    #[test]
    fn refuses_truncated_and_foreign_sets() {
        let rq = echo_rq();
        assert_eq!(parse(&rq[..rq.len() - 1]), Err(CommandError::Truncated));
        let mut foreign = rq.clone();
        foreign[0] = 8;
        assert_eq!(parse(&foreign), Err(CommandError::NotGroupZero(8)));
        assert_eq!(parse(&rq[..12]), Err(CommandError::NoCommandField));
    }

    #[test]
    fn a_response_reads_back_with_even_lengths() -> Result<(), CommandError> {
        let rsp = Response {
            field: field::C_STORE_RSP,
            responding_to: 9,
            affected_sop_class: Some("1.2.840.10008.5.1.4.1.1.2".into()),
            affected_sop_instance: Some("1.2.3".into()),
            status: status::OUT_OF_RESOURCES,
            error_comment: Some("store full".into()),
        }
        .encode();
        let c = parse(&rsp)?;
        assert_eq!(c.field, field::C_STORE_RSP);
        assert_eq!(c.affected_sop_instance.as_deref(), Some("1.2.3"));
        let group_length = u32_at(&rsp, 8).unwrap_or(0) as usize;
        assert_eq!(group_length, rsp.len() - 12);
        assert_eq!(rsp.len() % 2, 0);
        Ok(())
    }
}
