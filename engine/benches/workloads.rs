//! Placeholder until the workloads benchmark lands.
fn main() {}
