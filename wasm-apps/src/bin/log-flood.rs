//! Writes N numbered lines (first argument, default 100000) to stdout as fast as it can, then exits.

use std::io::Write;

fn main() {
    let n: u64 = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(100_000);
    let mut out = std::io::stdout().lock();
    for i in 0..n {
        let _ = writeln!(out, "line {i} of a flood of log output");
    }
}
