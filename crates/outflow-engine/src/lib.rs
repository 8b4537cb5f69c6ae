//! # outflow-engine
//!
//! Turns stored work into deliveries and finished jobs. Two loops share one [`Engine`]:
//!
//! - the **dispatcher** ([`dispatcher`]) claims due deliveries from the store under leases,
//!   makes one attempt each through the [`Destination`](outflow_destinations::Destination)
//!   trait (per-destination-key concurrency limits and circuit breakers, a global cap),
//!   records every attempt and moves the delivery to delivered, scheduled (retry at T, in the
//!   store, so it survives restarts) or dead;
//! - the **executor** ([`executor`]) claims queued jobs whose task has a command, runs them
//!   (input JSON on stdin, stdout is the output, stderr the log, exit code the status,
//!   timeout and cancel kill the process group) and finishes them with their output and
//!   deliveries in one store transaction.
//!
//! [`plan`] decides which deliveries an output gets. The engine holds no state that
//! correctness depends on: leases expire, and any node can pick up any work.

pub mod dispatcher;
pub mod executor;
pub mod plan;

use std::sync::Arc;
use std::time::Duration;

use outflow_core::config::GlobalDestination;
use outflow_destinations::Registry;
use outflow_store::Store;
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;

pub use dispatcher::CircuitView;
pub use plan::{DeliveryPlanner, PlanError};

/// Circuit breaker settings (per destination key).
#[derive(Debug, Clone, PartialEq)]
pub struct BreakerSettings {
    /// Consecutive failures that open the circuit (default 5).
    pub failure_threshold: u32,
    /// How long an open circuit waits before letting one probe through (default 30 s).
    pub cool_down: Duration,
}

impl Default for BreakerSettings {
    fn default() -> Self {
        BreakerSettings { failure_threshold: 5, cool_down: Duration::from_secs(30) }
    }
}

/// How the engine runs.
#[derive(Debug, Clone, PartialEq)]
pub struct EngineSettings {
    /// This process's lease owner id (unique per process: `node-<uuid>`).
    pub node_id: String,
    /// Attempts in flight across all destinations (`output.max_concurrent_deliveries`).
    pub max_concurrent_deliveries: usize,
    /// Attempts in flight per destination key.
    pub per_destination_concurrency: usize,
    /// Circuit breakers.
    pub breaker: BreakerSettings,
    /// Lease length for claimed deliveries and jobs; renewed while work runs.
    pub lease: Duration,
    /// Command jobs running at once (default: number of CPUs).
    pub max_concurrent_jobs: usize,
    /// How much of a command's stderr is kept as the job log.
    pub stderr_limit: usize,
    /// The most stdout a command may write (`executor.max_output_bytes`); past it the
    /// command's process group is killed and the job fails.
    pub max_output_bytes: usize,
    /// How long shutdown waits for in-flight attempts and jobs before releasing them.
    pub shutdown_grace: Duration,
    /// Upper bound on how long the loops sleep without a wake-up (safety net for work
    /// created by other nodes).
    pub idle_poll: Duration,
}

impl Default for EngineSettings {
    fn default() -> Self {
        EngineSettings {
            node_id: format!("node-{}", uuid::Uuid::now_v7().simple()),
            max_concurrent_deliveries: 10,
            per_destination_concurrency: 4,
            breaker: BreakerSettings::default(),
            lease: Duration::from_secs(60),
            max_concurrent_jobs: std::thread::available_parallelism().map_or(2, |n| n.get()),
            stderr_limit: 64 * 1024,
            max_output_bytes: 32 * 1024 * 1024,
            shutdown_grace: Duration::from_secs(30),
            idle_poll: Duration::from_secs(1),
        }
    }
}

/// The engine: shared state of the dispatcher and the executor.
pub struct Engine {
    /// The store everything is claimed from and recorded in.
    pub store: Arc<dyn Store>,
    /// Settings.
    pub settings: EngineSettings,
    /// Builds destinations and plans deliveries.
    pub planner: DeliveryPlanner,
    /// Dispatcher state (concurrency limits, breakers, destination cache).
    pub(crate) dispatcher: dispatcher::DispatcherState,
    /// Executor state (running processes, for cancel).
    pub(crate) executor: executor::ExecutorState,
    /// Wakes the dispatcher when deliveries were created.
    pub(crate) deliveries_ready: Notify,
    /// Wakes the executor when jobs were queued.
    pub(crate) jobs_ready: Notify,
    /// `true` once shutdown began.
    pub(crate) shutdown: watch::Sender<bool>,
}

/// The running loops; [`EngineTasks::shutdown`] stops them gracefully.
pub struct EngineTasks {
    engine: Arc<Engine>,
    handles: Vec<JoinHandle<()>>,
}

impl Engine {
    /// An engine over `store`, delivering with destinations built by `registry`, where jobs
    /// may name `globals`.
    pub fn new(
        store: Arc<dyn Store>,
        registry: Registry,
        globals: Vec<GlobalDestination>,
        settings: EngineSettings,
    ) -> Arc<Engine> {
        let (shutdown, _) = watch::channel(false);
        Arc::new(Engine {
            store,
            planner: DeliveryPlanner::new(registry, globals),
            dispatcher: dispatcher::DispatcherState::new(&settings),
            executor: executor::ExecutorState::new(&settings),
            settings,
            deliveries_ready: Notify::new(),
            jobs_ready: Notify::new(),
            shutdown,
        })
    }

    /// Starts the dispatcher and executor loops.
    pub fn start(self: &Arc<Self>) -> EngineTasks {
        let handles = vec![
            tokio::spawn(dispatcher::run(self.clone())),
            tokio::spawn(executor::run(self.clone())),
        ];
        EngineTasks { engine: self.clone(), handles }
    }

    /// Tells the dispatcher that deliveries were committed (call after the commit).
    pub fn wake_deliveries(&self) {
        self.deliveries_ready.notify_one();
    }

    /// Tells the executor that executable jobs were queued (call after the commit).
    pub fn wake_executor(&self) {
        self.jobs_ready.notify_one();
    }

    /// Kills a running command job's process group, if this node runs it. Returns whether
    /// a process was signalled. The store's status change is the caller's job.
    pub fn kill_job(&self, job_id: i64) -> bool {
        self.executor.kill(job_id)
    }

    /// Every destination key's circuit state, for the API and metrics.
    pub fn circuits(&self) -> Vec<CircuitView> {
        self.dispatcher.circuits()
    }

    /// Whether shutdown has begun.
    pub fn is_shutting_down(&self) -> bool {
        *self.shutdown.borrow()
    }
}

impl EngineTasks {
    /// Stops claiming new work, lets in-flight attempts and jobs finish for up to the grace
    /// period, then releases what is left (its leases return it to the queue).
    pub async fn shutdown(self) {
        let _ = self.engine.shutdown.send(true);
        self.engine.deliveries_ready.notify_waiters();
        self.engine.jobs_ready.notify_waiters();
        for handle in self.handles {
            let _ = handle.await;
        }
    }
}
