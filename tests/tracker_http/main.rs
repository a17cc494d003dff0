//! The HTTP tracker facade of a real `shoal tracker` process: announce
//! (BEP 3/23, IPv6 per BEP 7), scrape (BEP 48), hostile and malformed
//! requests, the allow-list and its live reload, `/stats`, and the daemon
//! skeleton (config, signals, identity, `--help`).
//!
//! Every test starts its own node on port 0 and waits for it to print its
//! addresses; anything asynchronous is polled with a deadline, never slept
//! for.

#[path = "../common/mod.rs"]
mod common;

mod announce;
mod daemon;
mod helpers;
mod hostile;

pub(crate) use std::collections::{BTreeMap, BTreeSet};
pub(crate) use std::io::{Read, Write};
pub(crate) use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6, TcpStream};
pub(crate) use std::path::Path;
pub(crate) use std::process::{Command, Output, Stdio};
pub(crate) use std::time::{Duration, Instant};

pub(crate) use common::node::*;
pub(crate) use common::{shoal, tempdir};
pub(crate) use shoal_proto::bencode::{decode, Value};
pub(crate) use shoal_proto::InfoHash;

pub(crate) use helpers::*;
