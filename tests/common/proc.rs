//! Child processes and tmpfs mounts for the process-level tests.
//!
//! A [`Proc`] is killed on drop, keeps every stdout line it printed and
//! sends its stderr to a log file, so a test can wait for a line on either
//! (always with a deadline) and print everything the process said when it
//! fails. A [`Tmpfs`] is unmounted on drop, even when the test panics.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How often waits look again.
const POLL: Duration = Duration::from_millis(50);

/// A child process killed on drop.
pub struct Proc {
    pub name: String,
    child: Mutex<Child>,
    stdout: Arc<Mutex<Vec<String>>>,
    log: PathBuf,
}

impl Proc {
    /// Starts `cmd` with `RUST_LOG=warn,shoal=info` (unless the command
    /// sets its own), stdout captured and stderr written to `log`.
    pub fn spawn(name: &str, cmd: &mut Command, log: &Path) -> Proc {
        if !cmd.get_envs().any(|(k, _)| k == "RUST_LOG") {
            cmd.env("RUST_LOG", "warn,shoal=info");
        }
        cmd.stdout(Stdio::piped())
            .stderr(std::fs::File::create(log).unwrap());
        let mut child = cmd.spawn().unwrap_or_else(|e| panic!("start {name}: {e}"));
        let out = child.stdout.take().unwrap();
        let stdout = Arc::new(Mutex::new(Vec::new()));
        let lines = stdout.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                lines.lock().unwrap().push(line);
            }
        });
        Proc {
            name: name.into(),
            child: Mutex::new(child),
            stdout,
            log: log.to_path_buf(),
        }
    }

    /// Its stderr so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Its stdout so far.
    pub fn stdout_text(&self) -> String {
        self.stdout.lock().unwrap().join("\n")
    }

    /// Everything it printed, for a failure message.
    pub fn output(&self) -> String {
        format!(
            "--- {} stdout:\n{}\n--- {} stderr:\n{}",
            self.name,
            self.stdout_text(),
            self.name,
            self.log_text()
        )
    }

    /// Waits at most `within` for a stdout line starting with `prefix`;
    /// returns the rest of it, trimmed.
    pub fn line(&self, prefix: &str, within: Duration) -> String {
        self.wait_for(within, &format!("stdout line {prefix:?}"), |p| {
            p.stdout
                .lock()
                .unwrap()
                .iter()
                .find_map(|l| l.strip_prefix(prefix).map(|r| r.trim().to_owned()))
        })
    }

    /// Waits at most `within` for a stderr line for which `f` returns
    /// something; returns it.
    pub fn log_line<T>(
        &self,
        within: Duration,
        what: &str,
        mut f: impl FnMut(&str) -> Option<T>,
    ) -> T {
        self.wait_for(within, what, |p| p.log_text().lines().find_map(&mut f))
    }

    /// Polls `f` until it returns something; panics after `within` with
    /// `what` and the process's output. Also panics if the process exits
    /// first.
    pub fn wait_for<T>(
        &self,
        within: Duration,
        what: &str,
        mut f: impl FnMut(&Proc) -> Option<T>,
    ) -> T {
        let deadline = Instant::now() + within;
        loop {
            if let Some(v) = f(self) {
                return v;
            }
            let exited = self.exited();
            assert!(
                exited.is_none() && Instant::now() < deadline,
                "{}: no {what} within {within:?} (exit status {exited:?})\n{}",
                self.name,
                self.output()
            );
            std::thread::sleep(POLL);
        }
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.lock().unwrap().id()
    }

    /// The exit status, if it has exited.
    pub fn exited(&self) -> Option<ExitStatus> {
        self.child.lock().unwrap().try_wait().ok().flatten()
    }

    /// Waits at most `within` for it to exit; panics with its output if it
    /// does not.
    pub fn wait_exit(&self, within: Duration) -> ExitStatus {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.exited() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "{} did not exit within {within:?}\n{}",
                self.name,
                self.output()
            );
            std::thread::sleep(POLL);
        }
    }

    /// SIGKILL, then reap it.
    pub fn kill(&self) {
        let mut child = self.child.lock().unwrap();
        let _ = child.kill();
        let _ = child.wait();
    }

    /// SIGTERM, then wait at most `within` for it to exit.
    pub fn terminate(&self, within: Duration) -> ExitStatus {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.pid().to_string())
            .status();
        self.wait_exit(within)
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Whether the tests run as root (mounts need it).
pub fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// A tmpfs mounted on a directory; unmounted on drop.
pub struct Tmpfs {
    pub dir: PathBuf,
}

impl Tmpfs {
    /// Mounts a tmpfs of `mib` MiB on `dir` (created if missing).
    pub fn mount(dir: &Path, mib: u64) -> Result<Tmpfs, String> {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o"])
            .arg(format!("size={mib}m"))
            .arg("tmpfs")
            .arg(dir)
            .output()
            .map_err(|e| format!("cannot run mount: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "mount tmpfs on {}: {}",
                dir.display(),
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        Ok(Tmpfs {
            dir: dir.to_path_buf(),
        })
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        // A process still holding a file keeps the mount busy for a
        // moment after it is killed; then detach it lazily.
        for _ in 0..20 {
            let ok = Command::new("umount")
                .arg(&self.dir)
                .status()
                .is_ok_and(|s| s.success());
            if ok {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
    }
}

/// The number after `key=` in a line of `key=value` words (a unit
/// after the digits, as in `rate=1000B/s`, is ignored).
pub fn field(line: &str, key: &str) -> Option<u64> {
    let v = line
        .split_whitespace()
        .find_map(|w| w.strip_prefix(key)?.strip_prefix('='))?;
    let digits = v.find(|c: char| !c.is_ascii_digit()).unwrap_or(v.len());
    v[..digits].parse().ok()
}
