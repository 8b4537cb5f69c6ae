//! Running one command: spawn it in its own process group, feed stdin, collect stdout and
//! the tail of stderr, and end it on timeout, cancel or shutdown.

use std::process::{ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, Command};
use tokio::sync::Notify;

use super::spec::CommandSpec;

/// Why the executor ended a command early (a timeout is decided by the run itself).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum KillReason {
    /// The job was cancelled.
    Cancel,
    /// The node is shutting down and the grace period ran out.
    Shutdown,
    /// The store no longer has this node running the job (cancelled, deleted, or claimed
    /// again after its lease expired): another run, if any, owns the result.
    LeaseLost,
}

/// The handle through which the executor asks a running job's command to stop.
#[derive(Debug, Default)]
pub(crate) struct JobControl {
    reason: Mutex<Option<KillReason>>,
    wake: Notify,
}

impl JobControl {
    /// Asks the command to die; the first reason given wins (a cancel stays a cancel when
    /// shutdown follows).
    pub(crate) fn kill(&self, reason: KillReason) {
        let mut current = self.reason.lock().unwrap_or_else(|e| e.into_inner());
        current.get_or_insert(reason);
        drop(current);
        // notify_one keeps a permit, so a kill that arrives before the process is spawned
        // is seen as soon as the run starts waiting.
        self.wake.notify_one();
    }

    fn reason(&self) -> Option<KillReason> {
        *self.reason.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// How a command ended.
#[derive(Debug)]
pub(crate) enum End {
    /// It exited by itself (or was killed by someone else's signal).
    Exited(ExitStatus),
    /// It ran past its timeout and its process group was killed.
    TimedOut(Duration),
    /// It wrote more than this many bytes to stdout and its process group was killed.
    OutputTooLarge(usize),
    /// The executor killed it.
    Killed(KillReason),
    /// It could not be started (or waited for): the message says why, naming the command.
    StartFailed(String),
}

/// What a run produced.
#[derive(Debug)]
pub(crate) struct RunOutcome {
    /// How it ended.
    pub end: End,
    /// Everything it wrote to stdout (at most the output limit).
    pub stdout: Vec<u8>,
    /// The end of its stderr (at most the limit, plus a truncation note), `None` when empty.
    pub log: Option<String>,
}

impl RunOutcome {
    fn start_failed(message: String) -> Self {
        RunOutcome { end: End::StartFailed(message), stdout: Vec::new(), log: None }
    }
}

/// Runs `spec` with `input` on stdin. The command gets its own process group so that a
/// timeout or kill reaches everything it started; when the command exits, whatever it left
/// running in its group is killed too, because those processes would hold the output pipes
/// open and escape the job's timeout and cancel. Stdout past `max_output` bytes kills the
/// group: the output is held in memory and stored as one value, so it must be bounded.
pub(crate) async fn run(
    spec: &CommandSpec,
    input: Vec<u8>,
    stderr_limit: usize,
    max_output: usize,
    control: &Arc<JobControl>,
) -> RunOutcome {
    if let Some(dir) = &spec.working_dir
        && !dir.is_dir()
    {
        // Spawning would report ENOENT, which reads as if the command were missing.
        return RunOutcome::start_failed(format!(
            "cannot start command '{}': working_dir '{}' is not an existing directory",
            spec.command,
            dir.display()
        ));
    }
    if let Some(reason) = control.reason() {
        return RunOutcome { end: End::Killed(reason), stdout: Vec::new(), log: None };
    }

    let mut cmd = Command::new(&spec.command);
    cmd.args(&spec.args)
        .envs(spec.env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    if let Some(dir) = &spec.working_dir {
        cmd.current_dir(dir);
    }
    #[cfg(unix)]
    cmd.process_group(0);

    let mut child = match cmd.spawn() {
        Ok(child) => child,
        Err(e) => {
            return RunOutcome::start_failed(format!(
                "cannot start command '{}': {e}",
                spec.command
            ));
        }
    };
    let pid = child.id();

    let stdin = child.stdin.take();
    let writer = tokio::spawn(async move {
        if let Some(mut stdin) = stdin {
            // A command that does not read its input closes the pipe early: not an error.
            let _ = stdin.write_all(&input).await;
            let _ = stdin.shutdown().await;
        }
    });
    let stdout_buf = Arc::new(Mutex::new(Vec::new()));
    let overflow = Arc::new(Overflow::default());
    let reader = child.stdout.take().map(|out| {
        tokio::spawn(read_capped(out, max_output, stdout_buf.clone(), overflow.clone()))
    });
    let stderr_buf = Arc::new(Mutex::new(Tail::default()));
    let tail = child
        .stderr
        .take()
        .map(|err| tokio::spawn(read_tail(err, stderr_limit, stderr_buf.clone())));

    let timeout = async {
        match spec.timeout {
            Some(t) => tokio::time::sleep(t).await,
            None => std::future::pending().await,
        }
    };
    let end = tokio::select! {
        status = child.wait() => match status {
            Ok(status) => End::Exited(status),
            Err(e) => End::StartFailed(format!("waiting for command '{}' failed: {e}", spec.command)),
        },
        () = timeout => {
            kill_group(&mut child, pid);
            let _ = child.wait().await;
            End::TimedOut(spec.timeout.unwrap_or_default())
        }
        () = control.wake.notified() => {
            kill_group(&mut child, pid);
            let _ = child.wait().await;
            End::Killed(control.reason().unwrap_or(KillReason::Cancel))
        }
        () = overflow.wake.notified() => {
            kill_group(&mut child, pid);
            let _ = child.wait().await;
            End::OutputTooLarge(max_output)
        }
    };
    // Leftovers in the group (e.g. `sleep 30 &`) would keep the pipes open. The group id
    // stays reserved while any member lives, so this only reaches the job's own processes.
    kill_group(&mut child, pid);

    writer.abort();
    // A process that left the group (setsid) may still hold a pipe: keep what was read.
    for mut task in [reader, tail].into_iter().flatten() {
        if tokio::time::timeout(PIPE_DRAIN, &mut task).await.is_err() {
            task.abort();
            tracing::warn!(
                command = %spec.command,
                "an output pipe stayed open after the command ended; reading stopped"
            );
        }
    }
    // The command may have exited (or timed out) in the same instant its output overflowed:
    // a cut output must never pass for a whole one.
    let end = match end {
        End::Exited(_) | End::TimedOut(_) if overflow.exceeded.load(Ordering::SeqCst) => {
            End::OutputTooLarge(max_output)
        }
        end => end,
    };
    let stdout = std::mem::take(&mut *lock(&stdout_buf));
    let tail = std::mem::take(&mut *lock(&stderr_buf));
    RunOutcome { end, stdout, log: render_log(&tail.bytes, tail.total) }
}

/// How long pipes may stay open after the command ended (held by a process that escaped
/// the group) before reading stops.
const PIPE_DRAIN: Duration = Duration::from_secs(5);

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// SIGKILL to the whole process group on unix; the child alone elsewhere.
fn kill_group(child: &mut Child, pid: Option<u32>) {
    #[cfg(unix)]
    if let Some(pid) = pid.and_then(|p| i32::try_from(p).ok()) {
        // SAFETY: killpg only sends a signal; ESRCH (group already gone) is expected and
        // harmless.
        unsafe {
            libc::killpg(pid, libc::SIGKILL);
        }
        return;
    }
    let _ = pid;
    let _ = child.start_kill();
}

/// Set (and woken) when stdout went past its limit.
#[derive(Debug, Default)]
struct Overflow {
    exceeded: AtomicBool,
    wake: Notify,
}

/// Appends what `r` yields to `buf`, up to `limit` bytes; one byte more sets `overflow` and
/// stops reading.
async fn read_capped(
    mut r: impl AsyncRead + Unpin,
    limit: usize,
    buf: Arc<Mutex<Vec<u8>>>,
    overflow: Arc<Overflow>,
) {
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        let n = match r.read(&mut chunk).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let mut out = lock(&buf);
        if out.len() + n > limit {
            let room = limit - out.len();
            out.extend_from_slice(&chunk[..room]);
            drop(out);
            overflow.exceeded.store(true, Ordering::SeqCst);
            // notify_one keeps a permit: seen even if the run is not waiting yet.
            overflow.wake.notify_one();
            break;
        }
        out.extend_from_slice(&chunk[..n]);
    }
}

/// The last bytes of a stream and how many it had in all.
#[derive(Debug, Default)]
struct Tail {
    bytes: Vec<u8>,
    total: u64,
}

/// Reads `r` to the end into `tail`, keeping only the last `limit` bytes.
async fn read_tail(mut r: impl AsyncRead + Unpin, limit: usize, tail: Arc<Mutex<Tail>>) {
    let mut chunk = vec![0u8; 8192];
    loop {
        let n = match r.read(&mut chunk).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let mut t = lock(&tail);
        t.total += n as u64;
        let keep = n.min(limit);
        t.bytes.extend_from_slice(&chunk[n - keep..n]);
        // Trim only once the buffer is well past the limit, so a chatty command costs one
        // copy per `limit` bytes rather than one per chunk.
        if t.bytes.len() > limit.saturating_mul(2).max(limit + chunk.len()) {
            let excess = t.bytes.len() - limit;
            t.bytes.drain(..excess);
        }
    }
    let mut t = lock(&tail);
    if t.bytes.len() > limit {
        let excess = t.bytes.len() - limit;
        t.bytes.drain(..excess);
    }
}

/// The job log: the stderr tail as text, with a note when the start was cut off.
fn render_log(tail: &[u8], total: u64) -> Option<String> {
    if total == 0 {
        return None;
    }
    let dropped = total - tail.len() as u64;
    if dropped == 0 {
        return Some(String::from_utf8_lossy(tail).into_owned());
    }
    // The cut may fall inside a UTF-8 sequence: start at the next character boundary.
    let start = tail.iter().take(3).take_while(|b| (**b & 0xC0) == 0x80).count();
    Some(format!(
        "[stderr truncated: the first {dropped} of {total} bytes were dropped]\n{}",
        String::from_utf8_lossy(&tail[start..])
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn tail_keeps_the_last_bytes() {
        let data: Vec<u8> = (0..50_000u32).map(|i| (i % 251) as u8).collect();
        let tail = Arc::new(Mutex::new(Tail::default()));
        read_tail(&data[..], 1000, tail.clone()).await;
        {
            let t = lock(&tail);
            assert_eq!(t.total, 50_000);
            assert_eq!(t.bytes, &data[49_000..]);
        }
        let tail = Arc::new(Mutex::new(Tail::default()));
        read_tail(&b"short"[..], 1000, tail.clone()).await;
        let t = lock(&tail);
        assert_eq!((t.bytes.as_slice(), t.total), (&b"short"[..], 5));
    }

    #[test]
    fn log_notes_truncation_and_skips_a_split_character() {
        assert_eq!(render_log(b"", 0), None);
        assert_eq!(render_log(b"oops\n", 5).as_deref(), Some("oops\n"));
        // "é" is C3 A9: the tail starts at its second byte.
        assert_eq!(
            render_log(&[0xA9, b'x'], 10).as_deref(),
            Some("[stderr truncated: the first 8 of 10 bytes were dropped]\nx")
        );
    }
}
