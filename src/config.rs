//! The node's configuration: a TOML file with documented defaults, then
//! environment variables and flags on top (the CLI applies those).
//!
//! Invariants: unknown keys are refused (`deny_unknown_fields`), so a typo
//! never silently falls back to a default; every field has a default, so an
//! empty file is a valid config; `EXAMPLE` is the default config written out
//! with comments, and a test keeps the two identical.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use shoal_proto::swarm::LeecherChoking;

/// Why a config could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The file is not valid TOML for this schema.
    #[error("{}: {source}", path.display())]
    Parse {
        /// The file.
        path: PathBuf,
        /// What toml said, with line and column.
        source: Box<toml::de::Error>,
    },
    /// A value is out of range.
    #[error("invalid config: {0}")]
    Invalid(String),
}

/// The whole node configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Where the node keeps its identity key and state.
    pub data_dir: PathBuf,
    /// The HTTP server: tracker facade, stats, API.
    pub http: HttpConfig,
    /// The tracker role.
    pub tracker: TrackerConfig,
    /// Gossip between nodes (libp2p).
    pub gossip: GossipConfig,
    /// The mesh: torrents downloaded and seeded over QUIC.
    pub mesh: MeshConfig,
    /// Logging.
    pub log: LogConfig,
}

/// The HTTP server.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// Most connections served at once; more wait in the kernel's backlog.
    pub max_connections: usize,
    /// Seconds a client may take to send a request before it is dropped.
    pub request_timeout_secs: u64,
    /// A file holding the bearer token the REST API (`/api/...`) requires
    /// (`Authorization: Bearer TOKEN`). Without one, anyone who can reach
    /// `listen` can add and remove torrents; a tracker node must listen
    /// where clients reach it, so it needs one. `/announce`, `/scrape`,
    /// `/stats` and `/metrics` stay open.
    pub api_token_file: Option<PathBuf>,
}

/// The tracker role.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrackerConfig {
    /// Serve `/announce` and `/scrape` and replicate the peer table.
    pub enabled: bool,
    /// Seconds clients are asked to wait between announces.
    pub interval_secs: u64,
    /// Seconds clients must wait at least between announces.
    pub min_interval_secs: u64,
    /// Seconds after its last announce that a peer is forgotten; 0 means
    /// twice the interval.
    pub peer_ttl_secs: u64,
    /// Peers returned when the client does not say `numwant`.
    pub default_numwant: u32,
    /// Most peers returned, whatever the client asks.
    pub max_numwant: u32,
    /// Most peers kept per torrent.
    pub max_peers_per_torrent: usize,
    /// Most torrents tracked.
    pub max_torrents: usize,
    /// Longest query string accepted, in bytes.
    pub max_query_bytes: usize,
    /// Most infohashes in one scrape.
    pub max_scrape_hashes: usize,
    /// Honour the `ip=` parameter. Off by default: the address is taken
    /// from the connection, so nobody can announce someone else.
    pub trust_ip_param: bool,
    /// A file of allowed infohashes, one hex hash per line (`#` comments).
    /// When set, other torrents are refused. Re-read when it changes.
    pub allow_list: Option<PathBuf>,
    /// Seconds between checks of the allow-list file for changes.
    pub allow_list_reload_secs: u64,
}

/// Gossip between nodes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GossipConfig {
    /// Address for libp2p (TCP) to listen on.
    pub listen: SocketAddr,
    /// Nodes to contact at start-up, as `host:port` or a multiaddr. Others
    /// are learned by gossip from these.
    pub join: Vec<String>,
    /// Milliseconds over which peer-table changes are batched into one
    /// gossip message.
    pub batch_ms: u64,
    /// Seconds between anti-entropy exchanges with a random tracker node.
    pub anti_entropy_secs: u64,
    /// Seconds a remote clock may run ahead of ours before its updates are
    /// refused.
    pub max_clock_drift_secs: u64,
    /// Shift this node's clock by this many milliseconds. For tests of
    /// replication between nodes whose clocks disagree; leave at 0.
    pub clock_offset_ms: i64,
}

/// The mesh: the QUIC endpoint and the torrents this node downloads and
/// seeds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MeshConfig {
    /// Run the mesh. `shoal tracker` turns it off.
    pub enabled: bool,
    /// UDP address for QUIC.
    pub listen: SocketAddr,
    /// Where torrents added without a target directory are stored.
    pub download_dir: PathBuf,
    /// Re-check the whole content against its hashes when a download
    /// completes, before it is reported complete.
    pub verify_on_complete: bool,
    /// Shell command run once a download's data is verified, with
    /// `SHOAL_INFOHASH` and `SHOAL_PATH` in its environment.
    pub on_complete: Option<String>,
    /// Node-wide upload limit in bytes per second; 0 for none.
    pub upload_limit: u64,
    /// Node-wide download limit in bytes per second; 0 for none.
    pub download_limit: u64,
    /// Peers each torrent uploads to at once (regular unchoke slots);
    /// unset keeps the swarm core's default.
    pub unchoke_slots: Option<usize>,
    /// Optimistic unchoke slots on top; unset keeps the default.
    pub optimistic_slots: Option<usize>,
    /// Most extra slots opened while slots are thin (their peers take
    /// under a quarter of what the fastest takes, so the uplink has room);
    /// 0 turns that off, unset keeps the default.
    pub thin_slots: Option<usize>,
    /// Most blocks outstanding per peer; unset keeps the default.
    pub max_queue_blocks: Option<u32>,
    /// Round trip, in ms, from which a peer counts as in another data
    /// centre: it is asked only for pieces no nearby peer serving us has,
    /// a few pieces at a time, so the link between sites carries fewer
    /// copies of what the local site could trade. 0 turns that off (every
    /// peer near); unset keeps the swarm core's default (10 ms).
    pub far_rtt_ms: Option<u64>,
    /// Most pieces fetched from far peers at once; unset keeps the
    /// default (2). Raise it where each connection to another site is
    /// slow but the link between them is not shared.
    pub far_partials: Option<u32>,
    /// How a torrent still downloading picks whom to upload to:
    /// `"reciprocate"` (the default, BitTorrent's tit-for-tat: the peers
    /// that send to us fastest) or `"furthest-behind"` (the peers with the
    /// fewest pieces, as a seed does). The second is for a fleet whose
    /// every node is the operator's own: nobody free rides there, and a
    /// node that joins late or restarts gets slots at once instead of
    /// waiting for its neighbours to finish. It pays where downlinks are
    /// wider than uplinks; on symmetric links the simulator measured no
    /// gain (`benches/RESULTS.md`, "Stop 20"). Stock clients in the
    /// swarm would be served without uploading back.
    pub leecher_choking: Option<LeecherChoking>,
    /// Peers per torrent at which dialing stops (inbound connections
    /// count); unset keeps the peer book's default.
    pub max_peers: Option<usize>,
    /// Connections per torrent, either way, at which inbound ones are
    /// refused as busy; unset keeps the peer book's default. Not below
    /// `max_peers`.
    pub max_connections: Option<usize>,
}

impl MeshConfig {
    /// The peer book's tunables: proto's defaults under what is set here.
    pub fn book(&self) -> shoal_proto::discovery::BookConfig {
        let mut b = shoal_proto::discovery::BookConfig::default();
        if let Some(n) = self.max_peers {
            b.max_peers = n;
        }
        if let Some(n) = self.max_connections {
            b.max_connections = n;
        }
        b
    }
}

/// Log output.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// `human` or `json`.
    pub format: LogFormat,
    /// A tracing env-filter directive, such as `info` or `shoal=debug`.
    /// `RUST_LOG` overrides it.
    pub filter: String,
}

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// For people.
    Human,
    /// One JSON object a line, for log shippers.
    Json,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            data_dir: PathBuf::from("./shoal-data"),
            http: HttpConfig::default(),
            tracker: TrackerConfig::default(),
            gossip: GossipConfig::default(),
            mesh: MeshConfig::default(),
            log: LogConfig::default(),
        }
    }
}

impl Default for MeshConfig {
    fn default() -> Self {
        MeshConfig {
            enabled: true,
            listen: SocketAddr::from(([0, 0, 0, 0], 7883)),
            download_dir: PathBuf::from("./downloads"),
            verify_on_complete: true,
            on_complete: None,
            upload_limit: 0,
            download_limit: 0,
            unchoke_slots: None,
            thin_slots: None,
            optimistic_slots: None,
            max_queue_blocks: None,
            far_rtt_ms: None,
            far_partials: None,
            leecher_choking: None,
            max_peers: None,
            max_connections: None,
        }
    }
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 7880)),
            max_connections: 10_000,
            request_timeout_secs: 10,
            api_token_file: None,
        }
    }
}

impl Default for TrackerConfig {
    fn default() -> Self {
        TrackerConfig {
            enabled: false,
            interval_secs: 300,
            min_interval_secs: 60,
            peer_ttl_secs: 0,
            default_numwant: 50,
            max_numwant: 200,
            max_peers_per_torrent: 100_000,
            max_torrents: 1_000_000,
            max_query_bytes: 4096,
            max_scrape_hashes: 64,
            trust_ip_param: false,
            allow_list: None,
            allow_list_reload_secs: 5,
        }
    }
}

impl Default for GossipConfig {
    fn default() -> Self {
        GossipConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 7881)),
            join: Vec::new(),
            batch_ms: 100,
            anti_entropy_secs: 5,
            max_clock_drift_secs: 60,
            clock_offset_ms: 0,
        }
    }
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            format: LogFormat::Human,
            filter: "info".into(),
        }
    }
}

impl TrackerConfig {
    /// Seconds a peer is remembered after its last announce.
    pub fn peer_ttl(&self) -> u64 {
        if self.peer_ttl_secs == 0 {
            self.interval_secs * 2
        } else {
            self.peer_ttl_secs
        }
    }
}

impl Config {
    /// Reads a TOML file; fields it leaves out keep their defaults.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Config::parse(&text).map_err(|e| match e {
            ConfigError::Parse { source, .. } => ConfigError::Parse {
                path: path.to_path_buf(),
                source,
            },
            other => other,
        })
    }

    /// Parses TOML text and checks the values.
    pub fn parse(text: &str) -> Result<Config, ConfigError> {
        let c: Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: PathBuf::from("<config>"),
            source: Box::new(e),
        })?;
        c.validate()?;
        Ok(c)
    }

    /// Checks values that TOML types alone cannot.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let t = &self.tracker;
        let bad = |m: &str| Err(ConfigError::Invalid(m.to_owned()));
        if t.interval_secs == 0 || t.min_interval_secs > t.interval_secs {
            return bad("tracker.interval_secs must be positive and at least min_interval_secs");
        }
        if t.max_numwant == 0 || t.default_numwant > t.max_numwant {
            return bad(
                "tracker.default_numwant must not exceed max_numwant, which must be positive",
            );
        }
        if t.max_query_bytes < 128 {
            return bad("tracker.max_query_bytes below 128 would refuse every real announce");
        }
        if self.gossip.batch_ms == 0 || self.gossip.anti_entropy_secs == 0 {
            return bad("gossip.batch_ms and gossip.anti_entropy_secs must be positive");
        }
        if self.http.max_connections == 0 {
            return bad("http.max_connections must be positive");
        }
        let m = &self.mesh;
        if m.unchoke_slots == Some(0) || m.max_queue_blocks == Some(0) || m.far_partials == Some(0)
        {
            return bad(
                "mesh.unchoke_slots, mesh.max_queue_blocks and mesh.far_partials must be positive",
            );
        }
        let book = m.book();
        if book.max_peers == 0 || book.max_connections < book.max_peers {
            return bad("mesh.max_peers must be positive and mesh.max_connections at least it");
        }
        if m.on_complete
            .as_deref()
            .is_some_and(|c| c.trim().is_empty())
        {
            return bad("mesh.on_complete is empty; leave it out for no hook");
        }
        Ok(())
    }
}

/// The default configuration, with every option explained. Printed by
/// `shoal config example`.
pub const EXAMPLE: &str = r#"# shoal node configuration. Every key is optional; shown are the defaults.
# Environment variables (SHOAL_*) and command-line flags override this file.

# Where the node keeps its identity key (node.key) and state.
data_dir = "./shoal-data"

[http]
# Address for the tracker facade (/announce, /scrape), /stats and the API.
listen = "127.0.0.1:7880"
# Most connections served at once; more wait in the kernel's backlog.
max_connections = 10000
# Seconds a client may take to send its request before it is dropped.
request_timeout_secs = 10
# File holding the bearer token the REST API (/api/...) requires, sent as
# `Authorization: Bearer TOKEN` (the client commands read SHOAL_API_TOKEN
# or --api-token-file). Without it anyone who can reach `listen` can add
# and remove torrents: set one whenever `listen` is not a loopback
# address. /announce, /scrape, /stats and /metrics stay open.
# api_token_file = "/etc/shoal/api-token"

[tracker]
# Serve /announce and /scrape and replicate the peer table by gossip.
# `shoal tracker` and `shoal node --tracker` turn this on.
enabled = false
# Seconds clients are asked to wait between announces, and at least.
interval_secs = 300
min_interval_secs = 60
# Seconds after its last announce that a peer is forgotten (0: twice the
# interval). A `stopped` announce removes it at once, everywhere.
peer_ttl_secs = 0
# Peers returned when the client gives no numwant, and the most ever.
default_numwant = 50
max_numwant = 200
# Bounds on the table: peers per torrent and torrents.
max_peers_per_torrent = 100000
max_torrents = 1000000
# Longest query string accepted, in bytes, and most infohashes per scrape.
max_query_bytes = 4096
max_scrape_hashes = 64
# Honour the ip= parameter. Off: the address comes from the connection.
trust_ip_param = false
# A file of allowed infohashes, one 40-digit hex hash per line, # comments.
# When set, other torrents are refused. Re-read when the file changes.
# allow_list = "/etc/shoal/allowed.txt"
allow_list_reload_secs = 5

[gossip]
# Address for libp2p gossip (TCP) between nodes.
listen = "127.0.0.1:7881"
# Nodes to contact at start-up ("host:port" or a multiaddr); the rest of
# the cluster is learned by gossip from them.
join = []
# Milliseconds over which peer-table changes are batched per message.
batch_ms = 100
# Seconds between anti-entropy exchanges (digests, then missing entries)
# with a random tracker node; repairs late joiners and healed partitions.
anti_entropy_secs = 5
# Seconds a remote clock may run ahead of ours before its updates are refused.
max_clock_drift_secs = 60
# Shift this node's clock (milliseconds). Only for tests of clock skew.
clock_offset_ms = 0

[mesh]
# Run the mesh: download and seed torrents over QUIC. `shoal tracker`
# turns it off.
enabled = true
# UDP address for QUIC between nodes (announced to trackers by port).
listen = "0.0.0.0:7883"
# Where torrents added without a target directory go.
download_dir = "./downloads"
# Re-check the whole content when a download completes, before reporting
# it complete; a torrent that fails is reported failed with its bad pieces.
verify_on_complete = true
# Shell command run once a download is verified, with SHOAL_INFOHASH and
# SHOAL_PATH in its environment.
# on_complete = "logger shoal: $SHOAL_PATH ready"
# Node-wide rate limits in bytes per second (0: none). Per-torrent limits
# are set through the API and kept with the torrent.
upload_limit = 0
download_limit = 0
# Swarm tunables; left out, the swarm core's defaults apply.
# unchoke_slots = 6      # peers each torrent uploads to at once
# optimistic_slots = 1   # optimistic unchoke slots on top
# thin_slots = 6         # more slots while some carry little (0: never)
# max_queue_blocks = 256 # most blocks outstanding per peer
# leecher_choking = "reciprocate" # or "furthest-behind" (a trusted fleet)
# max_peers = 40         # peers per torrent at which dialing stops
# max_connections = 60   # per torrent, either way: more inbound are refused

[log]
# "human" or "json".
format = "human"
# A tracing filter such as "info" or "shoal=debug"; RUST_LOG overrides it.
filter = "info"
"#;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn example_is_the_default() {
        assert_eq!(Config::parse(EXAMPLE).unwrap(), Config::default());
        assert_eq!(Config::parse("").unwrap(), Config::default());
    }

    #[test]
    fn deployed_example_parses() {
        let c = Config::parse(include_str!("../deploy/shoal.toml")).unwrap();
        assert!(c.tracker.enabled);
        assert_eq!(c.log.format, LogFormat::Json);
    }

    #[test]
    fn unknown_keys_and_bad_values_are_refused() {
        assert!(Config::parse("data_dri = \"x\"").is_err());
        assert!(Config::parse("[tracker]\nintervall_secs = 5").is_err());
        assert!(Config::parse("[tracker]\ninterval_secs = 0").is_err());
        assert!(Config::parse("[tracker]\ndefault_numwant = 500").is_err());
        assert!(Config::parse("[http]\nlisten = \"not an address\"").is_err());
        assert!(Config::parse("[mesh]\nlissen = \"0.0.0.0:1\"").is_err());
        assert!(Config::parse("[mesh]\nunchoke_slots = 0").is_err());
        assert!(Config::parse("[mesh]\nfar_partials = 0").is_err());
        assert!(Config::parse("[mesh]\nfar_rtt_ms = -3").is_err());
        let far = Config::parse("[mesh]\nfar_rtt_ms = 0\nfar_partials = 4").unwrap();
        assert_eq!(
            (far.mesh.far_rtt_ms, far.mesh.far_partials),
            (Some(0), Some(4))
        );
        assert!(Config::parse("[mesh]\nleecher_choking = \"furthest_behind\"").is_err());
        let fleet = Config::parse("[mesh]\nleecher_choking = \"furthest-behind\"").unwrap();
        assert_eq!(
            fleet.mesh.leecher_choking,
            Some(LeecherChoking::FurthestBehind)
        );
        assert!(Config::parse("[mesh]\nmax_peers = 0").is_err());
        assert!(
            Config::parse("[mesh]\nmax_peers = 70").is_err(),
            "over the default 60"
        );
        assert!(
            Config::parse("[mesh]\nmax_connections = 30").is_err(),
            "under 40"
        );
        let b = Config::parse("[mesh]\nmax_peers = 50\nmax_connections = 80")
            .unwrap()
            .mesh
            .book();
        assert_eq!((b.max_peers, b.max_connections), (50, 80));
        assert_eq!(
            Config::default().mesh.book(),
            shoal_proto::discovery::BookConfig::default()
        );
        let m = Config::parse("[mesh]\ndownload_limit = 1000\nunchoke_slots = 8\nthin_slots = 0")
            .unwrap();
        assert_eq!(m.mesh.download_limit, 1000);
        assert_eq!(m.mesh.unchoke_slots, Some(8));
        assert_eq!(m.mesh.thin_slots, Some(0));
        let c =
            Config::parse("[tracker]\nenabled = true\ninterval_secs = 10\nmin_interval_secs = 5")
                .unwrap();
        assert!(c.tracker.enabled);
        assert_eq!(c.tracker.peer_ttl(), 20);
    }
}
