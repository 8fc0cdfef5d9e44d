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
    chunks.eventsource().map(|item| match item {
        Ok(ev) => Ok(Frame { event: ev.event, data: ev.data }),
        Err(eventsource_stream::EventStreamError::Transport(e)) => Err(e),
        Err(e) => Err(UpstreamError::Garbage(e.to_string())),
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
