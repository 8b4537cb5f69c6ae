//! A TCP proxy on 127.0.0.1 that a test can "unplug": the conformance suite points a
//! destination at the proxy instead of the peer, so "the peer stopped" can be played without
//! stopping a server other tests share.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// A forwarding proxy from a fixed local port to `upstream`.
pub struct TcpProxy {
    addr: SocketAddr,
    upstream: SocketAddr,
    state: Arc<Mutex<ProxyState>>,
}

#[derive(Default)]
struct ProxyState {
    acceptor: Option<JoinHandle<()>>,
    connections: Vec<JoinHandle<()>>,
}

impl TcpProxy {
    /// Starts forwarding a fresh local port to `upstream`.
    pub async fn start(upstream: SocketAddr) -> TcpProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy port");
        let addr = listener.local_addr().expect("proxy address");
        let proxy = TcpProxy { addr, upstream, state: Arc::default() };
        proxy.serve(listener);
        proxy
    }

    /// The address destinations should connect to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `127.0.0.1:PORT` of the proxy, for URLs.
    pub fn host_port(&self) -> String {
        self.addr.to_string()
    }

    /// The peer stops: the port is closed (connects are refused) and every open connection
    /// is cut.
    pub fn unplug(&self) {
        let mut state = self.state.lock().unwrap();
        if let Some(acceptor) = state.acceptor.take() {
            acceptor.abort();
        }
        for conn in state.connections.drain(..) {
            conn.abort();
        }
    }

    /// The peer is back: the same port accepts and forwards again.
    pub async fn plug(&self) {
        // The aborted acceptor drops its listener asynchronously; retry the bind briefly.
        let mut tries = 0;
        let listener = loop {
            match TcpListener::bind(self.addr).await {
                Ok(listener) => break listener,
                Err(err) if tries < 50 => {
                    tries += 1;
                    let _ = err;
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(err) => panic!("cannot rebind proxy port {}: {err}", self.addr),
            }
        };
        self.serve(listener);
    }

    fn serve(&self, listener: TcpListener) {
        let state = Arc::clone(&self.state);
        let upstream = self.upstream;
        let acceptor = tokio::spawn(async move {
            loop {
                let Ok((mut inbound, _)) = listener.accept().await else { return };
                let conn = tokio::spawn(async move {
                    let Ok(mut outbound) = TcpStream::connect(upstream).await else { return };
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                });
                let mut guard = state.lock().unwrap();
                guard.connections.retain(|c| !c.is_finished());
                guard.connections.push(conn);
            }
        });
        self.state.lock().unwrap().acceptor = Some(acceptor);
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        self.unplug();
    }
}
