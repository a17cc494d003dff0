//! Scrape (BEP 48), and malformed and hostile requests.

use super::*;

// 3. Scrape (BEP 48)
// ---------------------------------------------------------------------------

#[test]
fn scrape_one_several_unknown_and_too_many() {
    let dir = tempdir();
    let mut n = basic_node(dir.path());
    let (x, y, z) = (hash("scrape-x"), hash("scrape-y"), hash("scrape-unknown"));
    announce_ok(n.http, &announce_path(&x, &peer_id(1), 6001, 0, ""));
    announce_ok(n.http, &announce_path(&x, &peer_id(2), 6002, 10, ""));
    announce_ok(n.http, &announce_path(&x, &peer_id(3), 6003, 10, ""));
    announce_ok(
        n.http,
        &announce_path(&x, &peer_id(3), 6003, 0, "&event=completed"),
    );
    announce_ok(n.http, &announce_path(&y, &peer_id(1), 6001, 10, ""));

    // One hash: exactly that file.
    let files = scrape(n.http, &[x]);
    assert_eq!(files.keys().cloned().collect::<Vec<_>>(), vec![x.to_vec()]);
    assert_eq!(files[&x.to_vec()], (2, 1, 1));

    // Several, including one the tracker has never seen: the unknown one is
    // reported with zero counts (a client asked, so it gets an answer).
    let files = scrape(n.http, &[x, y, z]);
    assert_eq!(files.len(), 3, "{files:?}");
    assert_eq!(files[&x.to_vec()], (2, 1, 1));
    assert_eq!(files[&y.to_vec()], (0, 1, 0));
    assert_eq!(files[&z.to_vec()], (0, 0, 0));
    // Scraping does not create the torrent.
    assert_eq!(n.stats()["tracker"]["torrents"], 2);

    // A repeated hash is answered once.
    let files = scrape(n.http, &[y, y, y]);
    assert_eq!(files.len(), 1);

    // No hash named on a small tracker: every torrent.
    let files = scrape(n.http, &[]);
    assert_eq!(
        files.keys().cloned().collect::<BTreeSet<_>>(),
        BTreeSet::from([x.to_vec(), y.to_vec()])
    );

    // Exactly max_scrape_hashes (8) is fine; 9 is refused.
    let many: Vec<[u8; 20]> = (0..9).map(|i| hash(&format!("many-{i}"))).collect();
    assert_eq!(scrape(n.http, &many[..8]).len(), 8);
    let q: Vec<String> = many
        .iter()
        .map(|h| format!("info_hash={}", pct(h)))
        .collect();
    let reason = must_fail(n.http, &format!("/scrape?{}", q.join("&")));
    assert!(reason.contains("too many info_hash"), "{reason}");
    assert!(reason.contains('8'), "the limit is named: {reason}");
    // Duplicates do not count against the limit.
    let mut dup = q[..8].to_vec();
    dup.extend(q[..8].iter().cloned());
    let v = bget(n.http, &format!("/scrape?{}", dup.join("&")));
    assert_eq!(failure(&v), None);

    // Once the tracker holds more torrents than one scrape may name, a
    // scrape naming none is refused rather than answered with everything.
    for h in &many[..7] {
        announce_ok(n.http, &announce_path(h, &peer_id(1), 6001, 10, ""));
    }
    assert_eq!(n.stats()["tracker"]["torrents"], 9);
    let reason = must_fail(n.http, "/scrape");
    assert!(reason.contains("full scrape"), "{reason}");
    // Named scrapes still work.
    assert_eq!(scrape(n.http, &[x])[&x.to_vec()], (2, 1, 1));
    assert_alive(&mut n);
}

// ---------------------------------------------------------------------------
// 4. Malformed and hostile requests
// ---------------------------------------------------------------------------

#[test]
fn malformed_requests_get_a_failure_reason_and_do_no_harm() {
    let dir = tempdir();
    let mut n = NodeProc::start(
        dir.path(),
        &NodeOpts {
            tracker: true,
            extra_config: "[tracker]\ntrust_ip_param = true\n".into(),
            ..NodeOpts::default()
        },
    );
    let ih = hash("hostile");
    let pid = peer_id(7);
    let (ihq, pidq) = (pct(&ih), pct(&pid));
    let rest = "port=6881&uploaded=0&downloaded=0&left=10";
    let good = format!("info_hash={ihq}&peer_id={pidq}&{rest}");
    let without = |key: &str| -> String {
        good.split('&')
            .filter(|kv| !kv.starts_with(&format!("{key}=")))
            .collect::<Vec<_>>()
            .join("&")
    };
    let with = |key: &str, val: &str| -> String {
        good.split('&')
            .map(|kv| {
                if kv.starts_with(&format!("{key}=")) {
                    format!("{key}={val}")
                } else {
                    kv.to_owned()
                }
            })
            .collect::<Vec<_>>()
            .join("&")
    };
    let a = |q: String| format!("/announce?{q}");

    let cases: Vec<(String, &str)> = vec![
        ("/announce".into(), "missing info_hash"),
        ("/announce?".into(), "missing info_hash"),
        (a(without("info_hash")), "missing info_hash"),
        (a(without("peer_id")), "missing peer_id"),
        (a(without("port")), "missing port"),
        (a(without("uploaded")), "missing uploaded"),
        (a(without("downloaded")), "missing downloaded"),
        (a(without("left")), "missing left"),
        (
            a(with("info_hash", &pct(&ih[..19]))),
            "info_hash must be 20 bytes, got 19",
        ),
        (
            a(with("info_hash", &format!("{ihq}%00"))),
            "info_hash must be 20 bytes, got 21",
        ),
        (
            a(with("info_hash", "")),
            "info_hash must be 20 bytes, got 0",
        ),
        (
            a(with("peer_id", "short")),
            "peer_id must be 20 bytes, got 5",
        ),
        (
            a(with("peer_id", &format!("{pidq}X"))),
            "peer_id must be 20 bytes, got 21",
        ),
        (a(with("port", "0")), "invalid port"),
        (a(with("port", "65536")), "invalid port"),
        (a(with("port", "abc")), "invalid port"),
        (a(with("port", "-1")), "invalid port"),
        (a(with("port", "99999999999999999999999")), "invalid port"),
        (a(with("left", "-1")), "left is not a number"),
        (a(with("left", "1e9")), "left is not a number"),
        (
            a(with("uploaded", "99999999999999999999999")),
            "uploaded is too large",
        ),
        (
            a(with("downloaded", "18446744073709551616")),
            "downloaded is too large",
        ),
        (
            a(format!("{good}&numwant=99999999999")),
            "numwant is too large",
        ),
        (a(format!("{good}&numwant=many")), "numwant is not a number"),
        (
            a(with("info_hash", &format!("%zz{}", pct(&ih[..19])))),
            "bad percent-encoding in info_hash",
        ),
        (
            a(with("peer_id", &format!("{}%4", pct(&pid[..19])))),
            "bad percent-encoding in peer_id",
        ),
        (a(format!("{good}&event=finished")), "unknown event"),
        (a(format!("{good}&event=STARTED")), "unknown event"),
        (
            a(format!("{good}&event=%ZZ")),
            "bad percent-encoding in event",
        ),
        (
            a(format!("{good}&info_hash={}", pct(&hash("other")))),
            "repeated info_hash",
        ),
        (a(format!("{good}&info%5Fhash={ihq}")), "repeated info_hash"),
        (a(format!("{good}&port=6882")), "repeated port"),
        (
            a(format!("{good}&pad={}", "x".repeat(5000))),
            "query string too long",
        ),
        (
            a(format!("{good}&pad={}", "y".repeat(60_000))),
            "query string too long",
        ),
        (a(format!("{good}&ip=example.com")), "invalid ip"),
        (a(format!("{good}&ip=300.1.2.3")), "invalid ip"),
        (a(format!("{good}&ip=%FF%FE")), "invalid ip"),
        (a(format!("{good}&key=%g0")), "bad percent-encoding in key"),
        (
            a(format!("{good}&compact=%")),
            "bad percent-encoding in compact",
        ),
        // Garbage that is still a legal request target.
        (
            "/announce?%FF%FE%00=%00&&&===&;;;,,,!!!*()$'@:/?~".into(),
            "missing info_hash",
        ),
        (
            "/announce?info_hash&peer_id&port".into(),
            "info_hash must be 20 bytes, got 0",
        ),
        (a(good.replace('&', ";")), "info_hash must be 20 bytes"),
        (
            "/scrape?info_hash=abcde".into(),
            "info_hash must be 20 bytes, got 5",
        ),
        (
            "/scrape?info_hash=%zz".into(),
            "bad percent-encoding in info_hash",
        ),
        (
            format!("/scrape?info_hash={ihq}&pad={}", "z".repeat(5000)),
            "query string too long",
        ),
    ];
    assert!(cases.len() >= 25);
    for (path, want) in &cases {
        let reason = must_fail(n.http, path);
        assert!(
            reason.contains(want),
            "GET {}: failure reason {reason:?} does not contain {want:?}",
            short(path)
        );
        // The reason never echoes the client's bytes back.
        assert!(
            !reason.contains("yyyy") && !reason.contains("%zz"),
            "{reason}"
        );
    }
    assert_alive(&mut n);

    // None of them touched the table; every one was counted as a failure.
    let st = n.stats();
    assert_eq!(st["tracker"]["torrents"], 0, "{st}");
    assert_eq!(st["tracker"]["announces"], 0, "{st}");
    assert_eq!(st["tracker"]["failures"], cases.len() as u64, "{st}");

    // The node still answers a valid announce, and an exotic but valid one:
    // unknown keys ignored, escaped key names and digits understood.
    let v = announce_ok(n.http, &a(good.clone()));
    assert_eq!((int(&v, "complete"), int(&v, "incomplete")), (0, 1));
    let v = announce_ok(
        n.http,
        &format!(
            "/announce?info%5Fhash={ihq}&peer_id={}&port=%36882&uploaded=0&downloaded=0&left=0\
             &supportcrypto=1&corrupt=0&event=&key=abc&trackerid=&x=%zz",
            pct(&peer_id(8))
        ),
    );
    assert_eq!(compact4(&v), vec!["127.0.0.1:6881".parse().unwrap()]);
    assert_eq!(counts(n.http, &ih), (1, 1, 0));

    // The same peer, encoded the way real clients do (unreserved bytes
    // raw, lowercase escapes), is the same peer, not a third one. A raw
    // `+` is byte 0x2b, not a space.
    let raw_ih: String = ih
        .iter()
        .map(|&c| {
            if c.is_ascii_alphanumeric() {
                (c as char).to_string()
            } else {
                format!("%{c:02x}")
            }
        })
        .collect();
    let v = announce_ok(
        n.http,
        &format!(
            "/announce?info_hash={raw_ih}&peer_id={}&{rest}",
            String::from_utf8(pid.to_vec()).unwrap()
        ),
    );
    assert_eq!(compact4(&v), vec!["127.0.0.1:6882".parse().unwrap()]);
    assert_eq!(counts(n.http, &ih), (1, 1, 0));
    let mut plus = hash("plus");
    plus[0] = b'+';
    announce_ok(
        n.http,
        &format!(
            "/announce?info_hash=+{}&peer_id={pidq}&{rest}",
            pct(&plus[1..])
        ),
    );
    assert_eq!(counts(n.http, &plus), (0, 1, 0));

    // The query limit (4096 bytes by default) is inclusive.
    let base = a(good.clone());
    let pad = 4096 - (base.len() - "/announce?".len()) - "&pad=".len();
    let exact = format!("{base}&pad={}", "p".repeat(pad));
    assert_eq!(exact.len() - "/announce?".len(), 4096);
    announce_ok(n.http, &exact);
    let reason = must_fail(n.http, &format!("{exact}p"));
    assert!(
        reason.contains("4097") && reason.contains("4096"),
        "{reason}"
    );
    assert_alive(&mut n);
}

#[test]
fn hostile_http_requests_do_not_stop_the_server() {
    let dir = tempdir();
    let mut n = NodeProc::start(
        dir.path(),
        &NodeOpts {
            tracker: true,
            extra_config: "[http]\nrequest_timeout_secs = 1\n".into(),
            ..NodeOpts::default()
        },
    );
    let ih = hash("http-hostile");

    // A request line with no path.
    let (status, _) = http_raw(
        n.http,
        b"GET HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(status, 400);
    // Control bytes and raw non-ASCII in the request target.
    let (status, _) = http_raw(
        n.http,
        b"GET /announce?\x01\x02 HTTP/1.1\r\nHost: x\r\n\r\n",
    );
    assert_eq!(status, 400);
    let (status, _) = http_raw(
        n.http,
        b"GET /announce?info_hash=\xff\xfe HTTP/1.1\r\nHost: x\r\n\r\n",
    );
    assert_eq!(status, 400);
    // Not HTTP at all.
    let (status, _) = http_raw(
        n.http,
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03garbage\r\n\r\n",
    );
    assert_eq!(status, 400);
    // A 600 KB header: refused, not buffered without bound.
    let mut big = b"GET /announce HTTP/1.1\r\nHost: x\r\nX-Big: ".to_vec();
    big.resize(big.len() + 600 * 1024, b'a');
    big.extend_from_slice(b"\r\n\r\n");
    let resp = raw_lenient(n.http, &big);
    assert!(
        resp.starts_with(b"HTTP/1.1 431"),
        "a huge header should get 431: {:?}",
        String::from_utf8_lossy(&resp[..resp.len().min(200)])
    );
    // Thousands of headers.
    let mut many = b"GET /stats HTTP/1.1\r\nHost: x\r\n".to_vec();
    for i in 0..5000 {
        many.extend_from_slice(format!("X-{i}: y\r\n").as_bytes());
    }
    many.extend_from_slice(b"\r\n");
    let resp = raw_lenient(n.http, &many);
    assert!(
        resp.starts_with(b"HTTP/1.1 431") || resp.starts_with(b"HTTP/1.1 400"),
        "too many headers should be refused: {:?}",
        String::from_utf8_lossy(&resp[..resp.len().min(200)])
    );
    // A request target beyond what HTTP/1.1 servers accept (64 KiB) is
    // refused before the tracker sees it.
    let (status, _) = n.get(&format!("/announce?pad={}", "q".repeat(200_000)));
    assert_eq!(status, 414);
    // An unknown path is a plain 404.
    assert_eq!(n.get("/nope").0, 404);
    // Old and odd but legal forms of a request still reach the tracker:
    // HTTP/1.0 without Host, and an absolute-form request target.
    let path = announce_path(&ih, &peer_id(9), 6009, 10, "&event=stopped");
    let (status, body) = http_raw(n.http, format!("GET {path} HTTP/1.0\r\n\r\n").as_bytes());
    assert_eq!(status, 200);
    assert_eq!(failure(&decode(&body).unwrap()), None);
    let (status, body) = http_raw(
        n.http,
        format!("GET http://tracker.example{path} HTTP/1.1\r\nHost: tracker.example\r\nConnection: close\r\n\r\n")
            .as_bytes(),
    );
    assert_eq!(status, 200);
    assert_eq!(failure(&decode(&body).unwrap()), None);
    assert_alive(&mut n);

    // Slowloris: connections that send half a request, or nothing at all,
    // and stall. While they hang, others are served; after
    // request_timeout_secs (1 s) the server drops them.
    let started = Instant::now();
    let mut slow: Vec<TcpStream> = (0..32)
        .map(|i| {
            let mut s = TcpStream::connect(n.http).unwrap();
            if i % 2 == 0 {
                s.write_all(b"GET /announce?info_hash=").unwrap();
            }
            s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            s
        })
        .collect();
    let v = announce_ok(n.http, &announce_path(&ih, &peer_id(1), 6001, 10, ""));
    assert_eq!(int(&v, "incomplete"), 1);
    assert!(
        started.elapsed() < Duration::from_millis(900),
        "a valid request waited behind stalled ones ({:?})",
        started.elapsed()
    );
    for s in &mut slow {
        let mut buf = Vec::new();
        // EOF (or a reset) means the server dropped us; a read timeout
        // means it kept the connection.
        match s.read_to_end(&mut buf) {
            Ok(_) => {}
            Err(e) => assert!(
                e.kind() != std::io::ErrorKind::WouldBlock
                    && e.kind() != std::io::ErrorKind::TimedOut,
                "the server kept a stalled connection open for 10 s"
            ),
        }
    }
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(800) && took < Duration::from_secs(5),
        "stalled connections should be dropped after about 1 s, took {took:?}"
    );

    // A client that trickles its request a byte at a time is dropped too:
    // the timeout bounds the whole request head, not the gap between bytes.
    let mut s = TcpStream::connect(n.http).unwrap();
    s.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let request = format!(
        "GET {} HTTP/1.1\r\nHost: x\r\n\r\n",
        announce_path(&ih, &peer_id(4), 6004, 10, "")
    );
    let t = Instant::now();
    let mut sent = 0;
    let dropped_after = loop {
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "a trickling client was kept for 5 s ({sent} bytes sent)"
        );
        if s.write_all(&request.as_bytes()[sent..sent + 1]).is_err() {
            break t.elapsed();
        }
        sent += 1;
        let mut b = [0u8; 1024];
        match s.read(&mut b) {
            Ok(0) => break t.elapsed(),
            Ok(_) => panic!("a trickled request was answered: it took under 1 s?"),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {}
            Err(_) => break t.elapsed(),
        }
    };
    assert!(
        dropped_after >= Duration::from_millis(800) && sent < request.len(),
        "dropped after {dropped_after:?}, {sent} of {} bytes",
        request.len()
    );

    // Pipelined keep-alive requests on one connection are both answered,
    // in order: the second announcer sees the first.
    let req1 = format!(
        "GET {} HTTP/1.1\r\nHost: x\r\n\r\n",
        announce_path(&ih, &peer_id(2), 6002, 10, "")
    );
    let req2 = format!(
        "GET {} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        announce_path(&ih, &peer_id(3), 6003, 10, "&numwant=10")
    );
    let buf = raw_lenient(n.http, format!("{req1}{req2}").as_bytes());
    let resps = split_responses(&buf);
    assert_eq!(resps.len(), 2, "{:?}", String::from_utf8_lossy(&buf));
    assert!(resps.iter().all(|(s, _)| *s == 200));
    let v1 = decode(&resps[0].1).unwrap();
    let v2 = decode(&resps[1].1).unwrap();
    assert_eq!(int(&v1, "incomplete"), 2);
    assert_eq!(int(&v2, "incomplete"), 3);
    let mut got = ports4(&v2);
    got.sort_unstable();
    assert_eq!(got, vec![6001, 6002]);

    // A keep-alive connection that stays idle after a full response is
    // dropped too, rather than held forever.
    let mut s = TcpStream::connect(n.http).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(b"GET /stats?format=json HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let t = Instant::now();
    let mut buf = Vec::new();
    let r = s.read_to_end(&mut buf);
    assert!(
        r.is_ok() && t.elapsed() < Duration::from_secs(5),
        "an idle keep-alive connection was kept for {:?}",
        t.elapsed()
    );
    assert!(buf.starts_with(b"HTTP/1.1 200"));

    assert_alive(&mut n);
    let v = announce_ok(n.http, &announce_path(&ih, &peer_id(1), 6001, 10, ""));
    assert_eq!(int(&v, "incomplete"), 3);
}

// ---------------------------------------------------------------------------
