//! One MLLP connection's bytes: read frames, write answers.
//!
//! [`MllpConnection`] hides the socket and the read buffer from the
//! listener's per-connection handler (mini-redis `connection.rs` shape): it
//! offers "the next decoded item already buffered", "read more" and "write
//! this answer", each bounded.
//!
//! Invariants:
//! - The read buffer holds at most one frame's worth of bytes (the codec's
//!   limit, `max + 2`) plus one read ([`READ_CHUNK`]); its capacity stays
//!   within twice that.
//! - Every answer is one `write_all` of bytes prepared in full beforehand
//!   (frame and answer together), with a time limit, so a peer that stops
//!   reading cannot pin the task forever.

use std::io;
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::codec::Decoder;

use super::codec::{Decoded, MllpCodec};
use super::tls::MllpStream;

/// How much to make room for before each read. Large enough that a busy
/// pipelining sender's frames come in with few reads, small enough to keep
/// an idle connection cheap.
pub(crate) const READ_CHUNK: usize = 16 * 1024;

/// How long a closing connection keeps reading (and dropping) what the peer
/// still sends after our last answer, so that closing does not reset the
/// connection before the peer has read that answer.
const LINGER: Duration = Duration::from_millis(500);
/// At most this much is read and dropped while lingering.
const LINGER_BYTES: usize = 1 << 20;

/// Why a write did not complete.
#[derive(Debug, thiserror::Error)]
pub(crate) enum WriteError {
    /// The socket failed.
    #[error("write failed: {0}")]
    Io(#[from] io::Error),
    /// The peer did not take the bytes in time (it stopped reading).
    #[error("write did not complete within {0:?}: the peer is not reading")]
    TimedOut(Duration),
}

/// A TCP (or TLS) stream speaking MLLP.
#[derive(Debug)]
pub(crate) struct MllpConnection {
    /// The socket (TCP_NODELAY set by the listener), maybe under TLS.
    stream: MllpStream,
    /// Bytes read and not yet decoded.
    buf: BytesMut,
    /// The frame decoder and its scan state.
    codec: MllpCodec,
    /// Set once the peer closed its sending side.
    eof: bool,
}

impl MllpConnection {
    /// Wrap an accepted stream; frames larger than `max_payload` are
    /// reported as oversize.
    pub(crate) fn new(stream: MllpStream, max_payload: usize) -> MllpConnection {
        MllpConnection {
            stream,
            buf: BytesMut::new(),
            codec: MllpCodec::new(max_payload),
            eof: false,
        }
    }

    /// The next item already in the buffer, without reading. After EOF this
    /// also reports what the end of the stream left behind (a truncated
    /// frame, trailing junk).
    pub(crate) fn next_buffered(&mut self) -> Option<Decoded> {
        // The codec never fails (its error type exists for `Decoder` only).
        let decoded = if self.eof {
            self.codec.decode_eof(&mut self.buf)
        } else {
            self.codec.decode(&mut self.buf)
        };
        decoded.ok().flatten()
    }

    /// Whether the peer has closed its sending side.
    pub(crate) fn is_eof(&self) -> bool {
        self.eof
    }

    /// Read more bytes into the buffer. Returns how many; 0 means the peer
    /// closed its side. Cancel safe (`read_buf` is): if dropped before it
    /// completes, no bytes are lost.
    pub(crate) async fn fill(&mut self) -> io::Result<usize> {
        if self.buf.capacity() - self.buf.len() < READ_CHUNK / 4 {
            self.buf.reserve(READ_CHUNK);
        }
        let n = self.stream.read_buf(&mut self.buf).await?;
        if n == 0 {
            self.eof = true;
        }
        Ok(n)
    }

    /// Write `bytes` in full, within `limit`.
    pub(crate) async fn write_all(
        &mut self,
        bytes: &[u8],
        limit: Duration,
    ) -> Result<(), WriteError> {
        // The flush matters under TLS (records leave the TLS buffer); on
        // plain TCP it is a no-op.
        let write = async {
            self.stream.write_all(bytes).await?;
            self.stream.flush().await
        };
        match tokio::time::timeout(limit, write).await {
            Ok(result) => Ok(result?),
            Err(_) => Err(WriteError::TimedOut(limit)),
        }
    }

    /// Close after a final answer: send FIN, then read and drop what the
    /// peer still sends for a short while, so our answer is not lost to a
    /// reset (closing a socket with unread input makes the kernel send RST,
    /// which can destroy data the peer has not read yet).
    pub(crate) async fn close_gracefully(mut self) {
        let _ = self.stream.shutdown().await;
        if self.eof {
            return;
        }
        let mut scratch = [0u8; 4096];
        let mut dropped = 0usize;
        let _ = tokio::time::timeout(LINGER, async {
            while dropped < LINGER_BYTES {
                match self.stream.read(&mut scratch).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => dropped += n,
                }
            }
        })
        .await;
    }
}
