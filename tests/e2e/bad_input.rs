//! The bad-input table (issue 16): malformed, oversized, slow and abandoned input written with
//! raw TCP and TLS sockets to the running gateway, over HTTPS and plain HTTP, each row with the
//! answer it must get within a deadline. Quack messages the gateway can route get an
//! ERROR_RESPONSE in a 200, as the protocol expects; anything else gets its HTTP status before
//! anything is forwarded. Then 10,000 idle connections, and after all of it the gateway's
//! memory is bounded and the real DuckDB CLI still works.
//!
//! `refusals` holds the single-purpose refusal tests this table does not repeat: tokens, ids,
//! the banner, memory under a flood of large statements.

use std::io::{ErrorKind, Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::refusals::rss_kib;
use crate::support::{
    connection_request, msg_type, open_session, prepare_with_id, quack_post, Gateway,
    GatewayOptions,
};
use quack_codec as codec;

/// `gateway.max_body_bytes` and `gateway.max_prepare_bytes` of the gateway under test.
const MAX_BODY: usize = 4 << 20;
const MAX_PREPARE: usize = 64 << 10;
/// `limits.max_connections_per_address` of the gateway under test.
const PER_ADDRESS: usize = 1000;
/// hyper's default header read timeout, and the gateway's body read timeout
/// (`proxy::read::CLIENT_READ_TIMEOUT`).
const HEADER_TIMEOUT: Duration = Duration::from_secs(30);
const BODY_TIMEOUT: Duration = Duration::from_secs(60);
/// The send buffer of every row's socket.
const CLIENT_SNDBUF: usize = 16 * 1024;
/// The longest any ordinary row may take to be answered.
const ANSWER_DEADLINE: Duration = Duration::from_secs(20);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Via {
    Plain,
    Tls,
    /// Raw TCP to the TLS port: for bytes that are not TLS.
    RawToTls,
}

trait Wire: Read + Write + Send {}
impl<T: Read + Write + Send> Wire for T {}

fn tls_config(ca: &std::path::Path) -> Arc<rustls::ClientConfig> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::CertificateDer;
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    Arc::new(
        rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth(),
    )
}

/// A connection whose every read and write has `timeout`.
fn dial(gw: &Gateway, via: Via, timeout: Duration) -> Box<dyn Wire> {
    let addr = if via == Via::Plain {
        gw.plain
    } else {
        gw.https
    };
    let tcp = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).unwrap();
    tcp.set_read_timeout(Some(timeout)).unwrap();
    tcp.set_write_timeout(Some(timeout)).unwrap();
    tcp.set_nodelay(true).unwrap();
    // A small send buffer, as on a real network: a large body is still being sent when the
    // gateway answers, instead of sitting whole in loopback's buffers.
    socket2::SockRef::from(&tcp)
        .set_send_buffer_size(CLIENT_SNDBUF)
        .unwrap();
    match via {
        Via::Plain | Via::RawToTls => Box::new(tcp),
        Via::Tls => {
            let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
            let conn = rustls::ClientConnection::new(tls_config(&gw.ca), name).unwrap();
            Box::new(rustls::StreamOwned::new(conn, tcp))
        }
    }
}

/// What came back.
#[derive(Debug)]
enum Answer {
    /// A final HTTP response, after `interim` 1xx responses.
    Http {
        interim: Vec<u16>,
        status: u16,
        body: Vec<u8>,
    },
    /// The connection ended (or was reset, or refused the TLS handshake) with no HTTP answer.
    Closed { raw: Vec<u8> },
}

/// Reads one HTTP response; panics if nothing decides it within the stream's read timeout.
fn read_answer(w: &mut dyn Wire) -> Answer {
    let mut raw = Vec::new();
    let mut interim = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    loop {
        // Whole heads at the front of `raw`.
        while let Some(end) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&raw[..end]).to_string();
            let status: u16 = match head.split_whitespace().nth(1).map(str::parse) {
                Some(Ok(s)) if head.starts_with("HTTP/1.") => s,
                _ => return Answer::Closed { raw },
            };
            if (100..200).contains(&status) {
                interim.push(status);
                raw.drain(..end + 4);
                continue;
            }
            let length: usize = head
                .lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case("content-length")
                        .then(|| v.trim().parse().ok())?
                })
                .unwrap_or(0);
            if raw.len() >= end + 4 + length {
                return Answer::Http {
                    interim,
                    status,
                    body: raw[end + 4..end + 4 + length].to_vec(),
                };
            }
            break;
        }
        match w.read(&mut chunk) {
            Ok(0) => return Answer::Closed { raw },
            Ok(n) => raw.extend_from_slice(&chunk[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                panic!("no answer before the deadline; read so far: {raw:?}")
            }
            Err(_) => return Answer::Closed { raw },
        }
    }
}

/// Writes `bytes`, stopping at the first failure (a refused request's socket may stop taking
/// them; the point of the row is what the client can still read).
fn send(w: &mut dyn Wire, bytes: &[u8]) {
    for piece in bytes.chunks(64 * 1024) {
        if w.write_all(piece).and_then(|()| w.flush()).is_err() {
            return;
        }
    }
}

fn post(path: &str, extra_headers: &str, body: &[u8]) -> Vec<u8> {
    let mut out = format!(
        "POST {path} HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/octet-stream\r\n\
         content-length: {}\r\n{extra_headers}\r\n",
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(body);
    out
}

fn chunked(extra_headers: &str, chunks: &[&[u8]]) -> Vec<u8> {
    let mut out = format!(
        "POST /quack HTTP/1.1\r\nhost: localhost\r\ntransfer-encoding: chunked\r\n{extra_headers}\r\n"
    )
    .into_bytes();
    for c in chunks {
        out.extend_from_slice(format!("{:x}\r\n", c.len()).as_bytes());
        out.extend_from_slice(c);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"0\r\n\r\n");
    out
}

/// A Quack header of type `t` carrying `id`, then `pad` zero bytes.
fn message(t: u8, id: &[u8], pad: usize) -> Vec<u8> {
    let mut out = vec![1, 0, t, 2, 0];
    let mut n = id.len() as u64;
    loop {
        let byte = (n & 0x7f) as u8;
        n >>= 7;
        out.push(if n == 0 { byte } else { byte | 0x80 });
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(id);
    out.extend_from_slice(&[3, 0, 0, 0xff, 0xff]);
    out.resize(out.len() + pad, 0);
    out
}

#[derive(Debug, Clone)]
enum Expect {
    /// This HTTP status, no interim response.
    Status(u16),
    /// A 200 whose body is a Quack message of this type.
    Quack(u64),
    /// A 200 ERROR_RESPONSE whose text contains this.
    QuackError(&'static str),
    /// A `100 Continue`, then a 200 with a Quack message of this type.
    Continued(u64),
    /// No HTTP answer: the connection is closed.
    Closed,
}

enum Sending {
    Bytes(Vec<u8>),
    /// The head (with `Expect: 100-continue`), then the body once `100 Continue` came.
    AfterContinue {
        head: Vec<u8>,
        body: Vec<u8>,
    },
    /// `head` whole, then `drip` one byte a second, until the gateway answers or closes.
    Drip {
        head: Vec<u8>,
        drip: Vec<u8>,
    },
}

struct Row {
    name: &'static str,
    send: Sending,
    expect: Expect,
    /// TLS-only or plain-only rows; `None` runs over both.
    only: Option<Via>,
    /// The time the gateway may take: a timeout row must not be cut earlier than `at_least`.
    at_least: Duration,
    deadline: Duration,
}

fn row(name: &'static str, send: Vec<u8>, expect: Expect) -> Row {
    Row {
        name,
        send: Sending::Bytes(send),
        expect,
        only: None,
        at_least: Duration::ZERO,
        deadline: ANSWER_DEADLINE,
    }
}

fn table(gw: &Gateway, id: &[u8]) -> Vec<Row> {
    let cr = connection_request(&gw.token);
    let big_token = connection_request(&"t".repeat(1 << 20));
    let long_sql = format!("SELECT 1 -- {}", "x".repeat(MAX_PREPARE));
    let big_prepare = codec::prepare_request(id, 1, &long_sql).to_vec();
    let half = big_prepare.len() / 2;
    let mut id_2_pow_32 = vec![1, 0, 3, 2, 0, 0x80, 0x80, 0x80, 0x80, 0x10];
    id_2_pow_32.extend_from_slice(b"AAAAAAAA\x03\x00\x00\xff\xff");
    let mut id_varint_overflow = vec![1, 0, 3, 2, 0];
    id_varint_overflow.extend_from_slice(&[0xff; 9]);
    id_varint_overflow.extend_from_slice(&[0x7f, 3, 0, 0, 0xff, 0xff]);
    let expect_continue = "expect: 100-continue\r\n";
    let many_headers: String = (0..101).map(|i| format!("x-h{i}: v\r\n")).collect();
    let huge_header = format!("x-pad: {}\r\n", "a".repeat(512 * 1024));
    // A body whose Quack header cannot complete before the body read timeout: an id of 127
    // bytes, dripped at one byte a second.
    let mut slow_body = vec![1, 0, 3, 2, 0, 127];
    slow_body.resize(200, b'A');
    let slow_head =
        b"POST /quack HTTP/1.1\r\nhost: localhost\r\ncontent-length: 1000\r\n\r\n".to_vec();
    // APPENDs are read whole, then walked, and garbage is refused, so the size and time
    // limits on an APPEND are tried with real ones: one a little over
    // the limit, and the start of one whose 8,000-byte data blob then arrives a byte a second.
    let over_limit_append = |rows: usize| {
        codec::append_request(
            id,
            1,
            "main",
            "t",
            &[codec::AppendColumn::BigInt(vec![0; rows])],
        )
    };
    let big_append = over_limit_append(MAX_BODY / 8 + 1);
    let slow_append = over_limit_append(1000);
    let slow_append_head = [
        &slow_head[..],
        &slow_append[..slow_append.len() - 8000 + 10],
    ]
    .concat();
    let with_body = post("/quack", expect_continue, &cr);
    let continue_head = with_body[..with_body.len() - cr.len()].to_vec();
    let mut put = post("/quack", "", &cr);
    put.splice(0..5, *b"PUT ");
    vec![
        row("truncated Quack header", post("/quack", "", &[1, 0, 3]), Expect::Status(400)),
        row(
            "header fields out of order (3 before 1)",
            post("/quack", "", &[3, 0, 0, 1, 0, 3, 0xff, 0xff]),
            Expect::Status(400),
        ),
        row(
            "header fields out of order (2 after 3)",
            post("/quack", "", &[1, 0, 3, 3, 0, 0, 2, 0, 1, b'A', 0xff, 0xff]),
            Expect::Status(400),
        ),
        row(
            "connection id length 2^32",
            post("/quack", "", &id_2_pow_32),
            Expect::Status(400),
        ),
        row(
            "connection id length overflowing 64 bits",
            post("/quack", "", &id_varint_overflow),
            Expect::Status(400),
        ),
        row(
            "non-UTF-8 connection id",
            post("/quack", "", &message(3, &[0xff, 0xfe, 0xc3, 0x28, 0x80], 0)),
            Expect::QuackError("Invalid connection id"),
        ),
        row("empty body", post("/quack", "", &[]), Expect::Status(400)),
        row(
            "no body and no Content-Length",
            b"POST /quack HTTP/1.1\r\nhost: localhost\r\n\r\n".to_vec(),
            Expect::Status(400),
        ),
        row(
            "APPEND over gateway.max_body_bytes, sent whole",
            post("/quack", "", &message(9, id, MAX_BODY)),
            Expect::Status(413),
        ),
        row(
            "chunked APPEND over gateway.max_body_bytes",
            chunked("", &[&big_append]),
            Expect::Status(413),
        ),
        row(
            "FETCH over its 4 KiB cap",
            post("/quack", "", &message(7, id, 5000)),
            Expect::Status(413),
        ),
        row(
            "PREPARE over gateway.max_prepare_bytes, sent whole",
            post("/quack", "", &big_prepare),
            Expect::QuackError("max_prepare_bytes"),
        ),
        row(
            "CONNECTION_REQUEST with a 1 MB token, sent whole",
            post("/quack", "", &big_token),
            Expect::Status(413),
        ),
        row(
            "request head over hyper's buffer (512 KiB header)",
            post("/quack", &huge_header, &cr),
            Expect::Status(431),
        ),
        row(
            "101 header fields",
            post("/quack", &many_headers, &cr),
            Expect::Status(431),
        ),
        row("wrong path", post("/nope", "", &cr), Expect::Status(404)),
        row(
            "wrong method",
            put,
            Expect::Status(404),
        ),
        row(
            "invalid Content-Length",
            b"POST /quack HTTP/1.1\r\nhost: localhost\r\ncontent-length: 12x\r\n\r\n".to_vec(),
            Expect::Status(400),
        ),
        row(
            "Content-Length and chunked together: chunked wins (RFC 9112)",
            {
                let mut r = chunked("content-length: 5\r\n", &[&cr]);
                r.extend_from_slice(b"GARBA");
                r
            },
            Expect::Quack(2),
        ),
        Row {
            send: Sending::AfterContinue {
                head: continue_head,
                body: cr.clone(),
            },
            ..row("Expect: 100-continue", Vec::new(), Expect::Continued(2))
        },
        row(
            "Expect: 100-continue over gateway.max_body_bytes, body never sent",
            format!(
                "POST /quack HTTP/1.1\r\nhost: localhost\r\ncontent-length: {}\r\n{expect_continue}\r\n",
                MAX_BODY + 1
            )
            .into_bytes(),
            Expect::Status(413),
        ),
        row(
            "chunked CONNECTION_REQUEST",
            chunked("", &[&cr[..5], &cr[5..]]),
            Expect::Quack(2),
        ),
        row(
            "chunked PREPARE over gateway.max_prepare_bytes",
            chunked("", &[&big_prepare[..half], &big_prepare[half..]]),
            Expect::QuackError("max_prepare_bytes"),
        ),
        row(
            "bad chunk size",
            b"POST /quack HTTP/1.1\r\nhost: localhost\r\ntransfer-encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n"
                .to_vec(),
            Expect::Status(400),
        ),
        Row {
            send: Sending::Drip {
                head: Vec::new(),
                drip: b"POST /quack HTTP/1.1\r\nhost: localhost\r\nx-slow: ".to_vec(),
            },
            at_least: HEADER_TIMEOUT - Duration::from_secs(1),
            deadline: HEADER_TIMEOUT + Duration::from_secs(15),
            ..row("slowloris on the headers", Vec::new(), Expect::Closed)
        },
        Row {
            send: Sending::Drip {
                head: slow_head,
                drip: slow_body,
            },
            at_least: BODY_TIMEOUT - Duration::from_secs(1),
            deadline: BODY_TIMEOUT + Duration::from_secs(15),
            ..row("slowloris on the body", Vec::new(), Expect::Status(408))
        },
        Row {
            send: Sending::Drip {
                head: slow_append_head,
                drip: vec![0; 200],
            },
            at_least: BODY_TIMEOUT - Duration::from_secs(1),
            deadline: BODY_TIMEOUT + Duration::from_secs(15),
            ..row(
                "slowloris on a streamed APPEND body",
                Vec::new(),
                Expect::Status(408),
            )
        },
        Row {
            only: Some(Via::RawToTls),
            ..row(
                "garbage TLS ClientHello",
                [&[0x16, 0x03, 0x01, 0x00, 0x20, 0x01, 0x00, 0x00, 0x1c][..], &[0xee; 28]]
                    .concat(),
                Expect::Closed,
            )
        },
        Row {
            only: Some(Via::RawToTls),
            ..row("plain HTTP to the TLS port", post("/quack", "", &cr), Expect::Closed)
        },
    ]
}

/// Runs one row over `via`; returns what came back and how long it took.
fn run_row(gw: &Gateway, r: &Row, via: Via) -> (Answer, Duration) {
    let started = Instant::now();
    let per_read = match r.send {
        Sending::Drip { .. } => Duration::from_secs(1),
        _ => r.deadline,
    };
    let mut w = dial(gw, via, per_read);
    let answer = match &r.send {
        Sending::Bytes(bytes) => {
            send(&mut *w, bytes);
            read_answer(&mut *w)
        }
        Sending::AfterContinue { head, body } => {
            send(&mut *w, head);
            // hyper answers `100 Continue` when the body is first read, then the final answer.
            let mut line = [0u8; 25];
            w.read_exact(&mut line).unwrap();
            assert_eq!(&line, b"HTTP/1.1 100 Continue\r\n\r\n");
            send(&mut *w, body);
            match read_answer(&mut *w) {
                Answer::Http {
                    status,
                    body,
                    mut interim,
                } => {
                    interim.insert(0, 100);
                    Answer::Http {
                        interim,
                        status,
                        body,
                    }
                }
                closed => closed,
            }
        }
        Sending::Drip { head, drip: bytes } => {
            send(&mut *w, head);
            let mut at = 0;
            loop {
                assert!(
                    started.elapsed() < r.deadline,
                    "{}: not cut off within {:?}",
                    r.name,
                    r.deadline
                );
                if at < bytes.len()
                    && w.write_all(&bytes[at..=at])
                        .and_then(|()| w.flush())
                        .is_ok()
                {
                    at += 1;
                }
                // The one-second read is the pace of the drip: it waits for an answer.
                let mut first = [0u8; 1];
                match w.read(&mut first) {
                    Ok(0) => break Answer::Closed { raw: Vec::new() },
                    Ok(_) => {
                        let rest = read_answer_after(&mut *w, first[0]);
                        break rest;
                    }
                    Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                    Err(_) => break Answer::Closed { raw: Vec::new() },
                }
            }
        }
    };
    (answer, started.elapsed())
}

/// [`read_answer`] when its first byte was read already.
fn read_answer_after(w: &mut dyn Wire, first: u8) -> Answer {
    struct Prefixed<'a> {
        first: Option<u8>,
        w: &'a mut dyn Wire,
    }
    impl Read for Prefixed<'_> {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            match self.first.take() {
                Some(b) => {
                    buf[0] = b;
                    Ok(1)
                }
                None => self.w.read(buf),
            }
        }
    }
    impl Write for Prefixed<'_> {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.w.write(buf)
        }
        fn flush(&mut self) -> std::io::Result<()> {
            self.w.flush()
        }
    }
    // The drip's one-second timeout stays; the answer is written at once, so it suffices.
    read_answer(&mut Prefixed {
        first: Some(first),
        w,
    })
}

fn matches(expect: &Expect, answer: &Answer) -> bool {
    let quack = |body: &[u8]| codec::decode_header(body).ok().map(|h| h.msg_type);
    match (expect, answer) {
        (
            Expect::Status(s),
            Answer::Http {
                interim, status, ..
            },
        ) => interim.is_empty() && s == status,
        (
            Expect::Quack(t),
            Answer::Http {
                interim,
                status: 200,
                body,
            },
        ) => interim.is_empty() && quack(body) == Some(*t),
        (
            Expect::QuackError(text),
            Answer::Http {
                interim,
                status: 200,
                body,
            },
        ) => {
            interim.is_empty()
                && quack(body) == Some(100)
                && String::from_utf8_lossy(body).contains(text)
        }
        (
            Expect::Continued(t),
            Answer::Http {
                interim,
                status: 200,
                body,
            },
        ) => interim == &[100] && quack(body) == Some(*t),
        (Expect::Closed, Answer::Closed { raw }) => !raw.starts_with(b"HTTP/"),
        _ => false,
    }
}

fn observed(answer: &Answer) -> String {
    match answer {
        Answer::Http {
            interim,
            status,
            body,
        } => {
            let quack = codec::decode_header(body).ok().map(|h| h.msg_type);
            let text = match quack {
                Some(100) => format!(
                    " ERROR_RESPONSE {:?}",
                    String::from_utf8_lossy(&body[..body.len().min(120)])
                ),
                Some(t) => format!(" Quack type {t}"),
                None => format!(
                    " {:?}",
                    String::from_utf8_lossy(&body[..body.len().min(60)])
                ),
            };
            format!("{interim:?} HTTP {status}{text}")
        }
        Answer::Closed { raw } if raw.first() == Some(&0x15) => {
            format!("a TLS alert ({} bytes), closed, no HTTP answer", raw.len())
        }
        Answer::Closed { raw } => format!("closed after {} bytes, no HTTP answer", raw.len()),
    }
}

/// Raises this process's soft limit on open files to its hard limit (the gateway inherits it).
fn raise_nofile(needed: u64) {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct passed.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim), 0);
        lim.rlim_cur = lim.rlim_max;
        assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &lim), 0);
    }
    assert!(
        lim.rlim_cur >= needed,
        "RLIMIT_NOFILE hard limit {} is below the {needed} this test needs",
        lim.rlim_cur
    );
}

/// A TCP connection to `to` from source address `from`, left idle.
fn idle_from(from: Ipv4Addr, to: SocketAddr) -> std::io::Result<TcpStream> {
    let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)?;
    s.bind(&SocketAddr::new(IpAddr::V4(from), 0).into())?;
    s.connect_timeout(&to.into(), Duration::from_secs(5))?;
    Ok(s.into())
}

/// Whether the gateway closed `s` (an end of stream or a reset) within `timeout`.
fn closed_within(s: &mut TcpStream, timeout: Duration) -> bool {
    s.set_read_timeout(Some(timeout.max(Duration::from_millis(1))))
        .unwrap();
    let mut buf = [0u8; 512];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return true,
            // A TLS alert or an HTTP answer may come first; read on to the end.
            Ok(_) => continue,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                return false
            }
            Err(_) => return true,
        }
    }
}

#[test]
fn the_bad_input_table_over_tls_and_plain_http() {
    const IDLE: usize = 10_000;
    // Each side holds one descriptor per connection, plus its own.
    raise_nofile(IDLE as u64 + 1_000);
    let gw = Gateway::start_with(GatewayOptions {
        extra_gateway_toml: format!(
            "max_body_bytes = {MAX_BODY}\nmax_prepare_bytes = {MAX_PREPARE}\nmax_connections = {}\n",
            IDLE + 2_000
        ),
        extra_toml: format!("[limits]\nmax_connections_per_address = {PER_ADDRESS}\n"),
        ..GatewayOptions::default()
    });
    let pid = gw.child.id();
    let id = open_session(&gw);
    let rss_start = rss_kib(pid);

    // A statement that outlives every client timeout is not cut off by them.
    let long = std::thread::scope(|scope| {
        let long = scope.spawn(|| {
            let started = Instant::now();
            let out = gw.cli(&format!(
                "FROM r.query('SELECT 42 AS answer, sleep_ms({}) AS slept');",
                (BODY_TIMEOUT + Duration::from_secs(5)).as_millis()
            ));
            (out, started.elapsed())
        });
        let rows = table(&gw, &id);
        let mut failures = Vec::new();
        let results: Vec<_> = std::thread::scope(|rows_scope| {
            let mut handles = Vec::new();
            for r in &rows {
                for via in [Via::Tls, Via::Plain, Via::RawToTls] {
                    let runs = match r.only {
                        Some(only) => only == via,
                        None => via != Via::RawToTls,
                    };
                    if !runs {
                        continue;
                    }
                    let gw = &gw;
                    // Timeout rows run beside the rest; the others one after another.
                    if matches!(r.send, Sending::Drip { .. }) {
                        handles.push((r, via, Some(rows_scope.spawn(move || run_row(gw, r, via)))));
                    } else {
                        handles.push((r, via, None));
                    }
                }
            }
            handles
                .into_iter()
                .map(|(r, via, handle)| {
                    let (answer, took) = match handle {
                        Some(h) => h.join().unwrap(),
                        None => run_row(&gw, r, via),
                    };
                    (r, via, answer, took)
                })
                .collect()
        });
        for (r, via, answer, took) in results {
            let ok = matches(&r.expect, &answer) && took >= r.at_least && took <= r.deadline;
            eprintln!(
                "{} {:<68} {:<9} expected {:<28} observed {} in {:.1} s",
                if ok { "ok  " } else { "FAIL" },
                r.name,
                format!("{via:?}"),
                format!("{:?}", r.expect),
                observed(&answer),
                took.as_secs_f64()
            );
            if !ok {
                failures.push(format!("{} over {via:?}: {}", r.name, observed(&answer)));
            }
        }
        assert!(failures.is_empty(), "rows failed: {failures:#?}");
        long.join().unwrap()
    });
    let (out, took) = long;
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("42"),
        "the long statement failed after {took:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(took > BODY_TIMEOUT, "{took:?}");
    // The session the refused and cut-off APPENDs, FETCHes and PREPAREs named still serves.
    let (status, answer) = quack_post(gw.plain, prepare_with_id(&id));
    assert_eq!((status, msg_type(&answer)), (200, 4));
    let rss_after_table = rss_kib(pid);

    // 10,000 connections opened and left idle, half on each public listener, from ten loopback
    // addresses of 1,000 each: as many as `limits.max_connections_per_address` lets one hold.
    let opened = Instant::now();
    let mut idle = Vec::with_capacity(IDLE);
    for i in 0..IDLE {
        let from = Ipv4Addr::new(127, 0, 0, 11 + (i / PER_ADDRESS) as u8);
        let to = if i < IDLE / 2 { gw.plain } else { gw.https };
        idle.push(idle_from(from, to).unwrap_or_else(|e| panic!("connection {i}: {e}")));
    }
    // The next one from a full address is closed at once; another address is served.
    let mut refused = idle_from(Ipv4Addr::new(127, 0, 0, 11), gw.plain).unwrap();
    assert!(
        closed_within(&mut refused, Duration::from_secs(10)),
        "connection {} from one address was not refused",
        PER_ADDRESS + 1
    );
    // Every idle one is still open (none was refused) before the handshake timeout.
    let mut held = idle[..IDLE / 2].iter_mut().step_by(100).collect::<Vec<_>>();
    for s in held.iter_mut() {
        assert!(
            !closed_within(s, Duration::from_millis(1)),
            "an idle connection was refused"
        );
    }
    let rss_idle = rss_kib(pid);
    // A real client works meanwhile.
    assert_eq!(gw.cli_ok("FROM r.query('SELECT 40 + 2')"), ["42"]);
    eprintln!(
        "{IDLE} idle connections opened in {:.1} s; the gateway's RSS: {rss_start} KiB at start, \
         {rss_after_table} KiB after the table, {rss_idle} KiB with them open",
        opened.elapsed().as_secs_f64()
    );
    // The gateway closes them: TLS ones at the handshake timeout (10 s), plain ones at hyper's
    // header read timeout (30 s).
    let until = Instant::now() + HEADER_TIMEOUT + Duration::from_secs(20);
    for (i, s) in idle.iter_mut().enumerate() {
        let left = until.saturating_duration_since(Instant::now());
        assert!(closed_within(s, left), "idle connection {i} still open");
    }
    drop(idle);
    let rss_end = rss_kib(pid);
    eprintln!("the gateway's RSS after they closed: {rss_end} KiB");
    // Bounds. The table's rows (whose largest bodies are 4 MiB, refused unread) leave under
    // 16 MiB behind. An idle connection costs the gateway a task and a hyper connection with
    // its first 8 KiB read buffer, or a rustls server connection waiting for its ClientHello:
    // measured at about 15 KiB each (17.8 MiB -> 167 MiB for 10,000), so 24 KiB each is the
    // bound. Closing them must not cost more (the allocator keeps the freed pages, so RSS does
    // not fall back).
    assert!(
        rss_after_table < rss_start + 16 * 1024,
        "the table grew the gateway from {rss_start} to {rss_after_table} KiB"
    );
    assert!(
        rss_idle < rss_start + (IDLE as u64) * 24,
        "{IDLE} idle connections grew the gateway from {rss_start} to {rss_idle} KiB"
    );
    assert!(
        rss_end < rss_idle + 16 * 1024,
        "closing the idle connections grew the gateway from {rss_idle} to {rss_end} KiB"
    );
    // No panic, and neither a token nor SQL text in the log (info level, the default).
    let log = gw.log();
    assert!(!log.contains("panicked"), "{log}");
    for secret in [
        &gw.token[..],
        "tttttttttttttttt",
        "xxxxxxxxxxxxxxxx",
        "sleep_ms",
    ] {
        assert!(!log.contains(secret), "{secret} in the log:\n{log}");
    }
    // The real client with a 1 MB token over TLS is told the status. Without the lingering
    // close it got "Failed sending data to the peer" two times in three.
    for _ in 0..3 {
        let out = gw.cli_with_token(&"t".repeat(1 << 20), "FROM r.query('SELECT 1');");
        let stderr = String::from_utf8_lossy(&out.stderr);
        eprintln!("the CLI with a 1 MB token: {}", stderr.trim());
        assert!(stderr.contains("Payload Too Large"), "{stderr}");
    }
    // And after everything, the real client still works.
    assert_eq!(gw.cli_ok("FROM r.query('SELECT 6 * 7')"), ["42"]);
}
