//! The C-STORE data set, streamed: keep the header, count the pixels.
//!
//! [`HeaderScanner`] is fed the data set fragments as they come off the wire
//! and walks the top-level elements (PS3.5 §7.1) until Pixel Data
//! (7FE0,0010). Everything before it is the header, kept in memory up to a
//! limit; Pixel Data and everything after it are only counted. Undefined
//! lengths (sequences, items, UN) are followed through their delimiters
//! (PS3.5 §7.5), so a Pixel Data inside a sequence (an icon) is skipped as
//! part of its sequence. Pure: no I/O.
//!
//! Supported encodings: Implicit VR Little Endian and Explicit VR Little
//! Endian (which every compressed syntax uses for its data set). Deflate and
//! Big Endian are refused at negotiation.

use std::fmt;

/// (7FE0,0010) Pixel Data.
const PIXEL_DATA: (u16, u16) = (0x7FE0, 0x0010);
/// (FFFE,E000) Item.
const ITEM: (u16, u16) = (0xFFFE, 0xE000);
/// (FFFE,E00D) Item Delimitation Item.
const ITEM_END: (u16, u16) = (0xFFFE, 0xE00D);
/// (FFFE,E0DD) Sequence Delimitation Item.
const SEQUENCE_END: (u16, u16) = (0xFFFE, 0xE0DD);
const UNDEFINED: u32 = 0xFFFF_FFFF;
/// Deeper nesting than this is treated as malformed (no real object nests
/// sequences this deep; it bounds the recursion).
const MAX_DEPTH: usize = 32;

/// Why a data set is not understood (answered 0xC000).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScanError {
    /// An explicit VR that is not two upper-case letters.
    BadVr {
        /// Offset of the element in the data set.
        at: usize,
    },
    /// A delimiter where an element was expected, or an item outside a sequence.
    Misplaced {
        /// Offset of the element in the data set.
        at: usize,
    },
    /// Sequences nested deeper than the limit.
    TooDeep,
    /// The data set ended inside an element.
    Truncated {
        /// Offset of the unfinished element.
        at: usize,
    },
}

impl fmt::Display for ScanError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ScanError::BadVr { at } => write!(f, "invalid VR in the element at byte {at}"),
            ScanError::Misplaced { at } => write!(f, "misplaced delimiter at byte {at}"),
            ScanError::TooDeep => write!(f, "sequences nested deeper than {MAX_DEPTH}"),
            ScanError::Truncated { at } => {
                write!(f, "data set ends inside the element at byte {at}")
            }
        }
    }
}

/// What a finished scan found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scanned {
    /// The data set up to (not including) top-level Pixel Data, or all of it.
    pub header: Vec<u8>,
    /// Bytes from Pixel Data's tag to the end of the data set (0 without it).
    pub pixel_bytes: u64,
    /// Whether top-level Pixel Data was present.
    pub has_pixel_data: bool,
}

/// The outcome of a finished data set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Finished {
    /// The header was read.
    Header(Scanned),
    /// The header is larger than the limit (nothing kept); `total` bytes seen.
    TooLarge {
        /// All bytes of the data set.
        total: u64,
    },
    /// The data set cannot be parsed.
    Malformed(ScanError),
}

#[derive(Debug)]
enum State {
    /// Walking top-level elements; `pos` is the start of the next one.
    Header { pos: usize },
    /// Past Pixel Data: counting.
    Pixels,
    /// Header over the limit: counting only.
    TooLarge,
    /// Malformed: counting only, the error is kept.
    Failed(ScanError),
}

/// The streaming scanner of one data set.
#[derive(Debug)]
pub struct HeaderScanner {
    explicit: bool,
    max_header: usize,
    buf: Vec<u8>,
    state: State,
    pixel_bytes: u64,
    total: u64,
}

/// Result of trying to skip one element.
enum Step {
    /// The element ends at this offset.
    Next(usize),
    /// The element is top-level Pixel Data.
    Pixels,
    /// More bytes are needed.
    More,
}

impl HeaderScanner {
    /// A scanner for one data set; `explicit` for Explicit VR Little Endian,
    /// `max_header` the most header bytes kept.
    pub fn new(explicit: bool, max_header: usize) -> Self {
        Self {
            explicit,
            max_header,
            buf: Vec::new(),
            state: State::Header { pos: 0 },
            pixel_bytes: 0,
            total: 0,
        }
    }

    /// Bytes of the data set seen so far.
    pub fn total(&self) -> u64 {
        self.total
    }

    /// Bytes from Pixel Data's tag on, seen so far.
    pub fn pixel_bytes(&self) -> u64 {
        self.pixel_bytes
    }

    /// The header (the data set up to top-level Pixel Data) once Pixel Data
    /// has begun: it can no longer change, only pixels follow.
    pub fn header_done(&self) -> Option<&[u8]> {
        matches!(self.state, State::Pixels).then_some(&self.buf[..])
    }

    /// Feeds the next fragment.
    pub fn feed(&mut self, fragment: &[u8]) {
        self.total += fragment.len() as u64;
        let State::Header { pos } = self.state else {
            if matches!(self.state, State::Pixels) {
                self.pixel_bytes += fragment.len() as u64;
            }
            return;
        };
        self.buf.extend_from_slice(fragment);
        let mut pos = pos;
        loop {
            match skip(&self.buf, pos, self.explicit, 0, true) {
                Ok(Step::Next(next)) => pos = next,
                Ok(Step::Pixels) if pos > self.max_header => {
                    self.buf = Vec::new();
                    self.state = State::TooLarge;
                    return;
                }
                Ok(Step::Pixels) => {
                    self.pixel_bytes = (self.buf.len() - pos) as u64;
                    self.buf.truncate(pos);
                    self.buf.shrink_to_fit();
                    self.state = State::Pixels;
                    return;
                }
                Ok(Step::More) => break,
                Err(e) => {
                    self.buf = Vec::new();
                    self.state = State::Failed(e);
                    return;
                }
            }
        }
        if self.buf.len() > self.max_header {
            self.buf = Vec::new();
            self.state = State::TooLarge;
            return;
        }
        self.state = State::Header { pos };
    }

    /// The data set's last fragment has been fed: what was found.
    pub fn finish(self) -> Finished {
        match self.state {
            State::Header { pos } if pos == self.buf.len() => Finished::Header(Scanned {
                header: self.buf,
                pixel_bytes: 0,
                has_pixel_data: false,
            }),
            State::Header { pos } => Finished::Malformed(ScanError::Truncated { at: pos }),
            State::Pixels => Finished::Header(Scanned {
                header: self.buf,
                pixel_bytes: self.pixel_bytes,
                has_pixel_data: true,
            }),
            State::TooLarge => Finished::TooLarge { total: self.total },
            State::Failed(e) => Finished::Malformed(e),
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

/// VRs with a 2-byte reserved field and a 4-byte length (PS3.5 7.1.2).
fn long_vr(vr: [u8; 2]) -> bool {
    matches!(
        &vr,
        b"OB"
            | b"OD"
            | b"OF"
            | b"OL"
            | b"OV"
            | b"OW"
            | b"SQ"
            | b"SV"
            | b"UC"
            | b"UN"
            | b"UR"
            | b"UT"
            | b"UV"
    )
}

/// Skips the element at `at`. `top` marks the top level, where Pixel Data
/// stops the walk.
fn skip(buf: &[u8], at: usize, explicit: bool, depth: usize, top: bool) -> Result<Step, ScanError> {
    if depth > MAX_DEPTH {
        return Err(ScanError::TooDeep);
    }
    let (Some(group), Some(element)) = (u16_at(buf, at), u16_at(buf, at + 2)) else {
        return Ok(Step::More);
    };
    let tag = (group, element);
    if top && tag == PIXEL_DATA {
        return Ok(Step::Pixels);
    }
    if group == 0xFFFE {
        // Items and delimiters are handled by the sequence walker.
        return Err(ScanError::Misplaced { at });
    }
    let (len, header_len, implicit_inside) = if explicit {
        let (Some(&a), Some(&b)) = (buf.get(at + 4), buf.get(at + 5)) else {
            return Ok(Step::More);
        };
        let vr = [a, b];
        if !(a.is_ascii_uppercase() && b.is_ascii_uppercase()) {
            return Err(ScanError::BadVr { at });
        }
        if long_vr(vr) {
            let Some(len) = u32_at(buf, at + 8) else {
                return Ok(Step::More);
            };
            // An undefined-length UN holds Implicit VR LE (PS3.5 6.2.2).
            (len, 12, &vr == b"UN")
        } else {
            let Some(len) = u16_at(buf, at + 6) else {
                return Ok(Step::More);
            };
            (u32::from(len), 8, false)
        }
    } else {
        let Some(len) = u32_at(buf, at + 4) else {
            return Ok(Step::More);
        };
        (len, 8, false)
    };
    let start = at + header_len;
    if len != UNDEFINED {
        let end = start.saturating_add(len as usize);
        return Ok(if end <= buf.len() {
            Step::Next(end)
        } else {
            Step::More
        });
    }
    skip_sequence(buf, start, explicit && !implicit_inside, depth + 1)
}

/// Skips the items of an undefined-length sequence starting at `at`, through
/// its Sequence Delimitation Item.
fn skip_sequence(
    buf: &[u8],
    mut at: usize,
    explicit: bool,
    depth: usize,
) -> Result<Step, ScanError> {
    loop {
        let (Some(group), Some(element), Some(len)) =
            (u16_at(buf, at), u16_at(buf, at + 2), u32_at(buf, at + 4))
        else {
            return Ok(Step::More);
        };
        match (group, element) {
            SEQUENCE_END => return Ok(Step::Next(at + 8)),
            ITEM if len == UNDEFINED => {
                at += 8;
                loop {
                    let (Some(g), Some(e)) = (u16_at(buf, at), u16_at(buf, at + 2)) else {
                        return Ok(Step::More);
                    };
                    if (g, e) == ITEM_END {
                        if buf.len() < at + 8 {
                            return Ok(Step::More);
                        }
                        at += 8;
                        break;
                    }
                    match skip(buf, at, explicit, depth, false)? {
                        Step::Next(next) => at = next,
                        Step::More | Step::Pixels => return Ok(Step::More),
                    }
                }
            }
            ITEM => {
                let end = (at + 8).saturating_add(len as usize);
                if end > buf.len() {
                    return Ok(Step::More);
                }
                at = end;
            }
            _ => return Err(ScanError::Misplaced { at }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn explicit(tag: (u16, u16), vr: &[u8; 2], value: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(&tag.0.to_le_bytes());
        out.extend_from_slice(&tag.1.to_le_bytes());
        out.extend_from_slice(vr);
        if long_vr(*vr) {
            out.extend_from_slice(&[0, 0]);
            out.extend_from_slice(&(value.len() as u32).to_le_bytes());
        } else {
            out.extend_from_slice(&(value.len() as u16).to_le_bytes());
        }
        out.extend_from_slice(value);
        out
    }

    fn implicit(tag: (u16, u16), len: u32, value: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(&tag.0.to_le_bytes());
        out.extend_from_slice(&tag.1.to_le_bytes());
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(value);
        out
    }

    /// A header with an undefined-length sequence holding an icon's Pixel
    /// Data, then top-level Pixel Data of `pixels` bytes.
    fn object(pixels: usize) -> (Vec<u8>, usize) {
        let mut ds = explicit((0x0008, 0x0018), b"UI", b"1.2.3.4\0");
        ds.extend(explicit((0x0010, 0x0010), b"PN", b"DOE^JOHN"));
        // (0088,0200) IconImageSequence, undefined length, one undefined item.
        ds.extend_from_slice(&[0x88, 0x00, 0x00, 0x02, b'S', b'Q', 0, 0]);
        ds.extend_from_slice(&UNDEFINED.to_le_bytes());
        ds.extend(implicit(ITEM, UNDEFINED, &[]));
        ds.extend(explicit(PIXEL_DATA, b"OB", &[1, 2, 3, 4]));
        ds.extend(implicit(ITEM_END, 0, &[]));
        ds.extend(implicit(SEQUENCE_END, 0, &[]));
        ds.extend(explicit((0x0028, 0x0010), b"US", &[0, 2]));
        let header_len = ds.len();
        ds.extend(explicit(PIXEL_DATA, b"OW", &vec![7; pixels]));
        (ds, header_len)
    }

    #[test]
    fn stops_at_top_level_pixel_data_whatever_the_fragmenting() {
        let (ds, header_len) = object(1000);
        for chunk in [1, 3, 7, 64, ds.len()] {
            let mut s = HeaderScanner::new(true, 1 << 20);
            for piece in ds.chunks(chunk) {
                s.feed(piece);
            }
            assert_eq!(s.total(), ds.len() as u64);
            match s.finish() {
                Finished::Header(h) => {
                    assert_eq!(h.header, ds[..header_len], "chunk {chunk}");
                    assert!(h.has_pixel_data);
                    assert_eq!(h.pixel_bytes, (ds.len() - header_len) as u64);
                }
                other => panic!("chunk {chunk}: {other:?}"),
            }
        }
    }

    #[test]
    fn implicit_vr_and_no_pixel_data() {
        let mut ds = implicit((0x0008, 0x0016), 4, b"1.2\0");
        ds.extend(implicit((0x0040, 0xA730), UNDEFINED, &[]));
        ds.extend(implicit(ITEM, 8, &implicit((0x0040, 0xA040), 0, &[])));
        ds.extend(implicit(SEQUENCE_END, 0, &[]));
        let mut s = HeaderScanner::new(false, 1 << 20);
        s.feed(&ds);
        assert_eq!(
            s.finish(),
            Finished::Header(Scanned {
                header: ds,
                pixel_bytes: 0,
                has_pixel_data: false
            })
        );
    }

    #[test]
    fn malformed_truncated_and_too_large() {
        let mut bad = explicit((0x0008, 0x0018), b"UI", b"1.2\0");
        bad.extend_from_slice(&[0x10, 0x00, 0x10, 0x00, b'p', b'n', 0, 0]);
        let mut s = HeaderScanner::new(true, 1 << 20);
        s.feed(&bad);
        s.feed(&[0; 100]);
        assert_eq!(s.finish(), Finished::Malformed(ScanError::BadVr { at: 12 }));

        let (ds, _) = object(10);
        let mut s = HeaderScanner::new(true, 1 << 20);
        s.feed(&ds[..30]);
        assert!(matches!(
            s.finish(),
            Finished::Malformed(ScanError::Truncated { .. })
        ));

        let (ds, _) = object(10);
        let mut s = HeaderScanner::new(true, 16);
        s.feed(&ds);
        assert_eq!(
            s.finish(),
            Finished::TooLarge {
                total: ds.len() as u64
            }
        );

        let mut s = HeaderScanner::new(false, 1 << 20);
        s.feed(&implicit(ITEM_END, 0, &[]));
        assert_eq!(
            s.finish(),
            Finished::Malformed(ScanError::Misplaced { at: 0 })
        );
    }

    #[test]
    fn random_bytes_never_panic() {
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        for round in 0..500 {
            let len = (round * 7) % 300;
            let bytes: Vec<u8> = (0..len)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    (x & 0xff) as u8
                })
                .collect();
            let mut s = HeaderScanner::new(round % 2 == 0, 1 << 16);
            for piece in bytes.chunks(1 + round % 13) {
                s.feed(piece);
            }
            let _ = s.finish();
        }
    }
}
