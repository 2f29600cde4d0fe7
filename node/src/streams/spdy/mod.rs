//! SPDY/3.1 as Kubernetes' streaming uses it (kubectl's exec, attach and port-forward through Go's spdystream):
//! the server's side of a session over an upgraded connection. No maintained Rust crate speaks SPDY, so this is
//! the small part of it those clients need: streams opened by the client (answered at once), data both ways,
//! half-closes, resets, pings and the end of the session. Flow-control windows are not enforced (spdystream
//! does not enforce them either); backpressure is the connection's.

pub mod frame;

use bytes::{Bytes, BytesMut};
use frame::{Codec, Frame, Headers};
use std::collections::HashSet;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;

/// The most bytes one data frame carries from this side.
const CHUNK: usize = 32 << 10;
/// The most streams a client may open in one session.
const MAX_STREAMS: usize = 1024;

/// What happens in a session, in order.
#[derive(Debug)]
pub enum Event {
    /// The client opened a stream (already answered).
    Opened {
        /// Its id.
        stream: u32,
        /// Its headers.
        headers: Headers,
    },
    /// Bytes on a stream.
    Data {
        /// The stream.
        stream: u32,
        /// The bytes.
        data: Bytes,
    },
    /// The client's half of a stream ended (FIN) or the client reset it.
    Closed {
        /// The stream.
        stream: u32,
    },
}

/// Sends on a session's streams; cheap to clone.
#[derive(Clone)]
pub struct Sender {
    frames: mpsc::Sender<Frame>,
}

impl Sender {
    /// Sends bytes on a stream; false once the session is gone.
    pub async fn data(&self, stream: u32, data: &[u8]) -> bool {
        for chunk in data.chunks(CHUNK) {
            let frame = Frame::Data {
                stream,
                fin: false,
                data: Bytes::copy_from_slice(chunk),
            };
            if self.frames.send(frame).await.is_err() {
                return false;
            }
        }
        true
    }

    /// Ends this side of a stream.
    pub async fn finish(&self, stream: u32) {
        let frame = Frame::Data {
            stream,
            fin: true,
            data: Bytes::new(),
        };
        let _ = self.frames.send(frame).await;
    }

    /// Abandons a stream (RST_STREAM with CANCEL).
    pub async fn reset(&self, stream: u32) {
        let _ = self
            .frames
            .send(Frame::RstStream { stream, status: 5 })
            .await;
    }
}

/// A session's events, and the sender for its streams. The session ends when both are dropped: what was sent
/// is written out, then a GOAWAY, then the connection is shut.
pub fn serve<T>(connection: T) -> (mpsc::Receiver<Event>, Sender)
where
    T: AsyncRead + AsyncWrite + Send + 'static,
{
    let (mut read, mut write) = tokio::io::split(connection);
    let (frames, mut outgoing) = mpsc::channel::<Frame>(64);
    let (events_in, events) = mpsc::channel::<Event>(64);
    // The reader answers streams and pings through a weak handle: the session ends when the handler drops
    // its senders, whatever the client does.
    let replies = frames.downgrade();
    let reader = tokio::spawn(async move {
        if let Err(error) = read_frames(&mut read, &replies, &events_in).await {
            tracing::info!(%error, "a SPDY session ended on bad input");
        }
    });
    // One codec per direction: each direction's header blocks are one zlib stream of its own.
    tokio::spawn(async move {
        let mut codec = Codec::default();
        let mut buffer = BytesMut::new();
        let mut last = 0;
        while let Some(first) = outgoing.recv().await {
            // Write what is queued as one batch.
            let mut next = Some(first);
            while let Some(frame) = next {
                if let Frame::SynReply { stream, .. } = frame {
                    last = last.max(stream);
                }
                codec.encode(&frame, &mut buffer);
                next = outgoing.try_recv().ok();
            }
            if write.write_all(&buffer).await.is_err() {
                reader.abort();
                return;
            }
            buffer.clear();
        }
        codec.encode(&Frame::GoAway { last_stream: last }, &mut buffer);
        let _ = write.write_all(&buffer).await;
        let _ = write.shutdown().await;
        reader.abort();
    });
    (events, Sender { frames })
}

/// Reads the client's frames until it goes, answering new streams and pings, and reports events.
async fn read_frames(
    read: &mut (impl AsyncRead + Unpin),
    frames: &mpsc::WeakSender<Frame>,
    events: &mpsc::Sender<Event>,
) -> Result<(), frame::FrameError> {
    // Sends a frame while the session's handler still holds its sender; false once it is gone.
    let reply = |frame: Frame| async move {
        match frames.upgrade() {
            Some(frames) => frames.send(frame).await.is_ok(),
            None => false,
        }
    };
    let mut codec = Codec::default();
    let mut buffer = BytesMut::with_capacity(CHUNK);
    let mut open = HashSet::new();
    loop {
        while let Some(frame) = codec.decode(&mut buffer)? {
            let event = match frame {
                Frame::SynStream {
                    stream,
                    fin,
                    headers,
                } => {
                    if open.len() >= MAX_STREAMS || stream % 2 == 0 || !open.insert(stream) {
                        // A server's id, a reused id or one stream too many: refused.
                        if !reply(Frame::RstStream { stream, status: 1 }).await {
                            return Ok(());
                        }
                        continue;
                    }
                    let answer = Frame::SynReply {
                        stream,
                        headers: Vec::new(),
                    };
                    if !reply(answer).await {
                        return Ok(());
                    }
                    if events
                        .send(Event::Opened { stream, headers })
                        .await
                        .is_err()
                    {
                        return Ok(());
                    }
                    if !fin {
                        continue;
                    }
                    open.remove(&stream);
                    Event::Closed { stream }
                }
                Frame::Data { stream, fin, data } if open.contains(&stream) => {
                    if !data.is_empty() && events.send(Event::Data { stream, data }).await.is_err()
                    {
                        return Ok(());
                    }
                    if !fin {
                        continue;
                    }
                    open.remove(&stream);
                    Event::Closed { stream }
                }
                Frame::RstStream { stream, .. } if open.remove(&stream) => Event::Closed { stream },
                Frame::Ping { id } => {
                    if !reply(Frame::Ping { id }).await {
                        return Ok(());
                    }
                    continue;
                }
                Frame::GoAway { .. } => return Ok(()),
                _ => continue,
            };
            if events.send(event).await.is_err() {
                return Ok(());
            }
        }
        match read.read_buf(&mut buffer).await {
            Ok(0) | Err(_) => return Ok(()),
            Ok(_) => {}
        }
    }
}
