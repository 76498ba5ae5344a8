//! Window operator throughput (filled in below).
fn main() {}
