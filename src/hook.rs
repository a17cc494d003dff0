//! The on-complete hook (`shoal fetch --on-complete`, the node's
//! `[mesh] on_complete`): a shell command run once a download is verified,
//! told what finished through its environment, like aria2's and
//! Transmission's done-hooks.
//!
//! Invariant: the command runs off the async runtime and its stdin is
//! closed, so a hook that reads never blocks the node.

use std::path::Path;

use shoal_proto::InfoHash;

/// Why a hook did not succeed.
#[derive(Debug, thiserror::Error)]
pub enum HookError {
    /// It ran and exited unsuccessfully.
    #[error("exited with {0}")]
    Failed(std::process::ExitStatus),
    /// It could not be started.
    #[error("cannot be run: {0}")]
    Spawn(std::io::Error),
    /// The task running it failed.
    #[error("its task failed: {0}")]
    Task(tokio::task::JoinError),
}

/// Runs `cmd` with `sh -c`, with `SHOAL_INFOHASH` (hex) and `SHOAL_PATH`
/// (the content: file or top directory) set, and waits for it.
pub async fn run(cmd: &str, ih: InfoHash, content: &Path) -> Result<(), HookError> {
    let mut command = std::process::Command::new("sh");
    command
        .arg("-c")
        .arg(cmd)
        .env("SHOAL_INFOHASH", ih.to_hex())
        .env("SHOAL_PATH", content)
        .stdin(std::process::Stdio::null());
    match tokio::task::spawn_blocking(move || command.status()).await {
        Ok(Ok(s)) if s.success() => Ok(()),
        Ok(Ok(s)) => Err(HookError::Failed(s)),
        Ok(Err(e)) => Err(HookError::Spawn(e)),
        Err(e) => Err(HookError::Task(e)),
    }
}
