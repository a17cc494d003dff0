//! Block streams (`PROTOCOL.md` section 5): one unidirectional stream per
//! block, a 13-byte header, exactly `length` bytes, FIN.
//!
//! One task per connection ([`run`]) accepts the peer's block streams and
//! the owner's block commands. Each stream, either way, gets a task of its
//! own, so a slow block never holds up another; QUIC's stream limit
//! (`max_concurrent_uni_streams`) bounds how many the peer can open.
//!
//! Invariants:
//! - A block reaches the owner only with a header that passed
//!   `decode_block_header` (against the geometry known when it arrived)
//!   and exactly `length` bytes followed by FIN. A stream that ends inside
//!   the header or the body, or carries more, closes the connection with
//!   `ProtocolViolation`. A stream the uploader resets is dropped quietly.
//! - A receive buffer grows with the bytes that arrive, never ahead of
//!   them, so a header that claims 1 MiB and stalls costs nothing.
//! - Cancelling a block we send resets its stream with `Cancelled`;
//!   refusing one we receive stops it with `Unwanted`. Either is a no-op
//!   once the block is done.
//! - A block we send is *delivered* once the peer has acknowledged every
//!   byte of its stream, and only then (not when quinn has buffered it:
//!   with a 32 MiB send window that can be a second or more before the
//!   bytes leave). Each `Send` says which it was on its own reply channel.
//! - Block bodies are charged to the connection's [`Limiter`]: an upload
//!   before each slice is handed to quinn, so a limited peer's bytes leave
//!   at the limit; a download as it is read, so a limited reader stops
//!   reading and QUIC flow control slows the sender. With no limit set a
//!   block goes out in one write, as it would without a limiter.

use std::collections::HashMap;

use bytes::Bytes;
use quinn::VarInt;
use shoal_proto::wire::{
    decode_block_header, encode_block_header, BlockRef, Geometry, StreamCode, BLOCK_HEADER_LEN,
};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::connection::Ctx;
use super::error::Violation;
use super::TransportEvent;
use crate::ratelimit::Limiter;

/// First allocation for a block being received; it doubles from there as
/// bytes arrive, up to the block's length.
const FIRST_BUFFER: usize = 64 * 1024;

/// Bytes charged and written at once when uploads are limited: small
/// against a limit's burst, so the limit is smooth, and large enough that
/// charging costs nothing at gigabit rates.
const UPLOAD_SLICE: usize = 64 * 1024;

/// Received bytes gathered before they are charged: one lock per this many
/// bytes instead of one per packet.
const DOWNLOAD_BATCH: usize = 16 * 1024;

/// What the owner asks of the block task.
#[derive(Debug)]
pub(crate) enum BlockCommand {
    /// Send a block (its length already checked).
    Send {
        /// The header.
        block: BlockRef,
        /// Exactly `block.length` bytes.
        data: Bytes,
        /// True once the peer acknowledged the whole stream; false if it
        /// was cancelled, refused or the connection is gone.
        delivered: oneshot::Sender<bool>,
    },
    /// Reset the stream sending this block.
    Cancel(BlockRef),
    /// Stop the stream receiving this block.
    Refuse(BlockRef),
}

/// Streams in progress, by block; the sequence number tells a finished
/// stream from a later one for the same block.
#[derive(Debug, Default)]
struct InFlight {
    next: u64,
    by_block: HashMap<BlockRef, (u64, CancellationToken)>,
}

impl InFlight {
    fn start(&mut self, block: BlockRef) -> (u64, CancellationToken) {
        self.next += 1;
        let token = CancellationToken::new();
        self.by_block.insert(block, (self.next, token.clone()));
        (self.next, token)
    }

    fn done(&mut self, block: BlockRef, seq: u64) {
        if self.by_block.get(&block).is_some_and(|(s, _)| *s == seq) {
            self.by_block.remove(&block);
        }
    }

    fn cancel(&mut self, block: &BlockRef) {
        if let Some((_, token)) = self.by_block.remove(block) {
            token.cancel();
        }
    }
}

/// The block task of one connection.
pub(crate) async fn run(
    ctx: Ctx,
    conn: quinn::Connection,
    mut commands: mpsc::Receiver<BlockCommand>,
    geometry: watch::Receiver<Option<Geometry>>,
    stop: CancellationToken,
    limiter: Limiter,
) {
    let mut sending = InFlight::default();
    let mut receiving = InFlight::default();
    let mut senders: JoinSet<(BlockRef, u64)> = JoinSet::new();
    let mut headers: JoinSet<Result<Option<(quinn::RecvStream, BlockRef)>, Violation>> =
        JoinSet::new();
    let mut bodies: JoinSet<(BlockRef, u64)> = JoinSet::new();
    loop {
        tokio::select! {
            command = commands.recv() => match command {
                Some(BlockCommand::Send { block, data, delivered }) => {
                    let (seq, token) = sending.start(block);
                    let conn = conn.clone();
                    let limiter = limiter.clone();
                    senders.spawn(async move {
                        let ok = send_block(conn, block, data, token, limiter).await;
                        let _ = delivered.send(ok);
                        (block, seq)
                    });
                }
                Some(BlockCommand::Cancel(block)) => sending.cancel(&block),
                Some(BlockCommand::Refuse(block)) => receiving.cancel(&block),
                // The handle is gone, and with it this task in a moment.
                None => break,
            },
            stream = conn.accept_uni() => match stream {
                Ok(recv) => {
                    let geometry = *geometry.borrow();
                    headers.spawn(read_header(recv, geometry));
                }
                Err(_) => break,
            },
            Some(done) = senders.join_next() => {
                if let Ok((block, seq)) = done {
                    sending.done(block, seq);
                }
            }
            Some(header) = headers.join_next() => match header {
                Ok(Ok(Some((recv, block)))) => {
                    let (seq, token) = receiving.start(block);
                    let ctx = ctx.clone();
                    let limiter = limiter.clone();
                    bodies.spawn(async move {
                        read_body(ctx, recv, block, token, limiter).await;
                        (block, seq)
                    });
                }
                Ok(Err(v)) => ctx.violation(v),
                Ok(Ok(None)) | Err(_) => {}
            },
            Some(done) = bodies.join_next() => {
                if let Ok((block, seq)) = done {
                    receiving.done(block, seq);
                }
            }
            () = stop.cancelled() => break,
        }
    }
    // Blocks fully received before the close are still delivered; the
    // rest fail at once, as the connection is closed.
    while bodies.join_next().await.is_some() {}
}

/// Sends one block on a new stream and waits for the peer to acknowledge
/// all of it (true), or resets the stream if `cancel` fires first.
async fn send_block(
    conn: quinn::Connection,
    block: BlockRef,
    data: Bytes,
    cancel: CancellationToken,
    limiter: Limiter,
) -> bool {
    let mut send = tokio::select! {
        stream = conn.open_uni() => match stream {
            Ok(send) => send,
            Err(_) => return false,
        },
        () = cancel.cancelled() => return false,
    };
    let header = Bytes::copy_from_slice(&encode_block_header(&block));
    let write = async {
        if limiter.upload_unlimited() {
            return send.write_all_chunks(&mut [header, data]).await;
        }
        send.write_all(&header).await?;
        let mut at = 0;
        while at < data.len() {
            let slice = data.slice(at..(at + UPLOAD_SLICE).min(data.len()));
            limiter.upload(slice.len() as u64).await;
            at += slice.len();
            send.write_all(&slice).await?;
        }
        Ok(())
    };
    let written = tokio::select! {
        written = write => written,
        () = cancel.cancelled() => {
            let _ = send.reset(VarInt::from_u32(StreamCode::Cancelled.code()));
            return false;
        }
    };
    if let Err(e) = written {
        // Stopped: the peer no longer wants it (`Unwanted`), which answers
        // the request too. Otherwise the connection is gone.
        tracing::trace!(?block, error = %e, "block stream not sent");
        return false;
    }
    let _ = send.finish();
    // `None`: finished and every byte acknowledged. `Some(code)`: the peer
    // stopped it before reading it all.
    tokio::select! {
        acked = send.stopped() => matches!(acked, Ok(None)),
        () = cancel.cancelled() => {
            let _ = send.reset(VarInt::from_u32(StreamCode::Cancelled.code()));
            false
        }
    }
}

/// Reads and checks a block stream's header. `Ok(None)` when the stream
/// was reset or the connection lost before it arrived.
async fn read_header(
    mut recv: quinn::RecvStream,
    geometry: Option<Geometry>,
) -> Result<Option<(quinn::RecvStream, BlockRef)>, Violation> {
    let mut header = [0u8; BLOCK_HEADER_LEN];
    match recv.read_exact(&mut header).await {
        Ok(()) => {}
        Err(quinn::ReadExactError::FinishedEarly(got)) => {
            return Err(Violation::ShortHeader { got })
        }
        Err(quinn::ReadExactError::ReadError(_)) => return Ok(None),
    }
    let block = decode_block_header(&header, geometry.as_ref())?;
    Ok(Some((recv, block)))
}

/// Reads exactly `block.length` bytes and the FIN, then hands the block to
/// the owner.
async fn read_body(
    ctx: Ctx,
    mut recv: quinn::RecvStream,
    block: BlockRef,
    refuse: CancellationToken,
    limiter: Limiter,
) {
    let want = block.length as usize;
    let mut data: Vec<u8> = Vec::new();
    let mut uncharged = 0;
    loop {
        // Charged before the next read (and before the block is handed
        // on), so a limited reader leaves bytes in QUIC's window.
        if uncharged >= DOWNLOAD_BATCH || (uncharged > 0 && data.len() == want) {
            tokio::select! {
                () = limiter.download(uncharged as u64) => uncharged = 0,
                () = refuse.cancelled() => {
                    let _ = recv.stop(VarInt::from_u32(StreamCode::Unwanted.code()));
                    return;
                }
            }
        }
        // One byte more than is missing: enough to see a stream that runs
        // long, without taking more of it.
        let max = want - data.len() + 1;
        let chunk = tokio::select! {
            chunk = recv.read_chunk(max, true) => chunk,
            () = refuse.cancelled() => {
                let _ = recv.stop(VarInt::from_u32(StreamCode::Unwanted.code()));
                return;
            }
        };
        match chunk {
            Ok(Some(chunk)) => {
                if data.len() + chunk.bytes.len() > want {
                    ctx.violation(Violation::LongBlock { block });
                    return;
                }
                grow(&mut data, chunk.bytes.len(), want);
                data.extend_from_slice(&chunk.bytes);
                uncharged += chunk.bytes.len();
            }
            Ok(None) if data.len() == want => break,
            Ok(None) => {
                ctx.violation(Violation::ShortBlock {
                    block,
                    got: data.len() as u32,
                });
                return;
            }
            // Reset by the uploader (`Cancelled`), or the connection is
            // gone: no block, and nothing to report here.
            Err(_) => return,
        }
    }
    let event = TransportEvent::Block {
        conn: ctx.id,
        peer: ctx.peer,
        block,
        data: Bytes::from(data),
    };
    ctx.emit(event).await;
}

/// Makes room for `more` bytes: doubling from [`FIRST_BUFFER`], never past
/// the block's length.
fn grow(buf: &mut Vec<u8>, more: usize, limit: usize) {
    let need = buf.len() + more;
    if need > buf.capacity() {
        let target = need
            .max(buf.capacity() * 2)
            .max(FIRST_BUFFER)
            .min(limit)
            .max(need);
        buf.reserve_exact(target - buf.len());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_grow_with_the_data_and_stop_at_the_block() {
        let mut buf = Vec::new();
        grow(&mut buf, 1200, 1 << 20);
        assert!(buf.capacity() >= FIRST_BUFFER && buf.capacity() < 2 * FIRST_BUFFER);
        buf.resize(FIRST_BUFFER, 0);
        grow(&mut buf, 1, 1 << 20);
        assert!(buf.capacity() >= 2 * FIRST_BUFFER && buf.capacity() < 3 * FIRST_BUFFER);
        let mut small = Vec::new();
        grow(&mut small, 10, 100);
        assert!(small.capacity() >= 10 && small.capacity() <= 100 + 16);
    }

    #[test]
    fn in_flight_forgets_only_its_own_stream() {
        let b = BlockRef {
            piece: 0,
            offset: 0,
            length: 1,
        };
        let mut f = InFlight::default();
        let (first, _) = f.start(b);
        let (second, token) = f.start(b);
        f.done(b, first);
        assert!(f.by_block.contains_key(&b), "a later stream stays");
        f.cancel(&b);
        assert!(token.is_cancelled());
        f.done(b, second);
        assert!(f.by_block.is_empty());
    }
}
