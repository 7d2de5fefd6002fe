//! MEDIBUS framing (pure): build commands and responses, decode frames from
//! a byte stream, check every checksum, resynchronise on garbage.
//!
//! Wire format (Dräger "RS 232 MEDIBUS Protocol Definition"; device-serial.md §1.2):
//!
//! ```text
//! command  (requester → device): ESC(0x1B) code [arguments] CS1 CS2 CR(0x0D)
//! response (device → requester): SOH(0x01) code [data]      CS1 CS2 CR
//! ```
//!
//! The checksum is the 8-bit sum (mod 256) of every byte from the leading
//! ESC/SOH up to and including the last data byte, sent as two upper-case
//! ASCII hex digits; it is compared case-insensitively (§1.3).
//!
//! Both sides are masters, so a requester receives responses *and* commands
//! (the device's own ICC, NOP, ...): [`FrameDecoder`] returns both. Slow data
//! is 7-bit ASCII; bytes with bit 7 set are realtime (MEDIBUS.X) data that
//! this driver does not request, so they count as garbage.
//!
//! Design: [`FrameDecoder`] is a tokio-util [`Decoder`] whose items are
//! values ([`Decoded`]): a frame, a frame with a bad checksum, skipped
//! garbage, an over-long frame. "Need more bytes" is `Ok(None)`. It
//! remembers how far it scanned (like `LinesCodec`), so a frame arriving one
//! byte at a time is scanned once. A start byte (ESC/SOH) inside an
//! unfinished frame means the earlier frame was cut off: it is reported as a
//! [`Decoded::Truncated`] and decoding restarts at the new start byte.

use bytes::{Buf, Bytes, BytesMut};
use tokio_util::codec::Decoder;

/// ESC: starts a command.
pub const ESC: u8 = 0x1B;
/// SOH: starts a response.
pub const SOH: u8 = 0x01;
/// CR: ends every frame.
pub const CR: u8 = 0x0D;
/// ETX: ends a text-message record inside a response.
pub const ETX: u8 = 0x03;
/// NAK: the code of the response to a corrupt command.
pub const NAK: u8 = 0x15;

/// Longest frame accepted, start byte to CR. A full codepage of measured
/// data is about 70 records of 6 characters (≈ 430 bytes); this leaves room.
pub const MAX_FRAME_BYTES: usize = 2048;

/// Command codes used by this driver (device-serial.md §1.4).
pub mod cmd {
    /// No operation: keep-alive.
    pub const NOP: u8 = 0x30;
    /// Initialize communication.
    pub const ICC: u8 = 0x51;
    /// Request device identification.
    pub const DEVICE_ID: u8 = 0x52;
    /// Stop communication.
    pub const STOP: u8 = 0x55;
    /// Realtime configuration changed (sent by the device).
    pub const REALTIME_CHANGED: u8 = 0x56;
    /// Request current measured data, codepage 1.
    pub const MEASURED_CP1: u8 = 0x24;
    /// Request current alarms, codepage 1.
    pub const ALARMS_CP1: u8 = 0x27;
    /// Request current date and time.
    pub const DATE_TIME: u8 = 0x28;
    /// Request current device settings.
    pub const SETTINGS: u8 = 0x29;
    /// Request current text messages.
    pub const TEXT_MESSAGES: u8 = 0x2A;
    /// Request current measured data, codepage 2.
    pub const MEASURED_CP2: u8 = 0x2B;
}

/// Which side started the frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameKind {
    /// ESC: a command (from the requester, or the device's own).
    Command,
    /// SOH: a response.
    Response,
}

/// One frame with a good checksum.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// Command or response.
    pub kind: FrameKind,
    /// The command code (echoed in a response).
    pub code: u8,
    /// The bytes between the code and the checksum.
    pub data: Bytes,
    /// The whole frame as received, start byte to CR.
    pub raw: Bytes,
}

/// What the decoder found in the stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decoded {
    /// A frame with a good checksum.
    Frame(Frame),
    /// A complete frame whose checksum does not match (dropped).
    BadChecksum {
        /// The frame as received.
        raw: Bytes,
        /// The checksum computed over it.
        expected: u8,
    },
    /// A frame cut off by the start of the next one (dropped).
    Truncated {
        /// The bytes of the unfinished frame.
        raw: Bytes,
    },
    /// Bytes outside any frame (noise, realtime data, a wrong baud rate).
    Garbage {
        /// How many bytes were skipped.
        len: usize,
    },
    /// A frame longer than [`MAX_FRAME_BYTES`] without a CR (dropped up to
    /// the next start byte).
    TooLong {
        /// Bytes discarded.
        len: usize,
    },
}

/// The 8-bit sum of `bytes`.
pub fn checksum(bytes: &[u8]) -> u8 {
    bytes.iter().fold(0u8, |sum, b| sum.wrapping_add(*b))
}

fn hex_digit(nibble: u8) -> u8 {
    b"0123456789ABCDEF"[usize::from(nibble & 0x0F)]
}

fn hex_value(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'A'..=b'F' => Some(c - b'A' + 10),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    }
}

/// Parse two ASCII hex digits (either case).
pub fn parse_hex_byte(two: &[u8]) -> Option<u8> {
    match two {
        [hi, lo] => Some(hex_value(*hi)? << 4 | hex_value(*lo)?),
        _ => None,
    }
}

fn build(start: u8, code: u8, data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() + 5);
    out.push(start);
    out.push(code);
    out.extend_from_slice(data);
    let sum = checksum(&out);
    out.push(hex_digit(sum >> 4));
    out.push(hex_digit(sum));
    out.push(CR);
    out
}

/// A command frame: `ESC code args CS CR`.
pub fn command(code: u8, args: &[u8]) -> Vec<u8> {
    build(ESC, code, args)
}

/// A response frame: `SOH code data CS CR`. An echo (the answer to a
/// device's command) is a response with no data.
pub fn response(code: u8, data: &[u8]) -> Vec<u8> {
    build(SOH, code, data)
}

/// The bounded, resynchronising MEDIBUS frame decoder.
#[derive(Debug, Default)]
pub struct FrameDecoder {
    /// Bytes of the current frame already scanned for CR / a start byte.
    scanned: usize,
}

impl FrameDecoder {
    /// A decoder at the start of a stream.
    pub fn new() -> Self {
        Self::default()
    }
}

fn is_start(b: u8) -> bool {
    b == ESC || b == SOH
}

impl Decoder for FrameDecoder {
    type Item = Decoded;
    type Error = std::io::Error;

    fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Decoded>, std::io::Error> {
        // 1. Skip anything before a start byte.
        let start = buf.iter().position(|b| is_start(*b));
        match start {
            Some(0) => {}
            Some(n) => {
                buf.advance(n);
                self.scanned = 0;
                return Ok(Some(Decoded::Garbage { len: n }));
            }
            None => {
                if buf.is_empty() {
                    return Ok(None);
                }
                let len = buf.len();
                buf.clear();
                self.scanned = 0;
                return Ok(Some(Decoded::Garbage { len }));
            }
        }
        // 2. Look for the CR, or a new start byte that cuts this frame off.
        let from = self.scanned.max(1);
        let limit = buf.len().min(MAX_FRAME_BYTES);
        let found = buf[from.min(limit)..limit]
            .iter()
            .position(|b| *b == CR || is_start(*b))
            .map(|i| i + from);
        let Some(end) = found else {
            if buf.len() >= MAX_FRAME_BYTES {
                // Over-long: drop up to the next start byte (or everything).
                let next = buf[1..]
                    .iter()
                    .position(|b| is_start(*b))
                    .map_or(buf.len(), |i| i + 1);
                buf.advance(next);
                self.scanned = 0;
                return Ok(Some(Decoded::TooLong { len: next }));
            }
            self.scanned = buf.len();
            return Ok(None);
        };
        self.scanned = 0;
        if buf[end] != CR {
            let raw = buf.split_to(end).freeze();
            return Ok(Some(Decoded::Truncated { raw }));
        }
        let raw = buf.split_to(end + 1).freeze();
        Ok(Some(check(raw)))
    }
}

/// Check a complete frame (start byte .. CR) and split it into its parts.
fn check(raw: Bytes) -> Decoded {
    // start, code, 2 checksum digits, CR: at least 5 bytes.
    let n = raw.len();
    if n < 5 {
        return Decoded::Truncated { raw };
    }
    let body = &raw[..n - 3];
    let expected = checksum(body);
    match parse_hex_byte(&raw[n - 3..n - 1]) {
        Some(sent) if sent == expected => {
            let kind = if raw[0] == ESC {
                FrameKind::Command
            } else {
                FrameKind::Response
            };
            Decoded::Frame(Frame {
                kind,
                code: raw[1],
                data: raw.slice(2..n - 3),
                raw,
            })
        }
        _ => Decoded::BadChecksum { raw, expected },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_all(decoder: &mut FrameDecoder, buf: &mut BytesMut) -> Vec<Decoded> {
        let mut out = Vec::new();
        while let Ok(Some(d)) = decoder.decode(buf) {
            out.push(d);
        }
        out
    }

    /// The worked examples of device-serial.md §1.3.
    #[test]
    fn commands_match_the_worked_examples() {
        let cases: [(u8, &[u8]); 10] = [
            (cmd::ICC, b"\x1bQ6C\r"),
            (cmd::DEVICE_ID, b"\x1bR6D\r"),
            (cmd::MEASURED_CP1, b"\x1b$3F\r"),
            (cmd::MEASURED_CP2, b"\x1b+46\r"),
            (cmd::SETTINGS, b"\x1b)44\r"),
            (cmd::TEXT_MESSAGES, b"\x1b*45\r"),
            (cmd::ALARMS_CP1, b"\x1b'42\r"),
            (cmd::DATE_TIME, b"\x1b(43\r"),
            (cmd::NOP, b"\x1b04B\r"),
            (cmd::STOP, b"\x1bU70\r"),
        ];
        for (code, wire) in cases {
            assert_eq!(command(code, &[]), wire, "code {code:#04x}");
        }
        assert_eq!(response(cmd::ICC, &[]), b"\x01Q52\r");
    }

    #[test]
    fn parses_the_worked_response() {
        let mut buf = BytesMut::from(&b"\x01$78 5.047\r"[..]);
        let got = decode_all(&mut FrameDecoder::new(), &mut buf);
        assert_eq!(got.len(), 1);
        match &got[0] {
            Decoded::Frame(f) => {
                assert_eq!(f.kind, FrameKind::Response);
                assert_eq!(f.code, b'$');
                assert_eq!(&f.data[..], b"78 5.0");
            }
            other => panic!("not a frame: {other:?}"),
        }
        assert!(buf.is_empty());
    }

    #[test]
    fn lowercase_checksum_is_accepted() {
        let mut buf = BytesMut::from(&b"\x1b04b\r"[..]);
        let got = decode_all(&mut FrameDecoder::new(), &mut buf);
        assert!(matches!(&got[..], [Decoded::Frame(f)] if f.code == cmd::NOP));
    }

    #[test]
    fn corrupted_checksum_is_reported_and_the_next_frame_decodes() {
        let mut wire = response(cmd::MEASURED_CP1, b"78 5.0");
        let cs = wire.len() - 2;
        wire[cs] = b'0'; // "47" → "40"
        wire.extend_from_slice(&response(cmd::NOP, &[]));
        let mut buf = BytesMut::from(&wire[..]);
        let got = decode_all(&mut FrameDecoder::new(), &mut buf);
        assert_eq!(got.len(), 2, "{got:?}");
        assert!(matches!(
            &got[0],
            Decoded::BadChecksum { expected: 0x47, .. }
        ));
        assert!(matches!(&got[1], Decoded::Frame(f) if f.code == cmd::NOP));
        // A corrupted data byte is caught too.
        let mut wire = response(cmd::MEASURED_CP1, b"78 5.0");
        wire[4] = b'6';
        let got = decode_all(&mut FrameDecoder::new(), &mut BytesMut::from(&wire[..]));
        assert!(matches!(&got[..], [Decoded::BadChecksum { .. }]), "{got:?}");
        // And a checksum that is not hex.
        let got = decode_all(
            &mut FrameDecoder::new(),
            &mut BytesMut::from(&b"\x01Q5Z\r"[..]),
        );
        assert!(matches!(&got[..], [Decoded::BadChecksum { .. }]), "{got:?}");
    }

    #[test]
    fn garbage_before_and_between_frames_is_skipped() {
        let mut wire = b"noise\xff\x80".to_vec();
        wire.extend_from_slice(&response(cmd::ICC, &[]));
        wire.extend_from_slice(b"\n\n");
        wire.extend_from_slice(&response(cmd::NOP, &[]));
        let got = decode_all(&mut FrameDecoder::new(), &mut BytesMut::from(&wire[..]));
        assert_eq!(
            got,
            vec![
                Decoded::Garbage { len: 7 },
                Decoded::Frame(Frame {
                    kind: FrameKind::Response,
                    code: cmd::ICC,
                    data: Bytes::new(),
                    raw: Bytes::from(response(cmd::ICC, &[])),
                }),
                Decoded::Garbage { len: 2 },
                Decoded::Frame(Frame {
                    kind: FrameKind::Response,
                    code: cmd::NOP,
                    data: Bytes::new(),
                    raw: Bytes::from(response(cmd::NOP, &[])),
                }),
            ]
        );
    }

    #[test]
    fn a_frame_cut_off_by_the_next_is_truncated() {
        let full = response(cmd::MEASURED_CP1, b"78 5.0");
        let mut wire = full[..6].to_vec();
        wire.extend_from_slice(&response(cmd::NOP, &[]));
        let got = decode_all(&mut FrameDecoder::new(), &mut BytesMut::from(&wire[..]));
        assert_eq!(got.len(), 2, "{got:?}");
        assert!(matches!(&got[0], Decoded::Truncated { raw } if raw.len() == 6));
        assert!(matches!(&got[1], Decoded::Frame(f) if f.code == cmd::NOP));
        // Too short to hold a checksum.
        let got = decode_all(
            &mut FrameDecoder::new(),
            &mut BytesMut::from(&b"\x01Q\r"[..]),
        );
        assert!(matches!(&got[..], [Decoded::Truncated { .. }]), "{got:?}");
    }

    #[test]
    fn over_long_frame_is_dropped_to_the_next_start() {
        let mut wire = vec![SOH, b'$'];
        wire.extend(std::iter::repeat_n(b'7', MAX_FRAME_BYTES + 10));
        wire.extend_from_slice(&response(cmd::NOP, &[]));
        let mut buf = BytesMut::new();
        let mut decoder = FrameDecoder::new();
        let mut got = Vec::new();
        // Arrives in pieces: the limit holds while bytes trickle in.
        for chunk in wire.chunks(100) {
            buf.extend_from_slice(chunk);
            got.extend(decode_all(&mut decoder, &mut buf));
            assert!(buf.len() <= MAX_FRAME_BYTES + 100);
        }
        assert!(matches!(got[0], Decoded::TooLong { .. }), "{got:?}");
        assert!(
            matches!(got.last(), Some(Decoded::Frame(f)) if f.code == cmd::NOP),
            "{got:?}"
        );
    }

    /// Every fixture gives the same items whole, byte by byte and split at
    /// every offset.
    #[test]
    fn same_items_under_every_split() {
        let mut wire = b"xx".to_vec();
        wire.extend_from_slice(&response(cmd::DEVICE_ID, b"0161'Evita 4'01.03:06.00"));
        wire.extend_from_slice(&command(cmd::NOP, &[]));
        let mut bad = response(cmd::MEASURED_CP1, b"7D  23");
        let l = bad.len();
        bad[l - 2] ^= 1;
        wire.extend_from_slice(&bad);
        wire.extend_from_slice(&response(cmd::MEASURED_CP1, b"7D  2378 5.0"));
        let whole = decode_all(&mut FrameDecoder::new(), &mut BytesMut::from(&wire[..]));
        assert_eq!(whole.len(), 5, "{whole:?}");
        for split in 0..=wire.len() {
            let mut decoder = FrameDecoder::new();
            let mut buf = BytesMut::from(&wire[..split]);
            let mut got = decode_all(&mut decoder, &mut buf);
            buf.extend_from_slice(&wire[split..]);
            got.extend(decode_all(&mut decoder, &mut buf));
            // A split inside the leading garbage reports it in two pieces.
            let merged = merge_garbage(got);
            assert_eq!(merged, whole, "split at {split}");
        }
        let mut decoder = FrameDecoder::new();
        let mut buf = BytesMut::new();
        let mut got = Vec::new();
        for b in &wire {
            buf.extend_from_slice(&[*b]);
            got.extend(decode_all(&mut decoder, &mut buf));
        }
        assert_eq!(merge_garbage(got), whole, "byte by byte");
    }

    fn merge_garbage(items: Vec<Decoded>) -> Vec<Decoded> {
        let mut out: Vec<Decoded> = Vec::new();
        for d in items {
            if let (Some(Decoded::Garbage { len }), Decoded::Garbage { len: more }) =
                (out.last_mut(), &d)
            {
                *len += more;
                continue;
            }
            out.push(d);
        }
        out
    }

    #[test]
    fn never_panics_on_arbitrary_bytes() {
        // A small deterministic pseudo-random stream heavy in start and end bytes.
        let mut x: u32 = 12345;
        let mut wire = Vec::new();
        for _ in 0..20_000 {
            x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
            let b = (x >> 16) as u8;
            wire.push(match b % 7 {
                0 => SOH,
                1 => ESC,
                2 => CR,
                _ => b,
            });
        }
        let mut decoder = FrameDecoder::new();
        let mut buf = BytesMut::new();
        let mut consumed = 0;
        for chunk in wire.chunks(37) {
            buf.extend_from_slice(chunk);
            for d in decode_all(&mut decoder, &mut buf) {
                consumed += match d {
                    Decoded::Frame(f) => f.raw.len(),
                    Decoded::BadChecksum { raw, .. } | Decoded::Truncated { raw } => raw.len(),
                    Decoded::Garbage { len } | Decoded::TooLong { len } => len,
                };
            }
        }
        // Every byte is accounted for, except an unfinished frame at the end.
        assert_eq!(consumed + buf.len(), wire.len());
    }
}
