//! HTTP/1.1 transport for Quack: `POST /quack` over plain TCP or rustls TLS. By default every
//! request gets a new TCP (and TLS) connection without session resumption, which is what
//! DuckDB 1.5 clients do; `keepalive` reuses one connection per client instead.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::{self, SendRequest};
use hyper::header::{CONTENT_TYPE, HOST};
use hyper::Request;
use hyper_util::rt::TokioIo;
use rustls::client::Resumption;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

/// Where to send requests: resolved once, so name lookups are not part of the measurement.
pub struct Endpoint {
    addr: SocketAddr,
    authority: String,
    tls: Option<(TlsConnector, ServerName<'static>)>,
}

impl Endpoint {
    /// `url` is `http://host:port` or `https://host:port`; https needs `ca_file` (PEM).
    pub fn new(url: &str, ca_file: Option<&Path>, tls_resume: bool) -> Result<Endpoint> {
        let (https, rest) = if let Some(rest) = url.strip_prefix("https://") {
            (true, rest)
        } else if let Some(rest) = url.strip_prefix("http://") {
            (false, rest)
        } else {
            bail!("--url must start with http:// or https://, got {url}");
        };
        let authority = rest.trim_end_matches('/').to_string();
        let (host, port) = authority
            .rsplit_once(':')
            .with_context(|| format!("--url needs an explicit port: {url}"))?;
        let port: u16 = port.parse().with_context(|| format!("bad port in {url}"))?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let addrs: Vec<SocketAddr> = std::net::ToSocketAddrs::to_socket_addrs(&(host, port))
            .with_context(|| format!("resolving {host}"))?
            .collect();
        let addr = addrs
            .iter()
            .find(|a| a.is_ipv4())
            .or(addrs.first())
            .copied()
            .with_context(|| format!("{host} has no address"))?;
        let tls = if https {
            let ca_file = ca_file.context("https needs --ca-file")?;
            let mut roots = rustls::RootCertStore::empty();
            for cert in CertificateDer::pem_file_iter(ca_file)
                .with_context(|| format!("reading {}", ca_file.display()))?
            {
                roots.add(cert?)?;
            }
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            let mut config = rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()?
                .with_root_certificates(roots)
                .with_no_client_auth();
            config.alpn_protocols = vec![b"http/1.1".to_vec()];
            if !tls_resume {
                config.resumption = Resumption::disabled();
            }
            let name = ServerName::try_from(host.to_string())?;
            Some((TlsConnector::from(Arc::new(config)), name))
        } else {
            None
        };
        Ok(Endpoint {
            addr,
            authority,
            tls,
        })
    }

    async fn connect(&self) -> Result<SendRequest<Full<Bytes>>> {
        let tcp = TcpStream::connect(self.addr)
            .await
            .with_context(|| format!("connecting to {}", self.addr))?;
        tcp.set_nodelay(true)?;
        match &self.tls {
            Some((connector, name)) => {
                let tls = connector
                    .connect(name.clone(), tcp)
                    .await
                    .context("TLS handshake")?;
                handshake(tls).await
            }
            None => handshake(tcp).await,
        }
    }
}

async fn handshake<I>(io: I) -> Result<SendRequest<Full<Bytes>>>
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (sender, conn) = http1::handshake(TokioIo::new(io)).await?;
    tokio::spawn(async move {
        // Ends when the sender is dropped (new connection per request) or the peer closes.
        let _ = conn.await;
    });
    Ok(sender)
}

/// One client's HTTP side: a connection per request, or one kept-alive connection.
pub struct Client {
    endpoint: Arc<Endpoint>,
    keepalive: bool,
    sender: Option<SendRequest<Full<Bytes>>>,
    /// Response body bytes received so far.
    pub bytes_in: u64,
}

impl Client {
    pub fn new(endpoint: Arc<Endpoint>, keepalive: bool) -> Client {
        Client {
            endpoint,
            keepalive,
            sender: None,
            bytes_in: 0,
        }
    }

    /// POSTs one Quack message and returns the response body; anything but HTTP 200 is an
    /// error (Quack errors come as 200 + ERROR_RESPONSE).
    pub async fn post(&mut self, body: Bytes) -> Result<Bytes> {
        let mut sender = match self.sender.take() {
            Some(s) if !s.is_closed() => s,
            _ => self.endpoint.connect().await?,
        };
        sender.ready().await.context("connection not ready")?;
        let req = Request::post(quack_codec::QUACK_PATH)
            .header(HOST, &self.endpoint.authority)
            .header(CONTENT_TYPE, quack_codec::REQUEST_CONTENT_TYPE)
            .body(Full::new(body))?;
        let resp = sender.send_request(req).await.context("sending request")?;
        let status = resp.status();
        let body = resp
            .into_body()
            .collect()
            .await
            .context("reading response")?
            .to_bytes();
        if status != hyper::StatusCode::OK {
            bail!("HTTP {status}: {}", String::from_utf8_lossy(&body));
        }
        self.bytes_in += body.len() as u64;
        if self.keepalive {
            self.sender = Some(sender);
        }
        Ok(body)
    }
}
