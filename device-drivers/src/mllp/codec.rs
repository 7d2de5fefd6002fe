//! MLLP framing: a bounded, resynchronising frame decoder.
//!
//! [`MllpCodec`] owns the byte stream → frame step of an MLLP connection
//! (hl7v2-mllp.md §1, "robust receiver algorithm"). It is pure: it sees only
//! a `BytesMut` and never does I/O, so tests, fuzzers and the simulator
//! use it alone.
//!
//! Invariants:
//! - **Never buffers more than `max + 2` bytes of one frame** (start block,
//!   `max` payload bytes, end block). Past that it reports
//!   [`Decoded::Oversize`] once and then discards up to the frame's end,
//!   like tokio-util's `LinesCodec`. Junk before a start block and the tail
//!   of an oversize frame are discarded as they arrive, never kept.
//! - **Scanning is linear**: the codec remembers how far it has looked
//!   (`next_index`), so a frame arriving in many reads is scanned once.
//! - **Zero copy**: a frame is `split_to().freeze()` of the read buffer.
//! - **"Need more bytes" is `Ok(None)`**; the codec itself never fails (its
//!   error type is `io::Error` only because `Decoder` requires
//!   `From<io::Error>`). Everything odd about the stream is a value
//!   ([`Decoded::Discarded`], [`Decoded::Oversize`]) the caller logs and
//!   answers.
//!
//! Design — where a frame ends. MLLP content never contains `0x0B` or
//! `0x1C` (MLLP R2 content is `0x20..=0xFF` plus CR; R1 senders in practice
//! agree), so the frame ends at the first `0x1C`. The CR that should follow
//! is consumed as filler between frames, which makes "`0x1C` without `0x0D`"
//! (followed by the next `0x0B`, or by nothing at all until EOF) work with
//! no idle timer, and a stray LF after the CR is filler too. Worked through:
//!
//! ```text
//! 0B M S H … 1C 0D 0A 00 0B M S H … 1C     two frames; 0D 0A 00 is filler
//! 6C 6F 67 0A 0B M S H … 1C 0D             Discarded{4, BeforeStartBlock}, frame
//! 0B M S H … 0B M S H … 1C 0D              Discarded{n, MissingEndBlock}, frame
//! 0B 06 1C 0D / 0B 15 1C 0D                CommitAck / CommitNak (MLLP R2)
//! ```
//!
//! Filler (NUL, CR, LF, space, tab) between frames is dropped silently
//! (hl7v2-mllp.md §4: "NULs between them"); a run of skipped bytes with
//! anything else in it is reported once, when the next start block (or EOF)
//! shows where it ends.

use std::io;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use tokio_util::codec::{Decoder, Encoder};

/// Start block (ASCII VT).
pub const START_BLOCK: u8 = 0x0B;
/// End block (ASCII FS).
pub const END_BLOCK: u8 = 0x1C;
/// Carriage return; follows the end block.
pub const CARRIAGE_RETURN: u8 = 0x0D;
/// MLLP R2 positive commit acknowledgement payload (ASCII ACK).
pub const COMMIT_ACK: u8 = 0x06;
/// MLLP R2 negative commit acknowledgement payload (ASCII NAK).
pub const COMMIT_NAK: u8 = 0x15;

/// How many bytes a framed message takes beyond its payload.
pub const FRAME_OVERHEAD: usize = 3;

/// How much of an oversize frame's payload [`Decoded::Oversize`] keeps:
/// enough for any sane MSH segment.
pub const OVERSIZE_HEAD: usize = 4096;

/// One thing the decoder found in the stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decoded {
    /// A complete message: the bytes between the start and end blocks,
    /// exactly as received.
    Frame(Bytes),
    /// An MLLP R2 positive commit acknowledgement (`0B 06 1C 0D`) from the
    /// peer.
    CommitAck,
    /// An MLLP R2 negative commit acknowledgement (`0B 15 1C 0D`) from the
    /// peer.
    CommitNak,
    /// Bytes dropped without a message coming of them.
    Discarded {
        /// How many bytes.
        bytes: usize,
        /// Why.
        why: DiscardReason,
    },
    /// A frame grew past the maximum before its end block. Reported once per
    /// frame, as soon as the limit is crossed; its remaining bytes are
    /// discarded up to its end block (or the next start block).
    Oversize {
        /// The configured maximum payload size in bytes.
        max: usize,
        /// The first bytes of the payload (at most [`OVERSIZE_HEAD`]), so
        /// the answer can still carry the message's MSH-10 in MSA-2.
        head: Bytes,
    },
}

/// Why bytes were discarded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DiscardReason {
    /// Junk before a start block (log text, a sender's banner, ...;
    /// Mirth #423, #249).
    BeforeStartBlock,
    /// A new start block came before the end block of the frame in progress
    /// (hl7v2-mllp.md §1 step 6): the partial frame is dropped.
    MissingEndBlock,
    /// The stream ended inside a frame: without its end block the message
    /// may be cut short, so it is not taken.
    TruncatedAtEof,
    /// A frame with nothing between its start and end blocks.
    EmptyFrame,
}

impl DiscardReason {
    /// A short stable name, for logs.
    pub fn as_str(self) -> &'static str {
        match self {
            DiscardReason::BeforeStartBlock => "before_start_block",
            DiscardReason::MissingEndBlock => "missing_end_block",
            DiscardReason::TruncatedAtEof => "truncated_at_eof",
            DiscardReason::EmptyFrame => "empty_frame",
        }
    }
}

/// Where the decoder is in the stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Between frames: looking for a start block. `buf` holds no frame bytes.
    Between,
    /// Inside a frame: `buf[0]` is its start block.
    InFrame,
    /// Inside a frame already reported oversize: dropping bytes up to its end.
    Discarding,
}

/// The MLLP frame decoder (and encoder, for clients and tests).
#[derive(Debug, Clone)]
pub struct MllpCodec {
    /// Largest payload accepted, in bytes.
    max_payload: usize,
    /// Where we are.
    state: State,
    /// In `InFrame`: the next index of `buf` to examine. Everything before
    /// it is known to hold neither a start nor an end block (the start
    /// block at 0 aside).
    next_index: usize,
    /// Bytes skipped between frames since the last report.
    skipped: usize,
    /// Whether the skipped run held anything but filler.
    skipped_junk: bool,
}

/// Filler between frames: dropped silently.
fn is_filler(b: u8) -> bool {
    matches!(b, 0 | b'\r' | b'\n' | b' ' | b'\t')
}

impl MllpCodec {
    /// A decoder that accepts payloads of up to `max_payload` bytes.
    pub fn new(max_payload: usize) -> MllpCodec {
        MllpCodec {
            max_payload,
            state: State::Between,
            next_index: 0,
            skipped: 0,
            skipped_junk: false,
        }
    }

    /// The largest payload accepted, in bytes.
    pub fn max_payload(&self) -> usize {
        self.max_payload
    }

    /// Is the decoder in the middle of a frame (bytes received, no end block
    /// yet)?
    pub fn in_frame(&self) -> bool {
        self.state != State::Between
    }

    /// Note skipped bytes between frames.
    fn skip(&mut self, skipped: &[u8]) {
        self.skipped += skipped.len();
        if !self.skipped_junk {
            self.skipped_junk = skipped.iter().any(|&b| !is_filler(b));
        }
    }

    /// Take the report of skipped bytes, if the run held any junk.
    fn take_skipped(&mut self) -> Option<Decoded> {
        let bytes = std::mem::take(&mut self.skipped);
        let junk = std::mem::take(&mut self.skipped_junk);
        junk.then_some(Decoded::Discarded {
            bytes,
            why: DiscardReason::BeforeStartBlock,
        })
    }

    /// Split a complete frame off the front of `buf`: start block at 0, end
    /// block at `end`.
    fn take_frame(&mut self, buf: &mut BytesMut, end: usize) -> Decoded {
        self.state = State::Between;
        self.next_index = 0;
        let mut frame = buf.split_to(end + 1);
        frame.advance(1);
        frame.truncate(end - 1);
        match &frame[..] {
            [] => Decoded::Discarded {
                bytes: 2,
                why: DiscardReason::EmptyFrame,
            },
            [COMMIT_ACK] => Decoded::CommitAck,
            [COMMIT_NAK] => Decoded::CommitNak,
            _ => Decoded::Frame(frame.freeze()),
        }
    }
}

impl Decoder for MllpCodec {
    type Item = Decoded;
    type Error = io::Error;

    fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Decoded>, io::Error> {
        loop {
            match self.state {
                State::Between => match memchr::memchr(START_BLOCK, buf) {
                    Some(at) => {
                        self.skip(&buf[..at]);
                        buf.advance(at);
                        self.state = State::InFrame;
                        self.next_index = 1;
                        if let Some(report) = self.take_skipped() {
                            return Ok(Some(report));
                        }
                    }
                    None => {
                        self.skip(buf);
                        buf.clear();
                        return Ok(None);
                    }
                },
                State::InFrame => {
                    // Look no further than one byte past the largest frame:
                    // start block + max payload + end block.
                    let limit = buf.len().min(self.max_payload.saturating_add(2));
                    let found =
                        memchr::memchr2(START_BLOCK, END_BLOCK, &buf[self.next_index..limit])
                            .map(|i| i + self.next_index);
                    match found {
                        Some(end) if buf[end] == END_BLOCK => {
                            return Ok(Some(self.take_frame(buf, end)));
                        }
                        Some(next_start) => {
                            // §1 step 6: a new start block before the end
                            // block. Drop the partial frame; the new one
                            // starts here.
                            buf.advance(next_start);
                            self.next_index = 1;
                            return Ok(Some(Decoded::Discarded {
                                bytes: next_start,
                                why: DiscardReason::MissingEndBlock,
                            }));
                        }
                        None if limit < buf.len()
                            || limit == self.max_payload.saturating_add(2) =>
                        {
                            // `limit` bytes hold the start block and more than
                            // `max` payload bytes with no end block: oversize.
                            // Report once, keep only the head (§1 step 5).
                            let mut head = buf.split_to(limit);
                            head.advance(1);
                            head.truncate(OVERSIZE_HEAD);
                            self.state = State::Discarding;
                            self.next_index = 0;
                            return Ok(Some(Decoded::Oversize {
                                max: self.max_payload,
                                head: head.freeze(),
                            }));
                        }
                        None => {
                            self.next_index = limit;
                            return Ok(None);
                        }
                    }
                }
                State::Discarding => match memchr::memchr2(START_BLOCK, END_BLOCK, buf) {
                    Some(at) if buf[at] == END_BLOCK => {
                        buf.advance(at + 1);
                        self.state = State::Between;
                    }
                    Some(at) => {
                        // A new frame begins: the sender gave up on the big one.
                        buf.advance(at);
                        self.state = State::InFrame;
                        self.next_index = 1;
                    }
                    None => {
                        buf.clear();
                        return Ok(None);
                    }
                },
            }
        }
    }

    fn decode_eof(&mut self, buf: &mut BytesMut) -> Result<Option<Decoded>, io::Error> {
        if let Some(decoded) = self.decode(buf)? {
            return Ok(Some(decoded));
        }
        // `decode` left only a partial frame (or nothing) in `buf`.
        match self.state {
            State::InFrame => {
                let bytes = buf.len();
                buf.clear();
                self.state = State::Between;
                self.next_index = 0;
                Ok(Some(Decoded::Discarded {
                    bytes,
                    why: DiscardReason::TruncatedAtEof,
                }))
            }
            State::Discarding => {
                buf.clear();
                self.state = State::Between;
                Ok(None)
            }
            State::Between => Ok(self.take_skipped()),
        }
    }
}

/// Append `payload` as one MLLP frame to `out`.
pub fn put_frame(out: &mut BytesMut, payload: &[u8]) {
    out.reserve(payload.len() + FRAME_OVERHEAD);
    out.put_u8(START_BLOCK);
    out.put_slice(payload);
    out.put_slice(&[END_BLOCK, CARRIAGE_RETURN]);
}

impl Encoder<&[u8]> for MllpCodec {
    type Error = io::Error;

    /// Frame one message.
    fn encode(&mut self, payload: &[u8], out: &mut BytesMut) -> Result<(), io::Error> {
        put_frame(out, payload);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    //! The decoder under every split of every fixture, and its limits.
    #![expect(clippy::unwrap_used, reason = "tests fail loudly on a wrong shape")]

    use super::*;

    const MAX: usize = 64;

    fn frame(payload: &[u8]) -> Vec<u8> {
        let mut v = vec![START_BLOCK];
        v.extend_from_slice(payload);
        v.extend_from_slice(&[END_BLOCK, CARRIAGE_RETURN]);
        v
    }

    fn f(payload: &[u8]) -> Decoded {
        Decoded::Frame(Bytes::copy_from_slice(payload))
    }

    fn oversize(head: &[u8]) -> Decoded {
        Decoded::Oversize {
            max: MAX,
            head: Bytes::copy_from_slice(head),
        }
    }

    /// Feed `chunks` one after another, decoding after each, then EOF.
    /// Checks on the way that the buffer never holds more than a frame.
    fn run(chunks: &[&[u8]], max: usize) -> Vec<Decoded> {
        let mut codec = MllpCodec::new(max);
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        for chunk in chunks {
            buf.extend_from_slice(chunk);
            while let Some(d) = codec.decode(&mut buf).unwrap() {
                out.push(d);
            }
            assert!(
                buf.len() <= max + 2,
                "buffer holds {} bytes, max {max}",
                buf.len()
            );
        }
        while let Some(d) = codec.decode_eof(&mut buf).unwrap() {
            out.push(d);
        }
        assert!(buf.is_empty());
        out
    }

    /// Junk reports count bytes, which depend on where a run is cut. Merge
    /// adjacent reports of the same reason so every split compares equal.
    fn merged(decoded: Vec<Decoded>) -> Vec<Decoded> {
        let mut out: Vec<Decoded> = Vec::new();
        for d in decoded {
            if let (
                Some(Decoded::Discarded { bytes, why }),
                Decoded::Discarded {
                    bytes: more,
                    why: why2,
                },
            ) = (out.last_mut(), &d)
            {
                if *why == *why2 && *why == DiscardReason::BeforeStartBlock {
                    *bytes += more;
                    continue;
                }
            }
            out.push(d);
        }
        out
    }

    /// ripgrep's testutil idea: one expectation through every code path —
    /// whole, byte by byte, and split in two at every offset.
    fn check_all_splits(input: &[u8], expected: &[Decoded]) {
        let whole = merged(run(&[input], MAX));
        assert_eq!(whole, expected, "whole input");
        let bytes: Vec<&[u8]> = input.chunks(1).collect();
        assert_eq!(merged(run(&bytes, MAX)), expected, "byte by byte");
        for at in 0..=input.len() {
            let (a, b) = input.split_at(at);
            assert_eq!(merged(run(&[a, b], MAX)), expected, "split at {at}");
        }
    }

    #[test]
    fn single_frame() {
        check_all_splits(
            &frame(b"MSH|^~\\&|A\rPID|1\r"),
            &[f(b"MSH|^~\\&|A\rPID|1\r")],
        );
    }

    #[test]
    fn coalesced_frames() {
        let mut input = frame(b"MSH|1");
        input.extend(frame(b"MSH|2"));
        input.extend(frame(b"MSH|3"));
        check_all_splits(&input, &[f(b"MSH|1"), f(b"MSH|2"), f(b"MSH|3")]);
    }

    #[test]
    fn leading_junk_is_reported_once() {
        let mut input = b"log: connected\n".to_vec();
        input.extend(frame(b"MSH|1"));
        check_all_splits(
            &input,
            &[
                Decoded::Discarded {
                    bytes: 15,
                    why: DiscardReason::BeforeStartBlock,
                },
                f(b"MSH|1"),
            ],
        );
        // Junk with no frame after it is reported at EOF.
        check_all_splits(
            b"garbage",
            &[Decoded::Discarded {
                bytes: 7,
                why: DiscardReason::BeforeStartBlock,
            }],
        );
    }

    #[test]
    fn end_block_without_carriage_return() {
        let mut input = vec![START_BLOCK];
        input.extend_from_slice(b"MSH|1");
        input.push(END_BLOCK);
        input.extend(frame(b"MSH|2"));
        input.push(START_BLOCK);
        input.extend_from_slice(b"MSH|3");
        input.push(END_BLOCK); // and EOF
        check_all_splits(&input, &[f(b"MSH|1"), f(b"MSH|2"), f(b"MSH|3")]);
    }

    #[test]
    fn line_feed_after_carriage_return_and_nuls_between_frames() {
        let mut input = frame(b"MSH|1");
        input.push(b'\n');
        input.extend_from_slice(&[0, 0, 0]);
        input.extend(frame(b"MSH|2"));
        input.extend_from_slice(b"\r\n");
        check_all_splits(&input, &[f(b"MSH|1"), f(b"MSH|2")]);
    }

    #[test]
    fn new_start_block_drops_the_partial_frame() {
        let mut input = vec![START_BLOCK];
        input.extend_from_slice(b"MSH|half");
        input.extend(frame(b"MSH|2"));
        check_all_splits(
            &input,
            &[
                Decoded::Discarded {
                    bytes: 9,
                    why: DiscardReason::MissingEndBlock,
                },
                f(b"MSH|2"),
            ],
        );
    }

    #[test]
    fn truncated_frame_at_eof() {
        let mut input = frame(b"MSH|1");
        input.push(START_BLOCK);
        input.extend_from_slice(b"MSH|cut");
        check_all_splits(
            &input,
            &[
                f(b"MSH|1"),
                Decoded::Discarded {
                    bytes: 8,
                    why: DiscardReason::TruncatedAtEof,
                },
            ],
        );
    }

    #[test]
    fn commit_blocks_and_empty_frames() {
        let mut input = frame(&[COMMIT_ACK]);
        input.extend(frame(&[COMMIT_NAK]));
        input.extend(frame(b""));
        input.extend(frame(b"MSH|1"));
        check_all_splits(
            &input,
            &[
                Decoded::CommitAck,
                Decoded::CommitNak,
                Decoded::Discarded {
                    bytes: 2,
                    why: DiscardReason::EmptyFrame,
                },
                f(b"MSH|1"),
            ],
        );
    }

    #[test]
    fn frame_of_exactly_max_bytes_is_accepted() {
        let payload = vec![b'x'; MAX];
        check_all_splits(&frame(&payload), &[f(&payload)]);
    }

    #[test]
    fn oversize_is_reported_once_then_the_stream_resyncs() {
        let big = vec![b'x'; MAX * 5 + 3];
        let mut input = frame(&big);
        input.extend(frame(b"MSH|after"));
        check_all_splits(&input, &[oversize(&big[..=MAX]), f(b"MSH|after")]);
        // One byte over the limit is enough.
        let mut input = frame(&[b'x'; MAX + 1]);
        input.extend(frame(b"MSH|after"));
        check_all_splits(&input, &[oversize(&[b'x'; MAX + 1]), f(b"MSH|after")]);
        // A new start block inside the oversize frame starts a new frame.
        let mut input = vec![START_BLOCK];
        input.extend(vec![b'y'; MAX * 2]);
        input.extend(frame(b"MSH|next"));
        check_all_splits(&input, &[oversize(&[b'y'; MAX + 1]), f(b"MSH|next")]);
    }

    #[test]
    fn oversize_stream_never_buffers_more_than_a_frame() {
        // A sender streaming 1 MiB without an end block, read the way the
        // listener reads: into a buffer that never holds more than the
        // frame limit plus one read.
        const READ: usize = 512;
        let max = 4096;
        let slack = READ + FRAME_OVERHEAD;
        let mut codec = MllpCodec::new(max);
        let mut buf = BytesMut::with_capacity(READ);
        let mut reports = Vec::new();
        let mut stream = vec![START_BLOCK];
        stream.extend(std::iter::repeat_n(b'z', 1 << 20));
        stream.extend(frame(b"MSH|ok"));
        for chunk in stream.chunks(READ) {
            buf.reserve(READ);
            buf.put_slice(chunk);
            while let Some(d) = codec.decode(&mut buf).unwrap() {
                reports.push(d);
            }
            assert!(buf.len() <= max + 2, "buffered {}", buf.len());
            assert!(
                buf.capacity() < 2 * (max + slack),
                "capacity {} for max {max}",
                buf.capacity()
            );
        }
        assert_eq!(
            reports,
            vec![
                Decoded::Oversize {
                    max,
                    head: Bytes::from(vec![b'z'; max.min(OVERSIZE_HEAD)]),
                },
                f(b"MSH|ok")
            ]
        );
    }

    #[test]
    fn random_streams_keep_the_invariants() {
        // A poor man's fuzzer: streams built from the interesting bytes,
        // fed whole and in random pieces. Never panics, never buffers more
        // than a frame, frames never hold framing bytes or exceed the max,
        // and the result does not depend on how the stream was cut.
        let alphabet = [
            START_BLOCK,
            END_BLOCK,
            b'\r',
            b'\n',
            0,
            b'M',
            b'|',
            b'x',
            COMMIT_ACK,
        ];
        let mut state = 0x2545_F491_4F6C_DD1Du64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for _ in 0..300 {
            let len = (next() % 400) as usize;
            let stream: Vec<u8> = (0..len)
                .map(|_| alphabet[(next() % alphabet.len() as u64) as usize])
                .collect();
            let max = 1 + (next() % 40) as usize;
            let whole = merged(run(&[&stream], max));
            let mut chunks = Vec::new();
            let mut rest = &stream[..];
            while !rest.is_empty() {
                let n = 1 + (next() % 17) as usize;
                let (a, b) = rest.split_at(n.min(rest.len()));
                chunks.push(a);
                rest = b;
            }
            assert_eq!(
                merged(run(&chunks, max)),
                whole,
                "{}",
                stream.escape_ascii()
            );
            for d in &whole {
                if let Decoded::Frame(b) = d {
                    assert!(b.len() <= max);
                    assert!(!b.contains(&START_BLOCK) && !b.contains(&END_BLOCK));
                }
            }
        }
    }

    #[test]
    fn scan_position_is_remembered() {
        // A frame arriving in pieces is scanned once: after a partial
        // decode the codec resumes where it stopped.
        let mut codec = MllpCodec::new(1 << 20);
        let mut buf = BytesMut::from(&[START_BLOCK][..]);
        buf.extend_from_slice(&[b'a'; 1000]);
        assert_eq!(codec.decode(&mut buf).unwrap(), None);
        assert_eq!(codec.next_index, 1001);
        buf.extend_from_slice(&[b'b'; 10]);
        assert_eq!(codec.decode(&mut buf).unwrap(), None);
        assert_eq!(codec.next_index, 1011);
        buf.extend_from_slice(&[END_BLOCK, CARRIAGE_RETURN]);
        assert!(
            matches!(codec.decode(&mut buf).unwrap(), Some(Decoded::Frame(b)) if b.len() == 1010)
        );
    }

    #[test]
    fn frames_share_the_read_buffer() {
        let mut codec = MllpCodec::new(MAX);
        let mut buf = BytesMut::from(&frame(b"MSH|zero-copy")[..]);
        let base = buf.as_ptr() as usize;
        let Some(Decoded::Frame(bytes)) = codec.decode(&mut buf).unwrap() else {
            panic!("no frame");
        };
        assert_eq!(bytes.as_ptr() as usize, base + 1);
    }

    #[test]
    fn encoder_round_trips() {
        let mut codec = MllpCodec::new(MAX);
        let mut out = BytesMut::new();
        codec.encode(&b"MSH|a"[..], &mut out).unwrap();
        codec.encode(&b"MSH|b"[..], &mut out).unwrap();
        assert_eq!(&out[..], &[frame(b"MSH|a"), frame(b"MSH|b")].concat()[..]);
        assert_eq!(run(&[&out], MAX), vec![f(b"MSH|a"), f(b"MSH|b")]);
    }
}
