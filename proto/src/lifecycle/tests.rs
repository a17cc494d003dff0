//! Every transition of the torrent lifecycle, the refused ones included.

use super::*;

fn ok(l: &mut Lifecycle, e: Event) -> Vec<Command> {
    let what = format!("{e:?} in {}", l.phase());
    l.handle(e)
        .unwrap_or_else(|err| panic!("{what} refused: {err}"))
}

/// Feeds `e`, expects it refused with `err`, and the machine unchanged.
fn refused(l: &mut Lifecycle, e: Event, err: LifecycleError) {
    let before = l.clone();
    assert_eq!(l.handle(e.clone()), Err(err), "{e:?}");
    assert_eq!(*l, before, "a refused {e:?} changed nothing");
}

fn illegal(l: &mut Lifecycle, e: Event) {
    let err = LifecycleError::Illegal {
        event: e.name(),
        phase: l.phase(),
    };
    refused(l, e, err);
}

fn start_swarm(run: u64, import: bool) -> Command {
    Command::StartSwarm { run, import }
}

fn started(run: u64, have: u32, complete: bool) -> Event {
    Event::Started {
        run,
        have,
        complete,
    }
}

/// A running torrent: resolved, started as run 1, `have` of 10 pieces.
fn downloading(verify: bool) -> Lifecycle {
    let mut l = Lifecycle::new(false, verify);
    ok(&mut l, Event::MetadataResolved { import: false });
    ok(&mut l, started(1, 2, false));
    assert_eq!(l.phase(), Phase::Downloading);
    l
}

#[test]
fn a_download_is_rechecked_then_seeded_and_the_hook_runs() {
    let mut l = Lifecycle::new(false, true);
    assert_eq!(l.phase(), Phase::Resolving);
    assert_eq!(
        ok(&mut l, Event::MetadataResolved { import: false }),
        vec![start_swarm(1, false)]
    );
    assert_eq!(l.phase(), Phase::Starting);
    assert_eq!(ok(&mut l, started(1, 3, false)), vec![]);
    assert_eq!(
        (l.phase(), l.have(), l.have_at_start()),
        (Phase::Downloading, 3, 3)
    );
    assert_eq!(ok(&mut l, Event::Progress { have: 7 }), vec![]);
    assert_eq!((l.have(), l.have_at_start()), (7, 3));
    assert_eq!(
        ok(&mut l, Event::AllStored { run: 1 }),
        vec![Command::Recheck { run: 1 }]
    );
    assert_eq!(l.phase(), Phase::Verifying);
    assert_eq!(
        ok(&mut l, Event::RecheckPassed { run: 1 }),
        vec![Command::RunHook]
    );
    assert_eq!(l.phase(), Phase::Seeding);
    assert_eq!(l.error(), None);
}

#[test]
fn without_recheck_a_complete_download_seeds_at_once() {
    let mut l = downloading(false);
    assert_eq!(
        ok(&mut l, Event::AllStored { run: 1 }),
        vec![Command::RunHook]
    );
    assert_eq!(l.phase(), Phase::Seeding);
}

#[test]
fn complete_at_start_seeds_without_recheck_or_hook() {
    let (mut l, cmds) = Lifecycle::restored(false, false, 10, true, None);
    assert_eq!(cmds, vec![start_swarm(1, false)]);
    assert_eq!(ok(&mut l, started(1, 10, true)), vec![]);
    assert_eq!(l.phase(), Phase::Seeding);
    assert_eq!(ok(&mut l, Event::AllStored { run: 1 }), vec![]);
    assert_eq!(l.phase(), Phase::Seeding);
}

#[test]
fn the_hook_runs_exactly_once() {
    let mut l = downloading(true);
    ok(&mut l, Event::AllStored { run: 1 });
    assert_eq!(
        ok(&mut l, Event::RecheckPassed { run: 1 }),
        vec![Command::RunHook]
    );
    assert_eq!(
        ok(&mut l, Event::Pause),
        vec![Command::Save, Command::StopSwarm]
    );
    assert_eq!(
        ok(&mut l, Event::Resume),
        vec![Command::Save, start_swarm(3, false)]
    );
    // Pieces went missing while it was paused: fetched and checked again,
    // but the hook has run already.
    ok(&mut l, started(3, 8, false));
    ok(&mut l, Event::AllStored { run: 3 });
    assert_eq!(ok(&mut l, Event::RecheckPassed { run: 3 }), vec![]);
    assert_eq!(l.phase(), Phase::Seeding);
}

#[test]
fn a_failed_recheck_stops_serving_and_refuses_resume() {
    let mut l = downloading(true);
    ok(&mut l, Event::AllStored { run: 1 });
    let failed = Event::RecheckFailed {
        run: 1,
        why: "2 pieces failed the completion re-check".into(),
        bad: vec![4, 9],
    };
    assert_eq!(ok(&mut l, failed), vec![Command::StopSwarm]);
    assert_eq!(l.phase(), Phase::Failed);
    assert_eq!(l.bad_pieces(), &[4, 9]);
    assert_eq!(l.error(), Some("2 pieces failed the completion re-check"));
    refused(
        &mut l,
        Event::RecheckPassed { run: 1 },
        LifecycleError::Stale {
            event: "re-check passed",
            run: 1,
            current: 2,
        },
    );
    refused(&mut l, Event::Resume, LifecycleError::Corrupt { bad: 2 });
    assert_eq!(
        ok(&mut l, Event::Pause),
        vec![Command::Save, Command::StopSwarm]
    );
    assert_eq!((l.phase(), l.paused()), (Phase::Failed, true));
    refused(&mut l, Event::Resume, LifecycleError::Corrupt { bad: 2 });
    assert_eq!(
        ok(&mut l, Event::Remove),
        vec![Command::StopSwarm, Command::Forget]
    );
    assert_eq!(l.phase(), Phase::Removed);
}

#[test]
fn reports_of_an_earlier_run_are_stale() {
    let mut l = Lifecycle::new(false, true);
    ok(&mut l, Event::MetadataResolved { import: false });
    ok(&mut l, Event::Pause);
    assert_eq!((l.phase(), l.run()), (Phase::Paused, 2));
    let stale = |event, run| LifecycleError::Stale {
        event,
        run,
        current: 2,
    };
    refused(&mut l, started(1, 0, false), stale("started", 1));
    let failed = Event::StartFailed {
        run: 1,
        why: "x".into(),
    };
    refused(&mut l, failed, stale("start failed", 1));
    refused(
        &mut l,
        Event::AllStored { run: 1 },
        stale("all pieces stored", 1),
    );
    // The current run's report, in the wrong phase, is illegal instead.
    illegal(&mut l, Event::AllStored { run: 2 });
    illegal(&mut l, started(2, 0, false));
}

#[test]
fn a_failed_start_can_be_resumed() {
    let mut l = Lifecycle::new(false, true);
    ok(&mut l, Event::MetadataResolved { import: false });
    let failed = Event::StartFailed {
        run: 1,
        why: "disk full".into(),
    };
    assert_eq!(ok(&mut l, failed), vec![]);
    assert_eq!((l.phase(), l.error()), (Phase::Failed, Some("disk full")));
    assert_eq!(
        ok(&mut l, Event::Resume),
        vec![Command::Save, start_swarm(2, false)]
    );
    assert_eq!((l.phase(), l.error()), (Phase::Starting, None));
}

#[test]
fn the_import_intent_lasts_until_a_run_starts_with_it() {
    let mut l = Lifecycle::new(true, true);
    assert_eq!(ok(&mut l, Event::MetadataResolved { import: true }), vec![]);
    assert_eq!((l.phase(), l.import()), (Phase::Paused, true));
    assert_eq!(ok(&mut l, Event::Pause), vec![], "paused already");
    // As after a restart: the stored intent comes back.
    let (mut l, cmds) = Lifecycle::restored(true, l.import(), 0, true, None);
    assert_eq!((l.phase(), cmds), (Phase::Paused, vec![]));
    assert_eq!(
        ok(&mut l, Event::Resume),
        vec![Command::Save, start_swarm(1, true)]
    );
    assert_eq!(ok(&mut l, started(1, 10, true)), vec![Command::Save]);
    assert!(!l.import());
    assert_eq!(l.phase(), Phase::Seeding);
}

#[test]
fn a_restored_torrent_whose_files_are_gone_is_failed_until_resumed() {
    let (mut l, cmds) = Lifecycle::restored(false, false, 4, true, Some("gone".into()));
    assert_eq!(cmds, vec![]);
    assert_eq!(
        (l.phase(), l.error(), l.have()),
        (Phase::Failed, Some("gone"), 4)
    );
    assert_eq!(
        ok(&mut l, Event::Resume),
        vec![Command::Save, start_swarm(1, false)]
    );
}

#[test]
fn resume_while_running_and_pause_while_paused_do_nothing() {
    let mut l = downloading(true);
    assert_eq!(ok(&mut l, Event::Resume), vec![]);
    assert_eq!((l.phase(), l.run()), (Phase::Downloading, 1));
    ok(&mut l, Event::Pause);
    assert_eq!(ok(&mut l, Event::Pause), vec![]);
    assert_eq!(l.run(), 2);
}

#[test]
fn a_magnet_that_does_not_resolve_fails_and_can_only_be_removed() {
    let mut l = Lifecycle::new(false, true);
    illegal(&mut l, Event::Pause);
    illegal(&mut l, Event::Resume);
    illegal(&mut l, Event::Progress { have: 1 });
    ok(
        &mut l,
        Event::ResolveFailed {
            why: "no peers".into(),
        },
    );
    assert_eq!((l.phase(), l.error()), (Phase::Failed, Some("no peers")));
    illegal(&mut l, Event::Resume);
    illegal(&mut l, Event::Pause);
    illegal(&mut l, Event::MetadataResolved { import: false });
    assert_eq!(ok(&mut l, Event::Remove), vec![Command::Forget]);
}

#[test]
fn removing_ends_everything_but_a_failed_removal() {
    let mut l = Lifecycle::new(false, true);
    assert_eq!(ok(&mut l, Event::Remove), vec![Command::Forget]);
    for e in [
        Event::Pause,
        Event::Resume,
        Event::Remove,
        Event::Progress { have: 1 },
        Event::MetadataResolved { import: false },
        Event::AllStored { run: 0 },
    ] {
        illegal(&mut l, e);
    }
    let mut l = downloading(true);
    assert_eq!(
        ok(&mut l, Event::Remove),
        vec![Command::StopSwarm, Command::Forget]
    );
    illegal(&mut l, Event::AllStored { run: 2 });
    ok(&mut l, Event::RemoveFailed { why: "EIO".into() });
    assert_eq!(
        (l.phase(), l.error()),
        (Phase::Failed, Some("remove failed: EIO"))
    );
    illegal(
        &mut l,
        Event::RemoveFailed {
            why: "again".into(),
        },
    );
}

#[test]
fn events_out_of_order_are_illegal_in_every_phase() {
    // Resolving.
    let mut l = Lifecycle::new(false, true);
    illegal(&mut l, started(0, 0, false));
    illegal(&mut l, Event::AllStored { run: 0 });
    illegal(&mut l, Event::RecheckPassed { run: 0 });
    // Starting.
    ok(&mut l, Event::MetadataResolved { import: false });
    illegal(&mut l, Event::MetadataResolved { import: false });
    illegal(&mut l, Event::ResolveFailed { why: "x".into() });
    illegal(&mut l, Event::AllStored { run: 1 });
    illegal(&mut l, Event::RecheckPassed { run: 1 });
    let failed = Event::RecheckFailed {
        run: 1,
        why: "x".into(),
        bad: vec![],
    };
    illegal(&mut l, failed.clone());
    // Downloading.
    let mut l = downloading(true);
    illegal(&mut l, started(1, 0, false));
    illegal(
        &mut l,
        Event::StartFailed {
            run: 1,
            why: "x".into(),
        },
    );
    illegal(&mut l, Event::RecheckPassed { run: 1 });
    illegal(&mut l, failed.clone());
    illegal(&mut l, Event::RemoveFailed { why: "x".into() });
    // Verifying.
    ok(&mut l, Event::AllStored { run: 1 });
    illegal(&mut l, Event::AllStored { run: 1 });
    illegal(&mut l, started(1, 0, false));
    // Seeding.
    ok(&mut l, Event::RecheckPassed { run: 1 });
    illegal(&mut l, Event::RecheckPassed { run: 1 });
    illegal(&mut l, failed);
    illegal(&mut l, Event::MetadataResolved { import: true });
    // Paused.
    ok(&mut l, Event::Pause);
    illegal(&mut l, Event::AllStored { run: 2 });
    illegal(&mut l, Event::ResolveFailed { why: "x".into() });
    assert_eq!(ok(&mut l, Event::Progress { have: 9 }), vec![]);
    assert_eq!(l.have(), 9, "storage's count is kept while paused");
}

#[test]
fn errors_read_well() {
    assert_eq!(
        LifecycleError::Illegal {
            event: "resume",
            phase: Phase::Resolving
        }
        .to_string(),
        "resume does not apply to a torrent that is resolving"
    );
    assert!(LifecycleError::Corrupt { bad: 3 }
        .to_string()
        .starts_with("3 pieces failed the completion re-check"));
}
