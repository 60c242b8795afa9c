//! [`ResponseBody`]: the inner service's body, or a rejection's.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::Full;
use pin_project_lite::pin_project;

pin_project! {
    /// The response body of [`QStash`](super::QStash): the inner service's body, or the body of
    /// a rejection. Works wherever `B` does (axum's `Body`, hyper).
    #[derive(Debug)]
    pub struct ResponseBody<B> {
        // `None`: a rejection's.
        #[pin]
        inner: Option<B>,
        rejection: Full<Bytes>,
    }
}

impl<B> ResponseBody<B> {
    pub(crate) fn rejection(body: Bytes) -> Self {
        Self {
            inner: None,
            rejection: Full::new(body),
        }
    }

    pub(crate) fn inner(body: B) -> Self {
        Self {
            inner: Some(body),
            rejection: Full::default(),
        }
    }
}

impl<B: Body<Data = Bytes>> Body for ResponseBody<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let this = self.project();
        match this.inner.as_pin_mut() {
            Some(inner) => inner.poll_frame(cx),
            None => Pin::new(this.rejection)
                .poll_frame(cx)
                .map_err(|e| match e {}),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.inner {
            Some(inner) => inner.is_end_stream(),
            None => self.rejection.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.inner {
            Some(inner) => inner.size_hint(),
            None => self.rejection.size_hint(),
        }
    }
}
