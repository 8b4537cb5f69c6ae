//! # outflow-server
//!
//! Outflow as a service: the REST API over the [store](outflow_store) and the
//! [delivery engine](outflow_engine), plus health, readiness, Prometheus metrics and the
//! generated OpenAPI document (`/api/v1/openapi.json`).
//!
//! - [`start`] opens the store, registers the configured tasks, starts the engine, binds
//!   the listener and serves; [`RunningServer::shutdown`] stops it gracefully. [`serve`]
//!   wraps both around a shutdown signal for the binary.
//! - [`routes`]: one module per resource; [`dto`]: the JSON shapes; [`problem`]: errors as
//!   `application/problem+json`; [`pagination`]: `_start`/`_end`, `page`/`limit` and the
//!   `{"data", "total", "page", "limit"}` envelope every list uses.
//!
//! Invariant kept here (DESIGN.md §2): a 2xx on submit or output upload is sent only after
//! the store committed; the engine is woken *after* the commit, and nothing the API answers
//! depends on in-process state except circuit breakers, which are advisory.
//!
//! This crate is not where deliveries happen (the engine) nor where data lives (the store);
//! it authenticates nothing yet (API keys arrive with namespaces).
//!
//! ## The job JSON
//!
//! Every job endpoint shows a job as [`dto::JobView`]: `id` (numeric), `job_uuid`, `job_id`
//! (the client's idempotency key), `task_id`, `task_name`, `task_version`, `priority`,
//! `status`, `progress`, `error`, `input_data`, `metadata`, `output_destinations` (secrets
//! masked), `destinations`, `queued_at`, `started_at`, `finished_at`, `updated_at`,
//! `output_version`.

pub mod dto;
pub mod extract;
pub mod metrics;
pub mod openapi;
pub mod pagination;
pub mod problem;
pub mod routes;
pub mod state;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use axum::Router;
use axum::extract::{DefaultBodyLimit, Request};
use axum::http::{HeaderValue, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use outflow_core::config::Config;
use outflow_destinations::{BuildDefaults, Registry};
use outflow_engine::{BreakerSettings, Engine, EngineSettings, EngineTasks};
use outflow_store::{SqliteStore, Store, TaskDef};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::problem::Problem;
use crate::routes::{admin, deliveries, health, jobs, outputs};
use crate::state::{AppState, KnownTask};

/// What to serve and with what.
pub struct ServeOptions {
    /// The configuration (`server.listen`, `storage.path`, `output`, `executor`, `tasks`).
    pub config: Config,
    /// A store to use instead of opening the embedded SQLite store at `storage.path`.
    pub store: Option<Arc<dyn Store>>,
    /// Engine settings to use instead of those derived from the config
    /// ([`engine_settings`]); tests shorten leases and breaker cool-downs with it.
    pub engine: Option<EngineSettings>,
}

impl ServeOptions {
    /// Options that take everything from `config`.
    pub fn new(config: Config) -> Self {
        ServeOptions { config, store: None, engine: None }
    }
}

/// The engine settings a config asks for: `output.max_concurrent_deliveries`,
/// `output.per_destination_concurrency`, `output.delivery_lease`, `output.circuit_breaker.*`, `executor.*` and
/// `server.shutdown_grace`; the rest are the engine's defaults.
pub fn engine_settings(config: &Config) -> EngineSettings {
    let limits = &config.output.limits;
    EngineSettings {
        max_concurrent_deliveries: config.output.max_concurrent_deliveries.max(1),
        per_destination_concurrency: limits.per_destination_concurrency.max(1),
        breaker: BreakerSettings {
            failure_threshold: limits.breaker_failure_threshold,
            cool_down: limits.breaker_cool_down,
        },
        max_concurrent_jobs: config.executor.max_concurrent_jobs.max(1),
        stderr_limit: usize::try_from(config.executor.stderr_limit).unwrap_or(usize::MAX),
        max_output_bytes: usize::try_from(config.executor.max_output_bytes).unwrap_or(usize::MAX),
        shutdown_grace: config.server.shutdown_grace,
        lease: limits.lease,
        ..EngineSettings::default()
    }
}

/// A server that is accepting requests.
pub struct RunningServer {
    /// The address it listens on (the real port when `server.listen` used port 0).
    pub addr: SocketAddr,
    stop: oneshot::Sender<()>,
    http: JoinHandle<std::io::Result<()>>,
    engine: EngineTasks,
    sqlite: Option<SqliteStore>,
    grace: Duration,
}

impl RunningServer {
    /// `http://{addr}`.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stops gracefully: stop accepting connections and let in-flight requests finish (up
    /// to `server.shutdown_grace`), then stop the engine (in-flight attempts and jobs get
    /// the same grace, the rest is released to the queue), then flush the store.
    pub async fn shutdown(self) {
        let _ = self.stop.send(());
        let mut http = self.http;
        match tokio::time::timeout(self.grace, &mut http).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(e))) => tracing::error!(error = %e, "HTTP server stopped with an error"),
            Ok(Err(e)) => tracing::error!(error = %e, "HTTP server task failed"),
            Err(_) => {
                tracing::warn!(
                    grace_s = self.grace.as_secs_f64(),
                    "HTTP requests still running after the shutdown grace; cutting them"
                );
                http.abort();
            }
        }
        self.engine.shutdown().await;
        if let Some(sqlite) = self.sqlite {
            sqlite.close();
        }
        tracing::info!("outflow server stopped");
    }
}

/// Runs the server until `shutdown_signal` completes, then shuts down gracefully (see
/// [`RunningServer::shutdown`]). The binary passes a future that completes on SIGINT or
/// SIGTERM; a second signal during shutdown is the binary's business (exit at once).
pub async fn serve(
    opts: ServeOptions,
    shutdown_signal: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let mut running = start(opts).await?;
    tokio::select! {
        () = shutdown_signal => {
            tracing::info!("shutdown requested: no new requests; finishing in-flight work");
            running.shutdown().await;
            Ok(())
        }
        result = &mut running.http => {
            running.engine.shutdown().await;
            match result {
                Ok(Ok(())) => bail!("the HTTP server stopped unexpectedly"),
                Ok(Err(e)) => Err(e).context("the HTTP server failed"),
                Err(e) => Err(e).context("the HTTP server task failed"),
            }
        }
    }
}

/// Opens the store, registers the tasks, starts the engine and serves on
/// `config.server.listen` (port 0 picks a free port; see [`RunningServer::addr`]).
///
/// Fails, naming the cause, when the configured destinations are invalid (with
/// `output.validate_on_startup`), the store cannot be opened or the address is taken.
pub async fn start(opts: ServeOptions) -> anyhow::Result<RunningServer> {
    let ServeOptions { config, store, engine: settings } = opts;
    let listen = config.server.listen;
    if !listen.ip().is_loopback() && !config.server.allow_unauthenticated {
        bail!(
            "refusing to listen on {listen}: the API has no authentication yet, so anyone who \
             can connect could submit jobs that write files as this user and call URLs. Listen \
             on 127.0.0.1 (the default), or set server.allow_unauthenticated: true to accept that"
        );
    }
    let registry = Registry::new(BuildDefaults::from_output(&config.output));
    if config.output.validate_on_startup {
        let errors = config.validate_destinations(&registry);
        if !errors.is_empty() {
            let list: Vec<String> = errors.iter().map(|e| format!("  {e}")).collect();
            bail!("invalid destinations in the configuration:\n{}", list.join("\n"));
        }
    }
    let data_dir = config.storage.path.clone();
    let (store, sqlite): (Arc<dyn Store>, Option<SqliteStore>) = match store {
        Some(store) => (store, None),
        None => {
            let sqlite = SqliteStore::open(&data_dir)
                .await
                .with_context(|| format!("cannot open the store in {}", data_dir.display()))?;
            (Arc::new(sqlite.clone()), Some(sqlite))
        }
    };
    let defs: Vec<TaskDef> = config
        .tasks
        .iter()
        .map(|t| TaskDef {
            name: t.name.clone(),
            version: t.version.clone(),
            definition: t.definition(),
        })
        .collect();
    let records = store.sync_tasks(&defs).await.context("cannot register the configured tasks")?;
    let tasks: Vec<KnownTask> = config
        .tasks
        .iter()
        .filter_map(|t| {
            let record = records.iter().find(|r| r.name == t.name)?.clone();
            Some(KnownTask { record, config: t.clone() })
        })
        .collect();

    let listener = tokio::net::TcpListener::bind(config.server.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.server.listen))?;
    let addr = listener.local_addr().context("cannot read the listening address")?;

    let settings = settings.unwrap_or_else(|| engine_settings(&config));
    let grace = settings.shutdown_grace;
    let engine =
        Engine::new(store.clone(), registry, config.output.global_destinations.clone(), settings);
    let engine_tasks = engine.start();
    // Install the recorder before the engine records its first attempt.
    let _ = metrics::handle();

    tracing::info!(
        address = %addr,
        data_dir = %data_dir.display(),
        tasks = tasks.len(),
        global_destinations = config.output.global_destinations.len(),
        "outflow server listening on http://{addr}"
    );
    let state = AppState {
        store,
        engine,
        body_limit: config.server.body_limit,
        config: Arc::new(config),
        tasks: Arc::new(tasks),
        sqlite: sqlite.clone(),
    };
    let app = router(state);
    let (stop, stopped) = oneshot::channel::<()>();
    let http = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async {
                let _ = stopped.await;
            })
            .await
    });
    Ok(RunningServer { addr, stop, http, engine: engine_tasks, sqlite, grace })
}

/// Every route, with the body limit, request logging and problem fallbacks.
pub fn router(state: AppState) -> Router {
    let limit = usize::try_from(state.body_limit).unwrap_or(usize::MAX);
    Router::new()
        .route("/api/v1/jobs", post(jobs::submit_job).get(jobs::list_jobs))
        .route("/api/v1/jobs/test-output-destinations", post(admin::test_output_destinations))
        .route("/api/v1/jobs/{id}", get(jobs::get_job).delete(jobs::delete_job))
        .route("/api/v1/jobs/{id}/status", get(jobs::get_status).post(jobs::post_status))
        .route("/api/v1/jobs/{id}/output", get(outputs::get_output).put(outputs::put_output))
        .route("/api/v1/jobs/{id}/cancel", post(jobs::cancel_job))
        .route("/api/v1/jobs/{id}/deliveries", get(deliveries::job_deliveries))
        .route("/api/v1/deliveries", get(deliveries::list_deliveries))
        .route("/api/v1/deliveries/replay", post(deliveries::replay_dead))
        .route("/api/v1/deliveries/dead", delete(deliveries::purge_dead))
        .route("/api/v1/deliveries/{id}", get(deliveries::get_delivery))
        .route("/api/v1/deliveries/{id}/retry", post(deliveries::retry_delivery))
        .route("/api/v1/tasks", get(admin::list_tasks))
        .route("/api/v1/destinations", get(admin::list_destinations))
        .route("/api/v1/openapi.json", get(openapi_document))
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/metrics", get(health::metrics))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(limit))
        .layer(middleware::from_fn(log_request))
        .with_state(state)
}

async fn openapi_document() -> Response {
    static DOC: OnceLock<String> = OnceLock::new();
    let body = DOC.get_or_init(openapi::document_json).clone();
    let mut response = body.into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

async fn not_found(req: Request) -> Problem {
    Problem::not_found(format!(
        "no route for {} {}; see /api/v1/openapi.json",
        req.method(),
        req.uri().path()
    ))
}

async fn method_not_allowed() -> Problem {
    Problem::method_not_allowed()
}

async fn log_request(req: Request, next: Next) -> Response {
    let method = req.method().clone();
    // The path only: query strings are the client's and may carry anything.
    let path = req.uri().path().to_string();
    let started = Instant::now();
    let response = next.run(req).await;
    let status = response.status().as_u16();
    let elapsed_ms = started.elapsed().as_secs_f64() * 1000.0;
    if response.status().is_server_error() {
        tracing::warn!(%method, %path, status, elapsed_ms, "request failed");
    } else {
        tracing::debug!(%method, %path, status, elapsed_ms, "request");
    }
    response
}
