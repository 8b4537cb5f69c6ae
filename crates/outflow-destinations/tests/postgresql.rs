//! The `postgresql` destination against a real PostgreSQL (OUTFLOW_TEST_POSTGRES_URL,
//! default postgres://postgres@127.0.0.1:5432/test): the conformance suite, then the
//! destination's own options, read back with an independent sqlx pool.

mod conformance;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use conformance::{Arrival, Dedupe, Peer, build, job, unique_name};
use outflow_core::attempt::FailureClass;
use outflow_core::context::RenderContext;
use outflow_core::output::Output;
use outflow_destinations::Attempt;
use outflow_destinations::runner::new_delivery_id;
use serde_json::{Value, json};
use sqlx_core::row::Row as _;
use sqlx_core::sql_str::AssertSqlSafe;
use sqlx_postgres::{PgPool, PgPoolOptions, PgRow, Postgres};

struct PgPeer {
    url: url::Url,
    addr: SocketAddr,
    pool: PgPool,
}

impl PgPeer {
    async fn connect() -> Option<PgPeer> {
        let url = conformance::peers::require(
            "PostgreSQL",
            "OUTFLOW_TEST_POSTGRES_URL",
            "postgres://postgres@127.0.0.1:5432/test",
        )?;
        let addr = conformance::peers::socket_addr(&url).expect("PostgreSQL address");
        let pool = PgPoolOptions::new()
            .max_connections(2)
            .connect(&url)
            .await
            .expect("connect to PostgreSQL for read-back");
        Some(PgPeer { url: url.parse().expect("PostgreSQL URL"), addr, pool })
    }

    /// The peer's URL pointing at `addr` (the proxy, or the server itself).
    fn url_at(&self, addr: SocketAddr) -> String {
        let mut url = self.url.clone();
        url.set_host(Some(&addr.ip().to_string())).expect("host");
        url.set_port(Some(addr.port())).expect("port");
        url.to_string()
    }

    async fn sql(&self, sql: &str) {
        sqlx_core::query::query::<Postgres>(AssertSqlSafe(sql.to_string()))
            .execute(&self.pool)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
    }

    async fn rows(&self, sql: &str) -> Vec<PgRow> {
        sqlx_core::query::query::<Postgres>(AssertSqlSafe(sql.to_string()))
            .fetch_all(&self.pool)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"))
    }

    async fn count(&self, table: &str) -> i64 {
        let sql = format!("SELECT COUNT(*) FROM \"{table}\"");
        sqlx_core::query_scalar::query_scalar::<Postgres, i64>(AssertSqlSafe(sql))
            .fetch_one(&self.pool)
            .await
            .unwrap_or(-1)
    }
}

#[async_trait]
impl Peer for PgPeer {
    fn kind(&self) -> &'static str {
        "postgresql"
    }

    fn upstream(&self) -> SocketAddr {
        self.addr
    }

    fn spec(&self, addr: SocketAddr, name: &str) -> Value {
        json!({"type": "postgresql", "connection_string": self.url_at(addr), "table": name,
               "pool_size": 4})
    }

    async fn read_back(&self, location: &str, expected: usize) -> Vec<Arrival> {
        let sql = format!(
            "SELECT delivery_id, output_kind, data::text AS json, data #>> '{{}}' AS txt \
             FROM \"{location}\" ORDER BY id"
        );
        let deadline = Instant::now() + Duration::from_secs(3);
        loop {
            let found: Vec<Arrival> =
                sqlx_core::query::query::<Postgres>(AssertSqlSafe(sql.clone()))
                    .fetch_all(&self.pool)
                    .await
                    .unwrap_or_default()
                    .iter()
                    .map(|row| {
                        let kind: String = row.get("output_kind");
                        let body: String =
                            if kind == "json" { row.get("json") } else { row.get("txt") };
                        Arrival { body: body.into_bytes(), delivery_id: row.get("delivery_id") }
                    })
                    .collect();
            if found.len() >= expected || Instant::now() > deadline {
                return found;
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
        (spec, "does not exist")
    }

    fn required_fields(&self) -> &'static [&'static str] {
        &["table", "connection_string"]
    }
}

conformance_suite!(PgPeer::connect().await);

async fn deliver_json(
    dest: &dyn outflow_destinations::Destination,
    value: Value,
    id: &str,
) -> Result<outflow_destinations::DeliveryReceipt, outflow_destinations::DeliveryError> {
    conformance::deliver(dest, &job("pgtest"), &Output::Json(value), id).await
}

#[tokio::test]
async fn default_schema_has_seed_004_indexes() {
    let Some(peer) = PgPeer::connect().await else { return };
    let table = unique_name("pg");
    let dest = build(&peer.spec(peer.addr, &table));
    deliver_json(dest.as_ref(), json!({"status": "failed"}), &new_delivery_id()).await.unwrap();
    let rows = peer
        .rows(&format!("SELECT indexname, indexdef FROM pg_indexes WHERE tablename = '{table}'"))
        .await;
    let defs: Vec<(String, String)> =
        rows.iter().map(|r| (r.get("indexname"), r.get("indexdef"))).collect();
    let has = |name: &str, needle: &str| {
        defs.iter().any(|(n, d)| n == &format!("{table}_{name}") && d.contains(needle))
    };
    assert!(has("completed_at_idx", "(completed_at DESC)"), "{defs:#?}");
    assert!(has("task_name_idx", "btree (task_name)"), "{defs:#?}");
    assert!(has("status_idx", "btree (status)"), "{defs:#?}");
    assert!(has("failed_idx", "WHERE ((status)::text <> 'completed'::text)"), "{defs:#?}");
    assert!(has("data_gin_idx", "USING gin (data)"), "{defs:#?}");
    assert!(
        defs.iter().any(|(_, d)| d.contains("UNIQUE INDEX") && d.contains("(delivery_id)")),
        "{defs:#?}"
    );
    // The columns are typed as seed 004 says: JSONB data, timestamps, a UUID.
    let types = peer
        .rows(&format!(
            "SELECT column_name, data_type FROM information_schema.columns \
             WHERE table_name = '{table}'"
        ))
        .await;
    let types: Vec<(String, String)> =
        types.iter().map(|r| (r.get("column_name"), r.get("data_type"))).collect();
    for (col, ty) in [
        ("data", "jsonb"),
        ("job_uuid", "uuid"),
        ("completed_at", "timestamp with time zone"),
        ("created_at", "timestamp with time zone"),
        ("id", "bigint"),
    ] {
        assert!(types.contains(&(col.to_string(), ty.to_string())), "{col}: {types:?}");
    }
    // The job fields arrived; JSONB containment works on data.
    let row = &peer
        .rows(&format!(
            "SELECT task_name, status, environment, job_uuid::text AS u FROM \"{table}\" \
             WHERE data @> '{{\"status\": \"failed\"}}'"
        ))
        .await[0];
    assert_eq!(row.get::<String, _>("task_name"), "pgtest");
    assert_eq!(row.get::<String, _>("status"), "completed");
}

#[tokio::test]
async fn columns_map_templates_and_json_pointers() {
    let Some(peer) = PgPeer::connect().await else { return };
    let table = unique_name("pg");
    let mut spec = peer.spec(peer.addr, &table);
    spec["columns"] = json!({
        "task": "{{task_name}}/{{environment}}",
        "user_id": "/user/id",
        "user_name": "/user/name",
        "tags": "/tags",
        "missing": "/nope",
        "literal": {"template": "/not/a/pointer"}
    });
    let dest = build(&spec);
    let id = new_delivery_id();
    deliver_json(
        dest.as_ref(),
        json!({"user": {"id": 42, "name": "Ann"}, "tags": ["a", "b"]}),
        &id,
    )
    .await
    .unwrap();
    let row = &peer.rows(&format!("SELECT * FROM \"{table}\"")).await[0];
    assert_eq!(row.get::<String, _>("delivery_id"), id);
    assert!(row.get::<String, _>("task").starts_with("pgtest/"));
    assert_eq!(row.get::<String, _>("user_id"), "42");
    assert_eq!(row.get::<String, _>("user_name"), "Ann");
    assert_eq!(row.get::<String, _>("tags"), "[\"a\",\"b\"]");
    assert_eq!(row.get::<Option<String>, _>("missing"), None);
    assert_eq!(row.get::<String, _>("literal"), "/not/a/pointer");
}

#[tokio::test]
async fn existing_typed_table_with_create_table_false() {
    let Some(peer) = PgPeer::connect().await else { return };
    let table = unique_name("pg");
    peer.sql(&format!(
        "CREATE TABLE \"{table}\" (delivery_id TEXT PRIMARY KEY, user_id INTEGER NOT NULL, \
         payload JSONB, finished TIMESTAMPTZ, note TEXT)"
    ))
    .await;
    let mut spec = peer.spec(peer.addr, &table);
    spec["create_table"] = json!(false);
    spec["columns"] =
        json!({"user_id": "/user/id", "payload": "/user", "finished": "{{timestamp}}"});
    let dest = build(&spec);
    dest.check().await.expect("check passes: the table exists");
    let job = job("typed");
    let outputs: Vec<Output> = vec![
        Output::Json(json!({"user": {"id": 1}})),
        Output::Json(json!({"user": {"id": "not a number"}})),
        Output::Json(json!({"user": {"id": 3}})),
    ];
    let ids: Vec<String> = (0..3).map(|_| new_delivery_id()).collect();
    let attempts: Vec<Attempt<'_>> = outputs
        .iter()
        .zip(&ids)
        .map(|(o, id)| Attempt { render: RenderContext::new(&job, o, id), number: 1 })
        .collect();
    let results = dest.deliver_batch(&attempts).await;
    assert!(results[0].is_ok(), "{:?}", results[0]);
    let err = results[1].as_ref().expect_err("a non-integer user_id fails");
    assert_eq!(err.class, FailureClass::Permanent, "{err:?}");
    assert!(err.message.contains("22P02"), "names the SQLSTATE: {}", err.message);
    assert!(err.message.contains(&table), "names the table: {}", err.message);
    assert!(results[2].is_ok(), "{:?}", results[2]);
    let rows = peer
        .rows(&format!("SELECT user_id, payload::text AS p FROM \"{table}\" ORDER BY user_id"))
        .await;
    let got: Vec<(i32, String)> = rows.iter().map(|r| (r.get("user_id"), r.get("p"))).collect();
    assert_eq!(got, vec![(1, "{\"id\": 1}".to_string()), (3, "{\"id\": 3}".to_string())]);
}

#[tokio::test]
async fn missing_table_is_permanent_and_check_names_it() {
    let Some(peer) = PgPeer::connect().await else { return };
    let table = unique_name("pg");
    let mut spec = peer.spec(peer.addr, &table);
    spec["create_table"] = json!(false);
    let dest = build(&spec);
    let err = dest.check().await.expect_err("no such table");
    assert_eq!(err.class, FailureClass::Permanent);
    assert!(
        err.message.contains(&table) && err.message.contains("create_table"),
        "{}",
        err.message
    );
    let err = deliver_json(dest.as_ref(), json!({}), &new_delivery_id()).await.unwrap_err();
    assert_eq!(err.class, FailureClass::Permanent);
    assert!(err.message.contains("42P01") && err.message.contains(&table), "{}", err.message);
}

#[tokio::test]
async fn bad_credentials_are_permanent() {
    let Some(peer) = PgPeer::connect().await else { return };
    let mut url = peer.url.clone();
    url.set_username("outflow_no_such_role").unwrap();
    let dest = build(&json!({"type": "postgresql", "connection_string": url.to_string(),
                             "table": unique_name("pg")}));
    let err = dest.check().await.expect_err("unknown role");
    assert_eq!(err.class, FailureClass::Permanent, "{err:?}");
    assert!(err.message.contains("SQLSTATE 28"), "{}", err.message);
    let mut url = peer.url.clone();
    url.set_path("/outflow_no_such_db");
    let dest = build(&json!({"type": "postgresql", "connection_string": url.to_string(),
                             "table": unique_name("pg")}));
    let err = dest.check().await.expect_err("unknown database");
    assert_eq!(err.class, FailureClass::Permanent, "{err:?}");
    assert!(err.message.contains("3D000"), "{}", err.message);
}

#[tokio::test]
async fn rendered_identifier_injection_is_refused() {
    let Some(peer) = PgPeer::connect().await else { return };
    let victim = unique_name("pg");
    peer.sql(&format!("CREATE TABLE \"{victim}\" (x INT)")).await;
    let dest = build(&peer.spec(peer.addr, "t_{{task_name}}"));
    for evil in [
        format!("x\"; DROP TABLE \"{victim}\"; --"),
        format!("x; DROP TABLE {victim}"),
        "x.y.z".to_string(),
        "a".repeat(80),
    ] {
        let err = conformance::deliver(
            dest.as_ref(),
            &job(&evil),
            &Output::Json(json!({})),
            &new_delivery_id(),
        )
        .await
        .expect_err("refused");
        assert_eq!(err.class, FailureClass::Permanent);
        assert!(
            err.message.contains("not a valid SQL identifier")
                || err.message.contains("at most 63"),
            "{}",
            err.message
        );
    }
    assert_eq!(peer.count(&victim).await, 0, "the victim table is still there");
    // A column mapping cannot smuggle SQL either: names are checked at config time.
    let mut spec = peer.spec(peer.addr, &victim);
    spec["columns"] = json!({"x\" INT); DROP TABLE y; --": "/a"});
    let parsed = outflow_core::config::DestinationSpec::from_value(&spec, "d").unwrap();
    let errs = conformance::registry().build(&parsed, "d").unwrap_err();
    assert!(errs[0].message.contains("not a valid SQL identifier"), "{errs:?}");
}

#[tokio::test]
async fn retention_deletes_backdated_rows() {
    let Some(peer) = PgPeer::connect().await else { return };
    let table = unique_name("pg");
    let plain = build(&peer.spec(peer.addr, &table));
    let old = new_delivery_id();
    deliver_json(plain.as_ref(), json!({"age": "old"}), &old).await.unwrap();
    peer.sql(&format!(
        "UPDATE \"{table}\" SET created_at = NOW() - INTERVAL '10 days' WHERE delivery_id = '{old}'"
    ))
    .await;
    let mut spec = peer.spec(peer.addr, &table);
    spec["retention_days"] = json!(7);
    let retaining = build(&spec);
    let new = new_delivery_id();
    deliver_json(retaining.as_ref(), json!({"age": "new"}), &new).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let ids: Vec<String> = peer
            .rows(&format!("SELECT delivery_id FROM \"{table}\""))
            .await
            .iter()
            .map(|r| r.get("delivery_id"))
            .collect();
        if ids == vec![new.clone()] {
            break;
        }
        assert!(Instant::now() < deadline, "old row not purged: {ids:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn tls_mode_is_parsed_and_refused_by_a_plain_server() {
    let Some(peer) = PgPeer::connect().await else { return };
    let mut spec = peer.spec(peer.addr, &unique_name("pg"));
    spec["tls_mode"] = json!("bogus");
    let parsed = outflow_core::config::DestinationSpec::from_value(&spec, "d").unwrap();
    let errs = conformance::registry().build(&parsed, "d").unwrap_err();
    assert_eq!(errs[0].path, "d.tls_mode");
    spec["tls_mode"] = json!("disable");
    build(&spec).check().await.expect("plain connection works");
    // The test server has no TLS: `require` cannot be met, and says so.
    let ssl_on = peer.rows("SHOW ssl").await[0].get::<String, _>("ssl") == "on";
    if !ssl_on {
        spec["tls_mode"] = json!("require");
        let err = build(&spec).check().await.expect_err("TLS required, server has none");
        assert!(err.message.to_lowercase().contains("tls"), "{}", err.message);
    }
}

/// 10,000 small records through `deliver_batch`, for the throughput note:
/// `cargo test -p outflow-destinations --test postgresql -- --ignored --nocapture throughput`
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn throughput_of_10000_small_records() {
    let Some(peer) = PgPeer::connect().await else { return };
    let table = unique_name("pg");
    let dest = build(&peer.spec(peer.addr, &table));
    deliver_json(dest.as_ref(), json!({"warm": true}), &new_delivery_id()).await.unwrap();
    let job = job("bench");
    let outputs: Vec<Output> =
        (0..10_000).map(|i| Output::Json(json!({"i": i, "msg": "small record"}))).collect();
    let ids: Vec<String> = (0..10_000).map(|_| new_delivery_id()).collect();
    let attempts: Vec<Attempt<'_>> = outputs
        .iter()
        .zip(&ids)
        .map(|(o, id)| Attempt { render: RenderContext::new(&job, o, id), number: 1 })
        .collect();
    let started = Instant::now();
    let results = dest.deliver_batch(&attempts).await;
    let elapsed = started.elapsed();
    assert!(results.iter().all(Result::is_ok));
    assert_eq!(peer.count(&table).await, 10_001);
    println!(
        "postgresql deliver_batch: 10000 records in {:.3} s = {:.0} records/s",
        elapsed.as_secs_f64(),
        10_000.0 / elapsed.as_secs_f64()
    );
}
