//! [`ReceiverState`]: where the extractors find a [`Receiver`] when no layer verified the request.

use axum::extract::FromRef;

use crate::Receiver;

/// A router state the extractors ([`Verified`](super::Verified), [`Callback`](super::Callback),
/// [`FailureCallback`](super::FailureCallback)) accept: behind
/// [`QStashLayer`](crate::tower::QStashLayer) they never look at it; without the layer they
/// verify with the [`Receiver`] it gives (`None`: 500 `misconfigured`).
///
/// Implemented for `()` (no receiver) and for every state that holds one (`Receiver:
/// FromRef<S>`). A state of your own without a receiver, on routes behind the layer, takes an
/// empty impl:
///
/// ```
/// use axum::{Json, Router, extract::State, routing::post};
/// use qstash_receiver::axum::{ReceiverState, Verified};
///
/// #[derive(Clone)]
/// struct AppState { greeting: &'static str }
///
/// impl ReceiverState for AppState {}
///
/// async fn jobs(State(state): State<AppState>, Verified(Json(job)): Verified<Json<String>>) -> String {
///     format!("{} {job}", state.greeting)
/// }
///
/// # let receiver = qstash_receiver::Receiver::new(qstash_receiver::Verifier::new(
/// #     qstash_receiver::SigningKeys::new("sig_current", "sig_next").unwrap()));
/// let app: Router = Router::new()
///     .route("/jobs", post(jobs))
///     .route_layer(qstash_receiver::tower::QStashLayer::new(receiver))
///     .with_state(AppState { greeting: "hello" });
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
