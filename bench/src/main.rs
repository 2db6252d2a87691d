//! Benchmarks (placeholder until the deploy benchmark lands).
fn main() {}
