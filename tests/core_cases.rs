//! The shared table of deliveries, run through the framework-free `Receiver` steps: the
//! reference every adapter's answers are compared with.
#![cfg(feature = "test-utils")]
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod common;

use std::time::SystemTime;

use qstash_receiver::{Rejection, RequestTarget};

fn answer(case: &common::Case) -> Result<Vec<u8>, Rejection> {
    let receiver = common::receiver();
    let headers = case.headers.iter().map(|(n, v)| (n.as_str(), v.as_bytes()));
    let (token, _delivery) =
        receiver.check_request(headers, &RequestTarget::new(case.path), SystemTime::now())?;
    receiver.check_content_length(Some(case.body.len() as u64))?;
    receiver.check_body(token, &case.body)?;
    Ok(case.body.clone())
}

#[test]
fn every_case_gets_its_answer_from_the_core() {
    let cases = common::cases();
    assert!(cases.len() >= 14);
    for case in &cases {
        match (answer(case), case.code) {
            (Ok(echo), None) => {
                assert_eq!(case.status, 200, "{}", case.name);
                assert_eq!(echo, case.body, "{}", case.name);
            }
            (Err(rejection), Some(code)) => {
                assert_eq!(
                    rejection.status(),
                    case.status,
                    "{}: {rejection}",
                    case.name
                );
                assert_eq!(rejection.code(), code, "{}: {rejection}", case.name);
                let json: serde_json::Value = serde_json::from_str(&rejection.json_body()).unwrap();
                assert_eq!(json["error"], code, "{}", case.name);
            }
            (got, _) => panic!("{}: expected {:?}, got {got:?}", case.name, case.code),
        }
    }
}
