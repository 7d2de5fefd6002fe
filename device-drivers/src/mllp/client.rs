//! A small MLLP client: send a message, wait for its answer.
//!
//! Used by the tests, the benchmarks and `wardlink simulate hl7`. It owns
//! one TCP connection and its read buffer; every wait is bounded by the
//! client's timeout, so a silent peer cannot hang a test.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::codec::Decoder;

use super::codec::{put_frame, Decoded, MllpCodec};

/// How long a client waits for a connection, a write or an answer unless
/// told otherwise.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
/// The largest answer a client accepts.
const MAX_ANSWER: usize = 1 << 20;

/// Why a client call failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The connection could not be made.
    #[error("cannot connect to {addr}: {source}")]
    Connect {
        /// Where to.
        addr: SocketAddr,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// A read or write failed.
    #[error("mllp connection failed: {0}")]
    Io(#[from] io::Error),
    /// Nothing (or not enough) came within the timeout.
    #[error("no answer within {0:?}")]
    TimedOut(Duration),
    /// The peer closed the connection before answering.
    #[error("the peer closed the connection before answering")]
    Closed,
    /// The answer was larger than the client accepts.
    #[error("the answer is larger than {MAX_ANSWER} bytes")]
    AnswerTooLarge,
}

/// One MLLP connection, client side.
#[derive(Debug)]
pub struct MllpClient {
    /// The socket (TCP_NODELAY on).
    stream: TcpStream,
    /// Bytes read and not yet decoded.
    buf: BytesMut,
    /// Frames the answers.
    codec: MllpCodec,
    /// Limit for each connect, write and wait for an answer.
    timeout: Duration,
    /// Reused for framing outgoing messages.
    out: BytesMut,
    /// Set when the peer closed its side.
    eof: bool,
}

impl MllpClient {
    /// Connect to `addr`, within [`DEFAULT_TIMEOUT`].
    ///
    /// # Errors
    /// [`ClientError::Connect`] or [`ClientError::TimedOut`].
    pub async fn connect(addr: SocketAddr) -> Result<MllpClient, ClientError> {
        let stream = tokio::time::timeout(DEFAULT_TIMEOUT, TcpStream::connect(addr))
            .await
            .map_err(|_| ClientError::TimedOut(DEFAULT_TIMEOUT))?
            .map_err(|source| ClientError::Connect { addr, source })?;
        stream
            .set_nodelay(true)
            .map_err(|source| ClientError::Connect { addr, source })?;
        Ok(MllpClient {
            stream,
            buf: BytesMut::with_capacity(8 * 1024),
            codec: MllpCodec::new(MAX_ANSWER),
            timeout: DEFAULT_TIMEOUT,
            out: BytesMut::with_capacity(4 * 1024),
            eof: false,
        })
    }

    /// Use `timeout` for every later write and wait.
    pub fn with_timeout(mut self, timeout: Duration) -> MllpClient {
        self.timeout = timeout;
        self
    }

    /// The local address of the connection.
    ///
    /// # Errors
    /// The OS error, if the socket has none.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.stream.local_addr()
    }

    /// Frame and send `message`, then wait for the answer (the next HL7
    /// frame; MLLP R2 commit blocks before it are skipped).
    ///
    /// # Errors
    /// I/O errors, [`ClientError::TimedOut`], [`ClientError::Closed`].
    pub async fn send(&mut self, message: &[u8]) -> Result<Bytes, ClientError> {
        self.send_message(message).await?;
        self.read_answer().await
    }

    /// Frame and send `message` without waiting for an answer (pipelining).
    ///
    /// # Errors
    /// I/O errors or [`ClientError::TimedOut`].
    pub async fn send_message(&mut self, message: &[u8]) -> Result<(), ClientError> {
        let mut out = std::mem::take(&mut self.out);
        out.clear();
        put_frame(&mut out, message);
        let result = self.send_raw(&out).await;
        self.out = out;
        result
    }

    /// Send `bytes` as they are (no framing): for garbage, split frames and
    /// other misbehaviour in tests.
    ///
    /// # Errors
    /// I/O errors or [`ClientError::TimedOut`].
    pub async fn send_raw(&mut self, bytes: &[u8]) -> Result<(), ClientError> {
        tokio::time::timeout(self.timeout, self.stream.write_all(bytes))
            .await
            .map_err(|_| ClientError::TimedOut(self.timeout))??;
        Ok(())
    }

    /// Wait for the next HL7 answer, skipping commit blocks and junk.
    ///
    /// # Errors
    /// I/O errors, [`ClientError::TimedOut`], [`ClientError::Closed`].
    pub async fn read_answer(&mut self) -> Result<Bytes, ClientError> {
        loop {
            match self.read_decoded().await? {
                Some(Decoded::Frame(answer)) => return Ok(answer),
                Some(Decoded::Oversize { .. }) => return Err(ClientError::AnswerTooLarge),
                Some(_) => continue,
                None => return Err(ClientError::Closed),
            }
        }
    }

    /// Wait for the next decoded item from the peer (frame, commit block,
    /// discard report). `None` once the peer closed the connection and
    /// everything buffered has been returned.
    ///
    /// # Errors
    /// I/O errors or [`ClientError::TimedOut`].
    pub async fn read_decoded(&mut self) -> Result<Option<Decoded>, ClientError> {
        let deadline = tokio::time::Instant::now() + self.timeout;
        loop {
            let decoded = if self.eof {
                self.codec.decode_eof(&mut self.buf)?
            } else {
                self.codec.decode(&mut self.buf)?
            };
            if let Some(decoded) = decoded {
                return Ok(Some(decoded));
            }
            if self.eof {
                return Ok(None);
            }
            self.buf.reserve(4 * 1024);
            let n = tokio::time::timeout_at(deadline, self.stream.read_buf(&mut self.buf))
                .await
                .map_err(|_| ClientError::TimedOut(self.timeout))??;
            if n == 0 {
                self.eof = true;
            }
        }
    }

    /// Wait until the peer closes the connection, dropping whatever it
    /// still sends. Returns what it sent meanwhile, decoded.
    ///
    /// # Errors
    /// I/O errors or [`ClientError::TimedOut`] if it stays open.
    pub async fn wait_closed(&mut self) -> Result<Vec<Decoded>, ClientError> {
        let mut seen = Vec::new();
        loop {
            match self.read_decoded().await {
                Ok(Some(d)) => seen.push(d),
                Ok(None) => return Ok(seen),
                // A reset is a close too.
                Err(ClientError::Io(e)) if e.kind() == io::ErrorKind::ConnectionReset => {
                    return Ok(seen)
                }
                Err(e) => return Err(e),
            }
        }
    }
}
