//! Server-sent events from a provider response.

use eventsource_stream::Eventsource;
use futures::{Stream, StreamExt};

use super::UpstreamError;
use crate::chat::StreamEvent;

/// One SSE frame.
pub(super) struct Frame {
    pub event: String,
    pub data: String,
}

/// The body of a streaming response as the chunks it arrived in, transport errors
/// already classified.
pub(super) fn chunks(resp: reqwest::Response) -> impl Stream<Item = Result<Vec<u8>, UpstreamError>> + Send {
    resp.bytes_stream().map(|c| c.map(|b| b.to_vec()).map_err(|e| UpstreamError::from_reqwest(&e)))
}

/// The frames of a streaming body (split into chunks anywhere).
pub(super) fn events(
    chunks: impl Stream<Item = Result<Vec<u8>, UpstreamError>> + Send,
) -> impl Stream<Item = Result<Frame, UpstreamError>> + Send {
    without_leading_bom(chunks).eventsource().map(|item| match item {
        Ok(ev) => Ok(Frame { event: ev.event, data: ev.data }),
        Err(eventsource_stream::EventStreamError::Transport(e)) => Err(e),
        Err(e) => Err(UpstreamError::Garbage(e.to_string())),
    })
}

const BOM: &[u8] = "\u{feff}".as_bytes();

/// The body with its leading byte-order marks removed. eventsource-stream 0.2.3 skips a
/// leading BOM by slicing one byte off a three-byte character, which panics; so none may
/// reach it. Bytes are held back only while the start of the body could still be a BOM.
fn without_leading_bom(
    chunks: impl Stream<Item = Result<Vec<u8>, UpstreamError>> + Send,
) -> impl Stream<Item = Result<Vec<u8>, UpstreamError>> + Send {
    let chunks = Box::pin(chunks);
    futures::stream::unfold((chunks, Some(Vec::new())), |(mut chunks, mut head)| async move {
        loop {
            let Some(mut held) = head.take() else {
                return chunks.next().await.map(|c| (c, (chunks, None)));
            };
            match chunks.next().await {
                Some(Ok(bytes)) => held.extend_from_slice(&bytes),
                Some(Err(e)) => return Some((Err(e), (chunks, None))),
                None => return (!held.is_empty()).then_some((Ok(held), (chunks, None))),
            }
            while held.starts_with(BOM) {
                held.drain(..BOM.len());
            }
            if held.len() < BOM.len() && BOM.starts_with(&held) {
                head = Some(held);
                continue;
            }
            return Some((Ok(held), (chunks, None)));
        }
    })
}

/// Passes events through, stopping after `Done`, and turns a stream that ends without
/// `Done` (a dropped connection) into an error so the caller never mistakes it for a
/// complete answer.
pub(super) fn require_end(
    inner: impl Stream<Item = Result<StreamEvent, UpstreamError>> + Send + 'static,
) -> impl Stream<Item = Result<StreamEvent, UpstreamError>> + Send {
    let inner = Box::pin(inner);
    futures::stream::unfold((inner, false), |(mut inner, finished)| async move {
        if finished {
            return None;
        }
        match inner.next().await {
            Some(Ok(ev @ StreamEvent::Done { .. })) => Some((Ok(ev), (inner, true))),
            Some(Ok(ev)) => Some((Ok(ev), (inner, false))),
            Some(Err(e)) => Some((Err(e), (inner, true))),
            None => {
                Some((Err(UpstreamError::Connection("the stream ended before its final event".into())), (inner, true)))
            }
        }
    })
}
