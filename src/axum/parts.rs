//! [`Claims`] and [`Delivery`] as extractors, and [`Rejection`] as a response.

use axum::body::Body;
use axum::extract::FromRequestParts;
use axum::response::{IntoResponse, Response};
use http::request::Parts;

use crate::tower::json_response;
use crate::{Claims, Delivery, Rejection};

/// The shared answer: [`Rejection::status`], [`Rejection::headers`], and the JSON
/// [`Rejection::json_body`] (`content-type: application/json`), identical to the tower layer's
/// and the actix-web middleware's.
impl IntoResponse for Rejection {
    fn into_response(self) -> Response {
        json_response(&self).map(Body::from)
    }
}

fn not_verified(what: &str, parts: &Parts) -> Rejection {
    let rejection = Rejection::Misconfigured(format!(
        "no verified {what} in the request: install qstash_receiver::tower::QStashLayer on this route"
    ));
    crate::log::unchecked_misconfiguration(
        &rejection,
        parts
            .headers
            .get(crate::MESSAGE_ID_HEADER)
            .map(http::HeaderValue::as_bytes),
    );
    rejection
}

/// The verified token's claims, put in the request extensions by
/// [`QStashLayer`](crate::tower::QStashLayer). Without the layer: 500 `misconfigured`.
impl<S: Send + Sync> FromRequestParts<S> for Claims {
    type Rejection = Rejection;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        match parts.extensions.get::<Claims>() {
            Some(claims) => Ok(claims.clone()),
            None => Err(not_verified("claims", parts)),
        }
    }
}

/// The delivery headers (message id, attempt…) of a request verified by
/// [`QStashLayer`](crate::tower::QStashLayer). Without the layer: 500 `misconfigured`.
impl<S: Send + Sync> FromRequestParts<S> for Delivery {
    type Rejection = Rejection;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        match parts.extensions.get::<Delivery>() {
            Some(delivery) => Ok(delivery.clone()),
            None => Err(not_verified("delivery", parts)),
        }
    }
}
