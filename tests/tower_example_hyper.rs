//! examples/tower_hyper.rs runs its self-check: a plain hyper server with the layer, one signed
//! and one bad delivery over loopback.
#![cfg(all(feature = "tower", feature = "test-utils"))]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::Command;

mod common;
use common::example_binary;

#[test]
fn self_test_passes() {
    let path = example_binary("tower_hyper");
    let output = Command::new(&path).arg("--self-test").output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("signed delivery: 200"), "{stdout}");
    assert!(stdout.contains(r#""bytes":20"#), "{stdout}");
    assert!(stdout.contains("bad delivery:    401"), "{stdout}");
    assert!(stdout.contains("invalid_signature"), "{stdout}");
    assert!(stdout.contains("self-test passed"), "{stdout}");
}
