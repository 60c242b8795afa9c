//! A routing guard for QStash traffic. **Not a security boundary.**

use std::time::SystemTime;

use actix_web::guard::{Guard, GuardContext};

use super::{Head, message_id};
use crate::Receiver;

/// Matches requests whose `Upstash-Signature` token verifies on everything **but the body**: the
/// MAC (with the keys the [`Receiver`] picks, see [`REGION_HEADER`](crate::REGION_HEADER)), the
/// algorithm, the issuer, the time window and the URL of the receiver's
/// [`UrlPolicy`](crate::UrlPolicy).
///
/// **A routing aid, not the security boundary**: actix-web guards are synchronous and never see
/// the body, so a token captured from a real delivery passes the guard with any body. Always put
/// [`QStashMiddleware`](super::QStashMiddleware) or [`Verified<T>`](super::Verified) on the
/// guarded route too. A failing guard only means "no match" (another route, or a 404).
///
/// ```
/// use actix_web::{App, HttpResponse, web};
/// use qstash_receiver::actix::{QStashGuard, QStashMiddleware};
/// use qstash_receiver::{Receiver, SigningKeys, Verifier};
///
/// # fn main() -> Result<(), qstash_receiver::KeyError> {
/// let receiver = Receiver::new(Verifier::new(SigningKeys::new("sig_current", "sig_next")?))
///     .expected_url("https://app.example.com/hooks");
/// let app = App::new()
///     // QStash traffic: the guard routes, the middleware verifies the body.
///     .service(
///         web::resource("/hooks")
///             .guard(QStashGuard::new(receiver.clone()))
///             .wrap(QStashMiddleware::new(receiver))
///             .route(web::post().to(|| async { HttpResponse::Ok().body("qstash") })),
///     )
///     // Everyone else.
///     .route("/hooks", web::post().to(|| async { HttpResponse::Ok().body("other") }));
/// # let _ = app;
/// # Ok(())
/// # }
/// ```
///
/// The guard cannot see the server's TLS setting: under
/// [`UrlPolicy::trust_forwarded_headers`](crate::UrlPolicy::trust_forwarded_headers) the scheme
/// comes from `X-Forwarded-Proto`, the request URI, or the policy's default scheme. A
/// misconfigured policy matches nothing (logged as an error for requests whose token verified).
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
        let head = Head {
            head: ctx.head(),
            secure: None,
        };
        let checked = crate::head::check_token(&self.receiver, &head, SystemTime::now());
        if let Err(rejection) = &checked {
            crate::log::guard_miss(rejection, message_id(&head.head.headers));
        }
        checked.is_ok()
    }
}
