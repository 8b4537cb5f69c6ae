//! The Cassandra destination against a real CQL v4 server on 127.0.0.1 (kassandra, through
//! the project's `kassandra-peer` test tool, in development and CI; Cassandra or ScyllaDB
//! work too), read back with the driver as an independent client.

mod conformance;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use conformance::{Arrival, Dedupe, Peer, TASK, build, deliver, job, names};
use outflow_core::attempt::FailureClass;
use outflow_core::context::RenderContext;
use outflow_core::output::Output;
use outflow_destinations::Attempt;
use outflow_destinations::runner::new_delivery_id;
use scylla::client::session::Session;
use scylla::client::session_builder::SessionBuilder;
use serde_json::{Value, json};

const KEYSPACE: &str = "outflow_test";

struct CassandraPeer {
    addr: SocketAddr,
    session: Session,
}

impl CassandraPeer {
    async fn connect() -> Option<CassandraPeer> {
        let url = conformance::peers::require(
            "Cassandra (CQL)",
            "OUTFLOW_TEST_CASSANDRA_URL",
            "127.0.0.1:9042",
        )?;
        let addr = conformance::peers::socket_addr(&url).expect("the CQL address is host:port");
        let session = SessionBuilder::new()
            .known_node(addr.to_string())
            .fetch_schema_metadata(false)
            .refresh_metadata_on_auto_schema_agreement(false)
            .build()
            .await
            .expect("connect to the CQL peer");
        session
            .query_unpaged(
                format!(
                    "CREATE KEYSPACE IF NOT EXISTS {KEYSPACE} WITH replication = \
                     {{'class': 'SimpleStrategy', 'replication_factor': 1}}"
                ),
                (),
            )
            .await
            .expect("create the test keyspace");
        Some(CassandraPeer { addr, session })
    }

    /// `(delivery_id, output_format, data)` of every row; none when the table is missing.
    async fn rows(&self, table: &str) -> Vec<(String, String, String)> {
        let query = format!("SELECT delivery_id, output_format, data FROM {KEYSPACE}.{table}");
        let Ok(result) = self.session.query_unpaged(query, ()).await else { return Vec::new() };
        let rows = result.into_rows_result().expect("a SELECT returns rows");
        rows.rows::<(String, String, String)>()
            .expect("the columns are text")
            .map(|row| row.expect("a row"))
            .collect()
    }
}

#[async_trait]
impl Peer for CassandraPeer {
    fn kind(&self) -> &'static str {
        "cassandra"
    }

    fn upstream(&self) -> SocketAddr {
        self.addr
    }

    fn spec(&self, addr: SocketAddr, name: &str) -> Value {
        json!({
            "type": "cassandra",
            "contact_points": [addr.to_string()],
            "keyspace": KEYSPACE,
            "table": name,
            "consistency": "one",
            "timeout_seconds": 5,
        })
    }

    async fn read_back(&self, location: &str, expected: usize) -> Vec<Arrival> {
        let deadline = Instant::now() + Duration::from_secs(3);
        loop {
            let rows = self.rows(location).await;
            if rows.len() >= expected || Instant::now() > deadline {
                return rows
                    .into_iter()
                    .map(|(id, _, data)| Arrival { body: data.into_bytes(), delivery_id: Some(id) })
                    .collect();
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn dedupe(&self) -> Dedupe {
        Dedupe::Unique
    }

    fn permanent_failure(&self, addr: SocketAddr, name: &str) -> (Value, &'static str) {
        let mut spec = self.spec(addr, name);
        spec["create_table"] = json!(false);
        (spec, "check that the keyspace exists")
    }

    fn required_fields(&self) -> &'static [&'static str] {
        &["contact_points", "keyspace", "table"]
    }
}

conformance_suite!(CassandraPeer::connect().await);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redelivery_leaves_one_row() {
    let Some(peer) = CassandraPeer::connect().await else { return };
    let (template, table) = names("cassandra");
    let dest = build(&peer.spec(peer.addr, &template));
    let id = new_delivery_id();
    let job = job(TASK);
    for _ in 0..3 {
        deliver(dest.as_ref(), &job, &Output::Text("same".into()), &id).await.unwrap();
    }
    let rows = peer.rows(&table).await;
    assert_eq!(rows, [(id, "text".to_string(), "same".to_string())]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_reports_each_record() {
    let Some(peer) = CassandraPeer::connect().await else { return };
    let (template, table) = names("cassandra");
    let dest = build(&peer.spec(peer.addr, &template));
    let good = job(TASK);
    let bad = job("Not-Valid");
    let outputs = [Output::Json(json!({"i": 1})), Output::Json(json!({"i": 2}))];
    let ids = [new_delivery_id(), new_delivery_id()];
    let attempts = [
        Attempt { render: RenderContext::new(&good, &outputs[0], &ids[0]), number: 1 },
        Attempt { render: RenderContext::new(&bad, &outputs[1], &ids[1]), number: 1 },
    ];
    let results = dest.deliver_batch(&attempts).await;
    assert!(results[0].is_ok(), "{:?}", results[0]);
    let err = results[1].as_ref().unwrap_err();
    assert_eq!(err.class, FailureClass::Permanent);
    assert!(err.message.contains("table name"), "{}", err.message);
    let rows = peer.rows(&table).await;
    assert_eq!(rows, [(ids[0].clone(), "json".to_string(), r#"{"i":1}"#.to_string())]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_check_reads_system_local_and_a_missing_keyspace_is_permanent() {
    let Some(peer) = CassandraPeer::connect().await else { return };
    let (template, _) = names("cassandra");
    let dest = build(&peer.spec(peer.addr, &template));
    dest.check().await.expect("SELECT release_version FROM system.local");
    let mut spec = peer.spec(peer.addr, &template);
    spec["keyspace"] = json!("of_no_such_keyspace");
    let dest = build(&spec);
    let err = deliver(dest.as_ref(), &job(TASK), &Output::Text("x".into()), &new_delivery_id())
        .await
        .unwrap_err();
    assert_eq!(err.class, FailureClass::Permanent, "{err:?}");
}
