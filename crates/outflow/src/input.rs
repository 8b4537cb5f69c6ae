//! Reading the output to deliver (a file or stdin), with a progress bar for large inputs.

use std::io::{IsTerminal, Read};
use std::path::Path;

use anyhow::Context;
use bytes::Bytes;
use indicatif::{ProgressBar, ProgressStyle};

/// Inputs larger than this show a progress bar (when stderr is a terminal).
const PROGRESS_THRESHOLD: u64 = 16 * 1024 * 1024;

/// Reads all of `path` (or stdin for `None`/`-`).
pub fn read_input(path: Option<&Path>) -> anyhow::Result<Bytes> {
    let (reader, size, label): (Box<dyn Read>, Option<u64>, String) = match path {
        None => (Box::new(std::io::stdin().lock()), None, "stdin".into()),
        Some(p) if p == Path::new("-") => (Box::new(std::io::stdin().lock()), None, "stdin".into()),
        Some(p) => {
            let file = std::fs::File::open(p)
                .with_context(|| format!("cannot open input file {}", p.display()))?;
            let size = file.metadata().ok().map(|m| m.len());
            (Box::new(file), size, p.display().to_string())
        }
    };
    read_with_progress(reader, size, &label)
}

fn read_with_progress(
    mut reader: Box<dyn Read>,
    size: Option<u64>,
    label: &str,
) -> anyhow::Result<Bytes> {
    let show = std::io::stderr().is_terminal() && size.is_none_or(|s| s > PROGRESS_THRESHOLD);
    let mut buf = Vec::with_capacity(size.unwrap_or(64 * 1024) as usize);
    if !show {
        reader.read_to_end(&mut buf).with_context(|| format!("cannot read {label}"))?;
        return Ok(Bytes::from(buf));
    }
    let bar = match size {
        Some(total) => ProgressBar::new(total).with_style(
            ProgressStyle::with_template(
                "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
            )
            .expect("valid template")
            .progress_chars("=> "),
        ),
        None => ProgressBar::new_spinner().with_style(
            ProgressStyle::with_template("{spinner} {msg} {bytes} {bytes_per_sec}")
                .expect("valid template"),
        ),
    };
    bar.set_message(format!("reading {label}"));
    let mut chunk = vec![0u8; 1024 * 1024];
    let mut shown_spinner = false;
    loop {
        let n = reader.read(&mut chunk).with_context(|| format!("cannot read {label}"))?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
        bar.inc(n as u64);
        // Stdin of unknown size: only bother the user once it is actually large.
        if size.is_none() && !shown_spinner && buf.len() as u64 > PROGRESS_THRESHOLD {
            shown_spinner = true;
        }
        if size.is_none() && !shown_spinner {
            bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
        } else if size.is_none() {
            bar.set_draw_target(indicatif::ProgressDrawTarget::stderr());
        }
    }
    bar.finish_and_clear();
    Ok(Bytes::from(buf))
}
