//! The SSRF guard for S3 endpoints: the same [`NetworkPolicy`] webhooks follow. A literal IP
//! endpoint is judged when the config is read; a host name is judged on every resolution,
//! and the client connects only to the addresses the policy allowed.

use std::net::IpAddr;

use object_store::client::{DnsFuture, DnsResolver};
use outflow_core::netpolicy::NetworkPolicy;

/// The phrase every refusal starts with ([`NetworkPolicy::check`]'s wording), so a refusal
/// can be told from a lookup failure after the HTTP client has wrapped it.
pub const REFUSAL: &str = "refusing to connect to";

/// Resolves host names and drops the addresses `policy` refuses.
#[derive(Debug, Clone)]
pub struct PolicyDns {
    policy: NetworkPolicy,
}

impl PolicyDns {
    /// A resolver that enforces `policy`.
    pub fn new(policy: NetworkPolicy) -> Self {
        PolicyDns { policy }
    }
}

impl DnsResolver for PolicyDns {
    fn resolve(&self, host: &str) -> DnsFuture {
        let policy = self.policy.clone();
        let host = host.to_string();
        Box::pin(async move {
            let resolved = tokio::net::lookup_host((host.as_str(), 0)).await?;
            let (allowed, refusals) = filter(&policy, &host, resolved.map(|a| a.ip()));
            match (allowed.is_empty(), refusals.into_iter().next()) {
                (false, _) => Ok(allowed),
                (true, Some(refusal)) => Err(refusal.into()),
                (true, None) => Err(format!("'{host}' resolved to no address").into()),
            }
        })
    }
}

/// The allowed addresses, and the refusal of each other one.
fn filter(
    policy: &NetworkPolicy,
    host: &str,
    addrs: impl Iterator<Item = IpAddr>,
) -> (Vec<IpAddr>, Vec<String>) {
    let mut allowed = Vec::new();
    let mut refusals = Vec::new();
    for addr in addrs {
        match policy.check(host, addr) {
            Ok(()) => allowed.push(addr),
            Err(msg) => refusals.push(msg),
        }
    }
    (allowed, refusals)
}

/// Judges a literal IP endpoint host; names are left to [`PolicyDns`].
pub fn check_literal(policy: &NetworkPolicy, host: &url::Host<&str>) -> Result<(), String> {
    let addr = match host {
        url::Host::Ipv4(ip) => IpAddr::V4(*ip),
        url::Host::Ipv6(ip) => IpAddr::V6(*ip),
        url::Host::Domain(_) => return Ok(()),
    };
    policy.check(&addr.to_string(), addr)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_addresses_are_dropped_unless_allowed() {
        let strict = NetworkPolicy::default();
        let addrs = ["10.0.0.1".parse().unwrap(), "93.184.216.34".parse().unwrap()];
        let (allowed, refusals) = filter(&strict, "s3.internal", addrs.into_iter());
        assert_eq!(allowed, vec![addrs[1]]);
        assert!(refusals[0].starts_with(REFUSAL), "{}", refusals[0]);
        let open = NetworkPolicy { allow_private_networks: true, ..NetworkPolicy::default() };
        assert_eq!(filter(&open, "s3.internal", addrs.into_iter()).0.len(), 2);
        let host = url::Host::Ipv4("127.0.0.1".parse().unwrap());
        assert!(check_literal(&strict, &host).unwrap_err().starts_with(REFUSAL));
        assert!(check_literal(&open, &host).is_ok());
        assert!(check_literal(&strict, &url::Host::Domain("minio")).is_ok());
    }
}
