//! Delivery of the spool to the central API: complete lines from the acknowledged offset
//! go in reports of at most `BATCH` events and `BATCH_BYTES`, paced by `SEND_GAP`, retried
//! with backoff while the API cannot take them. A report the API refuses for what it holds
//! (400, 413, 422) is sent again one event at a time, and an event refused on its own is
//! set aside in the dead-letter file so it holds up none after it.

use std::io::{BufRead, Seek, SeekFrom, Write};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use super::spool::{Spool, compact, read_offset, spool_len, write_offset};
use crate::proxy::backoff::Backoff;
use crate::proxy::central::{Central, CentralError};

/// Events per report: whatever is waiting, up to the API's limit per request (a proxy that
/// falls behind catches up in fewer, larger requests).
const BATCH: usize = 500;
/// Bytes per report at most (the API takes bodies up to 256 KiB): a report is cut at
/// whichever of this and `BATCH` comes first.
const BATCH_BYTES: usize = 192 * 1024;
/// Where events the API refuses one by one are kept, beside the spool.
const DEAD_LETTERS: &str = "access-events.dead.jsonl";
const FLUSH_EVERY: Duration = Duration::from_secs(1);
/// Least time between two reports while events keep coming: each report is a request and a
/// write transaction at the central API, which shares the machine with busy proxies.
const SEND_GAP: Duration = Duration::from_millis(200);
/// How often, under steady load, the acknowledged offset is written to disk.
const PERSIST_OFFSET_EVERY: Duration = Duration::from_secs(1);

/// An event line of the spool, and the offset after it.
type Line = (Vec<u8>, u64);

/// Complete event lines from `offset`, up to `BATCH` of them and `BATCH_BYTES` (one at
/// least), each with the offset after it; and the offset after the last line read. A line
/// that is not a JSON object (a torn write) is stepped over.
fn read_batch(path: &Path, offset: u64) -> std::io::Result<(Vec<Line>, u64)> {
    let mut file = std::fs::File::open(path)?;
    file.seek(SeekFrom::Start(offset))?;
    let mut reader = std::io::BufReader::new(file);
    let (mut events, mut bytes, mut next) = (Vec::new(), 0, offset);
    let mut line = Vec::new();
    while events.len() < BATCH {
        line.clear();
        let n = reader.read_until(b'\n', &mut line)?;
        if n == 0 || line.last() != Some(&b'\n') {
            break; // end, or a line still being written
        }
        let event = line[..n - 1].trim_ascii();
        if !events.is_empty() && bytes + event.len() > BATCH_BYTES {
            break; // the next report starts with this line
        }
        next += n as u64;
        if event.first() == Some(&b'{') && serde_json::from_slice::<serde::de::IgnoredAny>(event).is_ok() {
            bytes += event.len() + 1;
            events.push((event.to_vec(), next));
        }
    }
    Ok((events, next))
}

/// The report body `{"events":[…]}` for these event lines.
fn report_body<'e>(events: impl IntoIterator<Item = &'e [u8]>) -> Vec<u8> {
    let mut body = b"{\"events\":[".to_vec();
    for (i, event) in events.into_iter().enumerate() {
        if i > 0 {
            body.push(b',');
        }
        body.extend_from_slice(event);
    }
    body.extend_from_slice(b"]}");
    body
}

/// The API refused what was sent (not who sent it, nor how often): sending it again as it
/// is would be refused for ever.
fn refuses_the_report(e: &CentralError) -> bool {
    matches!(e, CentralError::Refused { status, .. } if matches!(status, 400 | 413 | 422))
}

/// Keeps an event the API refused on its own in the dead-letter file, and says so.
fn dead_letter(spool: &Spool, event: &[u8], why: &CentralError) {
    let id = serde_json::from_slice::<serde_json::Value>(event)
        .ok()
        .and_then(|e| e["id"].as_str().map(str::to_owned))
        .unwrap_or_default();
    let path = spool.path.with_file_name(DEAD_LETTERS);
    let kept = std::fs::OpenOptions::new().create(true).append(true).open(&path).and_then(|mut file| {
        file.write_all(event)?;
        file.write_all(b"\n")?;
        file.sync_data()
    });
    match kept {
        Ok(()) => {
            tracing::error!(%id, error = %why, file = %path.display(), "the central API refused an access event; it is kept in the dead-letter file and delivery goes on")
        }
        Err(e) => {
            tracing::error!(%id, error = %why, write_error = %e, "the central API refused an access event, and it could not be kept in the dead-letter file")
        }
    }
}

pub(super) async fn send_spool(spool: Arc<Spool>, central: Arc<Central>) {
    let mut offset = read_offset(&spool.offset_path);
    if offset > spool_len(&spool) {
        offset = 0; // the spool was emptied after the offset was last written
    }
    let mut backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(10));
    let mut persisted = std::time::Instant::now();
    let mut sent = tokio::time::Instant::now();
    loop {
        let _ = tokio::time::timeout(FLUSH_EVERY, spool.appended.notified()).await;
        tokio::time::sleep_until(sent + SEND_GAP).await;
        sent = tokio::time::Instant::now();
        loop {
            let (events, next) = match read_batch(&spool.path, offset) {
                Ok(batch) => batch,
                Err(e) => {
                    tracing::error!(error = %e, "cannot read the access-event spool");
                    break;
                }
            };
            let count = events.len();
            if count == 0 {
                if next > offset {
                    offset = next; // only unreadable lines: step over them
                    continue;
                }
                offset = compact(&spool, offset);
                break;
            }
            let mut delivered = central.report(report_body(events.iter().map(|(e, _)| &e[..]))).await;
            if let Err(e) = &delivered
                && refuses_the_report(e)
            {
                // One event the API refuses must not hold up the rest: each goes alone, and
                // one refused alone is set aside.
                tracing::warn!(error = %e, events = count, "the central API refused a report; sending its events one by one");
                delivered = Ok(());
                for (event, after) in &events {
                    match central.report(report_body([&event[..]])).await {
                        Ok(()) => {}
                        Err(e) if refuses_the_report(&e) => dead_letter(&spool, event, &e),
                        Err(e) => {
                            delivered = Err(e);
                            break;
                        }
                    }
                    offset = *after;
                }
            }
            match delivered {
                Ok(()) => {
                    offset = next;
                    spool.delivered.store(offset, std::sync::atomic::Ordering::Relaxed);
                    spool.measure(spool_len(&spool));
                    // Persisted at most once per pause: after a crash the events since
                    // are sent again, and the API drops the ids it already has.
                    if persisted.elapsed() >= PERSIST_OFFSET_EVERY {
                        let path = spool.offset_path.clone();
                        match tokio::task::spawn_blocking(move || write_offset(&path, offset)).await {
                            Ok(Ok(())) => {}
                            Ok(Err(e)) => tracing::error!(error = %e, "cannot persist the spool offset"),
                            Err(e) => tracing::error!(error = %e, "spool offset writer failed"),
                        }
                        persisted = std::time::Instant::now();
                    }
                    backoff.reset();
                    // On to the next report; an empty read then empties the spool.
                }
                Err(e) => {
                    let wait = backoff.next_wait();
                    tracing::warn!(error = %e, pending_from = offset, retry_in_ms = wait.as_millis() as u64, "access events kept in the spool");
                    tokio::time::sleep(wait).await;
                }
            }
        }
    }
}
