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
    let now = ctx.clock.now_micros();
    let message_id = format!("test.{}@lifecycle.j1msky", j1msky_core::ids::new_id("t"));
    let from = ctx.catalogue.business.support_email.clone();
    let boundary = format!("=_j1msky_{}", j1msky_core::ids::new_id("b"));
    let date = chrono::DateTime::from_timestamp_micros(now).map(|d| d.to_rfc2822()).unwrap_or_default();
    let subject = format!("[test] {}", r.subject);
    let raw = format!(
        "From: {from}\r\nTo: {to}\r\nSubject: {}\r\nDate: {date}\r\nMessage-ID: <{message_id}>\r\nMIME-Version: 1.0\r\n\
         Content-Type: multipart/alternative; boundary=\"{boundary}\"\r\n\r\n\
         --{boundary}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n{}\r\n\
         --{boundary}\r\nContent-Type: text/html; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n{}\r\n\
         --{boundary}--\r\n",
        encode_header(&subject),
        crlf(&r.text),
        crlf(&r.html),
    );
    let mail = Outgoing { from, to: to.to_string(), message_id: message_id.clone(), raw: raw.into_bytes() };
    ctx.transport.send(&mail).await?;
    Ok(message_id)
}

/// An RFC 2047 encoded-word when the header is not plain ASCII.
fn encode_header(s: &str) -> String {
    if s.is_ascii() {
        return s.to_string();
    }
    use std::fmt::Write;
    let mut out = String::from("=?utf-8?Q?");
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "={b:02X}");
        }
    }
    out.push_str("?=");
    out
}

fn crlf(s: &str) -> String {
    s.replace("\r\n", "\n").replace('\n', "\r\n")
}
