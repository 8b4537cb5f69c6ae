//! `outflow webhook sign|verify`: Standard Webhooks signatures for people debugging a
//! receiver.

use std::process::ExitCode;

use outflow_core::signature::{self, DEFAULT_TOLERANCE_SECS};

use crate::cli::{MessageArgs, SignArgs, VerifyArgs};
use crate::input;

fn body(message: &MessageArgs) -> anyhow::Result<bytes::Bytes> {
    input::read_input(message.body.as_deref())
}

/// Prints the `webhook-signature` value.
pub fn sign(args: SignArgs) -> anyhow::Result<ExitCode> {
    let m = &args.message;
    let body = body(m)?;
    println!("{}", signature::sign(&m.secret, &m.id, m.timestamp, &body)?);
    Ok(ExitCode::SUCCESS)
}

/// Verifies a signature header; prints `valid` or the reason it is not.
pub fn verify(args: VerifyArgs) -> anyhow::Result<ExitCode> {
    let m = &args.message;
    let body = body(m)?;
    let tolerance = (!args.no_tolerance).then_some(DEFAULT_TOLERANCE_SECS);
    let now = chrono::Utc::now().timestamp();
    match signature::verify(&m.secret, &m.id, m.timestamp, &body, &args.signature, now, tolerance) {
        Ok(()) => {
            println!("valid");
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            let hint = match e {
                signature::SignatureError::Timestamp { .. } => {
                    " (pass --no-tolerance to ignore the time window)"
                }
                _ => "",
            };
            eprintln!("invalid: {e}{hint}");
            Ok(ExitCode::FAILURE)
        }
    }
}
