//! Subcommands of the `shoal` binary. Each module owns its clap arguments
//! and a `run` function; shared helpers for reading inputs and writing
//! output live here.

/// `println!` through [`out`].
macro_rules! outln {
    () => {
        $crate::cli::out(format_args!("\n"))
    };
    ($($arg:tt)*) => {
        $crate::cli::out(format_args!("{}\n", format_args!($($arg)*)))
    };
}

/// `print!` through [`out`].
macro_rules! outp {
    ($($arg:tt)*) => {
        $crate::cli::out(format_args!($($arg)*))
    };
}

/// `eprintln!` through [`err`].
macro_rules! errln {
    () => {
        $crate::cli::err(format_args!("\n"))
    };
    ($($arg:tt)*) => {
        $crate::cli::err(format_args!("{}\n", format_args!($($arg)*)))
    };
}

/// `eprint!` through [`err`].
macro_rules! errp {
    ($($arg:tt)*) => {
        $crate::cli::err(format_args!($($arg)*))
    };
}

pub mod add;
pub mod api_client;
pub mod create;
pub mod demo;
pub mod fetch;
pub mod ls;
pub mod node;
pub mod peer;
pub mod rm;
pub mod seed;
pub mod show;
pub mod status;
pub mod verify;

use std::io::{ErrorKind, Write};
use std::path::Path;

use anyhow::Context;
use shoal_proto::Metainfo;

/// Largest .torrent we read. A 50 GB image at 16 KiB pieces would need
/// about 64 MB of SHA-1 hashes; nothing honest comes near this.
const MAX_TORRENT_FILE: u64 = 128 << 20;

/// Reads and checks a .torrent file, naming the file in any error.
pub fn read_torrent(path: &Path) -> anyhow::Result<Metainfo> {
    let len = std::fs::metadata(path)
        .with_context(|| format!("{}: cannot read", path.display()))?
        .len();
    anyhow::ensure!(
        len <= MAX_TORRENT_FILE,
        "{}: {len} bytes is too large for a .torrent",
        path.display()
    );
    let bytes = std::fs::read(path).with_context(|| format!("{}: cannot read", path.display()))?;
    Metainfo::from_bytes(&bytes).with_context(|| format!("{}: not a valid torrent", path.display()))
}

/// Parses a size such as `4M`, `256KiB`, `1m` or `65536` into bytes.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num.parse().map_err(|_| format!("{s:?} is not a size"))?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        other => return Err(format!("unknown size unit {other:?} in {s:?}")),
    };
    n.checked_mul(mult)
        .ok_or_else(|| format!("{s:?} is too large"))
}

/// Writes a command's output to stdout, where `println!` would panic if
/// the write failed. A reader that went away (`shoal show x | head -1`)
/// ends the command quietly with status 141, as SIGPIPE ends a C tool
/// (Rust ignores that signal, so the write fails instead). Any other
/// failure, such as a full disk under `> file`, is reported on stderr and
/// ends the command with the error status 2: the output is not whole.
pub fn out(args: std::fmt::Arguments) {
    let mut stdout = std::io::stdout().lock();
    let Err(e) = stdout.write_fmt(args).and_then(|()| stdout.flush()) else {
        return;
    };
    if e.kind() == ErrorKind::BrokenPipe {
        std::process::exit(141);
    }
    errln!("error: cannot write the output: {e}");
    std::process::exit(2);
}

/// Writes a diagnostic to stderr. Unlike `eprintln!` it never panics: a
/// closed stderr must not stop a download that is otherwise fine.
pub fn err(args: std::fmt::Arguments) {
    let _ = std::io::stderr().write_fmt(args);
}

#[cfg(test)]
mod tests {
    use super::parse_size;

    #[test]
    fn sizes_parse() {
        assert_eq!(parse_size("65536"), Ok(65536));
        assert_eq!(parse_size("4M"), Ok(4 << 20));
        assert_eq!(parse_size("256KiB"), Ok(256 << 10));
        assert_eq!(parse_size("1g"), Ok(1 << 30));
        assert!(parse_size("").is_err());
        assert!(parse_size("4X").is_err());
        assert!(parse_size("99999999999999999999G").is_err());
    }
}
