//! Hosts in network namespaces for multi-host tests, and the processes run
//! on them.
//!
//! The topology (a bridge in a hub namespace, one namespace per host, veth
//! pairs, `tc tbf` on both directions of every link, 198.18.0.0/15
//! addresses) is built by `tests/netns/lab.sh`, the one copy of that logic,
//! which the benchmark scripts drive too. [`Lab`] calls it and deletes the
//! lab when dropped, so a failing test leaves no namespace behind; a lab a
//! killed run left behind is swept by the next one (its name carries the
//! pid that made it).
//!
//! [`HostProc`] is a child process whose stdout lines arrive on a channel
//! stamped with the instant they were read, so a test watching several
//! processes at once still learns when each one printed what.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// The lab script.
pub const LAB_SH: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/netns/lab.sh");

/// The /24 every lab host lives in (198.18.1.0/24 is the partition
/// test's).
pub const SUBNET: [u8; 3] = [198, 18, 2];

/// A lab of hosts 1..=n; dropping it deletes every namespace (and with
/// them every link, qdisc and process inside).
pub struct Lab {
    /// `shoal-TAG-PID`.
    pub name: String,
    /// Number of hosts.
    pub hosts: usize,
}

/// Why no lab can be built here, or `None` when it can: the caller must
/// be root and have `ip netns` and `tc`.
pub fn lab_unavailable() -> Option<String> {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let euid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .unwrap_or("?")
        .to_owned();
    if euid != "0" {
        return Some(format!(
            "not root (effective uid {euid}); network namespaces need root"
        ));
    }
    for (args, what) in [
        (&["ip", "netns", "list"][..], "`ip netns` (iproute2)"),
        (&["tc", "-V"][..], "`tc` (iproute2)"),
    ] {
        let ok = Command::new(args[0])
            .args(&args[1..])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            return Some(format!("{what} is not available"));
        }
    }
    None
}

impl Lab {
    /// Builds `hosts` hosts whose links are shaped to `rate` (a tc rate
    /// such as `50mbit`, or `none`) each way. Panics, with the script's
    /// message, if it cannot.
    pub fn up(tag: &str, hosts: usize, rate: &str) -> Lab {
        let _ = Command::new(LAB_SH).arg("sweep").status();
        let name = format!("shoal-{tag}-{}", std::process::id());
        let lab = Lab { name, hosts };
        let out = Command::new(LAB_SH)
            .args(["up", &lab.name, &hosts.to_string(), rate])
            .arg(SUBNET.map(|b| b.to_string()).join("."))
            .output()
            .unwrap_or_else(|e| panic!("cannot run {LAB_SH}: {e}"));
        assert!(
            out.status.success(),
            "lab.sh up {} failed: {}",
            lab.name,
            String::from_utf8_lossy(&out.stderr)
        );
        lab
    }

    /// Host `i`'s namespace.
    pub fn ns(&self, i: usize) -> String {
        assert!((1..=self.hosts).contains(&i), "no host {i}");
        format!("{}-h{i}", self.name)
    }

    /// Host `i`'s address.
    pub fn addr(&self, i: usize) -> Ipv4Addr {
        assert!((1..=self.hosts).contains(&i), "no host {i}");
        Ipv4Addr::new(SUBNET[0], SUBNET[1], SUBNET[2], i as u8)
    }

    /// The command prefix that runs a program on host `i`.
    pub fn wrapper(&self, i: usize) -> Vec<String> {
        vec!["ip".into(), "netns".into(), "exec".into(), self.ns(i)]
    }

    /// `program` to be run on host `i`. `ip netns exec` execs it, so the
    /// child's pid is the program's own.
    pub fn command(&self, i: usize, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let w = self.wrapper(i);
        let mut c = Command::new(&w[0]);
        c.args(&w[1..]).arg(program);
        c
    }

    /// The namespaces of this lab that `ip netns list` shows.
    pub fn listed(&self) -> Vec<String> {
        let out = Command::new("ip")
            .args(["netns", "list"])
            .output()
            .expect("ip netns list");
        let head = format!("{}-", self.name);
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.split_whitespace().next())
            .filter(|n| n.starts_with(&head))
            .map(str::to_owned)
            .collect()
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        let _ = Command::new(LAB_SH)
            .args(["down", &self.name])
            .stderr(Stdio::null())
            .status();
    }
}

/// A process on a lab host (or anywhere), killed on drop.
pub struct HostProc {
    /// Name used in messages.
    pub name: String,
    /// The child process.
    pub child: Child,
    /// Its stdout lines, each with the instant it was read.
    lines: mpsc::Receiver<(Instant, String)>,
    /// Where its stderr goes.
    pub log: PathBuf,
}

impl HostProc {
    /// Starts `cmd` with stdout piped and stderr written to `log`.
    pub fn spawn(name: &str, cmd: &mut Command, log: &Path) -> HostProc {
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(log).unwrap());
        let mut child = cmd.spawn().unwrap_or_else(|e| panic!("start {name}: {e}"));
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send((Instant::now(), line)).is_err() {
                    break;
                }
            }
        });
        HostProc {
            name: name.into(),
            child,
            lines,
            log: log.to_path_buf(),
        }
    }

    /// Its stderr so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The next stdout line starting with `prefix` that arrives within
    /// `within`: the rest of the line and when it was read. `Err` says
    /// why not (timeout, or the process ended) and carries the log.
    pub fn line(&mut self, prefix: &str, within: Duration) -> Result<(String, Instant), String> {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self
                .lines
                .recv_timeout(left.min(Duration::from_millis(200)))
            {
                Ok((at, l)) => {
                    if let Some(rest) = l.strip_prefix(prefix) {
                        return Ok((rest.trim().to_owned(), at));
                    }
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    let status = self.child.wait().ok();
                    return Err(format!(
                        "{} ended ({status:?}) without printing {prefix:?}; log:\n{}",
                        self.name,
                        self.log_text()
                    ));
                }
                Err(mpsc::RecvTimeoutError::Timeout) if left.is_zero() => {
                    return Err(format!(
                        "{} did not print {prefix:?} within {within:?}; log:\n{}",
                        self.name,
                        self.log_text()
                    ));
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {}
            }
        }
    }

    /// Its exit status, if it has exited.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }
}

impl Drop for HostProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
