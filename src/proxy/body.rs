//! A response body that passes through the redactor chunk by chunk, so streamed
//! responses (SSE, chunked) stay streamed while injected values are replaced; its trailers
//! are scrubbed like the head's headers.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::HeaderMap;
use hyper::body::{Body as HttpBody, Frame, SizeHint};

use super::redact::Redactor;
use super::upstream::{Body, BoxError};

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
