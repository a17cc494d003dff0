//! Progress bars for long commands: shown only when stderr is a terminal,
//! so scripts and CI logs stay clean.

use std::io::IsTerminal;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// A byte-count bar that follows an atomic counter from a background
/// thread until dropped.
#[derive(Debug)]
pub struct ByteProgress {
    bar: ProgressBar,
}

impl ByteProgress {
    /// A bar for `total` bytes, labelled `msg`; hidden off a terminal.
    pub fn new(total: u64, msg: &'static str) -> ByteProgress {
        let target = if std::io::stderr().is_terminal() {
            ProgressDrawTarget::stderr()
        } else {
            ProgressDrawTarget::hidden()
        };
        let bar = ProgressBar::with_draw_target(Some(total), target);
        bar.set_style(
            ProgressStyle::with_template(
                "{msg:>8} [{bar:40}] {bytes}/{total_bytes} {binary_bytes_per_sec} eta {eta}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
        );
        bar.set_message(msg);
        ByteProgress { bar }
    }

    /// Runs `f` while the bar follows `counter`, then clears the bar.
    pub fn follow<T>(&self, counter: &AtomicU64, f: impl FnOnce() -> T) -> T {
        if self.bar.is_hidden() {
            return f();
        }
        let done = std::sync::atomic::AtomicBool::new(false);
        std::thread::scope(|s| {
            s.spawn(|| {
                while !done.load(Ordering::Relaxed) {
                    self.bar.set_position(counter.load(Ordering::Relaxed));
                    std::thread::sleep(Duration::from_millis(100));
                }
            });
            let out = f();
            done.store(true, Ordering::Relaxed);
            self.bar.finish_and_clear();
            out
        })
    }
}
