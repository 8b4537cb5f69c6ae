//! The SSRF guard's DNS half: a resolver that only ever hands reqwest addresses the
//! [`NetworkPolicy`] allowed.
//!
//! Checking a host name and then letting the HTTP client resolve it again would leave a
//! window in which a second DNS answer swaps in an internal address (DNS rebinding). Here
//! the check happens *inside* the client's resolver, so the addresses reqwest connects to
//! are exactly the ones that were checked.
//!
//! Literal IP hosts (`http://10.0.0.1/`) never reach a resolver in reqwest; callers must
//! check those with [`check_literal`] before sending.

use std::error::Error as StdError;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use outflow_core::netpolicy::NetworkPolicy;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};

/// Why a host yielded no address to connect to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResolveError {
    /// Every resolved address was refused by the network policy: retrying cannot help.
    Refused(String),
    /// The lookup itself failed or returned nothing (a DNS outage may pass).
    Lookup(String),
}

impl fmt::Display for ResolveError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ResolveError::Refused(m) | ResolveError::Lookup(m) => f.write_str(m),
        }
    }
}

impl StdError for ResolveError {}

impl ResolveError {
    /// Finds a policy refusal anywhere in an error's source chain (reqwest wraps resolver
    /// errors in its own connect errors).
    pub fn refusal_in<'e>(err: &'e (dyn StdError + 'static)) -> Option<&'e ResolveError> {
        let mut cur: Option<&(dyn StdError + 'static)> = Some(err);
        while let Some(e) = cur {
            if let Some(r @ ResolveError::Refused(_)) = e.downcast_ref::<ResolveError>() {
                return Some(r);
            }
            cur = e.source();
        }
        None
    }
}

/// A resolver filtering every answer through a [`NetworkPolicy`].
#[derive(Debug, Clone)]
pub struct PolicyResolver {
    policy: Arc<NetworkPolicy>,
}

impl PolicyResolver {
    /// A resolver enforcing `policy`.
    pub fn new(policy: Arc<NetworkPolicy>) -> Self {
        PolicyResolver { policy }
    }

    /// Resolves `host` and keeps only the addresses the policy allows, in resolver order.
    /// When all are refused the error is the policy's message for the first one, which
    /// names the address and the setting that would allow it.
    pub async fn resolve_allowed(&self, host: &str) -> Result<Vec<IpAddr>, ResolveError> {
        let found: Vec<IpAddr> = tokio::net::lookup_host((host, 0))
            .await
            .map_err(|e| ResolveError::Lookup(format!("DNS lookup of '{host}' failed: {e}")))?
            .map(|sa| sa.ip())
            .collect();
        if found.is_empty() {
            return Err(ResolveError::Lookup(format!(
                "DNS lookup of '{host}' returned no address"
            )));
        }
        let mut allowed = Vec::new();
        let mut first_refusal = None;
        for ip in found {
            if allowed.contains(&ip) {
                continue;
            }
            match self.policy.check(host, ip) {
                Ok(()) => allowed.push(ip),
                Err(msg) => {
                    first_refusal.get_or_insert(msg);
                }
            }
        }
        match (allowed.is_empty(), first_refusal) {
            (true, Some(msg)) => Err(ResolveError::Refused(msg)),
            _ => Ok(allowed),
        }
    }
}

impl Resolve for PolicyResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let this = self.clone();
        Box::pin(async move {
            let ips = this.resolve_allowed(name.as_str()).await?;
            // Port 0 tells reqwest to use the URL's port (or the scheme's default).
            let addrs: Addrs = Box::new(ips.into_iter().map(|ip| SocketAddr::new(ip, 0)));
            Ok(addrs)
        })
    }
}

/// Checks a literal-IP host (which bypasses resolvers) against the policy. `host` is the
/// URL's host as written; non-IP hosts pass here and are checked when resolved.
pub fn check_literal(policy: &NetworkPolicy, host: &url::Host<&str>) -> Result<(), String> {
    match host {
        url::Host::Ipv4(ip) => policy.check(&ip.to_string(), IpAddr::V4(*ip)),
        url::Host::Ipv6(ip) => policy.check(&ip.to_string(), IpAddr::V6(*ip)),
        url::Host::Domain(_) => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusal_is_found_through_wrappers() {
        #[derive(Debug)]
        struct Wrap(ResolveError);
        impl fmt::Display for Wrap {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("client error (Connect)")
            }
        }
        impl StdError for Wrap {
            fn source(&self) -> Option<&(dyn StdError + 'static)> {
                Some(&self.0)
            }
        }
        let refused = Wrap(ResolveError::Refused("no".into()));
        assert_eq!(ResolveError::refusal_in(&refused), Some(&ResolveError::Refused("no".into())));
        let lookup = Wrap(ResolveError::Lookup("dns down".into()));
        assert_eq!(ResolveError::refusal_in(&lookup), None);
    }
}
