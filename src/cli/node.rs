//! `shoal node` and `shoal tracker`: run the long-lived daemon until
//! SIGINT or SIGTERM, then shut down gracefully within a bounded time.
//! `shoal node` runs the mesh (torrents over QUIC, the REST API) and, with
//! `--tracker`, the tracker role too; `shoal tracker` runs only the
//! tracker role.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use shoal::config::{Config, LogFormat};
use shoal::node::Node;

/// How long a graceful shutdown may take before the node stops anyway.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Flags shared by `node` and `tracker`. Each overrides the config file and
/// can also be set through the environment variable it names.
#[derive(Debug, Args)]
pub struct NodeArgs {
    /// TOML config file (see `shoal config example`).
    #[arg(long, env = "SHOAL_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Directory for the node's key and state [default: ./shoal-data].
    #[arg(long, env = "SHOAL_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Also serve the BitTorrent tracker facade and replicate its table.
    #[arg(long, env = "SHOAL_TRACKER")]
    pub tracker: bool,
    /// HTTP listen address [default: 127.0.0.1:7880].
    #[arg(long, env = "SHOAL_HTTP", value_name = "ADDR")]
    pub http: Option<SocketAddr>,
    /// Gossip (libp2p TCP) listen address [default: 127.0.0.1:7881].
    #[arg(long, env = "SHOAL_GOSSIP", value_name = "ADDR")]
    pub gossip: Option<SocketAddr>,
    /// QUIC (UDP) listen address of the mesh [default: 0.0.0.0:7883].
    #[arg(long, env = "SHOAL_LISTEN", value_name = "ADDR")]
    pub listen: Option<SocketAddr>,
    /// Where torrents added without a target directory go [default:
    /// ./downloads].
    #[arg(long, env = "SHOAL_DOWNLOAD_DIR", value_name = "DIR")]
    pub download_dir: Option<PathBuf>,
    /// A node to join, as host:port or a multiaddr; repeat for several.
    #[arg(long, env = "SHOAL_JOIN", value_name = "ADDR", value_delimiter = ',')]
    pub join: Vec<String>,
    /// Log format.
    #[arg(long, env = "SHOAL_LOG_FORMAT", value_enum)]
    pub log_format: Option<LogFormat>,
    /// A file holding the token the REST API requires (`http.api_token_file`).
    /// The client commands read the same variable, so one setting serves
    /// both on a machine.
    #[arg(long, env = "SHOAL_API_TOKEN_FILE", value_name = "PATH")]
    pub api_token_file: Option<PathBuf>,
}

impl NodeArgs {
    /// The config file (or defaults) with flags and environment on top.
    pub fn resolve(&self, force_tracker: bool) -> anyhow::Result<Config> {
        let mut c = match &self.config {
            Some(p) => Config::load(p)?,
            None => Config::default(),
        };
        if let Some(d) = &self.data_dir {
            c.data_dir = d.clone();
        }
        if self.tracker || force_tracker {
            c.tracker.enabled = true;
        }
        // `shoal tracker` is the tracker role alone: no mesh, no storage.
        if force_tracker {
            c.mesh.enabled = false;
        }
        if let Some(l) = self.listen {
            c.mesh.listen = l;
        }
        if let Some(d) = &self.download_dir {
            c.mesh.download_dir = d.clone();
        }
        if let Some(h) = self.http {
            c.http.listen = h;
        }
        if let Some(g) = self.gossip {
            c.gossip.listen = g;
        }
        if !self.join.is_empty() {
            c.gossip.join = self.join.clone();
        }
        if let Some(f) = self.log_format {
            c.log.format = f;
        }
        if let Some(t) = &self.api_token_file {
            c.http.api_token_file = Some(t.clone());
        }
        c.validate()?;
        Ok(c)
    }
}

pub fn run(a: NodeArgs, force_tracker: bool) -> anyhow::Result<ExitCode> {
    let cfg = a.resolve(force_tracker)?;
    shoal::logging::init(&cfg.log);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    rt.block_on(async move {
        // Watch the signals before the node says it is ready: a SIGTERM
        // sent just after "http listening on" must stop it cleanly, not
        // kill it with the default action.
        let signals = watch_signals()?;
        let node = Node::start(cfg, None).await?;
        signals.await;
        tracing::info!("shutting down");
        node.stop(SHUTDOWN_GRACE).await;
        Ok::<_, anyhow::Error>(())
    })?;
    Ok(ExitCode::SUCCESS)
}

/// Installs the SIGINT and SIGTERM handlers now; the returned future ends
/// when either signal arrives.
fn watch_signals() -> anyhow::Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut int = signal(SignalKind::interrupt()).context("cannot watch SIGINT")?;
    let mut term = signal(SignalKind::terminate()).context("cannot watch SIGTERM")?;
    Ok(async move {
        tokio::select! {
            _ = int.recv() => {}
            _ = term.recv() => {}
        }
    })
}
