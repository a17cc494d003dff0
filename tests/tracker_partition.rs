//! A network partition between tracker nodes, with real processes in
//! network namespaces: four `shoal tracker` nodes, each in a namespace of
//! its own, plugged by veth pairs into a bridge in a "hub" namespace, on
//! 198.18.1.0/24 only. The test cuts the cluster in two by moving C's and
//! D's ports onto a second bridge, lets each side take different announces
//! (and a `stopped` for a peer both sides know, and the same peer on both
//! sides), proves the sides did not hear each other, heals, and requires
//! every node to converge on the union within a deadline.
//!
//! Needs root (it runs `ip netns`) and curl; without them it fails with a
//! message saying so rather than skipping. The test process never opens a
//! socket itself: it talks to each node with curl run inside that node's
//! namespace (`ip netns exec`), so every packet stays on the namespaces'
//! own 198.18.1.0/24 links and nothing is added to the host's network.
//! Every namespace, and with it every link and bridge, is deleted by a
//! guard even when the test fails.

mod common;

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::node::{
    announce_query, id20, multiaddr_peer_id, parse_announce, parse_scrape, poll_until,
    scrape_query, stats_lists_connected, view_diff, witness_id, Model, NodeOpts, NodeProc, View,
};

/// Most time for four nodes that joined through A to connect to each other.
const FORMATION: Duration = Duration::from_secs(30);
/// Most time for one side of the partition to agree within itself.
const SIDE_CONVERGENCE: Duration = Duration::from_secs(10);
/// How long each side must go on showing none of the other side's writes.
const ISOLATION_HOLD: Duration = Duration::from_secs(3);
/// The port every witness announces.
const WITNESS_PORT: u16 = 1;
/// Most time, after the links are restored, for every node to hold the
/// union of both sides' writes. Gossip connections between the sides stay
/// open through the partition (nothing probes them), so they resume only
/// when TCP next retransmits: after a cut of about ten seconds, several
/// seconds later. Then each node verifies the signed gossip queued during
/// the cut (slow in a debug build on a busy machine) and anti-entropy,
/// every second, repairs the rest. Typically 10-25 s here.
const HEAL_CONVERGENCE: Duration = Duration::from_secs(60);

/// Fails the test, clearly, unless it runs as root.
fn require_root_and_tools() {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let euid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .unwrap_or("?")
        .to_owned();
    assert_eq!(
        euid, "0",
        "tracker_partition must run as root (effective uid is {euid}): it builds network \
         namespaces with `ip netns`, bridges and veth pairs. CI runs it as root; locally use \
         `sudo -E cargo test --test tracker_partition`."
    );
    for (tool, package) in [("ip", "iproute2"), ("curl", "curl")] {
        let ok = Command::new(tool)
            .arg(if tool == "ip" { "-V" } else { "--version" })
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        assert!(
            ok,
            "tracker_partition needs `{tool}` (Debian package {package}; tests/run installs it)"
        );
    }
}

/// Runs `ip ARGS`, which must succeed.
fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("run ip");
    assert!(
        out.status.success(),
        "ip {} failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The network namespaces of one test run. Dropping it deletes them all,
/// which also destroys every veth pair and bridge inside them.
struct Netns {
    prefix: String,
    names: Vec<String>,
}

impl Netns {
    fn new(tag: &str) -> Netns {
        let prefix = format!("shoal-{tag}-{}", std::process::id());
        sweep_stale(tag);
        Netns {
            prefix,
            names: Vec::new(),
        }
    }

    /// Adds namespace `<prefix>-<short>` with its loopback up.
    fn add(&mut self, short: &str) -> String {
        let name = format!("{}-{short}", self.prefix);
        ip(&["netns", "add", &name]);
        self.names.push(name.clone());
        ip(&["-n", &name, "link", "set", "lo", "up"]);
        name
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        for n in self.names.iter().rev() {
            let _ = Command::new("ip")
                .args(["netns", "del", n])
                .stderr(Stdio::null())
                .status();
        }
    }
}

/// The names `ip netns list` shows.
fn netns_names() -> Vec<String> {
    let out = Command::new("ip")
        .args(["netns", "list"])
        .output()
        .expect("ip netns list");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_owned)
        .collect()
}

/// Deletes namespaces an earlier run with this tag left behind when it
/// was killed before its guard ran (its pid no longer exists).
fn sweep_stale(tag: &str) {
    let head = format!("shoal-{tag}-");
    for name in netns_names() {
        let Some(rest) = name.strip_prefix(&head) else {
            continue;
        };
        let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        if !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = Command::new("ip").args(["netns", "del", &name]).status();
        }
    }
}

/// One tracker node in its own namespace.
struct Member {
    label: &'static str,
    ns: String,
    node: NodeProc,
    /// Where curl writes bodies.
    scratch: tempfile::TempDir,
}

impl Member {
    fn ip(&self) -> Ipv4Addr {
        match self.node.http.ip() {
            std::net::IpAddr::V4(v4) => v4,
            other => panic!("unexpected address {other}"),
        }
    }

    /// GETs every path in one curl run inside the node's namespace, from
    /// the node's own address; any failure or non-200 answer is an `Err`.
    fn get_many(&self, paths: &[String]) -> Result<Vec<Vec<u8>>, String> {
        self.curl(self.node.http, paths, 5)
    }

    /// GETs `paths` on `target` from inside this node's namespace.
    fn curl(
        &self,
        target: SocketAddr,
        paths: &[String],
        timeout_s: u32,
    ) -> Result<Vec<Vec<u8>>, String> {
        let mut cmd = Command::new("ip");
        // -q: ignore any ~/.curlrc; --noproxy: never hand a request to a
        // proxy named in the environment.
        cmd.args([
            "netns",
            "exec",
            &self.ns,
            "curl",
            "-q",
            "-sS",
            "--noproxy",
            "*",
        ])
        .args(["--connect-timeout", &timeout_s.to_string()])
        .args(["--max-time", &(timeout_s * 2).to_string()])
        .args(["-w", "%{http_code}\\n"]);
        let files: Vec<_> = (0..paths.len())
            .map(|i| self.scratch.path().join(format!("body-{i}")))
            .collect();
        for (p, f) in paths.iter().zip(&files) {
            let _ = std::fs::remove_file(f);
            cmd.arg("-o").arg(f).arg(format!("http://{target}{p}"));
        }
        let out = cmd.output().map_err(|e| format!("cannot run curl: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "curl in {} to {target} failed ({}): {}",
                self.label,
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        let codes = String::from_utf8_lossy(&out.stdout).into_owned();
        if codes.lines().count() != paths.len() || codes.lines().any(|c| c != "200") {
            return Err(format!("{} answered HTTP {codes:?}", self.label));
        }
        files
            .iter()
            .map(|f| std::fs::read(f).map_err(|e| format!("{}: {e}", f.display())))
            .collect()
    }

    fn stats(&self) -> Result<serde_json::Value, String> {
        let body = self.get_many(&["/stats?format=json".to_owned()])?.remove(0);
        serde_json::from_slice(&body).map_err(|e| format!("{} /stats: {e}", self.label))
    }

    /// Announces one peer to this node (from the node's own address) and
    /// records it in `model`.
    fn announce(
        &self,
        model: &mut Model,
        ih: &[u8; 20],
        pid: &[u8; 20],
        port: u16,
        seeder: bool,
        event: &str,
    ) {
        let q = announce_query(ih, pid, port, if seeder { 0 } else { 777 }, event, 200);
        let body = self
            .get_many(&[format!("/announce?{q}")])
            .unwrap_or_else(|e| panic!("announce to {}: {e}", self.label))
            .remove(0);
        parse_announce(&body).unwrap_or_else(|e| panic!("announce to {}: {e}", self.label));
        model.record(ih, pid, SocketAddr::from((self.ip(), port)), seeder, event);
    }

    fn witness(&self) -> [u8; 20] {
        witness_id(self.label)
    }

    /// Enlists this node's witness (see `common::node::witness_id`) in
    /// every torrent of `hashes`.
    fn enlist(&self, model: &mut Model, hashes: &[[u8; 20]]) {
        for h in hashes {
            self.announce(model, h, &self.witness(), WITNESS_PORT, false, "started");
        }
    }

    /// Scrape counts, and the peer lists the node hands its witness, in
    /// one curl run. Re-announcing the witness changes no replica's view.
    fn view(&self, hashes: &[[u8; 20]]) -> Result<View, String> {
        let me = self.witness();
        let mut paths = vec![format!("/scrape?{}", scrape_query(hashes))];
        for h in hashes {
            let q = announce_query(h, &me, WITNESS_PORT, 777, "", 200);
            paths.push(format!("/announce?{q}"));
        }
        let bodies = self.get_many(&paths)?;
        let counts = parse_scrape(&bodies[0]).map_err(|e| format!("{}: {e}", self.label))?;
        let mut peers = BTreeMap::new();
        for (h, body) in hashes.iter().zip(&bodies[1..]) {
            let reply = parse_announce(body).map_err(|e| format!("{}: {e}", self.label))?;
            peers.insert(*h, reply.peers);
        }
        Ok(View { counts, peers })
    }

    /// Whether this node shows `want` (as its own witness sees it).
    fn check(&self, hashes: &[[u8; 20]], want: &View) -> Result<(), String> {
        let got = self.view(hashes)?;
        let want = want.seen_by(&self.witness());
        if got == want {
            Ok(())
        } else {
            Err(view_diff(self.label, &got, &want))
        }
    }
}

/// Polls until every member shows `want`; returns the time it took.
fn wait_show(
    members: &[&Member],
    hashes: &[[u8; 20]],
    want: &View,
    timeout: Duration,
    what: &str,
) -> Duration {
    poll_until(timeout, what, || {
        members.iter().try_for_each(|m| m.check(hashes, want))
    })
    .1
}

/// Checks, again and again for `hold`, that every member keeps showing
/// exactly `want`.
fn hold_show(members: &[&Member], hashes: &[[u8; 20]], want: &View, hold: Duration, what: &str) {
    let until = Instant::now() + hold;
    let mut rounds = 0;
    while Instant::now() < until {
        for m in members {
            m.check(hashes, want)
                .unwrap_or_else(|e| panic!("{what}: {e}"));
        }
        rounds += 1;
        // Each check re-announces the witnesses: a write, gossiped and
        // queued for the other side. Checking a few times a second keeps
        // that backlog (and the work of verifying it after the heal) small.
        std::thread::sleep(Duration::from_millis(300));
    }
    assert!(rounds >= 2, "{what}: only {rounds} checks in {hold:?}");
}

#[test]
fn partitioned_trackers_converge_on_the_union_after_healing() {
    require_root_and_tools();
    let dir = tempfile::tempdir().unwrap();
    // Declared before the nodes, so dropped after them: the nodes die
    // first, then every namespace goes, even when an assertion fails.
    let mut net = Netns::new("part");

    // The hub: two bridges; every node starts on br0.
    let hub = net.add("hub");
    for br in ["br0", "br1"] {
        let add = [
            "link",
            "add",
            br,
            "type",
            "bridge",
            "forward_delay",
            "0",
            "stp_state",
            "0",
        ];
        ip(&[&["-n", hub.as_str()][..], &add[..]].concat());
        ip(&["-n", &hub, "link", "set", br, "up"]);
    }
    let labels = ["a", "b", "c", "d"];
    let mut spaces = Vec::new();
    for (i, l) in labels.iter().enumerate() {
        let ns = net.add(l);
        let port = format!("v{l}");
        let add = [
            "link", "add", &port, "type", "veth", "peer", "name", "eth0", "netns", &ns,
        ];
        ip(&[&["-n", hub.as_str()][..], &add[..]].concat());
        ip(&["-n", &hub, "link", "set", &port, "master", "br0", "up"]);
        let addr = format!("198.18.1.{}/24", i + 1);
        ip(&["-n", &ns, "addr", "add", &addr, "dev", "eth0"]);
        ip(&["-n", &ns, "link", "set", "eth0", "up"]);
        spaces.push(ns);
    }
    let listed = netns_names();
    for n in &net.names {
        assert!(
            listed.contains(n),
            "{n} missing from `ip netns list`: {listed:?}"
        );
    }

    // One tracker per namespace, HTTP and gossip on the namespace's
    // address; B, C and D are told only about A.
    let gossip = "[gossip]\nbatch_ms = 50\nanti_entropy_secs = 1\n";
    let mut members: Vec<Member> = Vec::new();
    for (i, (l, ns)) in labels.iter().zip(&spaces).enumerate() {
        let addr = Ipv4Addr::new(198, 18, 1, i as u8 + 1);
        let node = NodeProc::start(
            &dir.path().join(l),
            &NodeOpts {
                tracker: true,
                join: members
                    .first()
                    .map(|a| vec![a.node.gossip_addr])
                    .unwrap_or_default(),
                http: Some(SocketAddr::from((addr, 0))),
                gossip: Some(SocketAddr::from((addr, 0))),
                extra_config: gossip.into(),
                wrapper: vec!["ip".into(), "netns".into(), "exec".into(), ns.clone()],
            },
        );
        assert_eq!(
            node.http.ip(),
            addr,
            "{l} serves HTTP on its namespace's address"
        );
        assert_eq!(
            node.gossip_addr.ip(),
            addr,
            "{l} gossips on its namespace's address"
        );
        members.push(Member {
            label: l,
            ns: ns.clone(),
            node,
            scratch: tempfile::tempdir().unwrap(),
        });
    }
    let [a, b, c, d] = [&members[0], &members[1], &members[2], &members[3]];
    let all = [a, b, c, d];
    let ids: Vec<String> = all
        .iter()
        .map(|m| multiaddr_peer_id(&m.node.gossip))
        .collect();
    let (_, formed) = poll_until(FORMATION, "all four nodes to connect to each other", || {
        for (i, m) in all.iter().enumerate() {
            let s = m.stats()?;
            for (j, id) in ids.iter().enumerate() {
                if i != j && !stats_lists_connected(&s, id) {
                    return Err(format!(
                        "{} does not list {} as connected",
                        m.label, all[j].label
                    ));
                }
            }
        }
        Ok(())
    });
    println!(
        "four namespaced nodes connected in {:.2}s",
        formed.as_secs_f64()
    );

    let t1 = id20("part-one");
    let t2 = id20("part-two");
    let t3 = id20("part-three");
    let hashes = [t1, t2, t3];
    let shared_stop = id20("shared-stop");
    let shared_move = id20("shared-move");
    let both = id20("both-sides");

    // Before the partition: peers every node knows.
    let mut before = Model::default();
    for m in all {
        m.enlist(&mut before, &hashes);
    }
    a.announce(&mut before, &t1, &shared_stop, 6001, false, "started");
    c.announce(&mut before, &t2, &shared_move, 6002, true, "started");
    b.announce(&mut before, &t1, &id20("pre-b"), 6003, true, "completed");
    d.announce(&mut before, &t3, &id20("pre-d"), 6004, false, "started");
    let want = before.expected(&hashes);
    let took = wait_show(
        &all,
        &hashes,
        &want,
        SIDE_CONVERGENCE,
        "agreement before the cut",
    );
    println!(
        "before the partition all four agree ({:.2}s)",
        took.as_secs_f64()
    );

    // Partition {A, B} | {C, D}: C's and D's ports move to the other bridge.
    for l in ["c", "d"] {
        ip(&["-n", &hub, "link", "set", &format!("v{l}"), "master", "br1"]);
    }
    let partitioned = Instant::now();
    let probe = vec!["/stats?format=json".to_owned()];
    assert!(
        c.curl(d.node.http, &probe, 2).is_ok(),
        "C must still reach D"
    );
    assert!(
        a.curl(b.node.http, &probe, 2).is_ok(),
        "A must still reach B"
    );
    let cut = c.curl(a.node.http, &probe, 1);
    assert!(cut.is_err(), "C still reaches A through the partition");
    let cut = b.curl(d.node.http, &probe, 1);
    assert!(cut.is_err(), "B still reaches D through the partition");

    // Each side takes different writes; `union` records both sides'.
    type Write<'m> = (&'m Member, [u8; 20], [u8; 20], u16, bool, &'static str);
    let side_ab: Vec<Write> = vec![
        (a, t1, id20("ab-1"), 7001, false, "started"),
        (a, t2, id20("ab-2"), 7002, true, "completed"),
        (b, t3, id20("ab-3"), 7003, false, "started"),
        // The peer C announced moves to B, with a new port.
        (b, t2, shared_move, 7004, true, ""),
        // The same peer id on both sides, at different addresses.
        (a, t3, both, 7005, false, "started"),
    ];
    let side_cd: Vec<Write> = vec![
        (c, t1, id20("cd-1"), 8001, true, "started"),
        (c, t3, id20("cd-2"), 8002, true, "completed"),
        (d, t2, id20("cd-3"), 8003, false, "started"),
        // A peer both sides know leaves, on this side only.
        (d, t1, shared_stop, 6001, false, "stopped"),
        (c, t3, both, 8005, false, "started"),
    ];
    let mut ab = before.clone();
    let mut cd = before.clone();
    let mut union = before.clone();
    for (side, writes) in [(&mut ab, &side_ab), (&mut cd, &side_cd)] {
        for (m, ih, pid, port, seeder, event) in writes {
            m.announce(side, ih, pid, *port, *seeder, event);
            union.record(ih, pid, SocketAddr::from((m.ip(), *port)), *seeder, event);
        }
    }
    let (want_ab, want_cd) = (ab.expected(&hashes), cd.expected(&hashes));
    let took = wait_show(
        &[a, b],
        &hashes,
        &want_ab,
        SIDE_CONVERGENCE,
        "side A+B to agree",
    );
    println!("side A+B agree in {:.2}s", took.as_secs_f64());
    let took = wait_show(
        &[c, d],
        &hashes,
        &want_cd,
        SIDE_CONVERGENCE,
        "side C+D to agree",
    );
    println!("side C+D agree in {:.2}s", took.as_secs_f64());
    // Neither side hears the other: several anti-entropy rounds later,
    // each still shows exactly its own writes.
    hold_show(
        &[a, b],
        &hashes,
        &want_ab,
        ISOLATION_HOLD,
        "A+B isolated from C+D",
    );
    hold_show(
        &[c, d],
        &hashes,
        &want_cd,
        ISOLATION_HOLD,
        "C+D isolated from A+B",
    );
    println!(
        "partition held for {:.2}s",
        partitioned.elapsed().as_secs_f64()
    );

    // Heal, and wait for the union everywhere. For the peer announced on
    // both sides, whichever write the clocks order last wins, but every
    // node must pick the same one: A's answer names it.
    for l in ["c", "d"] {
        ip(&["-n", &hub, "link", "set", &format!("v{l}"), "master", "br0"]);
    }
    let cut_for = partitioned.elapsed();
    let what = "every node to hold the union after healing";
    let ((winner, want), took) = poll_until(HEAL_CONVERGENCE, what, || {
        let seen = a.view(&hashes)?;
        let addr = seen.peers[&t3]
            .get(&both)
            .copied()
            .ok_or("a: both-sides not listed")?;
        let mut model = union.clone();
        model.record(&t3, &both, addr, false, "started");
        let want = model.expected(&hashes);
        all.iter().try_for_each(|m| m.check(&hashes, &want))?;
        Ok((addr, want))
    });
    println!("partition heal converged in {:.2}s", took.as_secs_f64());
    println!(
        "(partition lasted {:.2}s; links that stayed open across it resume on TCP's \
         retransmission back-off)",
        cut_for.as_secs_f64()
    );
    let sides = [
        SocketAddr::from((a.ip(), 7005)),
        SocketAddr::from((c.ip(), 8005)),
    ];
    assert!(
        sides.contains(&winner),
        "the peer on both sides ended at {winner}"
    );
    println!("the peer announced on both sides settled on {winner} everywhere");
    assert!(
        !want.peers[&t1].contains_key(&shared_stop),
        "the stopped peer is gone"
    );
    assert_eq!(
        want.peers[&t2][&shared_move],
        SocketAddr::from((b.ip(), 7004))
    );
    // The replicas' own totals agree too.
    let live: usize = want.peers.values().map(|p| p.len()).sum();
    for m in all {
        let s = m.stats().unwrap();
        assert_eq!(
            s["tracker"]["peers"], live as u64,
            "{} /stats: {}",
            m.label, s["tracker"]
        );
    }

    // Clean up: stop the nodes, delete the namespaces, and check.
    let names = net.names.clone();
    drop(members);
    drop(net);
    let listed = netns_names();
    for n in &names {
        assert!(
            !listed.contains(n),
            "{n} still in `ip netns list`: {listed:?}"
        );
    }
}
