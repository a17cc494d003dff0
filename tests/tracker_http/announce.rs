//! Announce basics (BEP 3, BEP 23), IPv6 (BEP 7) and the ip= parameter.

use super::*;

// ---------------------------------------------------------------------------
// 1. Announce basics (BEP 3, BEP 23)
// ---------------------------------------------------------------------------

#[test]
fn announce_compact_and_dictionary_forms() {
    let dir = tempdir();
    let mut n = basic_node(dir.path());
    let ih = hash("basics");
    let (a, b) = (peer_id(1), peer_id(2));

    // The first peer of a swarm gets the config's intervals, its own
    // count, and an empty (but present) peer list: never itself.
    let v = announce_ok(
        n.http,
        &announce_path(&ih, &a, 6001, 100, "&event=started&compact=1"),
    );
    assert_eq!(int(&v, "interval"), 120);
    assert_eq!(int(&v, "min interval"), 30);
    assert_eq!((int(&v, "complete"), int(&v, "incomplete")), (0, 1));
    assert_eq!(compact4(&v), vec![]);
    assert!(
        get(&v, "peers6").is_none(),
        "no IPv6 peers, so no peers6: {v:?}"
    );

    // A seeder joins: it sees the leecher, 6 bytes, connection IP, its port.
    let v = announce_ok(
        n.http,
        &announce_path(&ih, &b, 6002, 0, "&event=started&compact=1"),
    );
    let peers = get(&v, "peers").unwrap().as_bytes().unwrap();
    assert_eq!(peers, &[127, 0, 0, 1, 0x17, 0x71][..], "127.0.0.1:6001");
    assert_eq!((int(&v, "complete"), int(&v, "incomplete")), (1, 1));

    // Compact is the default when the client does not say.
    let v = announce_ok(n.http, &announce_path(&ih, &a, 6001, 100, ""));
    assert_eq!(compact4(&v), vec!["127.0.0.1:6002".parse().unwrap()]);

    // compact=0: a list of dictionaries with ip, port and peer id.
    let v = announce_ok(n.http, &announce_path(&ih, &a, 6001, 100, "&compact=0"));
    let list = get(&v, "peers")
        .and_then(Value::as_list)
        .expect("peers list");
    assert_eq!(list.len(), 1, "{v:?}");
    let keys: BTreeSet<&[u8]> = list[0]
        .as_dict()
        .unwrap()
        .keys()
        .map(Vec::as_slice)
        .collect();
    assert_eq!(keys, BTreeSet::from([&b"ip"[..], b"peer id", b"port"]));
    assert_eq!(get(&list[0], "ip").unwrap().as_str(), Some("127.0.0.1"));
    assert_eq!(int(&list[0], "port"), 6002);
    assert_eq!(get(&list[0], "peer id").unwrap().as_bytes(), Some(&b[..]));
    assert_eq!(int(&v, "interval"), 120);
    assert_eq!(int(&v, "min interval"), 30);

    // no_peer_id=1 drops the peer id and nothing else.
    let v = announce_ok(
        n.http,
        &announce_path(&ih, &a, 6001, 100, "&compact=0&no_peer_id=1"),
    );
    let list = get(&v, "peers")
        .and_then(Value::as_list)
        .expect("peers list");
    assert_eq!(list.len(), 1);
    let keys: BTreeSet<&[u8]> = list[0]
        .as_dict()
        .unwrap()
        .keys()
        .map(Vec::as_slice)
        .collect();
    assert_eq!(keys, BTreeSet::from([&b"ip"[..], b"port"]));
    assert_eq!(int(&list[0], "port"), 6002);

    // Re-announcing does not add a peer twice.
    assert_eq!(counts(n.http, &ih), (1, 1, 0));
    assert_alive(&mut n);
}

#[test]
fn numwant_is_capped_and_the_requester_never_sees_itself() {
    let dir = tempdir();
    let mut n = basic_node(dir.path());
    let ih = hash("numwant");
    let ports: Vec<u16> = (7000..7010).collect();
    for (i, &port) in ports.iter().enumerate() {
        announce_ok(
            n.http,
            &announce_path(&ih, &peer_id(i as u32), port, 500, "&event=started"),
        );
    }
    assert_eq!(counts(n.http, &ih), (0, 10, 0));

    for (i, &own) in ports.iter().enumerate() {
        // Asks for 50; max_numwant = 5 caps it.
        let v = announce_ok(
            n.http,
            &announce_path(&ih, &peer_id(i as u32), own, 500, "&numwant=50"),
        );
        let got = ports4(&v);
        assert_eq!(got.len(), 5, "max_numwant caps the list: {got:?}");
        assert!(!got.contains(&own), "peer {own} was handed itself: {got:?}");
        let distinct: BTreeSet<u16> = got.iter().copied().collect();
        assert_eq!(distinct.len(), got.len(), "a peer listed twice: {got:?}");
        assert!(
            got.iter().all(|p| ports.contains(p)),
            "unknown peer: {got:?}"
        );
        assert!(compact4(&v).iter().all(|a| *a.ip() == Ipv4Addr::LOCALHOST));
        assert_eq!((int(&v, "complete"), int(&v, "incomplete")), (0, 10));
    }
    // Below the cap the client's numwant rules; without one, default_numwant.
    let p0 = peer_id(0);
    let v = announce_ok(n.http, &announce_path(&ih, &p0, 7000, 500, "&numwant=3"));
    assert_eq!(compact4(&v).len(), 3);
    let v = announce_ok(n.http, &announce_path(&ih, &p0, 7000, 500, ""));
    assert_eq!(compact4(&v).len(), 4, "default_numwant = 4");
    let v = announce_ok(n.http, &announce_path(&ih, &p0, 7000, 500, "&numwant=0"));
    assert_eq!(compact4(&v).len(), 0);
    // The largest u32 is valid and still capped.
    let v = announce_ok(
        n.http,
        &announce_path(&ih, &p0, 7000, 500, "&numwant=4294967295"),
    );
    assert_eq!(compact4(&v).len(), 5);
    // Non-compact lists obey the same cap.
    let v = announce_ok(
        n.http,
        &announce_path(&ih, &p0, 7000, 500, "&numwant=9&compact=0"),
    );
    assert_eq!(get(&v, "peers").unwrap().as_list().unwrap().len(), 5);
    assert_alive(&mut n);
}

#[test]
fn seeders_are_never_handed_seeders() {
    let dir = tempdir();
    let mut n = basic_node(dir.path());
    let ih = hash("seeders");
    // Three seeders on 7100.., three leechers on 7200...
    for i in 0..3u16 {
        announce_ok(
            n.http,
            &announce_path(&ih, &peer_id(100 + u32::from(i)), 7100 + i, 0, ""),
        );
        announce_ok(
            n.http,
            &announce_path(&ih, &peer_id(200 + u32::from(i)), 7200 + i, 9, ""),
        );
    }
    for i in 0..3u16 {
        let v = announce_ok(
            n.http,
            &announce_path(&ih, &peer_id(100 + u32::from(i)), 7100 + i, 0, ""),
        );
        let mut got = ports4(&v);
        got.sort_unstable();
        assert_eq!(
            got,
            vec![7200, 7201, 7202],
            "a seeder gets every leecher and no seeder"
        );
        assert_eq!((int(&v, "complete"), int(&v, "incomplete")), (3, 3));
        // Non-compact too.
        let v = announce_ok(
            n.http,
            &announce_path(&ih, &peer_id(100 + u32::from(i)), 7100 + i, 0, "&compact=0"),
        );
        let mut got: Vec<i64> = get(&v, "peers")
            .unwrap()
            .as_list()
            .unwrap()
            .iter()
            .map(|p| int(p, "port"))
            .collect();
        got.sort_unstable();
        assert_eq!(got, vec![7200, 7201, 7202]);
    }
    // A leecher is handed seeders and leechers alike (5 others, cap 5).
    let v = announce_ok(
        n.http,
        &announce_path(&ih, &peer_id(200), 7200, 9, "&numwant=5"),
    );
    let mut got = ports4(&v);
    got.sort_unstable();
    assert_eq!(got, vec![7100, 7101, 7102, 7201, 7202]);
    assert_alive(&mut n);
}

#[test]
fn stopped_removes_a_peer_and_completed_counts_downloads() {
    let dir = tempdir();
    let mut n = basic_node(dir.path());
    let ih = hash("events");
    let (a, b, c) = (peer_id(1), peer_id(2), peer_id(3));
    for (p, port) in [(&a, 6101), (&b, 6102), (&c, 6103)] {
        announce_ok(n.http, &announce_path(&ih, p, port, 1000, "&event=started"));
    }
    assert_eq!(counts(n.http, &ih), (0, 3, 0));

    // a finishes: one more seeder, one fewer leecher, one download.
    let v = announce_ok(n.http, &announce_path(&ih, &a, 6101, 0, "&event=completed"));
    assert_eq!((int(&v, "complete"), int(&v, "incomplete")), (1, 2));
    assert_eq!(counts(n.http, &ih), (1, 2, 1));
    // A repeated `completed` from a peer already seeding is not a second
    // download.
    announce_ok(n.http, &announce_path(&ih, &a, 6101, 0, "&event=completed"));
    assert_eq!(counts(n.http, &ih), (1, 2, 1));
    // c completes too.
    announce_ok(n.http, &announce_path(&ih, &c, 6103, 0, "&event=completed"));
    assert_eq!(counts(n.http, &ih), (2, 1, 2));

    // b leaves: its stopped announce is answered with no peers, and nobody
    // is handed it afterwards.
    let v = announce_ok(
        n.http,
        &announce_path(&ih, &b, 6102, 1000, "&event=stopped"),
    );
    assert_eq!(compact4(&v), vec![], "a stopping peer needs no peers");
    assert_eq!(counts(n.http, &ih), (2, 0, 2));
    for _ in 0..5 {
        // A new leecher (seeders are not handed seeders) sees everyone
        // that is left.
        let v = announce_ok(
            n.http,
            &announce_path(&ih, &peer_id(9), 6109, 5, "&numwant=5"),
        );
        let got = ports4(&v);
        assert!(
            !got.contains(&6102),
            "a stopped peer was handed out: {got:?}"
        );
        let mut got = got;
        got.sort_unstable();
        assert_eq!(got, vec![6101, 6103]);
    }
    // The downloaded count survives the peers that made it leaving.
    announce_ok(n.http, &announce_path(&ih, &a, 6101, 0, "&event=stopped"));
    announce_ok(n.http, &announce_path(&ih, &c, 6103, 0, "&event=stopped"));
    assert_eq!(counts(n.http, &ih), (0, 1, 2));
    // A stopped peer that starts again is back.
    announce_ok(
        n.http,
        &announce_path(&ih, &b, 6102, 1000, "&event=started"),
    );
    let v = announce_ok(n.http, &announce_path(&ih, &peer_id(9), 6109, 5, ""));
    assert_eq!(ports4(&v), vec![6102]);
    assert_eq!(counts(n.http, &ih), (0, 2, 2));
    assert_alive(&mut n);
}

#[test]
fn silent_peers_expire_after_their_ttl() {
    let dir = tempdir();
    let mut n = NodeProc::start(
        dir.path(),
        &NodeOpts {
            tracker: true,
            extra_config: "[tracker]\npeer_ttl_secs = 1\n[gossip]\nanti_entropy_secs = 1\n".into(),
            ..NodeOpts::default()
        },
    );
    let ih = hash("expiry");
    // a announces once and falls silent; b keeps announcing.
    announce_ok(n.http, &announce_path(&ih, &peer_id(1), 6001, 10, ""));
    let v = announce_ok(n.http, &announce_path(&ih, &peer_id(2), 6002, 10, ""));
    assert_eq!(ports4(&v), vec![6001]);
    wait_for(Duration::from_secs(5), "the silent peer to expire", || {
        let v = announce_ok(n.http, &announce_path(&ih, &peer_id(2), 6002, 10, ""));
        ports4(&v).is_empty().then_some(())
    });
    assert_eq!(counts(n.http, &ih), (0, 1, 0));
    // The periodic sweep drops it from the table too, so /stats agrees.
    // (b keeps announcing, or it would expire as well.)
    wait_for(Duration::from_secs(5), "/stats to stop counting it", || {
        announce_ok(n.http, &announce_path(&ih, &peer_id(2), 6002, 10, ""));
        let st = n.stats();
        (st["tracker"]["peers"] == 1).then_some(())
    });
    announce_ok(n.http, &announce_path(&ih, &peer_id(2), 6002, 10, ""));
    let st = n.stats();
    assert_eq!(st["tracker"]["swarms"][0]["leechers"], 1, "{st}");
    assert_alive(&mut n);
}

// ---------------------------------------------------------------------------
// 2. IPv6 (BEP 7) and the ip= parameter
// ---------------------------------------------------------------------------

#[test]
fn ipv6_peers_are_in_peers6() {
    // Fail loudly (never skip) on a machine without an IPv6 loopback.
    drop(
        std::net::TcpListener::bind("[::1]:0")
            .expect("cannot bind [::1]:0: this test needs the IPv6 loopback (enable IPv6 on lo)"),
    );
    let dir = tempdir();
    let mut n = NodeProc::start(
        dir.path(),
        &NodeOpts {
            tracker: true,
            http: Some("[::1]:0".parse().unwrap()),
            ..NodeOpts::default()
        },
    );
    assert!(n.http.is_ipv6(), "node listens on {}", n.http);
    let ih = hash("ipv6");
    let (a, b) = (peer_id(1), peer_id(2));
    // a announces from ::1; the ip= parameter is ignored by default.
    let v = announce_ok(n.http, &announce_path(&ih, &a, 6881, 100, "&ip=198.18.0.9"));
    assert_eq!(compact6(&v), vec![]);
    let v = announce_ok(n.http, &announce_path(&ih, &b, 6882, 100, ""));
    // peers is present but empty; peers6 holds a as 18 bytes.
    assert_eq!(get(&v, "peers").unwrap().as_bytes(), Some(&[][..]), "{v:?}");
    let raw6 = get(&v, "peers6").and_then(Value::as_bytes).expect("peers6");
    assert_eq!(raw6.len(), 18);
    assert_eq!(
        compact6(&v),
        vec![SocketAddrV6::new(Ipv6Addr::LOCALHOST, 6881, 0, 0)]
    );
    // And a sees b the same way.
    let v = announce_ok(n.http, &announce_path(&ih, &a, 6881, 100, ""));
    assert_eq!(
        compact6(&v),
        vec![SocketAddrV6::new(Ipv6Addr::LOCALHOST, 6882, 0, 0)]
    );
    // Non-compact gives the textual IPv6 address.
    let v = announce_ok(n.http, &announce_path(&ih, &b, 6882, 100, "&compact=0"));
    let list = get(&v, "peers").unwrap().as_list().unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(get(&list[0], "ip").unwrap().as_str(), Some("::1"));
    assert_eq!(int(&list[0], "port"), 6881);
    assert_eq!(counts(n.http, &ih), (0, 2, 0));
    assert_alive(&mut n);
    drop(n);

    // Dual stack: a node on [::] hears IPv4 clients as IPv4-mapped
    // addresses; they must be handed out as IPv4 in `peers`, and IPv6
    // clients in `peers6`.
    let v6only = std::fs::read_to_string("/proc/sys/net/ipv6/bindv6only").unwrap_or_default();
    assert_ne!(
        v6only.trim(),
        "1",
        "net.ipv6.bindv6only=1: [::] sockets are not dual-stack on this machine"
    );
    let dir = tempdir();
    let mut n = NodeProc::start(
        dir.path(),
        &NodeOpts {
            tracker: true,
            http: Some("[::]:0".parse().unwrap()),
            ..NodeOpts::default()
        },
    );
    let v4: SocketAddr = (Ipv4Addr::LOCALHOST, n.http.port()).into();
    let v6: SocketAddr = (Ipv6Addr::LOCALHOST, n.http.port()).into();
    announce_ok(v4, &announce_path(&ih, &a, 6881, 100, ""));
    let v = announce_ok(v6, &announce_path(&ih, &b, 6882, 100, ""));
    assert_eq!(compact4(&v), vec!["127.0.0.1:6881".parse().unwrap()]);
    assert_eq!(compact6(&v), vec![]);
    let v = announce_ok(v4, &announce_path(&ih, &a, 6881, 100, ""));
    assert_eq!(compact4(&v), vec![]);
    assert_eq!(
        compact6(&v),
        vec![SocketAddrV6::new(Ipv6Addr::LOCALHOST, 6882, 0, 0)]
    );
    let v = announce_ok(v6, &announce_path(&ih, &b, 6882, 100, "&compact=0"));
    let list = get(&v, "peers").unwrap().as_list().unwrap();
    assert_eq!(get(&list[0], "ip").unwrap().as_str(), Some("127.0.0.1"));
    assert_alive(&mut n);
}

#[test]
fn ip_parameter_is_ignored_unless_trusted() {
    let ih = hash("ip-param");
    let (a, b, c) = (peer_id(1), peer_id(2), peer_id(3));

    // Default: the connection's address wins, whatever ip= says.
    let dir = tempdir();
    let mut n = NodeProc::start(
        dir.path(),
        &NodeOpts {
            tracker: true,
            ..NodeOpts::default()
        },
    );
    announce_ok(n.http, &announce_path(&ih, &a, 6001, 100, "&ip=10.1.2.3"));
    announce_ok(
        n.http,
        &announce_path(&ih, &c, 6003, 100, "&ip=2001:db8::7"),
    );
    let v = announce_ok(n.http, &announce_path(&ih, &b, 6002, 100, "&numwant=10"));
    let mut got = compact4(&v);
    got.sort();
    assert_eq!(
        got,
        vec![
            "127.0.0.1:6001".parse::<SocketAddrV4>().unwrap(),
            "127.0.0.1:6003".parse().unwrap()
        ]
    );
    assert_eq!(compact6(&v), vec![]);
    assert_alive(&mut n);
    drop(n);

    // trust_ip_param = true: the claimed address is recorded, IPv4 in
    // peers and IPv6 (plain or bracketed) in peers6.
    let dir = tempdir();
    let mut n = NodeProc::start(
        dir.path(),
        &NodeOpts {
            tracker: true,
            extra_config: "[tracker]\ntrust_ip_param = true\n".into(),
            ..NodeOpts::default()
        },
    );
    announce_ok(n.http, &announce_path(&ih, &a, 6001, 100, "&ip=10.1.2.3"));
    announce_ok(
        n.http,
        &announce_path(&ih, &c, 6003, 100, "&ip=2001:db8::7"),
    );
    announce_ok(
        n.http,
        &announce_path(&ih, &peer_id(4), 6004, 100, "&ip=%5B2001:db8::8%5D"),
    );
    // An IPv4-mapped IPv6 address is IPv4 on the wire.
    announce_ok(
        n.http,
        &announce_path(&ih, &peer_id(5), 6005, 100, "&ip=::ffff:10.9.9.9"),
    );
    let v = announce_ok(n.http, &announce_path(&ih, &b, 6002, 100, "&numwant=10"));
    let mut got4 = compact4(&v);
    got4.sort();
    assert_eq!(
        got4,
        vec![
            "10.1.2.3:6001".parse::<SocketAddrV4>().unwrap(),
            "10.9.9.9:6005".parse().unwrap()
        ]
    );
    let mut got6 = compact6(&v);
    got6.sort();
    assert_eq!(
        got6,
        vec![
            "[2001:db8::7]:6003".parse::<SocketAddrV6>().unwrap(),
            "[2001:db8::8]:6004".parse().unwrap()
        ]
    );
    // A peer that sends no ip= still gets its connection address.
    let v = announce_ok(n.http, &announce_path(&ih, &a, 6001, 100, "&numwant=10"));
    assert!(
        compact4(&v).contains(&"127.0.0.1:6002".parse().unwrap()),
        "{v:?}"
    );
    assert_alive(&mut n);
}

// ---------------------------------------------------------------------------
