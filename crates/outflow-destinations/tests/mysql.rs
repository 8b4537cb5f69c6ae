//! The `mysql` destination against a real MariaDB/MySQL (OUTFLOW_TEST_MYSQL_URL, default
//! mysql://root@127.0.0.1:3306/test): the conformance suite, then the destination's own
//! options, read back with an independent sqlx pool.

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
use sqlx_mysql::{MySql, MySqlPool, MySqlRow};

struct MyPeer {
    url: url::Url,
    addr: SocketAddr,
    pool: MySqlPool,
}

impl MyPeer {
    async fn connect() -> Option<MyPeer> {
        let url = conformance::peers::require(
            "MySQL/MariaDB",
            "OUTFLOW_TEST_MYSQL_URL",
            "mysql://root@127.0.0.1:3306/test",
        )?;
        let addr = conformance::peers::socket_addr(&url).expect("MySQL address");
        let pool = sqlx_core::pool::PoolOptions::<MySql>::new()
            .max_connections(2)
            .connect(&url)
            .await
            .expect("connect to MySQL for read-back");
        Some(MyPeer { url: url.parse().expect("MySQL URL"), addr, pool })
    }

    fn url_at(&self, addr: SocketAddr) -> String {
        let mut url = self.url.clone();
        url.set_host(Some(&addr.ip().to_string())).expect("host");
        url.set_port(Some(addr.port())).expect("port");
        url.to_string()
    }

    async fn sql(&self, sql: &str) {
        sqlx_core::query::query::<MySql>(AssertSqlSafe(sql.to_string()))
            .execute(&self.pool)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
    }

    async fn rows(&self, sql: &str) -> Vec<MySqlRow> {
        sqlx_core::query::query::<MySql>(AssertSqlSafe(sql.to_string()))
            .fetch_all(&self.pool)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"))
    }

    async fn count(&self, table: &str) -> i64 {
        let sql = format!("SELECT COUNT(*) FROM `{table}`");
        sqlx_core::query_scalar::query_scalar::<MySql, i64>(AssertSqlSafe(sql))
            .fetch_one(&self.pool)
            .await
            .unwrap_or(-1)
    }
}

#[async_trait]
impl Peer for MyPeer {
    fn kind(&self) -> &'static str {
        "mysql"
    }

    fn upstream(&self) -> SocketAddr {
        self.addr
    }

    fn spec(&self, addr: SocketAddr, name: &str) -> Value {
        json!({"type": "mysql", "connection_string": self.url_at(addr), "table": name,
               "pool_size": 4})
    }

    async fn read_back(&self, location: &str, expected: usize) -> Vec<Arrival> {
        let sql = format!(
            "SELECT delivery_id, output_kind, CAST(data AS CHAR) AS json, \
             JSON_UNQUOTE(data) AS txt FROM `{location}` ORDER BY id"
        );
        let deadline = Instant::now() + Duration::from_secs(3);
        loop {
            let found: Vec<Arrival> = sqlx_core::query::query::<MySql>(AssertSqlSafe(sql.clone()))
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
        (spec, "doesn't exist")
    }

    fn required_fields(&self) -> &'static [&'static str] {
        &["table", "connection_string"]
    }
}

conformance_suite!(MyPeer::connect().await);

async fn deliver_json(
    dest: &dyn outflow_destinations::Destination,
    value: Value,
    id: &str,
) -> Result<outflow_destinations::DeliveryReceipt, outflow_destinations::DeliveryError> {
    conformance::deliver(dest, &job("mytest"), &Output::Json(value), id).await
}

#[tokio::test]
async fn default_schema_has_its_indexes() {
    let Some(peer) = MyPeer::connect().await else { return };
    let table = unique_name("my");
    let dest = build(&peer.spec(peer.addr, &table));
    deliver_json(dest.as_ref(), json!({"status": "failed"}), &new_delivery_id()).await.unwrap();
    let rows = peer
        .rows(&format!(
            "SELECT INDEX_NAME AS name, COLUMN_NAME AS col, NON_UNIQUE AS nu \
             FROM information_schema.statistics \
             WHERE table_schema = DATABASE() AND table_name = '{table}'"
        ))
        .await;
    let idx: Vec<(String, String, i64)> =
        rows.iter().map(|r| (r.get("name"), r.get("col"), r.get("nu"))).collect();
    let has = |name: &str, col: &str| {
        idx.iter().any(|(n, c, _)| n == &format!("{table}_{name}") && c == col)
    };
    assert!(has("completed_at_idx", "completed_at"), "{idx:?}");
    assert!(has("task_name_idx", "task_name"), "{idx:?}");
    assert!(has("status_idx", "status"), "{idx:?}");
    assert!(has("job_uuid_idx", "job_uuid"), "{idx:?}");
    assert!(
        idx.iter()
            .any(|(n, c, nu)| n.ends_with("delivery_id_key") && c == "delivery_id" && *nu == 0),
        "{idx:?}"
    );
    let row = &peer
        .rows(&format!("SELECT task_name, JSON_VALUE(data, '$.status') AS s FROM `{table}`"))
        .await[0];
    assert_eq!(row.get::<String, _>("task_name"), "mytest");
    assert_eq!(row.get::<String, _>("s"), "failed");
}

#[tokio::test]
async fn columns_map_templates_and_json_pointers() {
    let Some(peer) = MyPeer::connect().await else { return };
    let table = unique_name("my");
    let mut spec = peer.spec(peer.addr, &table);
    spec["columns"] = json!({
        "task": "{{task_name}}/{{environment}}",
        "user_id": "/user/id",
        "user_name": "/user/name",
        "tags": "/tags",
        "missing": "/nope"
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
    let row = &peer.rows(&format!("SELECT * FROM `{table}`")).await[0];
    assert_eq!(row.get::<String, _>("delivery_id"), id);
    assert!(row.get::<String, _>("task").starts_with("mytest/"));
    assert_eq!(row.get::<String, _>("user_id"), "42");
    assert_eq!(row.get::<String, _>("user_name"), "Ann");
    assert_eq!(row.get::<String, _>("tags"), "[\"a\",\"b\"]");
    assert_eq!(row.get::<Option<String>, _>("missing"), None);
}

#[tokio::test]
async fn existing_typed_table_with_create_table_false() {
    let Some(peer) = MyPeer::connect().await else { return };
    let table = unique_name("my");
    peer.sql(&format!(
        "CREATE TABLE `{table}` (delivery_id VARCHAR(64) PRIMARY KEY, user_id INT NOT NULL, \
         payload JSON, note TEXT)"
    ))
    .await;
    let mut spec = peer.spec(peer.addr, &table);
    spec["create_table"] = json!(false);
    spec["columns"] = json!({"user_id": "/user/id", "payload": "/user"});
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
    let err = results[1].as_ref().expect_err("a non-integer user_id fails in strict mode");
    assert_eq!(err.class, FailureClass::Permanent, "{err:?}");
    assert!(err.message.contains("error 1366"), "names the error: {}", err.message);
    assert!(err.message.contains(&table), "names the table: {}", err.message);
    assert!(results[2].is_ok(), "{:?}", results[2]);
    let rows = peer.rows(&format!("SELECT user_id FROM `{table}` ORDER BY user_id")).await;
    let got: Vec<i32> = rows.iter().map(|r| r.get("user_id")).collect();
    assert_eq!(got, vec![1, 3]);
}

#[tokio::test]
async fn missing_table_is_permanent_and_check_names_it() {
    let Some(peer) = MyPeer::connect().await else { return };
    let table = unique_name("my");
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
    assert!(err.message.contains("error 1146") && err.message.contains(&table), "{}", err.message);
}

#[tokio::test]
async fn bad_credentials_and_unknown_database_are_permanent() {
    let Some(peer) = MyPeer::connect().await else { return };
    let mut url = peer.url.clone();
    url.set_username("outflow_no_such_user").unwrap();
    url.set_password(Some("wrong")).unwrap();
    let dest = build(&json!({"type": "mysql", "connection_string": url.to_string(),
                             "table": unique_name("my")}));
    let err = dest.check().await.expect_err("unknown user");
    assert_eq!(err.class, FailureClass::Permanent, "{err:?}");
    assert!(err.message.contains("error 1045"), "{}", err.message);
    assert!(!err.message.contains("wrong@"), "no password in {}", err.message);
    let mut url = peer.url.clone();
    url.set_path("/outflow_no_such_db");
    let dest = build(&json!({"type": "mysql", "connection_string": url.to_string(),
                             "table": unique_name("my")}));
    let err = dest.check().await.expect_err("unknown database");
    assert_eq!(err.class, FailureClass::Permanent, "{err:?}");
    assert!(err.message.contains("error 1049"), "{}", err.message);
}

#[tokio::test]
async fn rendered_identifier_injection_is_refused() {
    let Some(peer) = MyPeer::connect().await else { return };
    let victim = unique_name("my");
    peer.sql(&format!("CREATE TABLE `{victim}` (x INT)")).await;
    let dest = build(&peer.spec(peer.addr, "t_{{task_name}}"));
    for evil in [format!("x`; DROP TABLE `{victim}`; --"), format!("x; DROP TABLE {victim}")] {
        let err = conformance::deliver(
            dest.as_ref(),
            &job(&evil),
            &Output::Json(json!({})),
            &new_delivery_id(),
        )
        .await
        .expect_err("refused");
        assert_eq!(err.class, FailureClass::Permanent);
        assert!(err.message.contains("not a valid SQL identifier"), "{}", err.message);
    }
    assert_eq!(peer.count(&victim).await, 0, "the victim table is still there");
}

#[tokio::test]
async fn retention_deletes_backdated_rows() {
    let Some(peer) = MyPeer::connect().await else { return };
    let table = unique_name("my");
    let plain = build(&peer.spec(peer.addr, &table));
    let old = new_delivery_id();
    deliver_json(plain.as_ref(), json!({"age": "old"}), &old).await.unwrap();
    peer.sql(&format!(
        "UPDATE `{table}` SET created_at = NOW(6) - INTERVAL 10 DAY WHERE delivery_id = '{old}'"
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
            .rows(&format!("SELECT delivery_id FROM `{table}`"))
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
async fn tls_mode_is_parsed() {
    let Some(peer) = MyPeer::connect().await else { return };
    let mut spec = peer.spec(peer.addr, &unique_name("my"));
    spec["tls_mode"] = json!("always");
    let parsed = outflow_core::config::DestinationSpec::from_value(&spec, "d").unwrap();
    let errs = conformance::registry().build(&parsed, "d").unwrap_err();
    assert_eq!(errs[0].path, "d.tls_mode");
    spec["tls_mode"] = json!("disable");
    build(&spec).check().await.expect("plain connection works");
}
