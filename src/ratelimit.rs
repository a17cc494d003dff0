//! Upload and download rate limits, node-wide and per torrent, for the
//! transport to charge block bytes against.
//!
//! [`Rates`] holds the node's two buckets and one pair per torrent; a
//! connection takes a [`Limiter`] for its torrent when it opens
//! ([`Rates::limiter`]) and charges every block byte to both the torrent's
//! bucket and the node's. The arithmetic (refill, waits) is proto's
//! [`TokenBucket`]; this module only reads the clock and sleeps.
//!
//! Invariants:
//! - Unlimited is the fast path: a charge against a bucket with no limit is
//!   one relaxed atomic load, with no lock and no clock read.
//! - Limits change while transfers run: [`Rates::set_node`] and
//!   [`Rates::set_torrent`] update the buckets that open connections
//!   already hold, and no waiter sleeps longer than [`MAX_SLEEP`] before it
//!   asks its bucket again, so a new rate applies within that.
//! - A connection's [`Limiter`] shares its torrent's buckets for as long as
//!   it lives; [`Rates::remove_torrent`] lifts that torrent's limits for
//!   connections still open, so a removed torrent is never left throttled
//!   by a stale limit.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use shoal_proto::ratelimit::TokenBucket;
use shoal_proto::swarm::Time;
use shoal_proto::InfoHash;
use tokio::time::Instant;

/// Longest a charge sleeps before asking its bucket again, so a raised
/// limit (or a lifted one) is felt within this.
pub const MAX_SLEEP: Duration = Duration::from_millis(50);

/// One direction's limit: the rate as an atomic for the unlimited fast
/// path, and proto's bucket behind a lock for the limited one.
#[derive(Debug)]
struct Bucket {
    /// Bytes per second; 0 is unlimited.
    limit: AtomicU64,
    state: Mutex<Option<TokenBucket>>,
}

impl Bucket {
    fn new() -> Bucket {
        Bucket {
            limit: AtomicU64::new(0),
            state: Mutex::new(None),
        }
    }

    fn get(&self) -> Option<u64> {
        Some(self.limit.load(Ordering::Relaxed)).filter(|r| *r > 0)
    }

    fn set(&self, epoch: Instant, rate: Option<u64>) {
        let rate = rate.filter(|r| *r > 0);
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        match (rate, state.as_mut()) {
            (None, _) => *state = None,
            (Some(r), Some(b)) => b.set_rate(now(epoch), r),
            (Some(r), None) => *state = Some(TokenBucket::new(now(epoch), r)),
        }
        self.limit.store(rate.unwrap_or(0), Ordering::Relaxed);
    }

    /// Takes `n` bytes, sleeping while the bucket is in debt.
    async fn charge(&self, epoch: Instant, n: u64) {
        loop {
            if self.limit.load(Ordering::Relaxed) == 0 {
                return;
            }
            let wait = {
                let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
                match state.as_mut() {
                    None => return,
                    Some(b) => match b.take(now(epoch), n) {
                        Ok(()) => return,
                        Err(wait) => wait,
                    },
                }
            };
            tokio::time::sleep(wait.min(MAX_SLEEP)).await;
        }
    }
}

/// Time since `epoch` in proto's units.
fn now(epoch: Instant) -> Time {
    Time::from_micros(u64::try_from(epoch.elapsed().as_micros()).unwrap_or(u64::MAX))
}

/// An upload and a download bucket.
#[derive(Debug)]
struct Pair {
    up: Bucket,
    down: Bucket,
}

impl Pair {
    fn new() -> Pair {
        Pair {
            up: Bucket::new(),
            down: Bucket::new(),
        }
    }

    fn set(&self, epoch: Instant, up: Option<u64>, down: Option<u64>) {
        self.up.set(epoch, up);
        self.down.set(epoch, down);
    }
}

/// A node's rate limits, in bytes per second; `None` (or 0) is unlimited.
#[derive(Debug)]
pub struct Rates {
    epoch: Instant,
    node: Arc<Pair>,
    torrents: Mutex<HashMap<InfoHash, Arc<Pair>>>,
}

impl Default for Rates {
    fn default() -> Self {
        Rates::new()
    }
}

impl Rates {
    /// No limits.
    pub fn new() -> Rates {
        Rates {
            epoch: Instant::now(),
            node: Arc::new(Pair::new()),
            torrents: Mutex::default(),
        }
    }

    /// Sets the node-wide limits, for open connections too.
    pub fn set_node(&self, up: Option<u64>, down: Option<u64>) {
        self.node.set(self.epoch, up, down);
    }

    /// The node-wide (upload, download) limits.
    pub fn node(&self) -> (Option<u64>, Option<u64>) {
        (self.node.up.get(), self.node.down.get())
    }

    /// Sets the limits of one torrent, for its open connections too.
    pub fn set_torrent(&self, ih: InfoHash, up: Option<u64>, down: Option<u64>) {
        self.pair(ih).set(self.epoch, up, down);
    }

    /// One torrent's (upload, download) limits.
    pub fn torrent(&self, ih: InfoHash) -> (Option<u64>, Option<u64>) {
        self.torrents
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&ih)
            .map_or((None, None), |p| (p.up.get(), p.down.get()))
    }

    /// Forgets a torrent's limits, lifting them for its open connections.
    pub fn remove_torrent(&self, ih: InfoHash) {
        let pair = self
            .torrents
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&ih);
        if let Some(p) = pair {
            p.set(self.epoch, None, None);
        }
    }

    /// What a connection of torrent `ih` charges its bytes to.
    pub fn limiter(&self, ih: InfoHash) -> Limiter {
        Limiter {
            epoch: self.epoch,
            node: self.node.clone(),
            torrent: self.pair(ih),
        }
    }

    fn pair(&self, ih: InfoHash) -> Arc<Pair> {
        self.torrents
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(ih)
            .or_insert_with(|| Arc::new(Pair::new()))
            .clone()
    }
}

/// One connection's view of the limits: its torrent's buckets and the
/// node's. Clones share them.
#[derive(Debug, Clone)]
pub struct Limiter {
    epoch: Instant,
    node: Arc<Pair>,
    torrent: Arc<Pair>,
}

impl Limiter {
    /// Whether no upload limit applies right now.
    pub fn upload_unlimited(&self) -> bool {
        self.torrent.up.get().is_none() && self.node.up.get().is_none()
    }

    /// Whether no download limit applies right now.
    pub fn download_unlimited(&self) -> bool {
        self.torrent.down.get().is_none() && self.node.down.get().is_none()
    }

    /// Waits until `n` more bytes may be sent.
    pub async fn upload(&self, n: u64) {
        self.torrent.up.charge(self.epoch, n).await;
        self.node.up.charge(self.epoch, n).await;
    }

    /// Waits until `n` more received bytes may be taken in.
    pub async fn download(&self, n: u64) {
        self.torrent.down.charge(self.epoch, n).await;
        self.node.down.charge(self.epoch, n).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    /// Charges `total` bytes in `chunk`s; returns how long it took.
    async fn upload(l: &Limiter, total: u64, chunk: u64) -> Duration {
        let start = Instant::now();
        let mut sent = 0;
        while sent < total {
            l.upload(chunk).await;
            sent += chunk;
        }
        start.elapsed()
    }

    fn between(t: Duration, lo_ms: u64, hi_ms: u64) {
        assert!(
            t >= Duration::from_millis(lo_ms) && t <= Duration::from_millis(hi_ms),
            "{t:?} not in {lo_ms}..={hi_ms} ms"
        );
    }

    #[tokio::test]
    async fn unlimited_never_waits() {
        let rates = Rates::new();
        let l = rates.limiter(InfoHash([1; 20]));
        assert!(l.upload_unlimited() && l.download_unlimited());
        between(upload(&l, 1 << 36, 64 * 1024).await, 0, 1000);
    }

    #[tokio::test]
    async fn node_and_torrent_limits_both_apply() {
        let rates = Rates::new();
        let ih = InfoHash([2; 20]);
        let l = rates.limiter(ih);
        rates.set_node(Some(8 * MIB), None);
        assert_eq!(rates.node(), (Some(8 * MIB), None));
        // 4 MiB at 8 MiB/s, less the 0.8 MiB burst and one chunk.
        between(upload(&l, 4 * MIB, 64 * 1024).await, 390, 2000);
        // The torrent's lower limit is now the one that binds.
        rates.set_torrent(ih, Some(2 * MIB), None);
        assert_eq!(rates.torrent(ih), (Some(2 * MIB), None));
        between(upload(&l, MIB, 64 * 1024).await, 360, 2000);
        assert!(l.download_unlimited());
        // Another torrent sees only the node's limit.
        let other = rates.limiter(InfoHash([3; 20]));
        between(upload(&other, 2 * MIB, 64 * 1024).await, 140, 1500);
    }

    #[tokio::test]
    async fn a_lifted_limit_reaches_a_waiting_charge() {
        let rates = Rates::new();
        let l = rates.limiter(InfoHash([4; 20]));
        rates.set_node(None, Some(1000));
        // Runs the burst into a debt of about a minute at this rate.
        l.download(64 * 1024).await;
        let waiter = tokio::spawn({
            let l = l.clone();
            async move {
                let start = Instant::now();
                l.download(1).await;
                start.elapsed()
            }
        });
        tokio::time::sleep(Duration::from_millis(200)).await;
        rates.set_node(None, None);
        let waited = waiter.await.unwrap();
        between(waited, 150, 1000);
    }

    #[tokio::test]
    async fn removing_a_torrent_lifts_its_limit() {
        let rates = Rates::new();
        let ih = InfoHash([5; 20]);
        rates.set_torrent(ih, Some(1000), Some(1000));
        let l = rates.limiter(ih);
        assert!(!l.upload_unlimited());
        rates.remove_torrent(ih);
        assert!(l.upload_unlimited());
        assert_eq!(rates.torrent(ih), (None, None));
        between(upload(&l, 10 * MIB, 64 * 1024).await, 0, 500);
    }
}
