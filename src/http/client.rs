//! The client half of HTTP/1.1 that shoal needs twice: the announcer's GET
//! to a tracker (async) and the CLI's requests to a node's API (blocking).
//! Both send one request with `Connection: close` and read the answer to
//! the end of the connection; this module splits the URL and reads the
//! answer, so the two share one parser.
//!
//! Invariants: nothing a server sends panics (every length is checked
//! against the bytes that arrived before it is used), and a body is never
//! longer than what the server declared.

/// A parsed `http://host[:port][/path]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Url {
    /// Host name or address, without brackets for IPv6.
    pub host: String,
    /// Port (80 when none is given).
    pub port: u16,
    /// Path and query, starting with `/`.
    pub path: String,
}

impl Url {
    /// Parses an `http://` URL; `None` for other schemes, user info, an
    /// empty host or a bad port.
    pub fn parse(url: &str) -> Option<Url> {
        let rest = url.strip_prefix("http://")?;
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        if authority.is_empty() || authority.contains('@') {
            return None;
        }
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let end = v6.find(']')?;
            let port = match &v6[end + 1..] {
                "" => 80,
                p => p.strip_prefix(':')?.parse().ok()?,
            };
            (v6[..end].to_string(), port)
        } else {
            match authority.rsplit_once(':') {
                Some((h, p)) => (h.to_string(), p.parse().ok()?),
                None => (authority.to_string(), 80),
            }
        };
        if host.is_empty() {
            return None;
        }
        Some(Url {
            host,
            port,
            path: path.to_string(),
        })
    }

    /// The `Host` header's value (and what to connect to): `host:port`,
    /// with brackets around an IPv6 address.
    pub fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

/// A complete answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// The status code.
    pub status: u16,
    /// The body, de-chunked and cut to `Content-Length` when given.
    pub body: Vec<u8>,
}

/// Reads a whole HTTP/1.1 answer: the status, then a body framed by
/// `Content-Length`, chunked encoding, or the end of the connection.
pub fn parse_response(raw: &[u8]) -> Result<Response, &'static str> {
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or("no end of headers")?;
    let head = std::str::from_utf8(&raw[..end]).map_err(|_| "headers not UTF-8")?;
    let body = &raw[end + 4..];
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|c| c.parse().ok())
        .ok_or("no status code")?;
    let mut length = None;
    let mut chunked = false;
    for line in lines {
        let Some((k, v)) = line.split_once(':') else {
            continue;
        };
        let (k, v) = (k.trim().to_ascii_lowercase(), v.trim());
        if k == "content-length" {
            length = Some(v.parse::<usize>().map_err(|_| "bad content-length")?);
        } else if k == "transfer-encoding" && v.to_ascii_lowercase().contains("chunked") {
            chunked = true;
        }
    }
    let body = if chunked {
        dechunk(body)?
    } else {
        match length {
            Some(n) => body.get(..n).ok_or("body cut short")?.to_vec(),
            None => body.to_vec(),
        }
    };
    Ok(Response { status, body })
}

fn dechunk(mut body: &[u8]) -> Result<Vec<u8>, &'static str> {
    let mut out = Vec::new();
    loop {
        let eol = body
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or("bad chunk")?;
        let size_text = std::str::from_utf8(&body[..eol]).map_err(|_| "bad chunk")?;
        let size_text = size_text.split(';').next().unwrap_or("").trim();
        let size = usize::from_str_radix(size_text, 16).map_err(|_| "bad chunk size")?;
        body = &body[eol + 2..];
        if size == 0 {
            return Ok(out);
        }
        let data = body.get(..size).ok_or("chunk cut short")?;
        out.extend_from_slice(data);
        body = body
            .get(size.checked_add(2).ok_or("bad chunk size")?..)
            .ok_or("chunk cut short")?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(host: &str, port: u16, path: &str) -> Option<Url> {
        Some(Url {
            host: host.into(),
            port,
            path: path.into(),
        })
    }

    #[test]
    fn urls_parse() {
        assert_eq!(
            Url::parse("http://127.0.0.1:7880/announce?x=1"),
            url("127.0.0.1", 7880, "/announce?x=1")
        );
        assert_eq!(Url::parse("http://t.example"), url("t.example", 80, "/"));
        assert_eq!(Url::parse("http://[::1]:81/a"), url("::1", 81, "/a"));
        assert_eq!(
            Url::parse("http://[::1]:81/a").unwrap().authority(),
            "[::1]:81"
        );
        for bad in [
            "https://t/a",
            "udp://t:1/a",
            "http://t:x/a",
            "http://",
            "http://:80/",
            "http://u@h/",
        ] {
            assert_eq!(Url::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn answers_parse() {
        let ok = |status, body: &[u8]| {
            Ok(Response {
                status,
                body: body.to_vec(),
            })
        };
        assert_eq!(
            parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabcdef"),
            ok(200, b"abc")
        );
        assert_eq!(
            parse_response(
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"
            ),
            ok(200, b"abcde")
        );
        assert_eq!(
            parse_response(b"HTTP/1.1 404 Not Found\r\n\r\n{}"),
            ok(404, b"{}")
        );
        assert!(parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nab").is_err());
        assert!(
            parse_response(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nff\r\nab")
                .is_err()
        );
        // A chunk size near usize::MAX must not overflow.
        assert!(parse_response(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffffffff\r\nab"
        )
        .is_err());
        assert!(parse_response(b"garbage").is_err());
    }
}
