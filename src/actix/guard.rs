//! A routing guard for QStash traffic. **Not a security boundary.**

use std::time::SystemTime;

use actix_web::guard::{Guard, GuardContext};

use super::Head;
use crate::Receiver;

/// Matches requests whose `Upstash-Signature` token verifies on everything **but the body**: the
/// MAC (current or next key, or the keys of the first `Upstash-Region`, as the receiver picks
/// them: see [`REGION_HEADER`](crate::REGION_HEADER)), the algorithm, the issuer, the time
/// window and the expected URL of the [`Receiver`]'s [`UrlPolicy`](crate::UrlPolicy).
///
/// # This is a routing aid, not the security boundary
///
/// actix-web guards are synchronous and never see the body, and a failing guard only means "no
/// match" (usually a 404, or another route). A request that matches this guard may still carry a
/// **tampered body**: a token captured from a real delivery passes the guard with any body.
/// The body check happens only in [`QStashMiddleware`](super::QStashMiddleware) or
/// [`Verified<T>`](super::Verified): always put one of them on the guarded route too.
///
/// Use it to split one path between QStash deliveries and other callers:
///
/// ```
/// # #[cfg(feature = "test-utils")] {
/// use actix_web::{App, HttpResponse, test, web};
/// use qstash_receiver::actix::{QStashGuard, QStashMiddleware};
/// use qstash_receiver::{Receiver, SigningKeys, Verifier};
/// # use qstash_receiver::test_utils::Signer;
///
/// # actix_web::rt::System::new().block_on(async {
/// let receiver = Receiver::new(Verifier::new(SigningKeys::new("sig_current", "sig_next")?))
///     .expected_url("https://app.example.com/hooks");
///
/// let app = test::init_service(
///     App::new()
///         // QStash traffic: guard to route, middleware to verify the body.
///         .service(
///             web::resource("/hooks")
///                 .guard(QStashGuard::new(receiver.clone()))
///                 .wrap(QStashMiddleware::new(receiver))
///                 .route(web::post().to(|| async { HttpResponse::Ok().body("qstash") })),
///         )
///         // Everyone else.
///         .route("/hooks", web::post().to(|| async { HttpResponse::Ok().body("other") })),
/// )
/// .await;
///
/// let body = b"hello";
/// let delivery = Signer::new("sig_current").delivery("https://app.example.com/hooks", body);
/// let mut req = test::TestRequest::post().uri("/hooks").set_payload(&body[..]);
/// for (name, value) in &delivery.headers {
///     req = req.insert_header((name.as_str(), value.as_str()));
/// }
/// assert_eq!(test::call_and_read_body(&app, req.to_request()).await, "qstash");
///
/// let req = test::TestRequest::post().uri("/hooks").set_payload("hi").to_request();
/// assert_eq!(test::call_and_read_body(&app, req).await, "other");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// # }).unwrap();
/// # }
/// ```
///
/// The guard cannot see the server's TLS setting: for
/// [`UrlPolicy::trust_forwarded_headers`](crate::UrlPolicy::trust_forwarded_headers) the scheme comes from `X-Forwarded-Proto`, the
/// request URI, or the policy's default scheme. A misconfigured policy matches nothing (logged
/// as an error for requests whose token verified; other misses at `debug`).
#[derive(Debug, Clone)]
pub struct QStashGuard {
    receiver: Receiver,
}

impl QStashGuard {
    /// A guard checking tokens with `receiver`'s verifier and URL policy.
    #[must_use]
    pub fn new(receiver: Receiver) -> Self {
        Self { receiver }
    }
}

impl Guard for QStashGuard {
    fn check(&self, ctx: &GuardContext<'_>) -> bool {
        let head = ctx.head();
        // The receiver's own reading of the head: one signature, the first `Upstash-Region`;
        // the guard cannot see the server's TLS setting.
        let head = Head {
            method: &head.method,
            uri: &head.uri,
            headers: &head.headers,
            secure: None,
        };
        match crate::head::check_token(&self.receiver, &head, SystemTime::now()) {
            Ok(_) => true,
            Err(rejection) => {
                crate::log::guard_miss(&rejection, super::message_id(head.headers));
                false
            }
        }
    }
}
