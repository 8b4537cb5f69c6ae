//! `outflow chaos disk-full`: the data dir on a small tmpfs. Submissions must get a clear
//! 507 (or 503) once it is full, nothing already acknowledged may be corrupted, and service
//! must resume once the tmpfs grows again.
//!
//! Mounting a tmpfs needs root (CAP_SYS_ADMIN); without it the scenario exits 2 and says
//! so. The mount is undone by a guard, so an error half-way never leaves it behind.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::Duration;

use anyhow::{Context, bail};
use outflow_client::{Client, ClientError};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::bench::Report;
use crate::bench::harness::ChildServer;
use crate::cli::ChaosDiskFullArgs;

/// Size of each job's output: large enough to fill a 16 MiB tmpfs in a few hundred jobs.
const OUTPUT_BYTES: usize = 64 * 1024;
/// A bound on the fill loop, in case the store never reports full (e.g. it compresses).
const MAX_JOBS: u64 = 100_000;
/// Jobs submitted after the tmpfs grows, to show service resumed.
const JOBS_AFTER_RESUME: u64 = 5;

/// What the run saw, turned into the verdict by [`failures`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// Jobs acknowledged (POST and PUT both 2xx) before the first failure.
    pub acknowledged_before_full: usize,
    /// The HTTP status of the first failed submission; `None` when none failed.
    pub first_failure_status: Option<u16>,
    /// Acknowledged outputs that did not read back byte-identical.
    pub corrupted: usize,
    /// The status `/readyz` answered while the disk was full (reported, not judged: a
    /// server may fairly call itself unready then; not answering at all fails the run).
    pub readyz_while_full: u16,
    /// Jobs acknowledged (and read back intact) after the tmpfs grew.
    pub acknowledged_after_resume: usize,
}

/// The broken invariants of `o` (empty when all held).
pub fn failures(o: &Outcome) -> Vec<String> {
    let mut f = Vec::new();
    match o.first_failure_status {
        None => {
            f.push(format!("no submission failed after {MAX_JOBS} jobs: the tmpfs never filled up"))
        }
        Some(507 | 503) => {}
        Some(s) => f.push(format!(
            "the first failed submission got HTTP {s}; a full disk must answer 507 (or 503)"
        )),
    }
    if o.acknowledged_before_full == 0 {
        f.push(
            "no submission was acknowledged before the disk filled: --size-mib too small?".into(),
        );
    }
    if o.corrupted > 0 {
        f.push(format!("{} acknowledged outputs did not read back byte-identical", o.corrupted));
    }
    if (o.acknowledged_after_resume as u64) < JOBS_AFTER_RESUME {
        f.push(format!(
            "only {} of {JOBS_AFTER_RESUME} submissions were acknowledged after space returned",
            o.acknowledged_after_resume
        ));
    }
    f
}

/// The output of job `n`: a JSON object of exactly [`OUTPUT_BYTES`] bytes whose content
/// depends on `n`, so an output read back from the wrong job or a torn write shows.
pub fn output_for(n: u64) -> Vec<u8> {
    let head = format!("{{\"n\":{n},\"pad\":\"");
    let tail = "\"}";
    let pad = OUTPUT_BYTES - head.len() - tail.len();
    let mut out = head.into_bytes();
    // Letters only, so the padding needs no JSON escaping.
    out.extend((0..pad as u64).map(|i| b'a' + ((i.wrapping_mul(31) ^ n) % 26) as u8));
    out.extend_from_slice(tail.as_bytes());
    out
}

/// Runs the scenario. `Ok(Err(code))` is a usage-level stop (no root) with its exit code.
pub async fn run(
    args: &ChaosDiskFullArgs,
) -> anyhow::Result<Result<(Report, Vec<String>), ExitCode>> {
    let mount_point = tempfile::tempdir().context("cannot create the tmpfs mount point")?;
    let tmpfs = match Tmpfs::mount(mount_point.path(), args.size_mib) {
        Ok(t) => t,
        Err(e) => {
            eprintln!(
                "error: chaos disk-full needs root (CAP_SYS_ADMIN) to mount a tmpfs on {}: {e:#}",
                mount_point.path().display()
            );
            return Ok(Err(ExitCode::from(2)));
        }
    };
    let data = tmpfs.path.join("data");
    // Declared after the guard so it is dropped (killed) before the tmpfs is unmounted.
    let server =
        ChildServer::start(json!({"storage": {"path": data.display().to_string()}})).await?;
    let client = &server.client;

    let mut acked: Vec<(String, u64)> = Vec::new();
    let mut first_failure: Option<(u16, Value)> = None;
    let mut n = 0;
    while n < MAX_JOBS {
        n += 1;
        match submit(client, n).await {
            Ok(id) => acked.push((id, n)),
            Err(ClientError::Http { status, body }) => {
                first_failure = Some((status.as_u16(), body));
                break;
            }
            Err(e) => bail!("submission {n} failed without an HTTP answer: {e}"),
        }
    }
    let acknowledged_before_full = acked.len();
    match &first_failure {
        Some((status, body)) => eprintln!(
            "chaos disk-full: submission {n} failed with HTTP {status}: {}",
            serde_json::to_string(body)?
        ),
        None => eprintln!("chaos disk-full: no submission failed in {MAX_JOBS} jobs"),
    }

    let readyz_while_full = readyz(client).await?;
    let corrupted = count_corrupted(client, &acked).await;

    tmpfs.resize(args.size_mib * 4)?;
    let mut after = Vec::new();
    for _ in 0..JOBS_AFTER_RESUME {
        n += 1;
        match submit(client, n).await {
            Ok(id) => after.push((id, n)),
            Err(e) => eprintln!("chaos disk-full: submission {n} after resize failed: {e}"),
        }
    }
    let corrupted_after = count_corrupted(client, &after).await;
    let outcome = Outcome {
        acknowledged_before_full,
        first_failure_status: first_failure.as_ref().map(|(s, _)| *s),
        corrupted: corrupted + corrupted_after,
        readyz_while_full,
        acknowledged_after_resume: after.len() - corrupted_after,
    };
    drop(server);
    drop(tmpfs);

    let mut report = Report::new("disk-full");
    report.add("size", args.size_mib as f64, "MiB");
    report.add("acknowledged_before_full", outcome.acknowledged_before_full as f64, "count");
    report.add(
        "first_failure_status",
        outcome.first_failure_status.map_or(0.0, f64::from),
        "status",
    );
    report.add("corrupted", outcome.corrupted as f64, "count");
    report.add("readyz_status_while_full", f64::from(outcome.readyz_while_full), "status");
    let resumed = outcome.acknowledged_after_resume as u64 >= JOBS_AFTER_RESUME;
    report.add("resumed_after_space", f64::from(u8::from(resumed)), "bool");
    report.add("acknowledged_after_resume", outcome.acknowledged_after_resume as f64, "count");
    Ok(Ok((report, failures(&outcome))))
}

/// Submits job `n` with its output; returns the job id once both calls were answered 2xx.
async fn submit(client: &Client, n: u64) -> Result<String, ClientError> {
    let (job, _) = client.submit_job(&json!({"input_data": {"n": n}})).await?;
    let id = job["id"].to_string();
    client.put_output(&id, "application/json", output_for(n).into()).await?;
    Ok(id)
}

/// Reads every acknowledged output back; counts those that are missing or differ.
async fn count_corrupted(client: &Client, acked: &[(String, u64)]) -> usize {
    let mut corrupted = 0;
    for (id, n) in acked {
        match client.job_output(id, None).await {
            Ok(body) if body.bytes[..] == output_for(*n)[..] => {}
            Ok(body) => {
                eprintln!("chaos disk-full: job {id}: output differs ({} bytes)", body.bytes.len());
                corrupted += 1;
            }
            Err(e) => {
                eprintln!("chaos disk-full: job {id}: output unreadable: {e}");
                corrupted += 1;
            }
        }
    }
    corrupted
}

/// The status `GET /readyz` answers. A raw request, because the client has no call for it.
async fn readyz(client: &Client) -> anyhow::Result<u16> {
    let host = client.base().host_str().context("server URL has no host")?.to_string();
    let port = client.base().port_or_known_default().context("server URL has no port")?;
    let mut stream = tokio::net::TcpStream::connect((host.as_str(), port)).await?;
    let request =
        format!("GET /readyz HTTP/1.1\r\nHost: {host}:{port}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await?;
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut answer))
        .await
        .context("/readyz did not answer within 10 s")??;
    let text = String::from_utf8_lossy(&answer);
    // The status line: `HTTP/1.1 200 OK`.
    let status = text.split_whitespace().nth(1).and_then(|s| s.parse().ok());
    let status = status.with_context(|| {
        format!("/readyz answered no HTTP status line: {:?}", text.lines().next())
    })?;
    if status != 200 {
        eprintln!("chaos disk-full: /readyz answered {}", text.lines().next().unwrap_or(""));
    }
    Ok(status)
}

/// A mounted tmpfs; unmounted on drop.
struct Tmpfs {
    path: PathBuf,
}

impl Tmpfs {
    fn mount(path: &Path, size_mib: u64) -> anyhow::Result<Tmpfs> {
        run_mount(&["-t", "tmpfs", "-o", &format!("size={size_mib}m"), "tmpfs"], path)?;
        Ok(Tmpfs { path: path.to_path_buf() })
    }

    /// Grows (or shrinks) the mounted tmpfs in place; its files stay.
    fn resize(&self, size_mib: u64) -> anyhow::Result<()> {
        run_mount(&["-o", &format!("remount,size={size_mib}m")], &self.path)
    }
}

fn run_mount(args: &[&str], path: &Path) -> anyhow::Result<()> {
    let out = Command::new("mount").args(args).arg(path).output().context("cannot run mount")?;
    if !out.status.success() {
        bail!("mount {} failed: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(())
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let ok = Command::new("umount").arg(&self.path).status().is_ok_and(|s| s.success());
        if !ok {
            // Something still holds a file open: detach lazily rather than leak the mount.
            let _ = Command::new("umount").arg("-l").arg(&self.path).status();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outputs_are_sized_valid_json_and_differ_per_job() {
        let a = output_for(7);
        assert_eq!(a.len(), OUTPUT_BYTES);
        let v: Value = serde_json::from_slice(&a).unwrap();
        assert_eq!(v["n"], 7);
        assert_eq!(output_for(7), a);
        assert_ne!(output_for(8), a);
        assert_eq!(output_for(123_456).len(), OUTPUT_BYTES);
    }

    fn good() -> Outcome {
        Outcome {
            acknowledged_before_full: 200,
            first_failure_status: Some(507),
            corrupted: 0,
            readyz_while_full: 200,
            acknowledged_after_resume: JOBS_AFTER_RESUME as usize,
        }
    }

    #[test]
    fn a_clean_run_has_no_failures() {
        assert_eq!(failures(&good()), Vec::<String>::new());
        assert_eq!(failures(&Outcome { first_failure_status: Some(503), ..good() }).len(), 0);
    }

    #[test]
    fn each_broken_invariant_is_named() {
        let f = failures(&Outcome { first_failure_status: Some(500), ..good() });
        assert_eq!(
            f,
            ["the first failed submission got HTTP 500; a full disk must answer 507 (or 503)"]
        );
        let f = failures(&Outcome { corrupted: 2, acknowledged_after_resume: 1, ..good() });
        assert_eq!(
            f,
            [
                "2 acknowledged outputs did not read back byte-identical",
                "only 1 of 5 submissions were acknowledged after space returned"
            ]
        );
        let f = failures(&Outcome { first_failure_status: None, ..good() });
        assert_eq!(f, ["no submission failed after 100000 jobs: the tmpfs never filled up"]);
    }
}
