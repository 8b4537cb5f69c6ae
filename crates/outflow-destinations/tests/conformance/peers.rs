//! Finding the real servers tests talk to.
//!
//! A peer's address comes from its environment variable (`OUTFLOW_TEST_POSTGRES_URL`...),
//! else from the env file `scripts/services.sh up` writes, else from the standard local
//! address. A peer that does not answer fails the test under `CI=true` and skips it, loudly,
//! otherwise.

use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::path::PathBuf;
use std::time::Duration;

/// Where `scripts/services.sh` records the peers it started: `OUTFLOW_SERVICES_ENV`, else
/// `$XDG_CACHE_HOME/outflow/services.env`, else `~/.cache/outflow/services.env`.
pub fn services_env_file() -> PathBuf {
    if let Some(path) = std::env::var_os("OUTFLOW_SERVICES_ENV") {
        return PathBuf::from(path);
    }
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(|| PathBuf::from("/tmp"));
    cache.join("outflow").join("services.env")
}

/// A setting for the peers: the environment variable, else the services env file, else
/// `default`.
pub fn setting(var: &str, default: &str) -> String {
    if let Ok(value) = std::env::var(var)
        && !value.is_empty()
    {
        return value;
    }
    if let Ok(text) = std::fs::read_to_string(services_env_file()) {
        for line in text.lines() {
            let line = line.trim().trim_start_matches("export ");
            if let Some((key, value)) = line.split_once('=')
                && key.trim() == var
            {
                return value.trim().trim_matches(|c| c == '"' || c == '\'').to_string();
            }
        }
    }
    default.to_string()
}

/// `host:port` of a URL (`postgres://u@127.0.0.1:5432/db`) or of a bare `host:port`.
pub fn socket_addr(url: &str) -> Option<SocketAddr> {
    let authority = match url.split_once("://") {
        Some((_, rest)) => rest,
        None => url,
    };
    let authority = authority.split(['/', '?', ',']).next()?;
    let host_port = authority.rsplit_once('@').map(|(_, hp)| hp).unwrap_or(authority);
    host_port.to_socket_addrs().ok()?.next()
}

/// The peer's URL when it answers on TCP. When it does not: a panic under `CI=true` (CI
/// must never pass without the peer), otherwise a loud "SKIPPED" on stderr and `None`.
pub fn require(name: &str, var: &str, default: &str) -> Option<String> {
    let url = setting(var, default);
    let reachable = socket_addr(&url)
        .map(|addr| TcpStream::connect_timeout(&addr, Duration::from_secs(2)).is_ok())
        .unwrap_or(false);
    if reachable {
        return Some(url);
    }
    skip(&format!("{name} is not reachable at {url} (set {var}, or run `scripts/services.sh up`)"));
    None
}

/// A test cannot run because something it needs is missing: under `CI=true` that fails the
/// test (CI must never pass without it), otherwise it prints a loud "SKIPPED" and the caller
/// returns.
pub fn skip(message: &str) {
    if std::env::var("CI").is_ok_and(|v| v == "true" || v == "1") {
        panic!("{message}: CI=true, so this test fails instead of skipping");
    }
    eprintln!("\n*** SKIPPED: {message} ***\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn socket_addr_reads_urls_and_bare_addresses() {
        let expect: SocketAddr = "127.0.0.1:5432".parse().unwrap();
        assert_eq!(socket_addr("postgres://u:p@127.0.0.1:5432/db?x=1"), Some(expect));
        assert_eq!(socket_addr("127.0.0.1:5432"), Some(expect));
        assert_eq!(socket_addr("127.0.0.1:5432,127.0.0.1:5433"), Some(expect));
    }
}
