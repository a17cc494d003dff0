//! The life of one torrent on a node, as a pure state machine: where it is
//! (resolving its metadata, starting, downloading, re-checking, seeding,
//! paused, failed, removed), which events move it on, and what the node
//! must do about each move. The torrent manager (`src/torrents/`) feeds it
//! events and carries out the [`Command`]s it returns; it decides nothing
//! about the order of a torrent's life itself.
//!
//! Every start of the swarm is a numbered *run*. What a run reports
//! (started, failed to start, every piece stored, the re-check's verdict)
//! carries its number, and a report from any run but the current one is
//! refused as [`LifecycleError::Stale`]: a start or re-check that finishes
//! after a pause, resume or remove never undoes the newer decision.
//!
//! Invariants this machine keeps:
//! - An event that does not fit the phase is refused with a typed error
//!   and changes nothing; nothing here panics.
//! - [`Command::RunHook`] is returned at most once per machine, and only
//!   after the content completed in this process and passed the re-check
//!   (when re-checking is on). A torrent already complete when its run
//!   started is seeded without a re-check or a hook.
//! - A torrent whose re-check found bad pieces stops serving at once
//!   ([`Command::StopSwarm`]) and cannot be resumed; only removing it
//!   helps.
//! - The intent to import data already on disk ([`Lifecycle::import`])
//!   lasts until a run has started with it, and every change of it or of
//!   the paused flag comes with [`Command::Save`], so both survive a
//!   restart.

/// Where a torrent is in its life. Serialised in lowercase (`"seeding"`),
/// as the node's API reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    /// Its metadata is being fetched (a magnet link).
    Resolving,
    /// Its swarm is being started (and data on disk imported).
    Starting,
    /// Fetching pieces.
    Downloading,
    /// Every piece is stored; the whole content is being re-checked.
    Verifying,
    /// Complete and serving.
    Seeding,
    /// Stopped by the operator.
    Paused,
    /// Could not resolve or start, or failed the re-check.
    Failed,
    /// Removed: no event applies any more.
    Removed,
}

impl std::fmt::Display for Phase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Phase::Resolving => "resolving",
            Phase::Starting => "starting",
            Phase::Downloading => "downloading",
            Phase::Verifying => "verifying",
            Phase::Seeding => "seeding",
            Phase::Paused => "paused",
            Phase::Failed => "failed",
            Phase::Removed => "removed",
        })
    }
}

/// What happened to the torrent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// The metadata is here (at once for a `.torrent`); `import` when
    /// content already sits at the torrent's path.
    MetadataResolved {
        /// Import the data already on disk at the first start.
        import: bool,
    },
    /// The metadata could not be fetched.
    ResolveFailed {
        /// Why.
        why: String,
    },
    /// Run `run`'s swarm is up, holding `have` pieces.
    Started {
        /// The run.
        run: u64,
        /// Pieces stored at start.
        have: u32,
        /// Whether that is every piece.
        complete: bool,
    },
    /// Run `run`'s swarm could not start.
    StartFailed {
        /// The run.
        run: u64,
        /// Why.
        why: String,
    },
    /// The count of pieces stored, as last seen.
    Progress {
        /// Pieces stored.
        have: u32,
    },
    /// Run `run` has stored every piece.
    AllStored {
        /// The run.
        run: u64,
    },
    /// Run `run`'s re-check found every piece intact.
    RecheckPassed {
        /// The run.
        run: u64,
    },
    /// Run `run`'s re-check found bad or missing pieces, or could not run.
    RecheckFailed {
        /// The run.
        run: u64,
        /// Why, for the operator.
        why: String,
        /// The pieces found bad or missing.
        bad: Vec<u32>,
    },
    /// The operator paused it.
    Pause,
    /// The operator resumed it.
    Resume,
    /// The operator removed it.
    Remove,
    /// Deleting its record (or data) failed.
    RemoveFailed {
        /// Why.
        why: String,
    },
}

impl Event {
    fn name(&self) -> &'static str {
        match self {
            Event::MetadataResolved { .. } => "metadata resolved",
            Event::ResolveFailed { .. } => "resolve failed",
            Event::Started { .. } => "started",
            Event::StartFailed { .. } => "start failed",
            Event::Progress { .. } => "progress",
            Event::AllStored { .. } => "all pieces stored",
            Event::RecheckPassed { .. } => "re-check passed",
            Event::RecheckFailed { .. } => "re-check failed",
            Event::Pause => "pause",
            Event::Resume => "resume",
            Event::Remove => "remove",
            Event::RemoveFailed { .. } => "remove failed",
        }
    }

    /// The run an event reports for, if it is a run's report.
    fn run(&self) -> Option<u64> {
        match self {
            Event::Started { run, .. }
            | Event::StartFailed { run, .. }
            | Event::AllStored { run }
            | Event::RecheckPassed { run }
            | Event::RecheckFailed { run, .. } => Some(*run),
            _ => None,
        }
    }
}

/// What the node must do, in the order given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Start the swarm as run `run`, importing (checking and marking) the
    /// data already on disk first when `import`; report
    /// [`Event::Started`] or [`Event::StartFailed`].
    StartSwarm {
        /// The run.
        run: u64,
        /// Import data already on disk.
        import: bool,
    },
    /// Stop the swarm and its announcer, running or still starting.
    StopSwarm,
    /// Re-check the whole content on disk; report
    /// [`Event::RecheckPassed`] or [`Event::RecheckFailed`].
    Recheck {
        /// The run.
        run: u64,
    },
    /// Run the `on_complete` hook.
    RunHook,
    /// Store the paused flag and the import intent as they are now.
    Save,
    /// Delete the torrent's record (and data, if asked) and forget it;
    /// report [`Event::RemoveFailed`] if that fails.
    Forget,
}

/// Why an event was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LifecycleError {
    /// The event reports on a run that is not the current one.
    #[error("{event} of run {run} is stale: run {current} is current")]
    Stale {
        /// The event.
        event: &'static str,
        /// Its run.
        run: u64,
        /// The current run.
        current: u64,
    },
    /// The event does not apply in this phase.
    #[error("{event} does not apply to a torrent that is {phase}")]
    Illegal {
        /// The event.
        event: &'static str,
        /// The phase it found.
        phase: Phase,
    },
    /// A resume of a torrent whose content failed the re-check.
    #[error(
        "{bad} pieces failed the completion re-check; remove it (deleting its data) and add it again"
    )]
    Corrupt {
        /// Pieces found bad or missing.
        bad: usize,
    },
}

/// One torrent's lifecycle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lifecycle {
    phase: Phase,
    paused: bool,
    /// The metadata is in hand: without it there is nothing to start.
    resolved: bool,
    import: bool,
    verify_on_complete: bool,
    run: u64,
    error: Option<String>,
    bad_pieces: Vec<u32>,
    have: u32,
    have_at_start: u32,
    hook_ran: bool,
}

impl Lifecycle {
    /// A torrent just added, its metadata not in hand yet: feed
    /// [`Event::MetadataResolved`] (at once for a `.torrent`). With
    /// `verify_on_complete` a completed download is re-checked before it
    /// is seeded.
    pub fn new(paused: bool, verify_on_complete: bool) -> Lifecycle {
        Lifecycle {
            phase: Phase::Resolving,
            paused,
            resolved: false,
            import: false,
            verify_on_complete,
            run: 0,
            error: None,
            bad_pieces: Vec::new(),
            have: 0,
            have_at_start: 0,
            hook_ran: false,
        }
    }

    /// A torrent read back from storage at start-up, with `have` pieces
    /// stored. `unavailable` says why its files cannot be used, if they
    /// cannot. Returns the commands to carry out (the start, unless it is
    /// paused or unavailable).
    pub fn restored(
        paused: bool,
        import: bool,
        have: u32,
        verify_on_complete: bool,
        unavailable: Option<String>,
    ) -> (Lifecycle, Vec<Command>) {
        let mut l = Lifecycle::new(paused, verify_on_complete);
        l.have = have;
        l.import = import;
        l.resolved = true;
        if let Some(why) = unavailable {
            l.phase = Phase::Failed;
            l.error = Some(why);
            return (l, Vec::new());
        }
        let cmds = l.settle();
        (l, cmds)
    }

    /// Where it is.
    pub fn phase(&self) -> Phase {
        self.phase
    }

    /// Whether the operator paused it.
    pub fn paused(&self) -> bool {
        self.paused
    }

    /// Whether its next start imports the data already on disk.
    pub fn import(&self) -> bool {
        self.import
    }

    /// The current run (0 before the first start).
    pub fn run(&self) -> u64 {
        self.run
    }

    /// Why it failed, when it did.
    pub fn error(&self) -> Option<&str> {
        self.error.as_deref()
    }

    /// Pieces the re-check found bad or missing.
    pub fn bad_pieces(&self) -> &[u32] {
        &self.bad_pieces
    }

    /// Pieces stored, as last seen.
    pub fn have(&self) -> u32 {
        self.have
    }

    /// Pieces stored when the current run started.
    pub fn have_at_start(&self) -> u32 {
        self.have_at_start
    }

    /// Feeds one event. Returns what to do, or why the event was refused
    /// (in which case nothing changed).
    pub fn handle(&mut self, event: Event) -> Result<Vec<Command>, LifecycleError> {
        let name = event.name();
        let illegal = |phase| Err(LifecycleError::Illegal { event: name, phase });
        if self.phase == Phase::Removed {
            if let Event::RemoveFailed { why } = event {
                // Deleting the record failed, so the torrent is back.
                self.fail(format!("remove failed: {why}"));
                return Ok(Vec::new());
            }
            return illegal(self.phase);
        }
        if let Some(run) = event.run() {
            if run != self.run {
                return Err(LifecycleError::Stale {
                    event: name,
                    run,
                    current: self.run,
                });
            }
        }
        match (self.phase, event) {
            (Phase::Resolving, Event::MetadataResolved { import }) => {
                self.import = import;
                self.resolved = true;
                Ok(self.settle())
            }
            (Phase::Resolving, Event::ResolveFailed { why }) => {
                self.fail(why);
                Ok(Vec::new())
            }
            (Phase::Starting, Event::Started { have, complete, .. }) => {
                self.have = have;
                self.have_at_start = have;
                self.phase = if complete {
                    Phase::Seeding
                } else {
                    Phase::Downloading
                };
                if std::mem::take(&mut self.import) {
                    return Ok(vec![Command::Save]);
                }
                Ok(Vec::new())
            }
            (Phase::Starting, Event::StartFailed { why, .. }) => {
                self.fail(why);
                Ok(Vec::new())
            }
            (Phase::Resolving, Event::Progress { .. }) => illegal(self.phase),
            (_, Event::Progress { have }) => {
                self.have = have;
                Ok(Vec::new())
            }
            (Phase::Downloading, Event::AllStored { run }) => {
                if self.verify_on_complete {
                    self.phase = Phase::Verifying;
                    return Ok(vec![Command::Recheck { run }]);
                }
                Ok(self.complete())
            }
            // Complete since its run started: nothing new to check or
            // announce.
            (Phase::Seeding, Event::AllStored { .. }) => Ok(Vec::new()),
            (Phase::Verifying, Event::RecheckPassed { .. }) => Ok(self.complete()),
            (Phase::Verifying, Event::RecheckFailed { why, bad, .. }) => {
                self.fail(why);
                self.bad_pieces = bad;
                // Corrupt data must not be served, and this run is over.
                self.run += 1;
                Ok(vec![Command::StopSwarm])
            }
            (phase, Event::Pause | Event::Resume) if !self.resolved => illegal(phase),
            (Phase::Paused, Event::Pause) => Ok(Vec::new()),
            (phase, Event::Pause) => {
                self.paused = true;
                self.run += 1;
                if phase != Phase::Failed {
                    self.phase = Phase::Paused;
                }
                Ok(vec![Command::Save, Command::StopSwarm])
            }
            (Phase::Paused | Phase::Failed, Event::Resume) => {
                if !self.bad_pieces.is_empty() {
                    return Err(LifecycleError::Corrupt {
                        bad: self.bad_pieces.len(),
                    });
                }
                self.paused = false;
                let mut cmds = vec![Command::Save];
                cmds.extend(self.start());
                Ok(cmds)
            }
            // Running or about to: nothing to do.
            (_, Event::Resume) => Ok(Vec::new()),
            // Never resolved: no swarm has run.
            (_, Event::Remove) if !self.resolved => {
                self.phase = Phase::Removed;
                Ok(vec![Command::Forget])
            }
            (_, Event::Remove) => {
                self.phase = Phase::Removed;
                self.run += 1;
                Ok(vec![Command::StopSwarm, Command::Forget])
            }
            (phase, _) => illegal(phase),
        }
    }

    /// Paused, or started.
    fn settle(&mut self) -> Vec<Command> {
        if self.paused {
            self.phase = Phase::Paused;
            Vec::new()
        } else {
            self.start()
        }
    }

    fn start(&mut self) -> Vec<Command> {
        self.run += 1;
        self.phase = Phase::Starting;
        self.error = None;
        vec![Command::StartSwarm {
            run: self.run,
            import: self.import,
        }]
    }

    fn fail(&mut self, why: String) {
        self.phase = Phase::Failed;
        self.error = Some(why);
    }

    /// Seeding; the hook runs the first time only.
    fn complete(&mut self) -> Vec<Command> {
        self.phase = Phase::Seeding;
        if std::mem::replace(&mut self.hook_ran, true) {
            Vec::new()
        } else {
            vec![Command::RunHook]
        }
    }
}

#[cfg(test)]
mod tests;
