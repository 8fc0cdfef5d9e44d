//! Previews and test sends of a template, for the admin page and the CLI: rendered with
//! a chosen customer's own context, or with the sample one.

use crate::templates::{self, Rendered};
use crate::transport::Outgoing;
use crate::{Ctx, LifecycleError};

/// Renders `template` with `customer`'s context (their tasks and spend) or, without
/// one, the sample context.
pub async fn preview(ctx: &Ctx, template: &str, customer: Option<&str>) -> Result<Rendered, LifecycleError> {
    let context = match customer {
        Some(c) => {
            let mut conn = ctx.db.pool().acquire().await.map_err(j1msky_db::DbError::from)?;
            super::context::of_customer(&mut conn, ctx, c, ctx.clock.now_micros()).await?
        }
        None => templates::sample_context(&ctx.catalogue, &ctx.base_url),
    };
    templates::render(ctx, template, &context)
}

/// A plausible single mailbox: one `@`, no spaces or line breaks, something either side.
pub fn check_address(to: &str) -> Result<(), LifecycleError> {
    let ok = to.len() <= 254
        && !to.chars().any(|c| c.is_whitespace() || c.is_control() || c == '<' || c == '>' || c == ',')
        && to.split_once('@').is_some_and(|(l, d)| !l.is_empty() && d.contains('.') && !d.contains('@'));
    if ok {
        Ok(())
    } else {
        Err(LifecycleError::invalid("to", format!("`{to}` is not an email address")))
    }
}

/// Sends `template` (rendered as `preview` does) to `to` through the mail transport,
/// marked as a test in its subject; returns the Message-ID. Nothing is queued.
pub async fn send_test(ctx: &Ctx, template: &str, to: &str, customer: Option<&str>) -> Result<String, LifecycleError> {
    check_address(to)?;
    let r = preview(ctx, template, customer).await?;
    send_rendered_test(ctx, &r, to).await
}

/// Sends a rendered message to `to` as a test (the newsletter's test send uses it too).
pub async fn send_rendered_test(ctx: &Ctx, r: &Rendered, to: &str) -> Result<String, LifecycleError> {
    check_address(to)?;
    let now = ctx.clock.now_micros();
    let message_id = format!("test.{}@lifecycle.j1msky", j1msky_core::ids::new_id("t"));
    let delivery = &ctx.catalogue.lifecycle.delivery;
    let subject = format!("[test] {}", r.subject);
    // The same composer as real sends (footer, headers), without an unsubscribe link:
    // a test send goes to the operator, not to a customer.
    let raw = crate::delivery::compose(delivery, to, &message_id, &subject, &r.text, &r.html, None, now)
        .map_err(|e| LifecycleError::Transport(e.to_string()))?;
    let mail =
        Outgoing { from: delivery.from_address.clone(), to: to.to_string(), message_id: message_id.clone(), raw };
    ctx.transport.send(&mail).await.map_err(|e| LifecycleError::Transport(e.to_string()))?;
    Ok(message_id)
}
