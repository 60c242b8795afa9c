//! examples/demo.rs (the README's run command), run through its own code: its in-process axum
//! receiver on a loopback port, every delivery it sends over real HTTP, and its report.
#![cfg(all(feature = "axum", feature = "test-utils"))]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "../examples/demo.rs"]
#[allow(dead_code)]
mod demo;

#[tokio::test]
async fn demo_reports_each_delivery() {
    let mut out = Vec::new();
    let runs = demo::demo(&mut out).await.unwrap();
    let stdout = String::from_utf8(out).unwrap();
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
    // The handler's own count: the two accepted deliveries, not the duplicate.
    assert_eq!(runs, 2);
    // The retry (attempt 1) of the first message never reached the handler.
    assert!(!stdout.contains("(attempt 1)"), "{stdout}");
}
