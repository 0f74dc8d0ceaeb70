//! Connection limits and timeouts (`[limits]`, crates/server/src/tls.rs), each shown through a
//! real server: the refusal, or the cut connection, and that a legitimate request still goes
//! through. Raw TLS connections send what no well-behaved client would: half-sent request
//! heads, bodies that stall, more HTTP/2 streams than allowed, responses never read.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use serde_json::json;

use crate::support::*;

type Tls = rustls::StreamOwned<rustls::ClientConnection, TcpStream>;

/// A server whose `[limits]` table holds `limits` (TOML lines).
fn server_with(limits: &str) -> TestServer {
    let data = tempfile::tempdir().unwrap();
    let config = data.path().join("custody.toml");
    std::fs::write(
        &config,
        format!(
            "data_dir = {:?}\n[limits]\n{limits}\n",
            data.path().join("custody")
        ),
    )
    .unwrap();
    TestServer::start_with(data, &["--config", config.to_str().unwrap()])
}

fn client_config(
    server: &TestServer,
    alpn: &[u8],
    host: Option<&HostCert>,
) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(&server.ca).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let builder = rustls::ClientConfig::builder_with_provider(crypto::tls::provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(Arc::new(roots));
    let mut config = match host {
        Some(h) => builder
            .with_client_auth_cert(
                CertificateDer::pem_file_iter(&h.cert)
                    .unwrap()
                    .map(Result::unwrap)
                    .collect(),
                PrivateKeyDer::from_pem_file(&h.key).unwrap(),
            )
            .unwrap(),
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![alpn.to_vec()];
    Arc::new(config)
}

/// A TCP connection to the server from the loopback address `source` (127.0.0.0/8 are all
/// this machine's: different sources for the per-source cap).
fn tcp_from(server: &TestServer, source: &str) -> TcpStream {
    let addr: std::net::SocketAddr = server.addr().parse().unwrap();
    let stream = runtime().block_on(async move {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind(format!("{source}:0").parse().unwrap()).unwrap();
        socket.connect(addr).await.unwrap()
    });
    let stream = stream.into_std().unwrap();
    stream.set_nonblocking(false).unwrap();
    stream
}

/// A finished TLS handshake over `tcp`, or the error that ended it.
fn handshake(
    server: &TestServer,
    tcp: TcpStream,
    alpn: &[u8],
    host: Option<&HostCert>,
) -> std::io::Result<Tls> {
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let name = ServerName::try_from("localhost").unwrap();
    let mut conn = rustls::ClientConnection::new(client_config(server, alpn, host), name).unwrap();
    let mut tcp = tcp;
    while conn.is_handshaking() {
        conn.complete_io(&mut tcp)?;
    }
    Ok(rustls::StreamOwned::new(conn, tcp))
}

fn tls(server: &TestServer, alpn: &[u8]) -> Tls {
    handshake(server, tcp_from(server, "127.0.0.1"), alpn, None).unwrap()
}

/// Reads one HTTP/1.1 response: status and body (Content-Length framed).
fn read_response(stream: &mut Tls) -> std::io::Result<(u16, Vec<u8>)> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 16384];
    let head_end = loop {
        if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
        let n = stream.read(&mut chunk)?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    let status: u16 = head[9..12].parse().unwrap();
    let length: usize = head
        .lines()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse().unwrap())
        })
        .unwrap_or(0);
    let mut body = buf[head_end..].to_vec();
    while body.len() < length {
        let n = stream.read(&mut chunk)?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        body.extend_from_slice(&chunk[..n]);
    }
    Ok((status, body))
}

const HEALTH: &[u8] = b"GET /v1/health HTTP/1.1\r\nHost: localhost\r\n\r\n";

/// Whether the server has closed `stream`: a read sees the end (or an error) instead of data
/// or a timeout.
fn is_closed(stream: &mut Tls) -> bool {
    stream
        .sock
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut byte = [0u8; 1];
    match stream.read(&mut byte) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => !matches!(
            e.kind(),
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
        ),
    }
}

/// Open file descriptors of a process.
/// The sockets a process holds open: connections and listeners. (Not every descriptor: the
/// database pool opens files as it grows under load, which says nothing about connections.)
fn open_sockets(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .filter_map(Result::ok)
        .filter(|e| {
            std::fs::read_link(e.path())
                .is_ok_and(|target| target.to_string_lossy().starts_with("socket:"))
        })
        .count()
}

#[test]
fn a_request_head_held_half_sent_is_cut_at_the_header_timeout() {
    let server = server_with("header_read_timeout_secs = 2\ntls_handshake_timeout_secs = 2");
    // A whole request is answered (the test can tell the two apart).
    let mut whole = tls(&server, b"http/1.1");
    whole.write_all(HEALTH).unwrap();
    assert_eq!(read_response(&mut whole).unwrap(), (200, b"ok".to_vec()));

    // The kept-alive connection's second request, held half-sent past the timeout.
    whole
        .write_all(b"GET /v1/health HTTP/1.1\r\nHost: loc")
        .unwrap();
    std::thread::sleep(Duration::from_millis(3000));
    let _ = whole.write_all(b"alhost\r\n\r\n");
    assert!(
        !matches!(read_response(&mut whole), Ok((200, _))),
        "a second request held half-sent past the timeout was answered"
    );

    // A new connection's first request, the same.
    let mut half = tls(&server, b"http/1.1");
    half.write_all(b"GET /v1/health HTTP/1.1\r\nHost: local")
        .unwrap();
    std::thread::sleep(Duration::from_millis(4500));
    let _ = half.write_all(b"host\r\n\r\n");
    assert!(
        !matches!(read_response(&mut half), Ok((200, _))),
        "a request held half-sent past the timeout was answered"
    );
}

/// HTTP/2 frames, written by hand: a header block split over HEADERS and CONTINUATION lets a
/// test hold a request half-sent; several HEADERS frames open more streams than allowed.
mod h2 {
    use super::*;

    pub const DATA: u8 = 0x0;
    pub const HEADERS: u8 = 0x1;
    pub const RST_STREAM: u8 = 0x3;
    pub const SETTINGS: u8 = 0x4;
    pub const GOAWAY: u8 = 0x7;
    pub const CONTINUATION: u8 = 0x9;
    pub const END_STREAM: u8 = 0x1;
    pub const END_HEADERS: u8 = 0x4;

    pub fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
        let len = u32::try_from(payload.len()).unwrap();
        let mut out = len.to_be_bytes()[1..].to_vec();
        out.extend_from_slice(&[kind, flags]);
        out.extend_from_slice(&stream.to_be_bytes());
        out.extend_from_slice(payload);
        out
    }

    /// HPACK for `GET https://localhost{path}` (static table indexes, no Huffman).
    pub fn get(path: &str) -> Vec<u8> {
        let mut block = vec![0x82, 0x87]; // :method GET, :scheme https
        for (index, value) in [(4u8, path), (1, "localhost")] {
            // Literal without indexing, indexed name (:path, :authority).
            block.push(index);
            block.push(u8::try_from(value.len()).unwrap());
            block.extend_from_slice(value.as_bytes());
        }
        block
    }

    /// HPACK integer with an `n`-bit prefix, the first byte's high bits set to `high`.
    fn integer(out: &mut Vec<u8>, high: u8, n: u32, value: usize) {
        let max = (1usize << n) - 1;
        if value < max {
            out.push(high | u8::try_from(value).unwrap());
            return;
        }
        out.push(high | u8::try_from(max).unwrap());
        let mut rest = value - max;
        while rest >= 128 {
            out.push(u8::try_from(rest % 128).unwrap() | 0x80);
            rest /= 128;
        }
        out.push(u8::try_from(rest).unwrap());
    }

    /// HPACK for `POST https://localhost{path}` with a bearer token and a JSON body to come:
    /// a request the server keeps open while it waits for the body.
    pub fn post_json(path: &str, token: &str) -> Vec<u8> {
        let mut block = vec![0x83, 0x87]; // :method POST, :scheme https
        let bearer = format!("Bearer {token}");
        // :path, :authority, authorization, content-type (static table indexes).
        for (index, value) in [
            (4, path),
            (1, "localhost"),
            (23, bearer.as_str()),
            (31, "application/json"),
        ] {
            integer(&mut block, 0, 4, index);
            integer(&mut block, 0, 7, value.len());
            block.extend_from_slice(value.as_bytes());
        }
        block
    }

    /// Connection preface and an empty SETTINGS frame.
    pub fn open(server: &TestServer) -> Tls {
        let mut stream = tls(server, b"h2");
        stream
            .write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
            .unwrap();
        stream.write_all(&frame(SETTINGS, 0, 0, &[])).unwrap();
        stream
    }

    /// The next frame: `(type, flags, stream, payload)`; `None` once the connection is closed.
    pub fn read(stream: &mut Tls) -> Option<(u8, u8, u32, Vec<u8>)> {
        let mut head = [0u8; 9];
        stream.read_exact(&mut head).ok()?;
        let len = usize::from(head[0]) << 16 | usize::from(head[1]) << 8 | usize::from(head[2]);
        let id = u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff;
        let mut payload = vec![0u8; len];
        stream.read_exact(&mut payload).ok()?;
        if head[3] == SETTINGS && head[4] & 1 == 0 {
            // Acknowledge the server's settings, as a client must.
            let _ = stream.write_all(&frame(SETTINGS, 1, 0, &[]));
        }
        Some((head[3], head[4], id, payload))
    }

    /// Frames until the server closes the connection or `until` holds; all frames read.
    pub fn read_until(
        stream: &mut Tls,
        mut until: impl FnMut(&(u8, u8, u32, Vec<u8>)) -> bool,
    ) -> Vec<(u8, u8, u32, Vec<u8>)> {
        let mut frames = Vec::new();
        while let Some(f) = read(stream) {
            let done = until(&f);
            frames.push(f);
            if done {
                break;
            }
        }
        frames
    }

    /// A response on `stream` whose `:status` is 200 (HPACK static index 8).
    pub fn is_ok_response(f: &(u8, u8, u32, Vec<u8>), stream: u32) -> bool {
        f.0 == HEADERS && f.2 == stream && f.3.first() == Some(&0x88)
    }
}

#[test]
fn an_http2_request_held_half_sent_is_cut() {
    let server = server_with(
        "header_read_timeout_secs = 2\ntls_handshake_timeout_secs = 1\nidle_timeout_secs = 2",
    );
    // Whole: answered.
    let mut whole = h2::open(&server);
    whole
        .write_all(&h2::frame(
            h2::HEADERS,
            h2::END_HEADERS | h2::END_STREAM,
            1,
            &h2::get("/v1/health"),
        ))
        .unwrap();
    let frames = h2::read_until(&mut whole, |f| h2::is_ok_response(f, 1));
    assert!(
        frames.iter().any(|f| h2::is_ok_response(f, 1)),
        "{frames:?}"
    );

    // Half a header block on a new connection, the rest after the deadline: never answered.
    let mut half = h2::open(&server);
    let block = h2::get("/v1/health");
    half.write_all(&h2::frame(h2::HEADERS, h2::END_STREAM, 1, &block[..4]))
        .unwrap();
    std::thread::sleep(Duration::from_millis(4500));
    let _ = half.write_all(&h2::frame(
        h2::CONTINUATION,
        h2::END_HEADERS,
        1,
        &block[4..],
    ));
    let frames = h2::read_until(&mut half, |f| h2::is_ok_response(f, 1));
    assert!(
        !frames.iter().any(|f| h2::is_ok_response(f, 1)),
        "{frames:?}"
    );

    // On the established connection too: its idle timeout closes it.
    whole
        .write_all(&h2::frame(h2::HEADERS, h2::END_STREAM, 3, &block[..4]))
        .unwrap();
    std::thread::sleep(Duration::from_millis(4500));
    let _ = whole.write_all(&h2::frame(
        h2::CONTINUATION,
        h2::END_HEADERS,
        3,
        &block[4..],
    ));
    let frames = h2::read_until(&mut whole, |f| h2::is_ok_response(f, 3));
    assert!(
        !frames.iter().any(|f| h2::is_ok_response(f, 3)),
        "{frames:?}"
    );
}

#[test]
fn five_hundred_half_open_connections_do_not_stop_a_legitimate_request() {
    let mut server = server_with("tls_handshake_timeout_secs = 2\nheader_read_timeout_secs = 2");
    let baseline = open_sockets(server.pid());
    // 250 that never start TLS, 250 that finish it and send half a request head.
    let mut held = Vec::new();
    for _ in 0..250 {
        held.push(tcp_from(&server, "127.0.0.1"));
    }
    let mut half_sent = Vec::new();
    for _ in 0..250 {
        if let Ok(mut stream) =
            handshake(&server, tcp_from(&server, "127.0.0.1"), b"http/1.1", None)
        {
            let _ = stream.write_all(b"GET /v1/health HTTP/1.1\r\nHo");
            half_sent.push(stream);
        }
    }
    // The server holds no more than its per-source cap of them (256 by default).
    let during = open_sockets(server.pid());
    assert!(
        during < baseline + 256 + 16,
        "the server holds {during} sockets (baseline {baseline})"
    );

    // A legitimate client, from the same address even, is served at once: it displaces the
    // oldest connection that has not sent a request.
    let started = Instant::now();
    let (status, body) = server.api(&server.operator, "GET", "/v1/vendors", None);
    assert_eq!(status, 200, "{body}");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "a legitimate request waited {:?}",
        started.elapsed()
    );

    // After the deadlines every half-open connection is gone, and so are its descriptors.
    wait_for(15, "the half-open connections to be closed", || {
        open_sockets(server.pid()) <= baseline + 4
    });
    assert!(!server.try_exited());
    drop((held, half_sent));
}

#[test]
fn the_connection_caps_refuse_established_connections_beyond_them() {
    let server = server_with("max_connections = 6\nmax_connections_per_ip = 4");
    let established = |source: &str| -> std::io::Result<Tls> {
        let mut stream = handshake(&server, tcp_from(&server, source), b"http/1.1", None)?;
        stream.write_all(HEALTH)?;
        let (status, _) = read_response(&mut stream)?;
        assert_eq!(status, 200);
        Ok(stream)
    };
    let mut first: Vec<Tls> = (0..4).map(|_| established("127.0.0.1").unwrap()).collect();
    // A fifth from the same source is closed at once (every open one is in use).
    assert!(
        established("127.0.0.1").is_err(),
        "a fifth connection from one source was served"
    );
    // Another source is still served, up to the total cap.
    let second: Vec<Tls> = (0..2).map(|_| established("127.0.0.2").unwrap()).collect();
    assert!(
        established("127.0.0.3").is_err(),
        "a seventh connection was served"
    );
    // A closed connection makes room again.
    drop(first.pop());
    wait_for(5, "a freed slot", || established("127.0.0.1").is_ok());
    drop((first, second));
}

#[test]
fn http2_streams_beyond_the_cap_are_refused() {
    let server = server_with("http2_max_concurrent_streams = 2");
    let mut stream = h2::open(&server);
    // Wait for the server's SETTINGS (and acknowledge them) before opening streams.
    h2::read_until(&mut stream, |f| f.0 == h2::SETTINGS && f.1 & 1 == 0);
    // Three requests whose bodies have not arrived yet, so each stays in flight: the third is
    // one too many.
    for id in [1u32, 3, 5] {
        let block = h2::post_json("/v1/vendors", &server.operator);
        stream
            .write_all(&h2::frame(h2::HEADERS, h2::END_HEADERS, id, &block))
            .unwrap();
    }
    let frames = h2::read_until(&mut stream, |f| f.0 == h2::RST_STREAM && f.2 == 5);
    let refused = frames
        .iter()
        .find(|f| f.0 == h2::RST_STREAM && f.2 == 5)
        .unwrap_or_else(|| panic!("no RST_STREAM for the third stream: {frames:?}"));
    assert_eq!(refused.3, 7u32.to_be_bytes(), "not REFUSED_STREAM");
    assert!(!frames.iter().any(|f| f.0 == h2::GOAWAY));
    // The two within the cap go on: their bodies arrive and they are answered.
    let body = br#"{"name":"acme"}"#;
    stream
        .write_all(&h2::frame(h2::DATA, h2::END_STREAM, 1, body))
        .unwrap();
    let frames = h2::read_until(&mut stream, |f| f.0 == h2::HEADERS && f.2 == 1);
    assert!(
        frames.iter().any(|f| f.0 == h2::HEADERS && f.2 == 1),
        "{frames:?}"
    );
    let (_, vendors) = server.api(&server.operator, "GET", "/v1/vendors", None);
    assert_eq!(vendors["vendors"], json!(["acme"]), "{vendors}");
}

#[test]
fn oversized_request_heads_are_refused_with_431() {
    let server = server_with("max_header_bytes = 16384");
    let mut stream = tls(&server, b"http/1.1");
    let big = "a".repeat(32 * 1024);
    stream
        .write_all(
            format!("GET /v1/health HTTP/1.1\r\nHost: localhost\r\nX-Big: {big}\r\n\r\n")
                .as_bytes(),
        )
        .unwrap();
    assert_eq!(read_response(&mut stream).unwrap().0, 431);
    // Within the limit: served.
    let mut stream = tls(&server, b"http/1.1");
    let small = "a".repeat(8 * 1024);
    stream
        .write_all(
            format!("GET /v1/health HTTP/1.1\r\nHost: localhost\r\nX-Small: {small}\r\n\r\n")
                .as_bytes(),
        )
        .unwrap();
    assert_eq!(read_response(&mut stream).unwrap().0, 200);
}

#[test]
fn json_bodies_over_the_limit_are_refused_with_a_clear_error() {
    let server = server_with("max_json_body_bytes = 65536");
    let padding = "x".repeat(100 * 1024);
    // Declared too large: 413 before a byte of it is read. (Sent by hand, head only: a client
    // still writing the body when the server answers and closes may see a broken pipe
    // instead of the answer, which is the client's race, not the server's.)
    let mut stream = tls(&server, b"http/1.1");
    let head = format!(
        "POST /v1/vendors HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        server.operator,
        padding.len() + 32
    );
    stream.write_all(head.as_bytes()).unwrap();
    let (status, body) = read_response(&mut stream).unwrap();
    // The body may come chunked: the JSON is between its first `{` and last `}`.
    let text = String::from_utf8_lossy(&body);
    let json_text = &text[text.find('{').unwrap()..=text.rfind('}').unwrap()];
    let body: serde_json::Value = serde_json::from_str(json_text).unwrap();
    assert_eq!(status, 413, "{body}");
    assert_eq!(body["error"]["code"], "too_large", "{body}");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("65536"), "{message}");

    // Sent without a length (chunked): refused while it is read.
    let url = format!("{}/v1/vendors", server.url);
    let ca = server.ca.clone();
    let token = server.operator.clone();
    let text = json!({ "name": "chunked", "padding": padding }).to_string();
    let status = runtime().block_on(async move {
        let chunks: Vec<Result<Vec<u8>, std::io::Error>> = text
            .into_bytes()
            .chunks(8192)
            .map(|c| Ok(c.to_vec()))
            .collect();
        let response = https_client(&ca)
            .post(url)
            .bearer_auth(token)
            .header("content-type", "application/json")
            .body(reqwest::Body::wrap_stream(futures::stream::iter(chunks)))
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        let body: serde_json::Value = response.json().await.unwrap();
        assert_eq!(body["error"]["code"], "too_large", "{body}");
        assert!(
            body["error"]["message"]
                .as_str()
                .unwrap()
                .contains("max_json_body_bytes"),
            "{body}"
        );
        status
    });
    assert_eq!(status, 413, "a chunked oversized body");
    let (_, vendors) = server.api(&server.operator, "GET", "/v1/vendors", None);
    assert_eq!(vendors["vendors"], json!([]), "{vendors}");

    // Within the limit: created.
    let (status, body) = server.api(
        &server.operator,
        "POST",
        "/v1/vendors",
        Some(json!({ "name": "small" })),
    );
    assert_eq!(status, 201, "{body}");
}

#[test]
fn a_request_body_that_stalls_fails_and_changes_nothing() {
    let server = server_with("body_read_timeout_secs = 2");
    let mut stream = tls(&server, b"http/1.1");
    let body = br#"{"name":"stalled"}"#;
    stream
        .write_all(
            format!(
                "POST /v1/vendors HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {}\r\n\
                 Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
                server.operator,
                body.len()
            )
            .as_bytes(),
        )
        .unwrap();
    stream.write_all(&body[..5]).unwrap();
    let started = Instant::now();
    let response = read_response(&mut stream);
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "the stalled body was waited for {:?}",
        started.elapsed()
    );
    // An answer must be a refusal; a cut connection is one too.
    if let Ok((status, text)) = response {
        assert!(
            (400..500).contains(&status),
            "{status}: {}",
            String::from_utf8_lossy(&text)
        );
    }
    let (_, vendors) = server.api(&server.operator, "GET", "/v1/vendors", None);
    assert_eq!(vendors["vendors"], json!([]), "{vendors}");
}

#[test]
fn an_idle_connection_is_closed() {
    let server = server_with("idle_timeout_secs = 2\nheader_read_timeout_secs = 30");
    let mut stream = tls(&server, b"http/1.1");
    stream.write_all(HEALTH).unwrap();
    assert_eq!(read_response(&mut stream).unwrap().0, 200);
    // Still open a moment later.
    std::thread::sleep(Duration::from_millis(500));
    stream.write_all(HEALTH).unwrap();
    assert_eq!(read_response(&mut stream).unwrap().0, 200);
    // Closed after the idle timeout.
    std::thread::sleep(Duration::from_millis(3500));
    assert!(is_closed(&mut stream), "an idle connection stayed open");
}

#[test]
fn a_client_that_reads_nothing_of_a_response_is_cut() {
    let world = World::on(server_with("idle_timeout_secs = 2"));
    let src = tempfile::tempdir().unwrap();
    let size = 48u64 << 20;
    write_data(&src.path().join("w.bin"), size, 3);
    let commit = world.upload(src.path(), "acme/slow");
    world
        .server
        .ok(&world.admin, &["grant", "acme/slow", "--to", "alice"]);
    let host = world.server.host.clone().unwrap();
    let tcp = tcp_from(&world.server, "127.0.0.1");
    let mut stream = handshake(&world.server, tcp, b"http/1.1", Some(&host)).unwrap();
    stream
        .write_all(
            format!(
                "GET /v1/models/acme/slow/revisions/{commit}/files/w.bin HTTP/1.1\r\n\
                 Host: localhost\r\nAuthorization: Bearer {}\r\n\r\n",
                world.alice
            )
            .as_bytes(),
        )
        .unwrap();
    let mut first = [0u8; 4096];
    stream.read_exact(&mut first).unwrap();
    // Read nothing for longer than the idle timeout, then everything that is left.
    std::thread::sleep(Duration::from_secs(6));
    let mut total = first.len() as u64;
    let mut chunk = vec![0u8; 1 << 16];
    loop {
        match stream.read(&mut chunk) {
            Ok(0) | Err(_) => break,
            Ok(n) => total += n as u64,
        }
    }
    assert!(
        total < size,
        "the whole response ({total} bytes) arrived after the stall"
    );
    // The server is fine.
    let (status, _) = world.server.api(&world.alice, "GET", "/v1/models", None);
    assert_eq!(status, 200);
}

/// An HTTPS client whose connections come from the loopback address `source`.
fn client_from(server: &TestServer, source: &str) -> reqwest::Client {
    let tls = Arc::unwrap_or_clone(client_config(server, b"http/1.1", None));
    reqwest::Client::builder()
        .use_preconfigured_tls(tls)
        .local_address(source.parse::<std::net::IpAddr>().unwrap())
        .build()
        .unwrap()
}

/// Waits, if need be, until a refusal window (a wall-clock minute) has at least `secs` left.
fn wait_for_window_with(secs: u64) {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let left = 60 - now % 60;
    if left < secs {
        std::thread::sleep(Duration::from_secs(left + 1));
    }
}

/// The refusals an `authenticate` or `authenticate.aggregated` entry stands for, if it is
/// about `source`.
fn refusals_of(entry: &serde_json::Value, source: &str) -> Option<u64> {
    let detail = entry["detail"].as_str()?;
    if entry["outcome"] != "denied"
        || !detail.contains(&format!(" {source} "))
            && !detail.ends_with(&format!("(from {source})"))
    {
        return None;
    }
    match entry["action"].as_str()? {
        "authenticate" => Some(1),
        "authenticate.aggregated" => detail.split(' ').next()?.parse().ok(),
        _ => None,
    }
}

#[test]
fn refused_authentication_is_rate_limited_and_recorded_in_bounded_entries() {
    let server = server_with("refusals_per_minute_per_source = 20");
    let operator = server.operator.clone();
    let url = format!("{}/v1/vendors", server.url);
    wait_for_window_with(40);
    let (bad, anonymous, limited, behaving) = runtime().block_on(async {
        let attacker = client_from(&server, "127.0.0.2");
        let mut bad = Vec::new();
        for _ in 0..50 {
            let response = attacker
                .get(&url)
                .bearer_auth("0123abcd.deadbeef")
                .send()
                .await
                .unwrap();
            let status = response.status().as_u16();
            let retry = response
                .headers()
                .get("retry-after")
                .map(|v| v.to_str().unwrap().parse::<u64>().unwrap());
            let body: serde_json::Value = response.json().await.unwrap();
            bad.push((status, retry, body));
        }
        // The same address with a valid token is served at once.
        let behaving = attacker
            .get(&url)
            .bearer_auth(&operator)
            .send()
            .await
            .unwrap()
            .status()
            .as_u16();
        let other = client_from(&server, "127.0.0.3");
        let mut anonymous = Vec::new();
        for _ in 0..7 {
            anonymous.push(other.get(&url).send().await.unwrap().status().as_u16());
        }
        let limited = attacker.get(&url).send().await.unwrap().status().as_u16();
        (bad, anonymous, limited, behaving)
    });
    for (status, retry, body) in &bad[..20] {
        assert_eq!(*status, 401, "{body}");
        assert_eq!(*retry, None);
        assert_eq!(body["error"]["code"], "unauthenticated", "{body}");
    }
    for (status, retry, body) in &bad[20..] {
        assert_eq!(*status, 429, "{body}");
        assert!(retry.is_some_and(|s| (1..=60).contains(&s)), "{retry:?}");
        assert_eq!(body["error"]["code"], "rate_limited", "{body}");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(
            message.contains("too many refused requests from 127.0.0.2")
                && message.contains("retry after"),
            "{message}"
        );
    }
    assert_eq!(
        behaving, 200,
        "a valid token from a limited address was slowed"
    );
    assert_eq!(anonymous, vec![401; 7], "another source has its own budget");
    assert_eq!(
        limited, 429,
        "a request without a token counts against the same budget"
    );

    // Stop (the counts still in memory are written at shutdown), start again, and read the
    // whole log: every refusal is counted, in a bounded number of entries, and it verifies.
    let mut server = server;
    server.terminate();
    assert_eq!(server.wait_exit(30).and_then(|s| s.code()), Some(0));
    let data = server.stop();
    let mut server = TestServer::start_with(data, &[]);
    server.operator = operator;
    let (_tmp, bundle) = crate::audit::export(&server, None);
    let all = crate::audit::entries(&bundle);
    for (source, sent, most_entries) in [("127.0.0.2", 51, 4), ("127.0.0.3", 7, 2)] {
        let counts: Vec<u64> = all.iter().filter_map(|e| refusals_of(e, source)).collect();
        assert_eq!(counts.iter().sum::<u64>(), sent, "{source}: {counts:?}");
        assert!(
            counts.len() <= most_entries,
            "{source}: {} entries for {sent} refusals",
            counts.len()
        );
    }
    let (code, report) = crate::audit::verify(&bundle, &crate::audit::log_key(&server), &[]);
    assert_eq!(code, 0, "{report}");
}

#[test]
fn upload_manifests_over_the_limits_are_refused_with_clear_errors() {
    let server = server_with(
        "max_upload_files = 3\nmax_file_bytes = 1000\nmax_upload_bytes = 1500\nmax_open_uploads_per_user = 2",
    );
    server.ok(&server.operator, &["vendor", "create", "acme"]);
    let admin = server.token("vendor-admin", Some("acme"), "acme-admin");
    let digest = "0".repeat(64);
    let begin = |files: Vec<(String, u64)>| {
        let files: Vec<_> = files
            .into_iter()
            .map(|(path, size)| json!({ "path": path, "size": size, "sha256": digest }))
            .collect();
        server.api(
            &admin,
            "POST",
            "/v1/models/acme/m/uploads",
            Some(json!({ "message": "", "files": files })),
        )
    };
    let refused = |files: Vec<(String, u64)>, code: &str, fragments: &[&str]| {
        let (status, body) = begin(files);
        assert_eq!(status, 400, "{body}");
        assert_eq!(body["error"]["code"], code, "{body}");
        let message = body["error"]["message"].as_str().unwrap();
        for fragment in fragments {
            assert!(message.contains(fragment), "{message}");
        }
    };
    let named = |n: usize, size: u64| (0..n).map(|i| (format!("f{i}"), size)).collect::<Vec<_>>();
    refused(
        named(4, 1),
        "too_many_files",
        &["4 files", "at most 3", "max_upload_files"],
    );
    refused(
        vec![("w.bin".into(), 1001)],
        "file_too_large",
        &["1001 bytes", "1000", "max_file_bytes"],
    );
    refused(
        vec![("w.bin".into(), 4 << 40)],
        "file_too_large",
        &["max_file_bytes"],
    );
    refused(
        named(2, 800),
        "upload_too_large",
        &["1600 bytes", "1500", "max_upload_bytes"],
    );
    refused(
        vec![("a/".repeat(513), 1)],
        "invalid_path",
        &["1026", "1024"],
    );

    // Two sessions open, a third refused; the same manifest again resumes its session.
    let (status, first) = begin(vec![("a.json".into(), 1)]);
    assert_eq!(status, 201, "{first}");
    let (status, second) = begin(vec![("b.json".into(), 1)]);
    assert_eq!(status, 201, "{second}");
    let (status, body) = begin(vec![("c.json".into(), 1)]);
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["error"]["code"], "too_many_uploads", "{body}");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("2 upload sessions open") && message.contains("max_open_uploads_per_user"),
        "{message}"
    );
    let (status, again) = begin(vec![("a.json".into(), 1)]);
    assert_eq!(status, 200, "{again}");
    assert_eq!(again["upload_id"], first["upload_id"]);
}

#[test]
fn uploads_share_the_part_buffer_budget_and_all_finish() {
    // The smallest budget: two 8 MiB parts' worth for every upload together. Three uploads of
    // three parts each at once must wait for room in turn, never deadlock, and store every
    // byte.
    let server = server_with("max_upload_buffer_bytes = 16777216");
    server.ok(&server.operator, &["vendor", "create", "acme"]);
    let admin = server.token("vendor-admin", Some("acme"), "acme-admin");
    let dirs: Vec<tempfile::TempDir> = (0..3u8)
        .map(|n| {
            let dir = tempfile::tempdir().unwrap();
            let bytes: Vec<u8> = (0..20 << 20).map(|i: u32| (i % 251) as u8 ^ n).collect();
            std::fs::write(dir.path().join("w.bin"), bytes).unwrap();
            dir
        })
        .collect();
    let uploads: Vec<_> = dirs
        .iter()
        .enumerate()
        .map(|(n, dir)| {
            server.spawn_custody(
                &admin,
                &[
                    "upload",
                    dir.path().to_str().unwrap(),
                    &format!("acme/m{n}"),
                ],
            )
        })
        .collect();
    for upload in uploads {
        let output = upload.wait_with_output().unwrap();
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    for n in 0..3 {
        let (status, revision) = server.api(
            &admin,
            "GET",
            &format!("/v1/models/acme/m{n}/revisions/main"),
            None,
        );
        assert_eq!(status, 200, "{revision}");
        assert_eq!(revision["files"][0]["size"], 20u64 << 20, "{revision}");
    }
}

/// The smallest download budget (16 MiB) has room for one stream's read-ahead (12 MiB) at a
/// time. A download whose client reads nothing keeps a second one waiting, unanswered, until
/// it is dropped; then the second is served whole. Fetches of a large file by several
/// `custody fetch` at once (four ranges each) wait for room in turn and all get every byte.
#[test]
fn downloads_share_the_read_ahead_budget_and_all_finish() {
    let world = World::on(server_with("max_download_buffer_bytes = 16777216"));
    let size = (80u64 << 20) + 7;
    let (src, url) = world.upload_one_file_for_alice("acme/big", size, 21);
    let client = https_client_on(&world.server.ca, world.server.host.as_ref());
    let get = || client.get(&url).bearer_auth(&world.alice).send();

    let rt = runtime();
    rt.block_on(async {
        let stalled = get().await.unwrap();
        assert_eq!(stalled.status(), 200);
        // Its read-ahead fills and stays reserved while nobody reads.
        let waiting = tokio::spawn(get());
        tokio::time::sleep(Duration::from_secs(3)).await;
        assert!(
            !waiting.is_finished(),
            "a second download was answered while the first held the whole budget"
        );
        drop(stalled);
        let served = waiting.await.unwrap().unwrap();
        assert_eq!(served.status(), 200);
        assert_eq!(served.bytes().await.unwrap().len() as u64, size);
    });

    let outs: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let fetches: Vec<_> = outs
        .iter()
        .map(|out| {
            world
                .server
                .command(world.server.host.as_ref(), &world.alice)
                .args(["fetch", "acme/big", "--out", out.path().to_str().unwrap()])
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for (fetch, out) in fetches.into_iter().zip(&outs) {
        let output = fetch.wait_with_output().unwrap();
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        assert_same_file(&src.path().join("w.bin"), &out.path().join("w.bin"));
    }
}
