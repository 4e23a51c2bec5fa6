//! An edge and a node in this process, on loopback: the edge places sessions on the node over
//! the signed peer leg, and the node's peer listener refuses what no edge signed.

use std::collections::BTreeMap;

use http::HeaderValue;

use super::*;
use crate::auth::{Access, Principal};
use crate::cluster::credential::{
    body_digest, PeerKey, RequestFacts, DIGEST_HEADER, GRANT_HEADER, PEER_HEADER,
};
use crate::cluster::status::NodeState;
use crate::role::Role;
use crate::routable_id::SECRET_BYTES;
use quack_codec::QUACK_PATH;

const SECRET: [u8; SECRET_BYTES] = [7; SECRET_BYTES];
const READER_TOKEN: &str = "the-reader-token";

/// Serves `state` on a new loopback listener as `origin`.
async fn serve(state: Arc<AppState>, origin: Origin) -> SocketAddr {
    let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = tcp.local_addr().unwrap();
    let listener = Listener {
        tcp,
        tls: None,
        name: "test",
        trusted: Arc::default(),
        per_address: None,
        only_trusted: false,
    };
    tokio::spawn(server::run(
        listener,
        move |req| proxy::handle(state.clone(), origin, req),
        Arc::new(Semaphore::new(64)),
        CancellationToken::new(),
        TaskTracker::new(),
    ));
    addr
}

async fn post_with(
    addr: SocketAddr,
    path: &str,
    body: Bytes,
    headers: &[(&str, HeaderValue)],
) -> (StatusCode, Bytes) {
    let stream = TcpStream::connect(addr).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    let mut req = Request::builder()
        .method(if body.is_empty() { "GET" } else { "POST" })
        .uri(path)
        .header("host", addr.to_string());
    for (name, value) in headers {
        req = req.header(*name, value);
    }
    let resp = sender
        .send_request(req.body(Full::new(body)).unwrap())
        .await
        .unwrap();
    let status = resp.status();
    (status, resp.into_body().collect().await.unwrap().to_bytes())
}

struct Pair {
    edge: SocketAddr,
    edge_state: Arc<AppState>,
    node_peer: SocketAddr,
    node_state: Arc<AppState>,
    worker: FakeWorker,
    _dir: tempfile::TempDir,
}

async fn pair() -> Pair {
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("id-secret");
    std::fs::write(&secret, hex::encode(SECRET)).unwrap();
    let ext = stand_in_extensions(dir.path());
    let node_text = format!(
        "[gateway]\nnode_id = \"n1\"\nid_secret_file = \"{}\"\n[workers]\ncount = 1\nextension_dir = \"{}\"\n[cluster]\npeer_listen = \"127.0.0.1:0\"\n",
        secret.display(),
        ext.display()
    );
    let path = dir.path().join("c.toml");
    let config = Config::from_toml_as(Role::Node, &node_text, &path, Vec::new()).unwrap();
    let node_state = Arc::new(AppState::new(&config, CancellationToken::new()).unwrap());
    let worker = FakeWorker::default();
    let port = worker.clone().start().await;
    node_state.workers.get(0).unwrap().set_serving(port);
    let node_peer = serve(node_state.clone(), Origin::Peer).await;

    let edge_text = format!(
        "[gateway]\nnode_id = \"edge-a\"\nplain_listen = \"127.0.0.1:0\"\nid_secret_file = \"{}\"\n[[auth.static_tokens]]\nname = \"alice\"\nsha256 = \"{}\"\n[[auth.static_tokens]]\nname = \"reader\"\nsha256 = \"{}\"\nrole = \"read_only\"\n[cluster]\npeers = {{ n1 = \"{node_peer}\" }}\n",
        secret.display(),
        hash_token(CLIENT_TOKEN),
        hash_token(READER_TOKEN),
    );
    let config = Config::from_toml_as(Role::Edge, &edge_text, &path, Vec::new()).unwrap();
    let edge_state = Arc::new(AppState::new(&config, CancellationToken::new()).unwrap());
    let edge = serve(edge_state.clone(), Origin::Client).await;
    Pair {
        edge,
        edge_state,
        node_peer,
        node_state,
        worker,
        _dir: dir,
    }
}

impl Pair {
    /// One round of load reports, as the edge's watch task makes every 500 ms.
    async fn poll(&self) {
        let cluster = self.edge_state.cluster.as_ref().unwrap();
        let (node, endpoint) = cluster.peer_list().remove(0);
        let (answered, load) = cluster
            .ask_status(&self.edge_state.upstream, endpoint)
            .await
            .expect("a signed status");
        assert_eq!(answered, node);
        cluster.board.reported(&node, load);
    }
}

#[tokio::test]
async fn an_edge_places_a_session_on_a_node_which_never_sees_the_token() {
    let p = pair().await;
    // No report yet: nothing to place on.
    let (_, answer) = post_with(p.edge, QUACK_PATH, connection_request(CLIENT_TOKEN), &[]).await;
    assert!(
        error_text(&answer).contains("no node is ready"),
        "{answer:?}"
    );

    p.poll().await;
    let (status, answer) =
        post_with(p.edge, QUACK_PATH, connection_request(CLIENT_TOKEN), &[]).await;
    assert_eq!(status, StatusCode::OK);
    let header = codec::decode_header(&answer).unwrap();
    assert_eq!(header.msg_type, 2, "{answer:?}");
    let id = header.connection_id(&answer).unwrap().to_vec();
    assert!(
        id.starts_with(b"q2.n1.0.rw."),
        "{}",
        String::from_utf8_lossy(&id)
    );
    assert_eq!(p.node_state.sessions.len(), 1);
    assert_eq!(p.node_state.sessions.principal_sessions("alice"), 1);

    let (status, answer) = post_with(
        p.edge,
        QUACK_PATH,
        with_id("prepare_request_select42.bin", &id),
        &[],
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(answer, fixture("prepare_response_select42.bin"));

    // The worker got the node's internal token; the client's never left the edge.
    let received = p.worker.received();
    let header = codec::decode_header(&received[0]).unwrap();
    let request = codec::decode_connection_request(&received[0], &header).unwrap();
    assert_eq!(
        &received[0][request.token.unwrap()],
        p.node_state.worker_token.expose().as_bytes()
    );
    assert!(!received.iter().any(|m| m
        .windows(CLIENT_TOKEN.len())
        .any(|w| w == CLIENT_TOKEN.as_bytes())));

    // A read-only principal goes only to a node with a read-only worker; n1 has none.
    let (_, answer) = post_with(p.edge, QUACK_PATH, connection_request(READER_TOKEN), &[]).await;
    assert!(
        error_text(&answer).contains("no node is ready"),
        "{answer:?}"
    );
    assert_eq!(p.node_state.sessions.len(), 1);

    // The next report counts the session; the edge's status shows it.
    p.poll().await;
    let board = p.edge_state.cluster.as_ref().unwrap().board.snapshot();
    assert!(
        matches!(board[0].1, NodeState::Reported { load, .. } if load.sessions == 1),
        "{board:?}"
    );
}

#[tokio::test]
async fn the_peer_listener_refuses_what_no_edge_signed_and_anything_twice() {
    let p = pair().await;
    // A client token, straight to the node.
    let (status, _) = post_with(
        p.node_peer,
        QUACK_PATH,
        connection_request(CLIENT_TOKEN),
        &[],
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    // A made-up credential.
    let forged = HeaderValue::from_static("edge-x.1.00000000000000000000000000000000.00");
    let (status, _) = post_with(
        p.node_peer,
        QUACK_PATH,
        connection_request(""),
        &[(PEER_HEADER, forged)],
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);

    // Signed with the cluster's key: the first one opens a session, its replay is refused.
    let key = PeerKey::new(&SECRET).unwrap();
    let grant = Principal {
        name: "mallory".into(),
        access: Access::ReadWrite,
        expires_at: None,
        tag: crate::auth::principal_tag("mallory", None),
    }
    .to_grant();
    let body = connection_request("");
    let facts = RequestFacts {
        target: "n1",
        path: QUACK_PATH,
        msg_type: 1,
        body_sha256: body_digest(&body),
        grant: Some(grant.as_bytes()),
    };
    let digest = HeaderValue::from_str(&hex::encode(body_digest(&body))).unwrap();
    // The body edited after signing: the credential holds, the digest does not.
    let (cred, _) = key.sign_request("edge-test", &facts);
    let mut edited = body.to_vec();
    *edited.last_mut().unwrap() ^= 1;
    let (status, _) = post_with(
        p.node_peer,
        QUACK_PATH,
        Bytes::from(edited),
        &[
            (PEER_HEADER, cred),
            (GRANT_HEADER, HeaderValue::from_str(&grant).unwrap()),
            (DIGEST_HEADER, digest.clone()),
        ],
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (cred, _) = key.sign_request("edge-test", &facts);
    let headers = [
        (PEER_HEADER, cred),
        (GRANT_HEADER, HeaderValue::from_str(&grant).unwrap()),
        (DIGEST_HEADER, digest.clone()),
    ];
    let (status, answer) = post_with(p.node_peer, QUACK_PATH, body.clone(), &headers).await;
    assert_eq!(
        (status, codec::decode_header(&answer).unwrap().msg_type),
        (StatusCode::OK, 2)
    );
    let (status, _) = post_with(p.node_peer, QUACK_PATH, body.clone(), &headers).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "a replay was served");

    // A read-only grant never lands on a read-write worker: this node has no read-only one.
    let reader = Principal {
        name: "reader".into(),
        access: Access::ReadOnly,
        expires_at: None,
        tag: crate::auth::principal_tag("reader", None),
    }
    .to_grant();
    let ro_facts = RequestFacts {
        grant: Some(reader.as_bytes()),
        ..facts
    };
    let (cred, _) = key.sign_request("edge-test", &ro_facts);
    let (status, answer) = post_with(
        p.node_peer,
        QUACK_PATH,
        body.clone(),
        &[
            (PEER_HEADER, cred),
            (GRANT_HEADER, HeaderValue::from_str(&reader).unwrap()),
            (DIGEST_HEADER, digest.clone()),
        ],
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        error_text(&answer).contains("read-only connections are not served"),
        "{answer:?}"
    );

    // A signed request whose grant was swapped for another principal's.
    let (cred, _) = key.sign_request("edge-test", &facts);
    let admin = Principal {
        name: "admin".into(),
        access: Access::ReadWrite,
        expires_at: None,
        tag: crate::auth::principal_tag("admin", None),
    }
    .to_grant();
    let (status, _) = post_with(
        p.node_peer,
        QUACK_PATH,
        body.clone(),
        &[
            (PEER_HEADER, cred),
            (GRANT_HEADER, HeaderValue::from_str(&admin).unwrap()),
            (DIGEST_HEADER, digest.clone()),
        ],
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    // A CONNECTION_REQUEST signed without a grant.
    let bare = RequestFacts {
        grant: None,
        ..facts
    };
    let (cred, _) = key.sign_request("edge-test", &bare);
    let (status, _) = post_with(
        p.node_peer,
        QUACK_PATH,
        body,
        &[(PEER_HEADER, cred), (DIGEST_HEADER, digest)],
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    // Status without a credential.
    let (status, _) = post_with(
        p.node_peer,
        crate::cluster::status::STATUS_PATH,
        Bytes::new(),
        &[],
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(p.node_state.sessions.len(), 1);
    assert_eq!(p.worker.received().len(), 1);
}

#[tokio::test]
async fn an_answer_the_node_did_not_seal_never_reaches_the_client() {
    // A "node" that answers like a worker but has no key: what a spoofed name would reach.
    let impostor = FakeWorker::default();
    let port = impostor.clone().start().await;
    let p = pair().await;
    p.poll().await;
    let (_, answer) = post_with(p.edge, QUACK_PATH, connection_request(CLIENT_TOKEN), &[]).await;
    let id = codec::decode_header(&answer)
        .unwrap()
        .connection_id(&answer)
        .unwrap()
        .to_vec();
    // n1's name now leads to the impostor, as a poisoned DNS answer would: it cannot prove
    // it is n1, and what it answers is refused.
    let statics = BTreeMap::from([("n1".to_string(), format!("127.0.0.1:{port}"))]);
    let rogue = crate::cluster::Cluster::new(
        "edge-a",
        &SECRET,
        &[],
        &crate::cluster::ClusterConfig {
            peer_listen: None,
            peer_listen_tls: None,
            peers: statics,
            peers_file: None,
            peers_dns: None,
            peer_tls: false,
            peer_ca_file: None,
        },
    )
    .unwrap();
    assert!(rogue
        .ask_status(&p.edge_state.upstream, rogue.peer("n1").unwrap())
        .await
        .is_none());
    let edge = {
        let state = AppState::new(
            &Config::from_toml_as(
                Role::Edge,
                &format!(
                    "[gateway]\nnode_id = \"edge-b\"\nplain_listen = \"127.0.0.1:0\"\nid_secret_file = \"{}\"\n[[auth.static_tokens]]\nname = \"alice\"\nsha256 = \"{}\"\n[cluster]\npeers = {{ n1 = \"127.0.0.1:{port}\" }}\n",
                    p._dir.path().join("id-secret").display(),
                    hash_token(CLIENT_TOKEN),
                ),
                &p._dir.path().join("c.toml"),
                Vec::new(),
            )
            .unwrap(),
            CancellationToken::new(),
        )
        .unwrap();
        serve(Arc::new(state), Origin::Client).await
    };
    let (status, answer) = post_with(
        edge,
        QUACK_PATH,
        with_id("prepare_request_select42.bin", &id),
        &[],
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        error_text(&answer).contains("answer from node n1 was refused"),
        "{answer:?}"
    );
    // The impostor got the status request and the PREPARE (it cannot be told apart before it
    // answers), never a token.
    let received = impostor.received();
    assert_eq!(received.iter().filter(|m| !m.is_empty()).count(), 1);
    assert!(!received.iter().any(|m| m
        .windows(CLIENT_TOKEN.len())
        .any(|w| w == CLIENT_TOKEN.as_bytes())));
}
