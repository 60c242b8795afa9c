//! A routing guard for QStash traffic. **Not a security boundary.**

use std::time::SystemTime;

use actix_web::guard::{Guard, GuardContext};

use super::Head;
use crate::Receiver;
use crate::head::RequestHead as _;

/// Matches requests whose `Upstash-Signature` token verifies (with the keys the [`Receiver`]
/// picks, see [`REGION_HEADER`](crate::REGION_HEADER), and its [`UrlPolicy`](crate::UrlPolicy))
/// on everything **but the body**, which actix-web guards never see: a token captured from a
/// real delivery passes with any body. **Not a security boundary**: always put
/// [`QStashMiddleware`](super::QStashMiddleware) or [`Verified<T>`](super::Verified) on the
/// guarded route too. A failing guard only means "no match" (another route, or a 404).
///
/// ```
/// # use actix_web::{HttpResponse, web};
/// # use qstash_receiver::actix::{QStashGuard, QStashMiddleware};
/// # let receiver = qstash_receiver::Receiver::new(qstash_receiver::Verifier::new(
/// #     qstash_receiver::SigningKeys::new("sig_current", "sig_next").unwrap()));
/// let qstash_traffic = web::resource("/hooks")
///     .guard(QStashGuard::new(receiver.clone())) // routes QStash deliveries here
///     .wrap(QStashMiddleware::new(receiver)) // verifies them, the body too
///     .route(web::post().to(HttpResponse::Ok));
/// ```
///
/// The guard cannot see the server's TLS setting: the scheme comes from `X-Forwarded-Proto` (with
/// [`UrlPolicy::trust_forwarded_headers`](crate::UrlPolicy::trust_forwarded_headers)), the URI,
/// or the policy's default. A misconfigured policy matches nothing (logged as an error once a
/// token verified).
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
            tls: false,
        };
        crate::head::check_token(&self.receiver, &head, SystemTime::now())
            .inspect_err(|rejection| crate::log::guard_miss(rejection, head.message_id()))
            .is_ok()
    }
}
