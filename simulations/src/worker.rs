//! The worker thread that runs the second part of the nodes in parallel
//! windows (see `net.rs`): one thread for the whole run, fed a part, the
//! world and the window's end, giving the part back when done.

use std::sync::{mpsc, Arc};

use crate::net::World;
use crate::part::Part;

/// The thread that runs part 1 in parallel windows, for the whole run: a
/// thread started per window cost more than a small window's work (its
/// stack's first pages alone are tens of µs).
#[derive(Debug)]
pub(crate) struct Worker {
    jobs: mpsc::Sender<(Part, Arc<World>, u64)>,
    done: mpsc::Receiver<Part>,
}

/// Spins a waiting thread does before it sleeps: windows follow each
/// other within microseconds, and waking a sleeping thread costs more.
const SPINS: u32 = 1 << 14;

impl Worker {
    pub(crate) fn start() -> Worker {
        let (jobs, jobs_rx) = mpsc::channel::<(Part, Arc<World>, u64)>();
        let (done_tx, done) = mpsc::channel();
        // Detached: it ends when `jobs` is dropped with the simulator.
        std::thread::spawn(move || {
            while let Some((mut part, world, end)) = receive(&jobs_rx) {
                part.run_until(end, &world);
                // Let go of the world before the part goes back, so the
                // simulator can change it as soon as it has the part.
                drop(world);
                if done_tx.send(part).is_err() {
                    break;
                }
            }
        });
        Worker { jobs, done }
    }

    pub(crate) fn run(&self, part: Part, world: Arc<World>, end: u64) {
        self.jobs
            .send((part, world, end))
            .expect("the part's thread is running");
    }

    pub(crate) fn finish(&self) -> Part {
        receive(&self.done).expect("the part's thread panicked")
    }
}

/// The next message, spinning a little before sleeping; `None` once the
/// sender is gone.
fn receive<T>(rx: &mpsc::Receiver<T>) -> Option<T> {
    for _ in 0..SPINS {
        match rx.try_recv() {
            Ok(v) => return Some(v),
            Err(mpsc::TryRecvError::Empty) => std::hint::spin_loop(),
            Err(mpsc::TryRecvError::Disconnected) => return None,
        }
    }
    rx.recv().ok()
}
