//! examples/demo.rs (the README's run command) runs and reports each delivery as expected.
//! Like every example test, it runs the binary `cargo test` builds next to the test binaries.
#![cfg(all(feature = "axum", feature = "test-utils"))]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::Command;

mod common;
use common::example_binary;

#[test]
fn demo_reports_each_delivery() {
    let path = example_binary("demo");
    let output = Command::new(&path).output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}");
    for expected in [
        "ACCEPTED signed with the current key\n         200 handled 28 bytes",
        "ACCEPTED signed with the next key",
        "REFUSED  body changed after signing\n         401 {\"error\":\"body_mismatch\"",
        "REFUSED  expired token (10 minutes old)\n         401 {\"error\":\"token_expired\"",
        "REFUSED  token signed for another URL (/admin)\n         401 {\"error\":\"url_mismatch\"",
        "REFUSED  signed with an unknown key\n         401 {\"error\":\"invalid_signature\"",
        "REFUSED  no signature at all\n         401 {\"error\":\"missing_signature\"",
        "413 {\"error\":\"payload_too_large\"",
        "DUPLICATE the same message again (QStash delivers at least once)\n         200 {\"duplicate\":true,\"messageId\":\"msg_",
        "The handler ran 2 times",
    ] {
        assert!(
            stdout.contains(expected),
            "missing {expected:?} in:\n{stdout}"
        );
    }
    // The retry (attempt 1) of the first message never reached the handler.
    assert!(!stdout.contains("(attempt 1)"), "{stdout}");
}
