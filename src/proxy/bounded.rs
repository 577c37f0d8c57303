//! A request body read whole, within a bound: what the steps that must see all of it before
//! anything is sent (body fields, a SigV4 payload hash, a body held for an OAuth2 retry) share.

use bytes::{Bytes, BytesMut};

use super::body::Body;
use super::error::{ErrorCode, ProxyError};

/// The whole body, refused past `max` bytes with `too_large`'s error.
pub(super) async fn read_bounded(mut body: Body, max: u64, too_large: fn() -> ProxyError) -> Result<Bytes, ProxyError> {
    use http_body_util::BodyExt;
    let mut out = BytesMut::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| {
            ProxyError::new(ErrorCode::InvalidRequest, format!("the request body could not be read: {e}"))
        })?;
        if let Ok(data) = frame.into_data() {
            if (out.len() + data.len()) as u64 > max {
                return Err(too_large());
            }
            out.extend_from_slice(&data);
        }
    }
    Ok(out.freeze())
}
