//! An upgraded connection (WebSocket) after the 101: the agent's and the upstream's byte
//! streams joined until either side closes or a policy update takes the host away. When the
//! upgrade request carried injected values, the upstream's WebSocket frames are read one by
//! one and every value in a frame's payload is masked with `*` of the same length (a
//! frame's length goes out before its payload, so the placeholder text, which is longer or
//! shorter, cannot take its place). The request's `Sec-WebSocket-Extensions` offer was
//! withheld (`pipeline::forward`), so payloads are not compressed; a frame with a reserved
//! bit set ends the connection. A value split across two frames is not recognised, as a
//! value split by an HTTP body's own encoding is not.

use std::sync::Arc;

use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use zeroize::Zeroizing;

use super::redact::{Patterns, Redactor};

/// Joins the two sides once both upgrades complete; `mask` scrubs the upstream's frames.
pub(super) fn splice(
    agent: OnUpgrade,
    upstream: OnUpgrade,
    mask: Option<Arc<Patterns>>,
    until_revoked: impl std::future::Future<Output = ()> + Send + 'static,
) {
    tokio::spawn(async move {
        let (agent, upstream) = match tokio::try_join!(agent, upstream) {
            Ok((a, u)) => (TokioIo::new(a), TokioIo::new(u)),
            Err(e) => return tracing::debug!(error = %e, "upgrade failed"),
        };
        tokio::select! {
            ended = join(agent, upstream, mask) => {
                if let Err(e) = ended {
                    tracing::debug!(error = %e, "upgraded connection ended with an error");
                }
            }
            _ = until_revoked => tracing::info!("upgraded connection closed: the updated policy no longer allows its host"),
        }
    });
}

async fn join<A, U>(mut agent: A, mut upstream: U, mask: Option<Arc<Patterns>>) -> std::io::Result<()>
where
    A: AsyncRead + AsyncWrite + Unpin,
    U: AsyncRead + AsyncWrite + Unpin,
{
    let Some(mask) = mask else {
        return tokio::io::copy_bidirectional(&mut agent, &mut upstream).await.map(|_| ());
    };
    let (mut agent_rx, mut agent_tx) = tokio::io::split(agent);
    let (mut upstream_rx, mut upstream_tx) = tokio::io::split(upstream);
    let outbound = async {
        tokio::io::copy(&mut agent_rx, &mut upstream_tx).await?;
        upstream_tx.shutdown().await
    };
    let inbound = async {
        relay_masked(&mut upstream_rx, &mut agent_tx, &mask).await?;
        agent_tx.shutdown().await
    };
    tokio::try_join!(outbound, inbound).map(|_| ())
}

/// Largest server frame header: 2 bytes, 8 of extended length (server frames carry no mask).
const HEAD_MAX: usize = 10;

/// Copies WebSocket frames from `from` to `to` until `from` ends, each frame's payload
/// passed through a fresh masking redactor as it streams (frames keep their lengths).
async fn relay_masked<R, W>(from: &mut R, to: &mut W, mask: &Arc<Patterns>) -> std::io::Result<()>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let invalid = |why: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, why.to_owned());
    // What the upstream sent, values included: wiped when the connection ends.
    let mut chunk = Zeroizing::new(vec![0u8; 16 * 1024]);
    let mut head = [0u8; HEAD_MAX];
    loop {
        match from.read_exact(&mut head[..2]).await {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
            Err(e) => return Err(e),
        }
        if head[0] & 0x70 != 0 {
            return Err(invalid("the upstream sent a WebSocket frame with a reserved bit set (compressed?)"));
        }
        if head[1] & 0x80 != 0 {
            return Err(invalid("the upstream sent a masked WebSocket frame"));
        }
        let (head_len, mut left) = match head[1] & 0x7f {
            126 => {
                from.read_exact(&mut head[2..4]).await?;
                (4, u64::from(u16::from_be_bytes([head[2], head[3]])))
            }
            127 => {
                from.read_exact(&mut head[2..10]).await?;
                (10, u64::from_be_bytes(head[2..10].try_into().expect("8 bytes")))
            }
            len => (2, u64::from(len)),
        };
        to.write_all(&head[..head_len]).await?;
        let mut redactor = Redactor::with(mask.clone());
        while left > 0 {
            let want = chunk.len().min(usize::try_from(left).unwrap_or(usize::MAX));
            let n = from.read(&mut chunk[..want]).await?;
            if n == 0 {
                return Err(invalid("the upstream closed inside a WebSocket frame"));
            }
            left -= n as u64;
            to.write_all(&redactor.push(&chunk[..n])).await?;
        }
        to.write_all(&redactor.finish()).await?;
        to.flush().await?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
        let mut out = vec![0x80 | opcode];
        match payload.len() {
            n if n < 126 => out.push(n as u8),
            n if n <= 0xffff => {
                out.push(126);
                out.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                out.push(127);
                out.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        out.extend_from_slice(payload);
        out
    }

    async fn relayed(input: Vec<u8>, value: &[u8]) -> std::io::Result<Vec<u8>> {
        let stars = "*".repeat(value.len());
        let mask = Patterns::build(&[(value, stars.as_str())]).unwrap();
        let mut out = Vec::new();
        relay_masked(&mut &input[..], &mut out, &mask).await.map(|_| out)
    }

    #[tokio::test]
    async fn values_in_frames_of_every_length_form_are_masked_and_lengths_kept() {
        let value = b"sk-live-0123456789";
        for size in [5usize, 125, 126, 4000, 70_000] {
            let mut payload = vec![b'x'; size];
            let at = size.saturating_sub(value.len()) / 2;
            if size >= value.len() {
                payload[at..at + value.len()].copy_from_slice(value);
            }
            let input =
                [frame(0x1, &payload), frame(0x9, b"ping sk-live-0123456789"), frame(0x8, &[0x03, 0xe8])].concat();
            let out = relayed(input.clone(), value).await.unwrap();
            assert_eq!(out.len(), input.len(), "size {size}");
            assert!(!out.windows(value.len()).any(|w| w == value), "size {size}: value masked everywhere");
            let mut expected = payload.clone();
            if size >= value.len() {
                expected[at..at + value.len()].fill(b'*');
            }
            let want =
                [frame(0x1, &expected), frame(0x9, b"ping ******************"), frame(0x8, &[0x03, 0xe8])].concat();
            assert_eq!(out, want, "size {size}");
        }
    }

    #[tokio::test]
    async fn compressed_or_masked_frames_end_the_connection() {
        let mut compressed = frame(0x1, b"abc");
        compressed[0] |= 0x40;
        assert!(relayed(compressed, b"secret").await.is_err());
        let mut masked = frame(0x1, b"abc");
        masked[1] |= 0x80;
        assert!(relayed(masked, b"secret").await.is_err());
        let mut cut = frame(0x1, b"abcdef");
        cut.truncate(5);
        assert!(relayed(cut, b"secret").await.is_err(), "a frame cut short is an error, not a clean end");
    }
}
