//! Logging set-up: tracing to stderr, human or JSON, filtered by `RUST_LOG`
//! or the config's filter.

use tracing_subscriber::EnvFilter;

use crate::config::{LogConfig, LogFormat};

/// Installs the global subscriber. Calling it twice is harmless (the second
/// call changes nothing), which keeps tests that start nodes in-process
/// simple.
pub fn init(cfg: &LogConfig) {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&cfg.filter))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match cfg.format {
        LogFormat::Human => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}

/// Prints one of the lines a starting node puts on stdout (where it
/// listens), for scripts and tests that wait for them. Unlike `println!`
/// it never panics: a node whose stdout was closed keeps running.
pub fn stdout_line(args: std::fmt::Arguments) {
    use std::io::Write;
    let _ = writeln!(std::io::stdout(), "{args}");
}
