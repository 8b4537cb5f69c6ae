//! The conformance suite run by the webhook destination against a real HTTP receiver on
//! 127.0.0.1; it also keeps the suite itself honest against a destination that already works.

mod conformance;
#[path = "common/receiver.rs"]
mod receiver;

use std::net::SocketAddr;

use async_trait::async_trait;
use conformance::{Arrival, Dedupe, Peer};
use receiver::{Receiver, Reply};
use serde_json::{Value, json};

struct WebhookPeer {
    receiver: Receiver,
    refusing: Receiver,
}

impl WebhookPeer {
    async fn start() -> Option<WebhookPeer> {
        let refusing = Receiver::start(vec![Reply::status(404, "no such hook"); 8]).await;
        Some(WebhookPeer { receiver: Receiver::start(Vec::new()).await, refusing })
    }
}

#[async_trait]
impl Peer for WebhookPeer {
    fn kind(&self) -> &'static str {
        "webhook"
    }

    fn upstream(&self) -> SocketAddr {
        self.receiver.addr
    }

    fn spec(&self, addr: SocketAddr, name: &str) -> Value {
        json!({"type": "webhook", "url": format!("http://{addr}/hooks/{name}"), "format": "raw"})
    }

    async fn read_back(&self, location: &str, expected: usize) -> Vec<Arrival> {
        let path = format!("/hooks/{location}");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(3);
        loop {
            let found: Vec<Arrival> = self
                .receiver
                .requests()
                .into_iter()
                .filter(|r| r.path == path)
                .map(|r| Arrival {
                    body: r.body.to_vec(),
                    delivery_id: r.header("webhook-id").map(str::to_string),
                })
                .collect();
            if found.len() >= expected || std::time::Instant::now() > deadline {
                return found;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }

    fn dedupe(&self) -> Dedupe {
        Dedupe::CarriesId
    }

    fn permanent_failure(&self, _addr: SocketAddr, name: &str) -> (Value, &'static str) {
        let url = self.refusing.url(&format!("/hooks/{name}"));
        (json!({"type": "webhook", "url": url}), "404")
    }

    fn required_fields(&self) -> &'static [&'static str] {
        &["url"]
    }
}

conformance_suite!(WebhookPeer::start().await);
