//! [`ReceiverState`]: where the extractors find a [`Receiver`] when no layer verified the request.

use axum::extract::FromRef;

use crate::Receiver;

/// A router state the extractors ([`Verified`](super::Verified), [`Callback`](super::Callback),
/// [`FailureCallback`](super::FailureCallback)) accept.
///
/// Behind [`QStashLayer`](crate::tower::QStashLayer) the extractors read what the layer left in
/// the request and never look at the state. Without the layer they verify by themselves, with
/// the [`Receiver`] this trait gives. It is implemented for you:
///
/// - for `()`, a router with no state: no receiver, so the extractors need the layer (without
///   it they answer 500 `misconfigured`);
/// - for every state that holds a receiver (`Receiver: FromRef<S>`, as `Receiver` itself, or
///   your state with an `impl FromRef<AppState> for Receiver`): the extractors then also work
///   without the layer.
///
/// A state of your own that holds no receiver, on routes behind the layer, takes one empty impl:
///
/// ```
/// use axum::{Json, Router, extract::State, routing::post};
/// use qstash_receiver::axum::{ReceiverState, Verified};
/// use qstash_receiver::tower::QStashLayer;
/// use qstash_receiver::{Receiver, SigningKeys, UrlPolicy, Verifier};
///
/// #[derive(Clone)]
/// struct AppState { greeting: &'static str }
///
/// // The layer verifies; the extractors need no receiver from this state.
/// impl ReceiverState for AppState {}
///
/// async fn jobs(State(state): State<AppState>, Verified(Json(job)): Verified<Json<String>>) -> String {
///     format!("{} {job}", state.greeting)
/// }
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let receiver = Receiver::new(Verifier::new(SigningKeys::new("sig_current", "sig_next")?))
///     .url_policy(UrlPolicy::public_base("https://app.example.com")?);
/// let app: Router = Router::new()
///     .route("/jobs", post(jobs))
///     .route_layer(QStashLayer::new(receiver))
///     .with_state(AppState { greeting: "hello" });
/// # Ok(())
/// # }
/// ```
#[diagnostic::on_unimplemented(
    message = "the QStash extractors cannot use the router state `{Self}`",
    label = "this state neither holds a `Receiver` nor implements `ReceiverState`",
    note = "behind `QStashLayer`, add `impl qstash_receiver::axum::ReceiverState for {Self} {{}}`; \
            to verify without the layer, implement `axum::extract::FromRef<{Self}> for Receiver`"
)]
pub trait ReceiverState {
    /// The receiver that verifies requests no layer verified; `None`: only the layer's verdict
    /// is accepted (the default).
    fn receiver(&self) -> Option<Receiver> {
        None
    }
}

impl ReceiverState for () {}

impl<S> ReceiverState for S
where
    Receiver: FromRef<S>,
{
    fn receiver(&self) -> Option<Receiver> {
        Some(Receiver::from_ref(self))
    }
}
