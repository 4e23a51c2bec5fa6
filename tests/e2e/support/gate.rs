//! A TCP forwarder in front of a service, which a test closes (new connections refused, open
//! ones cut) and opens again on the same port: the service "unavailable" without losing its
//! state, as an endpoint that goes away and comes back looks to its clients.

use std::collections::HashMap;
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

pub struct Gate {
    port: u16,
    to: SocketAddr,
    open: Arc<AtomicBool>,
    /// Each forwarded connection's two sockets, until the client side ends.
    conns: Arc<Mutex<HashMap<u64, [TcpStream; 2]>>>,
    accept: Option<JoinHandle<()>>,
}

impl Gate {
    /// Opens a gate on an ephemeral loopback port that forwards to `to`.
    pub fn open_to(to: SocketAddr) -> Gate {
        let mut gate = Gate {
            port: 0,
            to,
            open: Arc::new(AtomicBool::new(false)),
            conns: Arc::default(),
            accept: None,
        };
        gate.open();
        gate
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Listens again (on the same port after the first time) and forwards.
    pub fn open(&mut self) {
        // Rust's std sets SO_REUSEADDR, so the port is free again at once.
        let listener = TcpListener::bind(("127.0.0.1", self.port)).expect("binding the gate");
        self.port = listener.local_addr().unwrap().port();
        self.open.store(true, Ordering::SeqCst);
        let (open, conns, to) = (self.open.clone(), self.conns.clone(), self.to);
        self.accept = Some(std::thread::spawn(move || {
            for client in listener.incoming() {
                if !open.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(client) = client else { continue };
                let Ok(upstream) = TcpStream::connect(to) else {
                    continue;
                };
                static NEXT: AtomicU64 = AtomicU64::new(0);
                let id = NEXT.fetch_add(1, Ordering::Relaxed);
                let held = [client.try_clone().unwrap(), upstream.try_clone().unwrap()];
                conns.lock().unwrap().insert(id, held);
                let (mut c2, mut u2) = (client.try_clone().unwrap(), upstream.try_clone().unwrap());
                let (mut c, mut u) = (client, upstream);
                let conns = conns.clone();
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut c, &mut u);
                    let _ = u.shutdown(Shutdown::Write);
                    conns.lock().unwrap().remove(&id);
                });
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut u2, &mut c2);
                    let _ = c2.shutdown(Shutdown::Write);
                });
            }
        }));
    }

    /// Stops listening (connects are refused) and cuts every forwarded connection.
    pub fn close(&mut self) {
        self.open.store(false, Ordering::SeqCst);
        // Wakes the accept loop, which sees the gate closed and drops its listener.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        if let Some(accept) = self.accept.take() {
            accept.join().unwrap();
        }
        for (_, pair) in self.conns.lock().unwrap().drain() {
            for s in pair {
                let _ = s.shutdown(Shutdown::Both);
            }
        }
    }
}

impl Drop for Gate {
    fn drop(&mut self) {
        if self.accept.is_some() {
            self.close();
        }
    }
}
