//! stub.
fn main() {}
