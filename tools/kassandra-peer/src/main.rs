//! kassandra-peer: an in-memory Cassandra (CQL native protocol v4) server for Outflow's
//! tests, on 127.0.0.1.
//!
//! ```text
//! kassandra-peer [--port 9042]      # --port 0 picks a free port
//! ```
//!
//! It prints `LISTEN 127.0.0.1:PORT` once it accepts connections and runs until killed.
//! All connections share one in-memory database (kassandra 0.13); nothing is kept on disk.
//!
//! Why not `KassandraTester::in_scope`: it only binds `127.0.0.1:0` (a random port) and
//! its serve loop is private, while `scripts/services.sh` needs the fixed port the tests
//! expect. So this is the same loop, over the `kassandra` crate that `kassandra-tester`
//! re-exports, with two differences: a request for a protocol version other than v4 gets
//! the "unsupported protocol version" error real Cassandra sends (drivers then retry with
//! v4 instead of misreading a v4 answer), and an AUTH_RESPONSE gets an error instead of a
//! panic (the server never asks for authentication).

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard};

use futures_util::{SinkExt, StreamExt};
use kassandra_tester::kassandra::{
    KassandraSession,
    error::DbError,
    frame::{
        ProtocolVersion,
        request::Request,
        request_stream,
        response::{Response, error::Error},
        response_sink,
    },
};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::LocalSet;

const USAGE: &str = "usage: kassandra-peer [--port PORT]   (default 9042; 0 picks a free port)";

fn main() {
    let port = match parse_port(std::env::args().skip(1)) {
        Ok(port) => port,
        Err(message) => {
            eprintln!("kassandra-peer: {message}\n{USAGE}");
            std::process::exit(2);
        }
    };
    // The session is not Send: one thread, connections as local tasks (as the tester does).
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .unwrap_or_else(|e| fail(&format!("cannot start the tokio runtime: {e}")));
    runtime.block_on(LocalSet::new().run_until(serve(port)));
}

fn fail(message: &str) -> ! {
    eprintln!("kassandra-peer: {message}");
    std::process::exit(1);
}

fn parse_port(mut args: impl Iterator<Item = String>) -> Result<u16, String> {
    let mut port = 9042;
    while let Some(arg) = args.next() {
        let value = match arg.as_str() {
            "--port" => args.next().ok_or("--port needs a value")?,
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            other => match other.strip_prefix("--port=") {
                Some(value) => value.to_string(),
                None => return Err(format!("unknown argument {other:?}")),
            },
        };
        port = value
            .parse()
            .map_err(|_| format!("--port must be a number from 0 to 65535, got {value:?}"))?;
    }
    Ok(port)
}

async fn serve(port: u16) {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let listener = TcpListener::bind(addr)
        .await
        .unwrap_or_else(|e| fail(&format!("cannot listen on {addr}: {e}")));
    let local = listener.local_addr().unwrap_or_else(|e| fail(&format!("no local address: {e}")));
    println!("LISTEN {local}");
    let db = Arc::new(Mutex::new(KassandraSession::new()));
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                tokio::task::spawn_local(client(Arc::clone(&db), stream));
            }
            Err(e) => eprintln!("kassandra-peer: accept failed: {e}"),
        }
    }
}

/// The shared database, even if a request panicked while holding it (kassandra has
/// `unwrap`s on odd input): one bad query must not take the whole peer down.
fn lock(db: &Mutex<KassandraSession>) -> MutexGuard<'_, KassandraSession> {
    db.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

async fn client(db: Arc<Mutex<KassandraSession>>, mut stream: TcpStream) {
    let (mut read, mut write) = stream.split();
    let mut requests = request_stream(&mut read);
    let mut responses = response_sink(&mut write);
    while let Some(frame) = requests.next().await {
        let (frame, opcode, data) = match frame {
            Ok(frame) => frame,
            Err(e) => {
                eprintln!("kassandra-peer: closing a connection: cannot read a frame: {e}");
                break;
            }
        };
        let response = if let ProtocolVersion::Unsupported(v) = frame.version {
            // Real Cassandra's wording: drivers look for it to negotiate down to v4.
            error(
                DbError::ProtocolError,
                format!(
                    "Invalid or unsupported protocol version ({v}); supported versions are (4/v4)"
                ),
            )
        } else {
            match Request::deserialize(opcode, &data, frame.flags) {
                Ok(request) => handle(&db, request),
                Err(e) => {
                    eprintln!("kassandra-peer: cannot parse a {opcode:?} request: {e}");
                    error(DbError::ProtocolError, "Error parsing request")
                }
            }
        };
        if responses.send((response, frame.stream)).await.is_err() {
            break;
        }
    }
}

fn error(kind: DbError, message: impl ToString) -> Response {
    Response::Error(Error::new(kind, message))
}

fn handle(db: &Mutex<KassandraSession>, request: Request) -> Response {
    let result = match request {
        Request::StartUp(_) | Request::Register { .. } => return Response::Ready,
        Request::Options => return Response::options(),
        Request::AuthResponse => {
            return error(
                DbError::ProtocolError,
                "kassandra-peer does not authenticate: connect without credentials",
            );
        }
        Request::Query(query) => lock(db).process(query),
        Request::Prepare(query) => lock(db).prepare(query),
        Request::Execute(execute) => lock(db).execute(execute),
        Request::Batch(batch) => lock(db).process_batch(batch),
    };
    match result {
        Ok(result) => Response::Result(result),
        Err(e) => Response::Error(e),
    }
}
