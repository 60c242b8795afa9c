//! examples/tower_hyper.rs runs its self-check: a plain hyper server with the layer, one signed
//! and one bad delivery over loopback.
#![cfg(all(feature = "tower", feature = "test-utils"))]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::Command;

/// The example binary `cargo test` builds next to the test binaries; refuses a stale one
/// (`cargo test --test NAME` alone does not rebuild examples).
fn example_binary(name: &str) -> std::path::PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().unwrap().parent().unwrap();
    let path = dir
        .join("examples")
        .join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    let built = std::fs::metadata(&path)
        .and_then(|m| m.modified())
        .unwrap_or_else(|e| panic!("{}: {e}; run `cargo test --all-features`", path.display()));
    let source = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("examples")
        .join(format!("{name}.rs"));
    let edited = std::fs::metadata(&source)
        .and_then(|m| m.modified())
        .unwrap();
    assert!(
        built >= edited,
        "{} is older than its source: run `cargo test --all-features` (or `cargo build --all-features --examples`)",
        path.display()
    );
    path
}

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
