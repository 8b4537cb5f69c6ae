//! The output formats: any output (JSON built by `arbitrary`, JSON parsed from bytes, text or
//! binary) rendered as csv, xml, yaml, ndjson, json, json-compact and raw must never panic;
//! a shape a format cannot represent is a `FormatError`.

#![no_main]

use arbitrary::{Arbitrary, Unstructured};
use libfuzzer_sys::fuzz_target;
use outflow_core::context::RenderContext;
use outflow_core::format::OutputFormat;
use outflow_core::output::Output;
use outflow_fuzz::{DELIVERY_ID, fixed_job};
use serde_json::{Map, Number, Value};

/// A JSON value `arbitrary` can build, reaching shapes (odd keys, deep mixes, huge and
/// fractional numbers) that random bytes rarely parse into.
#[derive(Debug, Arbitrary)]
enum ArbValue {
    Null,
    Bool(bool),
    Int(i64),
    Uint(u64),
    Float(f64),
    Str(String),
    Array(Vec<ArbValue>),
    Object(Vec<(String, ArbValue)>),
}

/// Outputs parsed from JSON text nest at most 128 deep (serde_json's limit); stay below it so
/// the target explores shapes real outputs can have rather than stack depth.
const MAX_DEPTH: usize = 100;

fn to_value(v: ArbValue, depth: usize) -> Value {
    if depth > MAX_DEPTH {
        return Value::Null;
    }
    match v {
        ArbValue::Null => Value::Null,
        ArbValue::Bool(b) => Value::Bool(b),
        ArbValue::Int(i) => Value::Number(i.into()),
        ArbValue::Uint(u) => Value::Number(u.into()),
        // NaN and infinities are not JSON: serde_json maps them to null, as parsing would.
        ArbValue::Float(f) => Number::from_f64(f).map_or(Value::Null, Value::Number),
        ArbValue::Str(s) => Value::String(s),
        ArbValue::Array(items) => {
            Value::Array(items.into_iter().map(|i| to_value(i, depth + 1)).collect())
        }
        ArbValue::Object(entries) => Value::Object(
            entries.into_iter().map(|(k, v)| (k, to_value(v, depth + 1))).collect::<Map<_, _>>(),
        ),
    }
}

fn has_float(v: &Value) -> bool {
    match v {
        Value::Number(n) => n.is_f64(),
        Value::Array(items) => items.iter().any(has_float),
        Value::Object(map) => map.values().any(has_float),
        _ => false,
    }
}

const FORMATS: &[OutputFormat] = &[
    OutputFormat::Csv,
    OutputFormat::Xml,
    OutputFormat::Yaml,
    OutputFormat::Ndjson,
    OutputFormat::Json,
    OutputFormat::JsonCompact,
    OutputFormat::Raw,
];

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else { return };
    let output = match mode % 3 {
        // The way `outflow deliver` and the executor see bytes: JSON, else text, else binary.
        0 => Output::detect(bytes::Bytes::copy_from_slice(rest)),
        1 => match ArbValue::arbitrary_take_rest(Unstructured::new(rest)) {
            Ok(v) => Output::Json(to_value(v, 0)),
            Err(_) => return,
        },
        _ => Output::Text(String::from_utf8_lossy(rest).into_owned()),
    };
    let job = fixed_job();
    let ctx = RenderContext::new(&job, &output, DELIVERY_ID);
    for format in FORMATS {
        match format.render(&ctx) {
            Ok(bytes) => {
                if matches!(format, OutputFormat::Json | OutputFormat::JsonCompact)
                    && let Output::Json(v) = &output
                    && !has_float(v)
                {
                    // JSON output must read back as the value it came from (floats excepted:
                    // without serde_json's `float_roundtrip` a parse may differ by one ulp).
                    let back: Value =
                        serde_json::from_slice(&bytes).expect("json renders valid JSON");
                    assert_eq!(&back, v, "json round trip");
                }
            }
            Err(e) => {
                let _ = e.to_string();
            }
        }
    }
});
