//! Carrying out a torrent's lifecycle: the manager feeds events to proto's
//! [`Lifecycle`] (which decides every change of state) and this module does
//! what it answers, starting and stopping swarms, re-checking content,
//! running the hook, saving the record and forgetting the torrent, and
//! feeds the outcomes back in.
//!
//! Invariants this module keeps:
//! - The entry lock is held only to feed an event and to take or put the
//!   run's handles, never across an await.
//! - Commands run in the order the machine gave them; a report the machine
//!   refuses (a stale run, say) ends the work it would have started.
//! - What is saved is the machine's paused flag and import intent with the
//!   entry's settings, so a restart resumes the torrent as it was left;
//!   the last save to reach storage holds the latest of them.

use std::collections::VecDeque;
use std::sync::Arc;

use shoal_proto::lifecycle::{Command, Event, Lifecycle, LifecycleError};
use shoal_proto::InfoHash;

use super::{lock, run, Entry, Inner, TorrentsError};
use crate::storage::{StorageError, TorrentSettings};
use crate::swarm::Role;

impl Inner {
    /// Feeds `event` to `ih`'s lifecycle: `None` when there is no such
    /// torrent, else the machine's answer.
    pub(crate) fn feed(
        &self,
        ih: InfoHash,
        event: Event,
    ) -> Option<Result<Vec<Command>, LifecycleError>> {
        lock(&self.entries)
            .get_mut(&ih)
            .map(|e| e.life.handle(event))
    }
}

/// The settings as storage keeps them: the entry's, with the lifecycle's
/// import intent.
pub(crate) fn stored_settings(e: &Entry) -> TorrentSettings {
    TorrentSettings {
        import_existing: e.life.import(),
        ..e.settings.clone()
    }
}

/// Carries out `cmds` for `ih` in order, feeding what they report back to
/// its lifecycle and carrying out what that answers. `delete_data` is for
/// [`Command::Forget`].
pub(crate) async fn execute(
    inner: &Arc<Inner>,
    ih: InfoHash,
    cmds: Vec<Command>,
    delete_data: bool,
) -> Result<(), TorrentsError> {
    let mut work: VecDeque<Command> = cmds.into();
    while let Some(cmd) = work.pop_front() {
        match cmd {
            Command::StartSwarm { run, import } => {
                let role = if import { Role::Seed } else { Role::Leech };
                run::spawn_start(inner, ih, run, role);
            }
            Command::StopSwarm => {
                let (running, starting) = match lock(&inner.entries).get_mut(&ih) {
                    Some(e) => (e.running.take(), e.starting.take()),
                    None => (None, None),
                };
                drop(starting);
                if let Some(r) = running {
                    run::stop_running(inner, ih, r).await;
                }
            }
            Command::Save => save(inner, ih).await?,
            Command::Recheck { run } => {
                let Some(verdict) = run::recheck(inner, ih, run).await else {
                    return Ok(());
                };
                match inner.feed(ih, verdict) {
                    Some(Ok(more)) => work.extend(more),
                    Some(Err(e)) => {
                        tracing::debug!(%ih, error = %e, "re-check verdict dropped");
                        return Ok(());
                    }
                    None => return Ok(()),
                }
            }
            Command::RunHook => run::completed(inner, ih).await,
            Command::Forget => forget(inner, ih, delete_data).await?,
        }
    }
    Ok(())
}

/// Stores the paused flag and settings as they are now. Two saves (an
/// operator's and a start's) may reach storage in either order, so a save
/// that finds the state changed while it was written writes again: the
/// last write always holds the latest state.
pub(crate) async fn save(inner: &Inner, ih: InfoHash) -> Result<(), TorrentsError> {
    let now = || {
        lock(&inner.entries)
            .get(&ih)
            .map(|e| (e.life.paused(), stored_settings(e)))
    };
    let mut wrote = None;
    while let Some(state) = now() {
        if wrote.as_ref() == Some(&state) {
            break;
        }
        let (paused, settings) = state.clone();
        inner.storage.update_torrent(ih, paused, settings).await?;
        wrote = Some(state);
    }
    Ok(())
}

/// Deletes the record (and data) of a removed torrent and forgets it; if
/// storage refuses, the torrent stays, failed, with the reason.
async fn forget(inner: &Inner, ih: InfoHash, delete_data: bool) -> Result<(), TorrentsError> {
    match inner.storage.remove_torrent(ih, delete_data).await {
        Ok(()) | Err(StorageError::UnknownTorrent(_)) => {
            lock(&inner.entries).remove(&ih);
            run::forget_torrent_limits(&inner.mesh, ih);
            tracing::info!(%ih, delete_data, "torrent removed");
            Ok(())
        }
        Err(e) => {
            let why = e.to_string();
            if let Some(Err(refused)) = inner.feed(ih, Event::RemoveFailed { why }) {
                tracing::warn!(%ih, error = %refused, "remove failure not recorded");
            }
            Err(e.into())
        }
    }
}

/// A torrent's lifecycle, restored from its stored record: see
/// [`Lifecycle::restored`].
pub(crate) fn restored(
    inner: &Inner,
    paused: bool,
    settings: &TorrentSettings,
    have: u32,
    unavailable: Option<String>,
) -> (Lifecycle, Vec<Command>) {
    Lifecycle::restored(
        paused,
        settings.import_existing,
        have,
        inner.cfg.verify_on_complete,
        unavailable,
    )
}
