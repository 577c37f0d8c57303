//! The body type every request and response in the proxy carries (a boxed stream of byte
//! frames), a body of bytes already in hand, and the response body that passes through the
//! redactor chunk by chunk, so streamed responses (SSE, chunked) stay streamed while
//! injected values are replaced; its trailers are scrubbed like the head's headers.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{HeaderMap, Response, StatusCode};
use http_body_util::combinators::BoxBody;
use hyper::body::{Body as HttpBody, Frame, SizeHint};

use super::redact::Redactor;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
pub type Body = BoxBody<Bytes, BoxError>;

/// A body of bytes already in hand.
pub fn full(bytes: impl Into<Bytes>) -> Body {
    use http_body_util::BodyExt;
    http_body_util::Full::new(bytes.into()).map_err(|never| match never {}).boxed()
}

/// A response of the proxy's own: `body` as `content_type`.
pub fn text(status: StatusCode, content_type: &'static str, body: impl Into<Bytes>) -> Response<Body> {
    let mut resp = Response::new(full(body));
    *resp.status_mut() = status;
    resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    resp
}

/// A response body that passes through the redactor chunk by chunk.
pub struct Redacted {
    inner: Body,
    redactor: Redactor,
    /// Trailers that wait for the held-back tail of the body to go first.
    trailers: Option<HeaderMap>,
    finished: bool,
}

impl Redacted {
    pub fn new(inner: Body, redactor: Redactor) -> Redacted {
        Redacted { inner, redactor, trailers: None, finished: false }
    }
}

impl HttpBody for Redacted {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        loop {
            if let Some(trailers) = this.trailers.take() {
                this.finished = true;
                return Poll::Ready(Some(Ok(Frame::trailers(trailers))));
            }
            if this.finished {
                return Poll::Ready(None);
            }
            match Pin::new(&mut this.inner).poll_frame(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Some(Err(e))),
                Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                    Ok(data) => {
                        let out = this.redactor.push(&data);
                        if !out.is_empty() {
                            return Poll::Ready(Some(Ok(Frame::data(out))));
                        }
                    }
                    Err(frame) => {
                        let Ok(mut trailers) = frame.into_trailers() else { continue };
                        this.redactor.scrub_headers(&mut trailers);
                        let rest = this.redactor.finish();
                        if rest.is_empty() {
                            this.finished = true;
                            return Poll::Ready(Some(Ok(Frame::trailers(trailers))));
                        }
                        this.trailers = Some(trailers);
                        return Poll::Ready(Some(Ok(Frame::data(rest))));
                    }
                },
                Poll::Ready(None) => {
                    this.finished = true;
                    let rest = this.redactor.finish();
                    return Poll::Ready((!rest.is_empty()).then(|| Ok(Frame::data(rest))));
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.finished
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}
