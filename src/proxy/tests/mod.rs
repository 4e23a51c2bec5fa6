//! The request path in-process: the real `server` and `proxy::handle` on a loopback port, with
//! a fake worker that answers with captured DuckDB 1.5.5 messages. These cover the paths that
//! otherwise only the end-to-end tests reach: refusals, tampered ids, limits, a worker gone.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::auth::hash_token;
use crate::config::Config;
use crate::limits::ConnectionCaps;
use crate::proxy::{self, Origin};
use crate::server::{self, Listener};
use crate::state::AppState;
use quack_codec as codec;
use quack_codec::msg_type;

const CLIENT_TOKEN: &str = "the-client-token";

fn fixture(name: &str) -> Bytes {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/quack")
        .join(name);
    Bytes::from(std::fs::read(path).expect("captured fixture"))
}

fn connection_request(token: &str) -> Bytes {
    let buf = fixture("connection_request.bin");
    let header = codec::decode_header(&buf).unwrap();
    let req = codec::decode_connection_request(&buf, &header).unwrap();
    codec::replace_token(&buf, &header, &req, token.as_bytes())
}

fn with_id(name: &str, id: &[u8]) -> Bytes {
    let buf = fixture(name);
    let header = codec::decode_header(&buf).unwrap();
    let mut out = codec::rewrite_header(&buf, &header, id).to_vec();
    out.extend_from_slice(&buf[header.len..]);
    Bytes::from(out)
}

/// The id the captured CONNECTION_RESPONSE carries: the fake worker's one session.
fn worker_session_id() -> Vec<u8> {
    let buf = fixture("connection_response.bin");
    let header = codec::decode_header(&buf).unwrap();
    header.connection_id(&buf).unwrap().to_vec()
}

/// An extension folder whose files only exist: the fake worker loads nothing.
fn stand_in_extensions(dir: &Path) -> std::path::PathBuf {
    let ext = dir.join("ext");
    for name in quackgate_duckdb::EXTENSIONS_REQUIRED {
        let f = quackgate_duckdb::extension_path(&ext, name);
        std::fs::create_dir_all(f.parent().unwrap()).unwrap();
        std::fs::write(f, b"").unwrap();
    }
    ext
}

/// SQL that makes the fake worker answer HTTP 500.
const FAIL_500: &[u8] = b"fail with http 500";

/// What DuckDB 1.5.5 threw at a CONNECTION_REQUEST while the lake's catalog restarted.
const CATALOG_AWAY: &str = "IO Error: Failed to query most recent snapshot for DuckLake";

/// A worker that knows one session (the captured one) and records every message it gets.
#[derive(Clone, Default)]
struct FakeWorker {
    received: Arc<Mutex<Vec<Bytes>>>,
    /// Answer CONNECTION_REQUESTs with HTTP 500, as DuckDB 1.5.5 does while the lake's catalog
    /// is away.
    connects_fail: Arc<AtomicBool>,
}

impl FakeWorker {
    async fn start(self) -> u16 {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let worker = self.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                        let worker = worker.clone();
                        async move {
                            let body = req.into_body().collect().await?.to_bytes();
                            worker.received.lock().unwrap().push(body.clone());
                            // A DuckDB server whose handler throws answers 500, empty.
                            let failing = |what: &'static str| {
                                let mut failed = Response::new(Full::new(Bytes::new()));
                                *failed.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
                                failed
                                    .headers_mut()
                                    .insert("EXCEPTION_WHAT", http::HeaderValue::from_static(what));
                                Ok::<_, hyper::Error>(failed)
                            };
                            if body.windows(FAIL_500.len()).any(|w| w == FAIL_500) {
                                return failing("std::bad_alloc");
                            }
                            let connect = codec::decode_header(&body)
                                .is_ok_and(|h| h.msg_type == msg_type::CONNECTION_REQUEST);
                            if connect && worker.connects_fail.load(Ordering::SeqCst) {
                                return failing(CATALOG_AWAY);
                            }
                            Ok::<_, hyper::Error>(Response::new(Full::new(worker.answer(&body))))
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        port
    }

    fn answer(&self, message: &[u8]) -> Bytes {
        let Ok(header) = codec::decode_header(message) else {
            return fixture("error_invalid_connection_id.bin");
        };
        match header.msg_type {
            1 => fixture("connection_response.bin"),
            11 => fixture("success_response.bin"),
            _ if header.connection_id(message) == Some(&worker_session_id()[..]) => {
                fixture("prepare_response_select42.bin")
            }
            _ => fixture("error_invalid_connection_id.bin"),
        }
    }

    fn received(&self) -> Vec<Bytes> {
        self.received.lock().unwrap().clone()
    }
}

/// A gateway node in this process: one worker slot served by a [`FakeWorker`].
struct Harness {
    addr: SocketAddr,
    state: Arc<AppState>,
    worker: FakeWorker,
    shutdown: CancellationToken,
    _dir: tempfile::TempDir,
}

impl Harness {
    async fn start(extra_toml: &str) -> Harness {
        Self::start_with(&[], extra_toml).await
    }

    /// `env` holds `QUACKGATE__*` overrides.
    async fn start_with(env: &[(&str, &str)], extra_toml: &str) -> Harness {
        let dir = tempfile::tempdir().unwrap();
        let ext = stand_in_extensions(dir.path());
        // One stand-in worker serves several principals here: shared, not isolated.
        let text = format!(
            "[gateway]\nplain_listen = \"127.0.0.1:0\"\n[[auth.static_tokens]]\nname = \"alice\"\nsha256 = \"{}\"\n[workers]\ncount = 1\nisolation = \"shared\"\nextension_dir = \"{}\"\n{extra_toml}",
            hash_token(CLIENT_TOKEN),
            ext.display()
        );
        let env = env.iter().map(|(k, v)| (k.to_string(), v.to_string()));
        let config = Config::from_toml(&text, &dir.path().join("c.toml"), env).unwrap();
        let shutdown = CancellationToken::new();
        let state = Arc::new(AppState::new(&config, shutdown.clone()).unwrap());
        let worker = FakeWorker::default();
        let port = worker.clone().start().await;
        state.workers.get(0).unwrap().set_serving(port);

        let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = tcp.local_addr().unwrap();
        let listener = Listener {
            tcp,
            tls: None,
            name: "plain",
            trusted: Arc::default(),
            per_address: Some(Arc::new(ConnectionCaps::new(
                config.limits.max_connections_per_address,
            ))),
            only_trusted: false,
        };
        let served = state.clone();
        tokio::spawn(server::run(
            listener,
            move |req| proxy::handle(served.clone(), Origin::Client, req),
            Arc::new(Semaphore::new(64)),
            CancellationToken::new(),
            TaskTracker::new(),
        ));
        Harness {
            addr,
            state,
            worker,
            shutdown,
            _dir: dir,
        }
    }

    /// POSTs `body` to `/quack` on a new connection, as a DuckDB 1.5 client does.
    async fn post(&self, body: Bytes) -> (StatusCode, Bytes) {
        self.request("POST", "/quack", body).await
    }

    async fn request(&self, method: &str, path: &str, body: Bytes) -> (StatusCode, Bytes) {
        let stream = TcpStream::connect(self.addr).await.unwrap();
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .unwrap();
        tokio::spawn(conn);
        let req = Request::builder()
            .method(method)
            .uri(path)
            .header("host", self.addr.to_string());
        let resp = sender
            .send_request(req.body(Full::new(body)).unwrap())
            .await
            .unwrap();
        let status = resp.status();
        (status, resp.into_body().collect().await.unwrap().to_bytes())
    }

    async fn open_session(&self) -> Vec<u8> {
        let (status, answer) = self.post(connection_request(CLIENT_TOKEN)).await;
        assert_eq!(status, StatusCode::OK);
        let header = codec::decode_header(&answer).unwrap();
        assert_eq!(header.msg_type, 2, "{answer:?}");
        header.connection_id(&answer).unwrap().to_vec()
    }
}

/// The tag in the ids of a static token's sessions.
fn token_tag(name: &str, token: &str) -> u32 {
    use sha2::Digest;
    crate::auth::principal_tag(name, Some(&sha2::Sha256::digest(token.as_bytes()).into()))
}

fn error_text(answer: &[u8]) -> String {
    String::from_utf8_lossy(codec::error_message(answer).expect("an ERROR_RESPONSE")).into_owned()
}

#[tokio::test]
async fn a_session_reaches_its_worker_with_the_internal_token_and_the_workers_own_id() {
    let h = Harness::start("").await;
    let id = h.open_session().await;
    assert!(
        id.starts_with(b"q2.n0.0.rw."),
        "{}",
        String::from_utf8_lossy(&id)
    );
    let (status, answer) = h.post(with_id("prepare_request_select42.bin", &id)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(answer, fixture("prepare_response_select42.bin"));

    let received = h.worker.received();
    assert_eq!(received.len(), 2);
    let header = codec::decode_header(&received[0]).unwrap();
    let request = codec::decode_connection_request(&received[0], &header).unwrap();
    let token = &received[0][request.token.unwrap()];
    assert_eq!(token, h.state.worker_token.expose().as_bytes());
    let header = codec::decode_header(&received[1]).unwrap();
    assert_eq!(
        header.connection_id(&received[1]),
        Some(&worker_session_id()[..])
    );
    assert_eq!(h.state.sessions.len(), 1);
}

#[tokio::test]
async fn a_connection_id_the_client_chose_never_reaches_the_worker() {
    let h = Harness::start("").await;
    let chosen = {
        let buf = with_id("connection_request.bin", b"CHOSEN-BY-THE-CLIENT");
        let header = codec::decode_header(&buf).unwrap();
        let req = codec::decode_connection_request(&buf, &header).unwrap();
        codec::replace_token(&buf, &header, &req, CLIENT_TOKEN.as_bytes())
    };
    let (_, answer) = h.post(chosen).await;
    assert_eq!(codec::decode_header(&answer).unwrap().msg_type, 2);
    let received = h.worker.received();
    let header = codec::decode_header(&received[0]).unwrap();
    assert_eq!(header.msg_type, 1);
    assert_eq!(header.connection_id(&received[0]), None);
    let request = codec::decode_connection_request(&received[0], &header).unwrap();
    assert_eq!(
        &received[0][request.token.unwrap()],
        h.state.worker_token.expose().as_bytes()
    );
}

#[tokio::test]
async fn a_wrong_token_is_refused_in_quack_terms_before_any_worker_sees_it() {
    let h = Harness::start("").await;
    let (status, answer) = h.post(connection_request("not-the-token")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(error_text(&answer), "Authentication failed");
    assert!(h.worker.received().is_empty());
}

#[tokio::test]
async fn a_tampered_or_foreign_id_gets_invalid_connection_id_and_goes_nowhere() {
    let h = Harness::start("").await;
    let id = h.open_session().await;
    let mut tampered = id.clone();
    let last = tampered.len() - 1;
    tampered[last] ^= 1;
    let bare = worker_session_id();
    for bad in [tampered, bare] {
        let (status, answer) = h.post(with_id("prepare_request_select42.bin", &bad)).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(error_text(&answer), "Invalid connection id");
    }
    assert_eq!(h.worker.received().len(), 1, "only the CONNECTION_REQUEST");
}

#[tokio::test]
async fn the_principal_limit_refuses_a_session_too_many_and_frees_its_place_on_disconnect() {
    let h = Harness::start("[limits]\nmax_sessions_per_principal = 1\n").await;
    let id = h.open_session().await;
    let (_, answer) = h.post(connection_request(CLIENT_TOKEN)).await;
    assert!(
        error_text(&answer).contains("max_sessions_per_principal"),
        "{answer:?}"
    );
    let (status, answer) = h.post(with_id("disconnect_request.bin", &id)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(answer, fixture("success_response.bin"));
    assert!(h.state.sessions.is_empty());
    h.open_session().await;
}

#[tokio::test]
async fn an_answer_reading_invalid_connection_id_does_not_take_the_session_off_the_books() {
    // The worker's answer to an id it does not know is byte for byte what client SQL gets
    // from `SELECT error('Invalid connection id')` (checked against a 1.5.5 worker), so the
    // table must not believe it: the session would leave the principal's limit while open.
    let h = Harness::start("[limits]\nmax_sessions_per_principal = 2\n").await;
    let id = h.open_session().await;
    let unknown_to_the_worker = h.state.ids.mint(
        "n0",
        0,
        &crate::routable_id::Grant {
            access: crate::auth::Access::ReadWrite,
            expires_at: None,
            principal_tag: token_tag("alice", CLIENT_TOKEN),
        },
        b"00000000000000000000000000000000",
    );
    let worker = h.state.workers.get(0).unwrap();
    h.state.sessions.opened(
        &unknown_to_the_worker,
        worker,
        worker.generation(),
        std::time::Instant::now(),
        h.state.sessions.reserve(&"alice".into(), None).unwrap(),
    );
    let (_, answer) = h
        .post(with_id(
            "prepare_request_select42.bin",
            &unknown_to_the_worker,
        ))
        .await;
    assert_eq!(answer, fixture("error_invalid_connection_id.bin"));
    assert_eq!(h.state.sessions.len(), 2);
    let (_, answer) = h.post(connection_request(CLIENT_TOKEN)).await;
    assert!(
        error_text(&answer).contains("max_sessions_per_principal"),
        "{answer:?}"
    );
    let (_, answer) = h.post(with_id("prepare_request_select42.bin", &id)).await;
    assert_eq!(answer, fixture("prepare_response_select42.bin"));
}

#[tokio::test]
async fn a_worker_gone_is_a_quack_error_that_says_nothing_was_sent() {
    let h = Harness::start("").await;
    let id = h.open_session().await;
    let closed = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    h.state.workers.get(0).unwrap().set_serving(port);
    let (status, answer) = h.post(with_id("prepare_request_select42.bin", &id)).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        error_text(&answer).contains("the request was not sent"),
        "{answer:?}"
    );
    h.state.workers.get(0).unwrap().set_down();
    let (_, answer) = h.post(with_id("prepare_request_select42.bin", &id)).await;
    assert_eq!(error_text(&answer), "Invalid connection id");
    let (_, answer) = h.post(connection_request(CLIENT_TOKEN)).await;
    assert!(error_text(&answer).contains("no DuckDB worker is ready"));
}

#[tokio::test]
async fn a_worker_answering_http_500_is_a_quack_error_that_says_it_may_have_run() {
    let h = Harness::start("").await;
    let id = h.open_session().await;
    let sql = std::str::from_utf8(FAIL_500).unwrap();
    let (status, answer) = h.post(codec::prepare_request(&id, 1, sql)).await;
    assert_eq!(status, StatusCode::OK);
    let text = error_text(&answer);
    assert!(
        text.contains("HTTP 500")
            && text.contains("std::bad_alloc")
            && text.contains("may or may not have run"),
        "{text:?}"
    );
    // The session goes on.
    let (_, answer) = h.post(with_id("prepare_request_select42.bin", &id)).await;
    assert_eq!(error_text_or_empty(&answer), "");
}

#[tokio::test]
async fn a_worker_failing_a_connect_with_http_500_is_a_quack_error_with_its_exception() {
    let h = Harness::start("").await;
    h.worker.connects_fail.store(true, Ordering::SeqCst);
    let (status, answer) = h.post(connection_request(CLIENT_TOKEN)).await;
    assert_eq!(status, StatusCode::OK);
    let text = error_text(&answer);
    assert!(
        text.contains("HTTP 500") && text.contains(CATALOG_AWAY),
        "{text:?}"
    );
    // Nothing was left on the books: the next connect, once the worker takes it, opens.
    h.worker.connects_fail.store(false, Ordering::SeqCst);
    let id = h.open_session().await;
    let (_, answer) = h.post(with_id("prepare_request_select42.bin", &id)).await;
    assert_eq!(error_text_or_empty(&answer), "");
}

#[tokio::test]
async fn bytes_that_are_not_quack_get_an_http_status_before_anything_is_forwarded() {
    let h = Harness::start_with(&[("QUACKGATE__GATEWAY__MAX_BODY_BYTES", "64")], "").await;
    let (status, _) = h.post(Bytes::from_static(&[0x01, 0x00])).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _) = h.post(Bytes::new()).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _) = h.post(Bytes::from(vec![0u8; 65])).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    let (status, _) = h.request("GET", "/quack", Bytes::new()).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, banner) = h.request("GET", "/", Bytes::new()).await;
    assert_eq!(status, StatusCode::OK);
    assert!(banner.starts_with(b"This is a DuckDB Quack RPC endpoint"));
    assert!(h.worker.received().is_empty());
}

#[tokio::test]
async fn a_draining_node_refuses_new_sessions_and_serves_open_ones() {
    let h = Harness::start("").await;
    let id = h.open_session().await;
    h.shutdown.cancel();
    let (_, answer) = h.post(connection_request(CLIENT_TOKEN)).await;
    assert!(error_text(&answer).contains("shutting down"), "{answer:?}");
    let (_, answer) = h.post(with_id("prepare_request_select42.bin", &id)).await;
    assert_eq!(answer, fixture("prepare_response_select42.bin"));
}

#[tokio::test]
async fn an_address_past_its_connection_cap_is_closed_while_its_open_connections_serve() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let h = Harness::start("[limits]\nmax_connections_per_address = 2\n").await;
    let held: Vec<TcpStream> = vec![
        TcpStream::connect(h.addr).await.unwrap(),
        TcpStream::connect(h.addr).await.unwrap(),
    ];
    let mut third = TcpStream::connect(h.addr).await.unwrap();
    // The gateway closes it without reading: the read ends (EOF or reset) within a bound.
    let mut buf = [0u8; 16];
    let read = tokio::time::timeout(std::time::Duration::from_secs(5), third.read(&mut buf))
        .await
        .expect("the extra connection was left open");
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
    // The two held connections still serve.
    let mut first = held.into_iter().next().unwrap();
    first
        .write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    let n = first.read(&mut buf).await.unwrap();
    assert!(buf[..n].starts_with(b"HTTP/1.1 200"), "{:?}", &buf[..n]);
}

mod edge;

#[tokio::test]
async fn a_static_token_taken_out_of_the_tokens_file_ends_its_sessions() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("tokens.toml");
    let entry = format!(
        "[[static_tokens]]\nname = \"bob\"\nsha256 = \"{}\"\n",
        hash_token("bobs-token")
    );
    std::fs::write(&file, &entry).unwrap();
    let path = file.display().to_string();
    let h = Harness::start_with(&[("QUACKGATE__AUTH__STATIC_TOKENS_FILE", &path)], "").await;
    let (_, answer) = h.post(connection_request("bobs-token")).await;
    let header = codec::decode_header(&answer).unwrap();
    assert_eq!(header.msg_type, 2, "{answer:?}");
    let bob = header.connection_id(&answer).unwrap().to_vec();
    let alice = h.open_session().await;

    // Rotation: bob's entry leaves the file (alice's token is in the config).
    std::fs::write(&file, "").unwrap();
    let tokens = h.state.auth.static_tokens().clone();
    let stop = CancellationToken::new();
    tokio::spawn(tokens.clone().watch(stop.clone()));
    let tag = token_tag("bob", "bobs-token");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while tokens.principal_known(tag, crate::auth::Access::ReadWrite) {
        assert!(
            std::time::Instant::now() < deadline,
            "the file was never re-read"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    stop.cancel();

    let (_, answer) = h.post(with_id("prepare_request_select42.bin", &bob)).await;
    assert!(error_text(&answer).contains("was revoked"), "{answer:?}");
    let (_, answer) = h.post(connection_request("bobs-token")).await;
    assert!(
        error_text(&answer).contains("Authentication failed"),
        "{answer:?}"
    );
    // Alice's session carries on, and bob's DISCONNECT still frees the worker's memory.
    let (_, answer) = h
        .post(with_id("prepare_request_select42.bin", &alice))
        .await;
    assert_eq!(answer, fixture("prepare_response_select42.bin"));
    let (status, _) = h.post(with_id("disconnect_request.bin", &bob)).await;
    assert_eq!(status, StatusCode::OK);
}

/// Starts a POST of `body` whose first `sent` bytes arrive and the rest never do; the socket
/// stays open while the returned stream lives.
async fn held_post(addr: SocketAddr, body: &[u8], sent: usize) -> TcpStream {
    use tokio::io::AsyncWriteExt;
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "POST /quack HTTP/1.1\r\nhost: {addr}\r\ncontent-length: {}\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(&body[..sent]).await.unwrap();
    stream
}

#[tokio::test]
async fn a_principal_past_its_requests_in_flight_is_refused_while_others_carry_on() {
    let bob = "the-other-token";
    let h = Harness::start(&format!(
        "[[auth.static_tokens]]\nname = \"bob\"\nsha256 = \"{}\"\n[limits]\nmax_requests_per_principal = 2\n",
        hash_token(bob)
    ))
    .await;
    let alice_id = h.open_session().await;
    let (_, answer) = h.post(connection_request(bob)).await;
    let bob_id = codec::decode_header(&answer)
        .unwrap()
        .connection_id(&answer)
        .unwrap()
        .to_vec();
    // Two of alice's statements are being read: their bodies stop after the header.
    let prepare = with_id("prepare_request_select42.bin", &alice_id);
    let header_len = prepare.len() - 8;
    let held = [
        held_post(h.addr, &prepare, header_len).await,
        held_post(h.addr, &prepare, header_len).await,
    ];
    let mut refused = String::new();
    for _ in 0..100 {
        let (_, answer) = h.post(prepare.clone()).await;
        if answer == fixture("prepare_response_select42.bin") {
            // The held requests have not reached the gateway yet.
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            continue;
        }
        refused = error_text(&answer);
        break;
    }
    assert!(
        refused.contains("max_requests_per_principal"),
        "alice's third request: {refused:?}"
    );
    let (_, answer) = h
        .post(with_id("prepare_request_select42.bin", &bob_id))
        .await;
    assert_eq!(answer, fixture("prepare_response_select42.bin"), "bob");
    let (_, answer) = h.post(with_id("disconnect_request.bin", &alice_id)).await;
    assert_eq!(answer, fixture("success_response.bin"), "DISCONNECT passes");
    drop(held);
    let alice_id = h.open_session().await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let (_, answer) = h
            .post(with_id("prepare_request_select42.bin", &alice_id))
            .await;
        if answer == fixture("prepare_response_select42.bin") {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "alice's places never came back: {}",
            error_text(&answer)
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_statement_over_max_prepare_bytes_is_a_quack_error_and_is_not_forwarded() {
    let h = Harness::start_with(&[("QUACKGATE__GATEWAY__MAX_PREPARE_BYTES", "40")], "").await;
    let id = h.open_session().await;
    let before = h.worker.received().len();
    let (status, answer) = h.post(with_id("prepare_request_select42.bin", &id)).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        error_text(&answer).contains("gateway.max_prepare_bytes"),
        "{answer:?}"
    );
    assert_eq!(h.worker.received().len(), before, "nothing forwarded");
    let (_, answer) = h.post(with_id("fetch_request.bin", &id)).await;
    assert!(
        !error_text_or_empty(&answer).contains("max_prepare_bytes"),
        "other messages keep their own caps"
    );
}

fn error_text_or_empty(answer: &[u8]) -> String {
    codec::error_message(answer)
        .map(|m| String::from_utf8_lossy(m).into_owned())
        .unwrap_or_default()
}
