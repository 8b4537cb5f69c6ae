//! A child `outflow serve` on 127.0.0.1 with a temporary data dir, and its resource usage.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use outflow_client::Client;
use serde_json::Value;

/// A running `outflow serve` child process; killed when dropped.
pub struct ChildServer {
    child: Child,
    /// A client for it.
    pub client: Client,
    /// The temporary directory holding its config and data (removed on drop).
    pub dir: tempfile::TempDir,
    /// The config file it was started with; [`ChildServer::restart`] reuses it, so a restart
    /// listens on the same port and opens the same data dir.
    config_path: PathBuf,
}

impl ChildServer {
    /// Writes `config` (with `server.listen` filled in, and `storage.path` too unless the
    /// config sets it) and starts `outflow serve` on a free port, waiting until `/healthz`
    /// answers.
    pub async fn start(mut config: Value) -> anyhow::Result<ChildServer> {
        let dir = tempfile::tempdir().context("cannot create a temporary directory")?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        config["server"]["listen"] = Value::String(format!("127.0.0.1:{port}"));
        if config["storage"]["path"].is_null() {
            config["storage"]["path"] =
                Value::String(dir.path().join("data").display().to_string());
        }
        let config_path = dir.path().join("outflow.yaml");
        std::fs::write(&config_path, serde_json::to_vec_pretty(&config)?)?;
        let child = spawn(&config_path)?;
        let client = Client::new(&format!("http://127.0.0.1:{port}"))?;
        let server = ChildServer { child, client, dir, config_path };
        server.wait_healthy().await?;
        Ok(server)
    }

    /// Kills the child with SIGKILL (no graceful shutdown: a crash) and reaps it.
    pub fn kill9(&mut self) -> anyhow::Result<()> {
        self.child.kill().context("cannot SIGKILL outflow serve")?;
        self.child.wait().context("cannot reap outflow serve")?;
        Ok(())
    }

    /// Starts the server again on the same config, port and data dir (after [`Self::kill9`]),
    /// waiting until `/healthz` answers.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        // Reap a child still running so a restart never leaves two servers on one data dir.
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.child = spawn(&self.config_path)?;
        self.wait_healthy().await
    }

    async fn wait_healthy(&self) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.client.health().await.is_err() {
            if Instant::now() > deadline {
                bail!("outflow serve did not answer /healthz within 30 s");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(())
    }

    /// A directory inside the temporary dir, created.
    pub fn subdir(&self, name: &str) -> anyhow::Result<PathBuf> {
        let p = self.dir.path().join(name);
        std::fs::create_dir_all(&p)?;
        Ok(p)
    }

    /// The child's peak RSS and CPU time so far.
    pub fn resources(&self) -> anyhow::Result<Resources> {
        Resources::of(self.child.id())
    }
}

/// Spawns `outflow serve --config <config_path>` from this very binary.
fn spawn(config_path: &Path) -> anyhow::Result<Child> {
    let exe = std::env::current_exe().context("cannot find the outflow binary")?;
    Command::new(exe)
        .args(["serve", "--config"])
        .arg(config_path)
        // The server's own log level: quiet unless OUTFLOW_BENCH_SERVER_LOG asks.
        .env(
            "OUTFLOW_LOG_LEVEL",
            std::env::var("OUTFLOW_BENCH_SERVER_LOG").unwrap_or_else(|_| "error".into()),
        )
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .context("cannot start outflow serve")
}

impl Drop for ChildServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A process's peak resident memory and CPU time, from `/proc`.
#[derive(Debug, Clone, Copy)]
pub struct Resources {
    /// `VmHWM`, in MiB.
    pub peak_rss_mib: f64,
    /// User + system CPU time, in seconds.
    pub cpu_seconds: f64,
}

impl Resources {
    /// Reads `/proc/<pid>/status` and `/proc/<pid>/stat`.
    pub fn of(pid: u32) -> anyhow::Result<Resources> {
        let proc = Path::new("/proc").join(pid.to_string());
        let status = std::fs::read_to_string(proc.join("status"))?;
        let hwm_kib: f64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .context("no VmHWM in /proc status")?;
        let stat = std::fs::read_to_string(proc.join("stat"))?;
        // Fields after the `(comm)`, which may itself contain spaces.
        let after = stat.rsplit_once(')').map(|(_, rest)| rest).context("malformed /proc stat")?;
        let fields: Vec<&str> = after.split_whitespace().collect();
        // utime and stime are fields 14 and 15 of stat (11 and 12 after the comm).
        let ticks: f64 = fields[11].parse::<f64>()? + fields[12].parse::<f64>()?;
        // SAFETY: sysconf has no preconditions.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
        Ok(Resources { peak_rss_mib: hwm_kib / 1024.0, cpu_seconds: ticks / hz })
    }
}

/// Adds the server's resource figures to a report.
pub fn add_resources(report: &mut super::Report, r: Resources) {
    report.add("server_peak_rss", r.peak_rss_mib, "MiB");
    report.add("server_cpu_time", r.cpu_seconds, "s");
}
