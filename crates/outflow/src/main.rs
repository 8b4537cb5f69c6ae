//! The `outflow` command line.

fn main() {
    println!("outflow {}", env!("CARGO_PKG_VERSION"));
}
