//! Placeholder: the verify benchmark lands with the core issue.
fn main() {}
