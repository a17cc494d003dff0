//! One open connection: the [`ConnectionHandle`] its owner holds, and the
//! tasks that carry it.
//!
//! A supervisor task owns three children: the control reader (bytes →
//! `FrameDecoder` → [`TransportEvent::Message`]), the control writer (the
//! outbox, and `KeepAlive` when nothing else went out for
//! `keepalive_interval`), and the block task (`blocks.rs`). The supervisor
//! waits for the connection to close, lets the children finish delivering
//! what they already received, then sends [`TransportEvent::Closed`].
//!
//! Invariants:
//! - `Closed` is the last event of a connection, and is sent exactly once
//!   (unless the handle was dropped, which aborts everything).
//! - The first local reason to close wins ([`Closer`]): the owner's code,
//!   a violation, `Idle`; the event reports that reason, not the echo.
//! - Frames in the outbox were validated and encoded by the handle, so the
//!   writer only writes; availability messages never enter it.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use shoal_proto::wire::{BlockRef, CloseCode, FrameDecoder, Geometry, Message, NodeId};
use shoal_proto::InfoHash;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tokio_util::task::AbortOnDropHandle;

use super::blocks::{self, BlockCommand};
use super::endpoint::close;
use super::error::{SendError, Violation};
use super::{CloseReason, ConnId, Session, TransportConfig, TransportEvent};
use crate::ratelimit::Limiter;

/// Bytes asked of quinn per control-stream read.
const READ_CHUNK: usize = 64 * 1024;

/// Frames the writer gathers into one write.
const WRITE_BATCH: usize = 64;

/// `Message::KeepAlive` as a frame: length 1, tag 0.
const KEEPALIVE_FRAME: [u8; 5] = [0, 0, 0, 1, 0];

/// Everything `spawn` needs: the connection after both handshakes.
pub(crate) struct Parts<'a> {
    pub conn: quinn::Connection,
    pub send: quinn::SendStream,
    pub recv: quinn::RecvStream,
    pub id: ConnId,
    pub peer: NodeId,
    pub info_hash: InfoHash,
    pub features: u64,
    pub session: Session,
    pub cfg: &'a TransportConfig,
    pub shutdown: CancellationToken,
    /// The torrent's and the node's rate limits, charged by block bodies.
    pub limiter: Limiter,
}

/// Closes the connection once, remembering the first local reason.
#[derive(Debug, Clone)]
pub(crate) struct Closer {
    conn: quinn::Connection,
    reason: Arc<Mutex<Option<CloseReason>>>,
}

impl Closer {
    fn new(conn: quinn::Connection) -> Closer {
        Closer {
            conn,
            reason: Arc::new(Mutex::new(None)),
        }
    }

    /// Closes with the reason's code, unless the connection is already
    /// closed (by us or by the peer).
    pub(crate) fn close(&self, reason: CloseReason) {
        if self.conn.close_reason().is_some() {
            return;
        }
        let code = reason.local_code().unwrap_or(CloseCode::Done);
        let text = match &reason {
            CloseReason::Violation(v) => v.to_string(),
            _ => format!("{code:?}"),
        };
        {
            let mut slot = self.reason.lock().unwrap_or_else(PoisonError::into_inner);
            if slot.is_some() {
                return;
            }
            *slot = Some(reason);
        }
        close(&self.conn, code, &text);
    }

    /// Why the connection closed, given what quinn reports.
    fn reason(&self, err: quinn::ConnectionError) -> CloseReason {
        let local = self
            .reason
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        local.unwrap_or_else(|| match err {
            quinn::ConnectionError::ApplicationClosed(c) => CloseReason::Remote {
                code: c.error_code.into_inner(),
                reason: String::from_utf8_lossy(&c.reason).into_owned(),
            },
            e => CloseReason::Lost(e),
        })
    }
}

/// What every task of a connection shares.
#[derive(Debug, Clone)]
pub(crate) struct Ctx {
    pub id: ConnId,
    pub peer: NodeId,
    pub events: mpsc::Sender<TransportEvent>,
    pub closer: Closer,
}

impl Ctx {
    /// Delivers an event; `false` (and the connection closed with `Done`)
    /// when the owner has gone.
    pub(crate) async fn emit(&self, event: TransportEvent) -> bool {
        if self.events.send(event).await.is_ok() {
            return true;
        }
        self.closer.close(CloseReason::Local(CloseCode::Done));
        false
    }

    /// Closes with `ProtocolViolation`.
    pub(crate) fn violation(&self, v: Violation) {
        tracing::debug!(conn = self.id.0, error = %v, "peer broke the protocol");
        self.closer.close(CloseReason::Violation(v));
    }
}

/// The owner's side of an open connection: send messages and blocks,
/// close. Dropping it aborts the connection's tasks and closes it with
/// `Done`.
///
/// Sends wait for room in a bounded queue, and the queue drains at the
/// pace QUIC flow control allows. An owner must keep reading its events
/// while it waits (use `select!` or the `try_` methods): a peer that waits
/// for us to read before it reads would otherwise wait forever.
#[derive(Debug)]
pub struct ConnectionHandle {
    id: ConnId,
    peer: NodeId,
    info_hash: InfoHash,
    features: u64,
    conn: quinn::Connection,
    outbox: mpsc::Sender<Bytes>,
    blocks: mpsc::Sender<BlockCommand>,
    geometry: watch::Sender<Option<Geometry>>,
    closer: Closer,
    _task: AbortOnDropHandle<()>,
}

impl Drop for ConnectionHandle {
    fn drop(&mut self) {
        self.closer.close(CloseReason::Local(CloseCode::Done));
    }
}

impl ConnectionHandle {
    /// Which connection of the endpoint this is.
    pub fn id(&self) -> ConnId {
        self.id
    }

    /// The peer's node id, authenticated by TLS and matched with its
    /// handshake.
    pub fn peer(&self) -> NodeId {
        self.peer
    }

    /// The torrent the connection carries.
    pub fn info_hash(&self) -> InfoHash {
        self.info_hash
    }

    /// Feature bits both handshakes set (none in version 1).
    pub fn features(&self) -> u64 {
        self.features
    }

    /// The peer's current address.
    pub fn remote_addr(&self) -> SocketAddr {
        self.conn.remote_address()
    }

    /// QUIC's current round-trip estimate.
    pub fn rtt(&self) -> Duration {
        self.conn.rtt()
    }

    /// The smallest round trip QUIC has seen on the path: its floor, which
    /// queueing under load does not raise (the smoothed estimate, `rtt`,
    /// follows the queue: behind a 20 ms token bucket it passes 10 ms).
    pub fn min_rtt(&self) -> Duration {
        self.conn.stats().path.min_rtt
    }

    /// Whether the connection is closed.
    pub fn is_closed(&self) -> bool {
        self.conn.close_reason().is_some()
    }

    /// Queues a control message, waiting for room. It is checked first:
    /// the peer would close the connection over an invalid one.
    pub async fn send(&self, message: Message) -> Result<(), SendError> {
        let frame = self.frame(&message)?;
        self.outbox.send(frame).await.map_err(|_| SendError::Closed)
    }

    /// Queues a control message if there is room now.
    pub fn try_send(&self, message: Message) -> Result<(), SendError> {
        let frame = self.frame(&message)?;
        self.outbox.try_send(frame).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => SendError::Full,
            mpsc::error::TrySendError::Closed(_) => SendError::Closed,
        })
    }

    /// Sends a block on a stream of its own; `data` must be exactly
    /// `block.length` bytes. Returns once the block is queued, not sent:
    /// [`Delivery::delivered`] tells when (and whether) the peer has it.
    pub async fn send_block(&self, block: BlockRef, data: Bytes) -> Result<Delivery, SendError> {
        self.check_block(&block, &data)?;
        let (delivered, rx) = oneshot::channel();
        self.command(BlockCommand::Send {
            block,
            data,
            delivered,
        })
        .await?;
        Ok(Delivery(rx))
    }

    /// Stops sending `block` (the peer cancelled it): its stream is reset
    /// with `Cancelled`. Nothing happens if it was already sent.
    pub async fn cancel_block(&self, block: BlockRef) -> Result<(), SendError> {
        self.command(BlockCommand::Cancel(block)).await
    }

    /// Stops receiving `block` (no longer wanted): STOP_SENDING with
    /// `Unwanted`, and no event for it.
    pub async fn refuse_block(&self, block: BlockRef) -> Result<(), SendError> {
        self.command(BlockCommand::Refuse(block)).await
    }

    /// Starts checking messages and blocks, both ways, against the
    /// torrent's geometry, once the metadata is known.
    pub fn set_geometry(&self, geometry: Geometry) {
        self.geometry.send_replace(Some(geometry));
    }

    /// Closes the connection with `code` at once; queued messages and
    /// blocks not yet sent are dropped.
    pub fn close(&self, code: CloseCode) {
        self.closer.close(CloseReason::Local(code));
    }

    fn frame(&self, message: &Message) -> Result<Bytes, SendError> {
        let kind = message.kind();
        if kind.is_availability() {
            return Err(SendError::Availability(kind));
        }
        message.validate(self.geometry.borrow().as_ref())?;
        Ok(Bytes::from(message.encode()?))
    }

    fn check_block(&self, block: &BlockRef, data: &Bytes) -> Result<(), SendError> {
        block.check(self.geometry.borrow().as_ref())?;
        if data.len() != block.length as usize {
            return Err(SendError::BlockLength {
                block: *block,
                len: data.len(),
            });
        }
        Ok(())
    }

    async fn command(&self, command: BlockCommand) -> Result<(), SendError> {
        self.blocks
            .send(command)
            .await
            .map_err(|_| SendError::Closed)
    }
}

/// The outcome of one block sent with [`ConnectionHandle::send_block`].
#[derive(Debug)]
pub struct Delivery(oneshot::Receiver<bool>);

impl Delivery {
    /// True once the peer has acknowledged every byte of the block's
    /// stream; false if it was cancelled, refused by the peer or lost with
    /// the connection.
    pub async fn delivered(self) -> bool {
        self.0.await.unwrap_or(false)
    }
}

/// Starts the tasks of a connection whose handshakes both passed.
pub(crate) fn spawn(p: Parts<'_>) -> ConnectionHandle {
    let capacity = p.cfg.outbox.max(1);
    let (outbox_tx, outbox_rx) = mpsc::channel(capacity);
    let (blocks_tx, blocks_rx) = mpsc::channel(capacity);
    let (geometry_tx, _) = watch::channel(p.session.geometry);
    let closer = Closer::new(p.conn.clone());
    let ctx = Ctx {
        id: p.id,
        peer: p.peer,
        events: p.session.events,
        closer: closer.clone(),
    };
    let stop = CancellationToken::new();
    let mut tasks = JoinSet::new();
    tasks.spawn(read_control(
        ctx.clone(),
        p.recv,
        geometry_tx.subscribe(),
        p.cfg.idle_timeout,
    ));
    tasks.spawn(write_control(
        ctx.clone(),
        p.send,
        outbox_rx,
        p.cfg.keepalive_interval,
        stop.clone(),
    ));
    tasks.spawn(blocks::run(
        ctx.clone(),
        p.conn.clone(),
        blocks_rx,
        geometry_tx.subscribe(),
        stop.clone(),
        p.limiter,
    ));
    let task = tokio::spawn(supervise(ctx, p.conn.clone(), tasks, stop, p.shutdown));
    ConnectionHandle {
        id: p.id,
        peer: p.peer,
        info_hash: p.info_hash,
        features: p.features,
        conn: p.conn,
        outbox: outbox_tx,
        blocks: blocks_tx,
        geometry: geometry_tx,
        closer,
        _task: AbortOnDropHandle::new(task),
    }
}

async fn supervise(
    ctx: Ctx,
    conn: quinn::Connection,
    mut tasks: JoinSet<()>,
    stop: CancellationToken,
    shutdown: CancellationToken,
) {
    let err = tokio::select! {
        e = conn.closed() => e,
        () = shutdown.cancelled() => {
            ctx.closer.close(CloseReason::Local(CloseCode::Done));
            conn.closed().await
        }
    };
    // Children end on their own once quinn fails their reads; `stop`
    // ends the waits that are not on quinn. Whatever they already
    // received is delivered before `Closed`.
    stop.cancel();
    while tasks.join_next().await.is_some() {}
    let reason = ctx.closer.reason(err);
    tracing::debug!(conn = ctx.id.0, ?reason, "mesh connection closed");
    let _ = ctx
        .events
        .send(TransportEvent::Closed {
            conn: ctx.id,
            peer: ctx.peer,
            reason,
        })
        .await;
}

/// Reads the peer's control frames and forwards its messages. Closes with
/// `Idle` when nothing arrives for `idle`.
async fn read_control(
    ctx: Ctx,
    mut recv: quinn::RecvStream,
    mut geometry: watch::Receiver<Option<Geometry>>,
    idle: Duration,
) {
    let mut decoder = match *geometry.borrow_and_update() {
        Some(g) => FrameDecoder::with_geometry(g),
        None => FrameDecoder::new(),
    };
    loop {
        if geometry.has_changed().unwrap_or(false) {
            if let Some(g) = *geometry.borrow_and_update() {
                decoder.set_geometry(g);
            }
        }
        let chunk = match tokio::time::timeout(idle, recv.read_chunk(READ_CHUNK, true)).await {
            Err(_) => {
                ctx.closer.close(CloseReason::Local(CloseCode::Idle));
                return;
            }
            Ok(Ok(Some(chunk))) => chunk.bytes,
            Ok(Ok(None)) => {
                let v = match decoder.finish() {
                    Err(e) => Violation::Wire(e),
                    Ok(()) => Violation::ControlStreamEnded,
                };
                ctx.violation(v);
                return;
            }
            Ok(Err(quinn::ReadError::Reset(_))) => {
                ctx.violation(Violation::ControlStreamEnded);
                return;
            }
            // The connection is gone; the supervisor reports why.
            Ok(Err(_)) => return,
        };
        let mut input = &chunk[..];
        loop {
            match decoder.decode(&mut input) {
                Ok(Some(message)) => {
                    let event = TransportEvent::Message {
                        conn: ctx.id,
                        peer: ctx.peer,
                        message,
                    };
                    if !ctx.emit(event).await {
                        return;
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    ctx.violation(Violation::Wire(e));
                    return;
                }
            }
        }
    }
}

/// Writes queued frames to the control stream, several per write when
/// they queue up, and a `KeepAlive` after `keepalive` of silence.
async fn write_control(
    ctx: Ctx,
    mut send: quinn::SendStream,
    mut outbox: mpsc::Receiver<Bytes>,
    keepalive: Duration,
    stop: CancellationToken,
) {
    let mut batch = Vec::with_capacity(WRITE_BATCH);
    loop {
        let first = tokio::select! {
            frame = outbox.recv() => match frame {
                Some(frame) => frame,
                None => return,
            },
            () = tokio::time::sleep(keepalive) => Bytes::from_static(&KEEPALIVE_FRAME),
            () = stop.cancelled() => return,
        };
        batch.push(first);
        while batch.len() < WRITE_BATCH {
            match outbox.try_recv() {
                Ok(frame) => batch.push(frame),
                Err(_) => break,
            }
        }
        match send.write_all_chunks(&mut batch).await {
            Ok(()) => {}
            Err(quinn::WriteError::Stopped(_)) => {
                ctx.violation(Violation::ControlStreamEnded);
                return;
            }
            // The connection is gone; the supervisor reports why.
            Err(_) => return,
        }
        batch.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keepalive_frame_is_the_encoding() {
        assert_eq!(
            Message::KeepAlive.encode().expect("encodes"),
            KEEPALIVE_FRAME.to_vec()
        );
    }
}
