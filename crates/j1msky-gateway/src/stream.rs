//! Streaming calls. Fallbacks happen only before the first byte; once text flows the
//! answer belongs to that model. However the stream ends — finished, broken upstream
//! or abandoned by the client — the reservation is settled and the ledger written.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures::Stream;

use crate::chat::{ChatRequest, StreamEvent, Usage};
use crate::gateway::{Answer, CallContext, Kind};
use crate::ledger::Attempt;
use crate::limits::Reservation;
use crate::providers::{EventStream, UpstreamError};
use crate::{Gateway, GatewayError};

/// Settles once, on the final event or when dropped before it.
struct Settler {
    gateway: Arc<Gateway>,
    reservation: Reservation,
    attempts: Vec<Attempt>,
    model: String,
    estimated_input: u64,
    /// The provider's count of the prompt, when it told it before the end.
    reported_input: Option<u64>,
    streamed_chars: u64,
}

impl Settler {
    fn finish(self, usage: Usage, outcome: &'static str) {
        let Settler { gateway, reservation, attempts, model, .. } = self;
        // Settling must not depend on the client still listening, so it cannot be awaited
        // by the (possibly dropped) stream; it is one bounded write, not background work.
        #[allow(clippy::disallowed_methods)]
        tokio::spawn(async move {
            if let Err(e) = gateway.settle_stream(reservation, attempts, &model, usage, outcome).await {
                tracing::error!(error = %e, "could not settle a streamed call");
            }
        });
    }

    /// Tokens of a stream that ended early: the prompt as the provider counted it (else
    /// the request's estimate) and the text generated (delivered, and reasoned where the
    /// provider streams its reasoning).
    fn estimate(&self) -> Usage {
        Usage {
            input_tokens: self.reported_input.unwrap_or(self.estimated_input),
            output_tokens: self.streamed_chars.div_ceil(4),
        }
    }
}

/// A routed, metered stream of answer pieces.
pub struct GatewayStream {
    /// Catalogue id of the model that answers.
    pub model: String,
    /// Catalogue id of the model asked for (the category's model for `auto`).
    pub requested: String,
    inner: EventStream,
    settler: Option<Settler>,
}

impl Stream for GatewayStream {
    type Item = Result<StreamEvent, UpstreamError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.settler.is_none() {
            return Poll::Ready(None);
        }
        let polled = self.inner.as_mut().poll_next(cx);
        match &polled {
            Poll::Ready(Some(Ok(piece @ (StreamEvent::Delta(_) | StreamEvent::Reasoning(_))))) => {
                // What the model generated, shown or not, for the estimate of an early end.
                let n = match piece {
                    StreamEvent::Delta(text) => text.len() as u64,
                    StreamEvent::Reasoning(bytes) => *bytes,
                    StreamEvent::Prompt(_) | StreamEvent::Done { .. } => 0,
                };
                if let Some(s) = self.settler.as_mut() {
                    s.streamed_chars += n;
                }
            }
            Poll::Ready(Some(Ok(StreamEvent::Prompt(tokens)))) => {
                if let Some(s) = self.settler.as_mut() {
                    s.reported_input = Some(*tokens);
                }
            }
            Poll::Ready(Some(Ok(StreamEvent::Done { usage, .. }))) => {
                if let Some(s) = self.settler.take() {
                    let usage = usage.unwrap_or_else(|| s.estimate());
                    s.finish(usage, "ok");
                }
            }
            Poll::Ready(Some(Err(e))) => {
                let outcome = e.outcome();
                if let Some(s) = self.settler.take() {
                    let usage = s.estimate();
                    s.finish(usage, outcome);
                }
            }
            Poll::Ready(None) => {
                if let Some(s) = self.settler.take() {
                    let usage = s.estimate();
                    s.finish(usage, "connection_error");
                }
            }
            Poll::Pending => {}
        }
        polled
    }
}

impl Drop for GatewayStream {
    fn drop(&mut self) {
        if let Some(s) = self.settler.take() {
            let usage = s.estimate();
            s.finish(usage, "client_disconnected");
        }
    }
}

impl Gateway {
    /// Opens a streaming call: routed, admitted, with fallbacks before the first byte.
    pub async fn stream(
        self: &Arc<Self>,
        ctx: &CallContext,
        model: Option<&str>,
        req: &ChatRequest,
    ) -> Result<GatewayStream, GatewayError> {
        let (route, reservation) = self.admit(ctx, model, req).await?;
        let (answer, model_id, attempts) = self.call_chain(ctx, &route, &reservation, req, Kind::Stream).await?;
        let Answer::Stream(inner) = answer else {
            return Err(GatewayError::Invalid("internal: a complete answer to a streaming call".into()));
        };
        let settler = Settler {
            gateway: Arc::clone(self),
            reservation,
            attempts,
            model: model_id.clone(),
            estimated_input: req.estimated_input_tokens(),
            reported_input: None,
            streamed_chars: 0,
        };
        Ok(GatewayStream { model: model_id, requested: route.requested.clone(), inner, settler: Some(settler) })
    }
}
