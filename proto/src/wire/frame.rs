//! [`FrameDecoder`]: turns the control stream's bytes, in whatever chunks
//! they arrive, into checked messages.
//!
//! The shell reads the 68-byte handshake first, then hands every later
//! chunk to [`FrameDecoder::decode`] until it returns `Ok(None)`.
//!
//! Invariants this decoder keeps:
//! - It never panics and never buffers more than the frame in progress:
//!   a length prefix over [`MAX_FRAME`] is refused before any body byte is
//!   kept, and a length over its kind's limit as soon as the tag arrives.
//!   The buffer grows with the bytes received, not with the claimed
//!   length, so a peer that announces a large frame and stalls costs
//!   nothing.
//! - The result does not depend on how the bytes were chunked.
//! - The first message is `Bitfield`, `HaveAll` or `HaveNone`, and none of
//!   them comes later.
//! - After an error the decoder is spent: every later call returns the
//!   same error, because the connection must close.

use super::error::WireError;
use super::limits::{Geometry, MAX_FRAME};
use super::message::{check_kind, Message, MessageKind};

/// Body buffers up to this size are kept for the next frame; larger ones
/// (a bitfield) are freed, so an idle connection holds little memory.
const KEEP_BUFFER: usize = 16 * 1024 + 64;

/// Streaming decoder for one control stream (the peer's direction).
#[derive(Debug, Clone, Default)]
pub struct FrameDecoder {
    geometry: Option<Geometry>,
    header: [u8; 4],
    header_len: usize,
    body: Vec<u8>,
    opened: bool,
    failed: Option<WireError>,
}

impl FrameDecoder {
    /// A decoder for a torrent whose metadata is not known yet: messages
    /// are checked against what any torrent allows.
    pub fn new() -> FrameDecoder {
        FrameDecoder::default()
    }

    /// A decoder that checks pieces, blocks and bitfields against the
    /// torrent's geometry.
    pub fn with_geometry(geometry: Geometry) -> FrameDecoder {
        FrameDecoder {
            geometry: Some(geometry),
            ..FrameDecoder::default()
        }
    }

    /// Starts checking against `geometry`, once the metadata has been
    /// fetched. Messages decoded before were checked only loosely; the
    /// caller re-checks any it kept with [`Message::validate`].
    pub fn set_geometry(&mut self, geometry: Geometry) {
        self.geometry = Some(geometry);
    }

    /// The geometry messages are checked against, if known.
    pub fn geometry(&self) -> Option<&Geometry> {
        self.geometry.as_ref()
    }

    /// Bytes of an unfinished frame held.
    pub fn buffered(&self) -> usize {
        self.header_len + self.body.len()
    }

    /// Consumes bytes from the front of `input` until one message is
    /// complete and returns it; returns `Ok(None)` once `input` is empty
    /// and the rest of a frame is still to come. Call it again with the
    /// same slice until it returns `Ok(None)`: one chunk may hold many
    /// messages.
    pub fn decode(&mut self, input: &mut &[u8]) -> Result<Option<Message>, WireError> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        let r = self.step(input);
        if let Err(e) = &r {
            self.failed = Some(e.clone());
            self.header_len = 0;
            self.body = Vec::new();
        }
        r
    }

    /// Call when the stream ends: refuses a frame left unfinished.
    pub fn finish(&self) -> Result<(), WireError> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        match self.buffered() {
            0 => Ok(()),
            buffered => Err(WireError::Truncated { buffered }),
        }
    }

    fn step(&mut self, input: &mut &[u8]) -> Result<Option<Message>, WireError> {
        if self.header_len < 4 {
            let take = (4 - self.header_len).min(input.len());
            self.header[self.header_len..self.header_len + take].copy_from_slice(&input[..take]);
            self.header_len += take;
            *input = &input[take..];
            if self.header_len < 4 {
                return Ok(None);
            }
            let len = self.frame_len();
            if len == 0 {
                return Err(WireError::EmptyFrame);
            }
            if len > MAX_FRAME {
                return Err(WireError::FrameTooLarge {
                    len,
                    max: MAX_FRAME,
                });
            }
        }
        let len = self.frame_len();
        if self.body.is_empty() {
            let Some(&tag) = input.first() else {
                return Ok(None);
            };
            self.check_order(check_kind(tag, len, self.geometry.as_ref())?)?;
            if input.len() >= len {
                // The whole frame is in this chunk: decode it in place.
                let (body, rest) = input.split_at(len);
                *input = rest;
                self.header_len = 0;
                return Message::decode(body, self.geometry.as_ref()).map(Some);
            }
        }
        let take = (len - self.body.len()).min(input.len());
        self.grow(take, len);
        self.body.extend_from_slice(&input[..take]);
        *input = &input[take..];
        if self.body.len() < len {
            return Ok(None);
        }
        self.header_len = 0;
        let r = Message::decode(&self.body, self.geometry.as_ref());
        if self.body.capacity() > KEEP_BUFFER {
            self.body = Vec::new();
        } else {
            self.body.clear();
        }
        r.map(Some)
    }

    fn frame_len(&self) -> usize {
        u32::from_be_bytes(self.header) as usize
    }

    /// Makes room for `more` bytes: doubling, so small chunks copy little,
    /// but never past the frame's length.
    fn grow(&mut self, more: usize, frame_len: usize) {
        let need = self.body.len() + more;
        if need > self.body.capacity() {
            let target = need.max(self.body.capacity() * 2).min(frame_len);
            self.body.reserve_exact(target - self.body.len());
        }
    }

    fn check_order(&mut self, kind: MessageKind) -> Result<(), WireError> {
        match (self.opened, kind.is_availability()) {
            (false, false) => Err(WireError::MissingAvailability { kind }),
            (true, true) => Err(WireError::RepeatedAvailability { kind }),
            _ => {
                self.opened = true;
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests;
