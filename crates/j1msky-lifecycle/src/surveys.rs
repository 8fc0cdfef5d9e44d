//! Surveys: NPS (0-10 and a comment) and testimonials, each answered once through a
//! link carrying a random token (stored only as its digest, so the link is the
//! capability and a database read does not leak it). Answers are events
//! (`survey.nps_answered`, `survey.testimonial_given`) the KPI board reads. A
//! testimonial is published only with the customer's consent and the operator's
//! approval. The exit survey of cancels stays in billing (`retention`).

use j1msky_accounts::secrets;
use j1msky_audit::Actor;
use j1msky_core::events::{NpsAnswered, TestimonialGiven};
use j1msky_db::consumers::Consumer;
use j1msky_db::{outbox, Backend, Db};
use serde::Serialize;
use sqlx::{AnyConnection, Row};

use crate::delivery::{self, Category, NewMessage};
use crate::{Ctx, LifecycleError};

/// The surveys' consumers.
pub fn consumers(_ctx: &Ctx) -> Vec<Consumer> {
    Vec::new()
}

/// Longest comment or testimonial kept.
pub const MAX_TEXT: usize = 2_000;
const DAY: i64 = 86_400_000_000;

/// What a survey asks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SurveyKind {
    /// Score 0-10 and a comment (and, from a promoter, an optional testimonial).
    Nps,
    /// A testimonial and consent to publish it.
    Testimonial,
}

impl SurveyKind {
    /// The survey a journey's `send` step names by its template (`nps`, `testimonial`).
    pub fn for_template(template: &str) -> Option<SurveyKind> {
        match template {
            "nps" => Some(SurveyKind::Nps),
            "testimonial" => Some(SurveyKind::Testimonial),
            _ => None,
        }
    }
}

impl SurveyKind {
    pub fn as_str(self) -> &'static str {
        match self {
            SurveyKind::Nps => "nps",
            SurveyKind::Testimonial => "testimonial",
        }
    }

    pub fn parse(s: &str) -> Option<SurveyKind> {
        match s {
            "nps" => Some(SurveyKind::Nps),
            "testimonial" => Some(SurveyKind::Testimonial),
            _ => None,
        }
    }
}

/// A survey and its answer.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Survey {
    pub id: String,
    pub customer_id: String,
    pub customer_name: String,
    pub kind: SurveyKind,
    pub created_at: i64,
    pub answered_at: Option<i64>,
    pub score: Option<i64>,
    pub comment: Option<String>,
    pub testimonial: Option<String>,
    pub publish_consent: bool,
    pub approved_at: Option<i64>,
    pub approved_by: Option<String>,
}

/// A new survey: its id and the token its link carries (`/s/<token>`), shown once.
#[derive(Debug, Clone)]
pub struct Link {
    pub survey_id: String,
    pub token: String,
}

impl Link {
    pub fn url(&self, base_url: &str) -> String {
        format!("{}/s/{}", base_url.trim_end_matches('/'), self.token)
    }
}

const SELECT: &str = "SELECT s.id, s.customer_id, c.name, s.kind, s.created_at, s.answered_at, s.score, s.comment,
        s.testimonial, s.publish_consent, s.approved_at, s.approved_by
    FROM lifecycle_surveys s JOIN customers c ON c.id = s.customer_id";

fn from_row(r: &sqlx::any::AnyRow) -> Result<Survey, LifecycleError> {
    let kind: String = r.try_get(3)?;
    Ok(Survey {
        id: r.try_get(0)?,
        customer_id: r.try_get(1)?,
        customer_name: r.try_get(2)?,
        kind: SurveyKind::parse(&kind)
            .ok_or_else(|| LifecycleError::Conflict(format!("stored survey kind `{kind}` is unknown")))?,
        created_at: r.try_get(4)?,
        answered_at: r.try_get(5)?,
        score: r.try_get(6)?,
        comment: r.try_get(7)?,
        testimonial: r.try_get(8)?,
        publish_consent: r.try_get::<i64, _>(9)? != 0,
        approved_at: r.try_get(10)?,
        approved_by: r.try_get(11)?,
    })
}

/// Creates a survey for `customer` inside the caller's transaction.
pub async fn create(
    conn: &mut AnyConnection,
    customer_id: &str,
    kind: SurveyKind,
    now: i64,
) -> Result<Link, LifecycleError> {
    let id = j1msky_core::ids::new_id("srv");
    let token = secrets::random_token();
    sqlx::query(
        "INSERT INTO lifecycle_surveys (id, customer_id, kind, token_digest, created_at) VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(&id)
    .bind(customer_id)
    .bind(kind.as_str())
    .bind(secrets::digest(&token))
    .bind(now)
    .execute(&mut *conn)
    .await?;
    Ok(Link { survey_id: id, token })
}

/// The survey a link's token opens; `NotFound` for a token never issued.
pub async fn by_token(db: &Db, token: &str) -> Result<Survey, LifecycleError> {
    // A token is 43 URL-safe characters; anything else is not worth a query.
    if token.len() != 43 || !token.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') {
        return Err(LifecycleError::NotFound("survey".into()));
    }
    let row = sqlx::query(&format!("{SELECT} WHERE s.token_digest = $1"))
        .bind(secrets::digest(token))
        .fetch_optional(db.pool())
        .await?;
    match row {
        Some(r) => from_row(&r),
        None => Err(LifecycleError::NotFound("survey".into())),
    }
}

/// Whether a survey can still be answered at `now` (an error saying why not).
pub fn answerable(survey: &Survey, valid_days: u32, now: i64) -> Result<(), LifecycleError> {
    if survey.answered_at.is_some() {
        return Err(LifecycleError::Conflict("this survey has already been answered; thank you".into()));
    }
    if now > survey.created_at + i64::from(valid_days) * DAY {
        return Err(LifecycleError::Conflict("this survey link has expired".into()));
    }
    Ok(())
}

/// An answer from the survey page.
#[derive(Debug, Clone, Default)]
pub struct Answer<'a> {
    /// Required for NPS: 0 to 10.
    pub score: Option<&'a str>,
    pub comment: &'a str,
    pub testimonial: &'a str,
    pub consent_to_publish: bool,
}

fn bounded_text(field: &str, text: &str) -> Result<Option<String>, LifecycleError> {
    let t = text.trim();
    if t.chars().count() > MAX_TEXT {
        return Err(LifecycleError::invalid(field, format!("at most {MAX_TEXT} characters")));
    }
    Ok((!t.is_empty()).then(|| t.to_string()))
}

/// Records the answer to the survey `token` opens, once: a second answer (also a
/// concurrent one) is refused. Emits the answer's events in the same transaction.
pub async fn answer(db: &Db, valid_days: u32, token: &str, a: &Answer<'_>, now: i64) -> Result<Survey, LifecycleError> {
    let survey = by_token(db, token).await?;
    answerable(&survey, valid_days, now)?;
    let comment = bounded_text("comment", a.comment)?;
    let testimonial = bounded_text("testimonial", a.testimonial)?;
    let score = match survey.kind {
        SurveyKind::Nps => {
            let raw = a.score.map(str::trim).unwrap_or("");
            if raw.is_empty() {
                return Err(LifecycleError::invalid("score", "pick a score from 0 to 10"));
            }
            match raw.parse::<u8>() {
                Ok(s) if s <= 10 => Some(s),
                _ => return Err(LifecycleError::invalid("score", format!("`{raw}` is not a score from 0 to 10"))),
            }
        }
        SurveyKind::Testimonial => {
            if testimonial.is_none() {
                return Err(LifecycleError::invalid("testimonial", "write a few words, or close the page"));
            }
            None
        }
    };
    let consent = a.consent_to_publish && testimonial.is_some();
    let mut tx = db.begin().await?;
    let changed = sqlx::query(
        "UPDATE lifecycle_surveys SET answered_at = $1, score = $2, comment = $3, testimonial = $4, publish_consent = $5
         WHERE id = $6 AND answered_at IS NULL",
    )
    .bind(now)
    .bind(score.map(i64::from))
    .bind(&comment)
    .bind(&testimonial)
    .bind(i64::from(consent))
    .bind(&survey.id)
    .execute(&mut *tx)
    .await?;
    if changed.rows_affected() != 1 {
        return Err(LifecycleError::Conflict("this survey has already been answered; thank you".into()));
    }
    let backend = db.backend();
    let customer = Some(survey.customer_id.as_str());
    if let Some(score) = score {
        let p = NpsAnswered { survey: survey.id.clone(), score, comment: comment.clone() };
        outbox::emit_typed(&mut tx, backend, p, customer, now).await?;
    }
    if testimonial.is_some() {
        let p = TestimonialGiven { survey: survey.id.clone(), consent_to_publish: consent };
        outbox::emit_typed(&mut tx, backend, p, customer, now).await?;
    }
    tx.commit().await.map_err(j1msky_db::DbError::from)?;
    get(db, &survey.id).await
}

/// One survey by id.
pub async fn get(db: &Db, id: &str) -> Result<Survey, LifecycleError> {
    let row = sqlx::query(&format!("{SELECT} WHERE s.id = $1")).bind(id).fetch_optional(db.pool()).await?;
    match row {
        Some(r) => from_row(&r),
        None => Err(LifecycleError::NotFound(format!("survey {id}"))),
    }
}

/// Surveys, newest first, optionally one customer's; `answered_only` leaves out open ones.
pub async fn list(
    db: &Db,
    customer_id: Option<&str>,
    answered_only: bool,
    limit: i64,
) -> Result<Vec<Survey>, LifecycleError> {
    let rows = sqlx::query(&format!(
        "{SELECT} WHERE ($1 IS NULL OR s.customer_id = $1) AND ($2 = 0 OR s.answered_at IS NOT NULL)
         ORDER BY s.created_at DESC, s.id LIMIT $3"
    ))
    .bind(customer_id)
    .bind(i64::from(answered_only))
    .bind(limit)
    .fetch_all(db.pool())
    .await?;
    rows.iter().map(from_row).collect()
}

/// Testimonials waiting for the operator: given with consent, not approved yet.
pub async fn pending_testimonials(db: &Db, limit: i64) -> Result<Vec<Survey>, LifecycleError> {
    let rows = sqlx::query(&format!(
        "{SELECT} WHERE s.testimonial IS NOT NULL AND s.publish_consent = 1 AND s.approved_at IS NULL
         ORDER BY s.answered_at, s.id LIMIT $1"
    ))
    .bind(limit)
    .fetch_all(db.pool())
    .await?;
    rows.iter().map(from_row).collect()
}

/// Testimonials approved for publication in `(after, until]`, newest first: the case
/// studies a newsletter announces.
pub async fn approved_testimonials(db: &Db, after: i64, until: i64, limit: i64) -> Result<Vec<Survey>, LifecycleError> {
    let rows = sqlx::query(&format!(
        "{SELECT} WHERE s.testimonial IS NOT NULL AND s.publish_consent = 1 AND s.approved_at > $1 AND s.approved_at <= $2
         ORDER BY s.approved_at DESC, s.id LIMIT $3"
    ))
    .bind(after)
    .bind(until)
    .bind(limit)
    .fetch_all(db.pool())
    .await?;
    rows.iter().map(from_row).collect()
}

/// Approves a testimonial for publication: only one the customer consented to publish.
pub async fn approve_testimonial(db: &Db, actor: &Actor, id: &str, now: i64) -> Result<Survey, LifecycleError> {
    let s = get(db, id).await?;
    if s.testimonial.is_none() {
        return Err(LifecycleError::invalid("survey", format!("survey {id} has no testimonial")));
    }
    if !s.publish_consent {
        return Err(LifecycleError::invalid("survey", "the customer did not consent to publishing this testimonial"));
    }
    let mut tx = db.begin().await?;
    let changed = sqlx::query(
        "UPDATE lifecycle_surveys SET approved_at = $1, approved_by = $2 WHERE id = $3 AND approved_at IS NULL",
    )
    .bind(now)
    .bind(actor.as_str())
    .bind(id)
    .execute(&mut *tx)
    .await?;
    if changed.rows_affected() != 1 {
        return Err(LifecycleError::Conflict(format!("testimonial {id} is approved already")));
    }
    j1msky_audit::audit::record(
        &mut tx,
        actor,
        "testimonial.approve",
        id,
        Some(&s.customer_id),
        serde_json::json!({}),
        now,
    )
    .await?;
    tx.commit().await.map_err(j1msky_db::DbError::from)?;
    get(db, id).await
}

/// The customer's latest NPS score (what the journeys' `nps_at_least:N` reads).
pub async fn latest_nps(conn: &mut AnyConnection, customer_id: &str) -> Result<Option<u8>, LifecycleError> {
    let row = sqlx::query(
        "SELECT score FROM lifecycle_surveys WHERE customer_id = $1 AND kind = 'nps' AND score IS NOT NULL
         ORDER BY answered_at DESC, id DESC LIMIT 1",
    )
    .bind(customer_id)
    .fetch_optional(&mut *conn)
    .await?;
    let score: Option<i64> = match row {
        Some(r) => r.try_get(0)?,
        None => None,
    };
    Ok(score.and_then(|s| u8::try_from(s).ok()))
}

/// One NPS answer, as the KPI board counts it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NpsAnswer {
    pub survey_id: String,
    pub customer_id: String,
    pub score: i64,
    pub answered_at: i64,
}

/// Every answered NPS survey, oldest first (what `j1msky kpi rebuild` recounts NPS from).
pub async fn nps_answers(conn: &mut AnyConnection) -> Result<Vec<NpsAnswer>, LifecycleError> {
    let rows = sqlx::query(
        "SELECT id, customer_id, score, answered_at FROM lifecycle_surveys
         WHERE kind = 'nps' AND score IS NOT NULL AND answered_at IS NOT NULL ORDER BY answered_at, id",
    )
    .fetch_all(&mut *conn)
    .await?;
    rows.iter()
        .map(|r| {
            Ok(NpsAnswer {
                survey_id: r.try_get(0)?,
                customer_id: r.try_get(1)?,
                score: r.try_get(2)?,
                answered_at: r.try_get(3)?,
            })
        })
        .collect()
}

/// Queues an NPS email to `customer` (template `nps`) with a fresh survey link, inside
/// the caller's transaction. `Ok(None)` when the customer has an NPS survey still
/// open (asked and neither answered nor expired), so asking twice asks once.
pub async fn send_nps(
    conn: &mut AnyConnection,
    ctx: &Ctx,
    customer_id: &str,
    now: i64,
) -> Result<Option<String>, LifecycleError> {
    send(conn, ctx.db.backend(), ctx, customer_id, SurveyKind::Nps, now).await
}

/// Queues a testimonial request (template `testimonial`), like [`send_nps`].
pub async fn send_testimonial_request(
    conn: &mut AnyConnection,
    ctx: &Ctx,
    customer_id: &str,
    now: i64,
) -> Result<Option<String>, LifecycleError> {
    send(conn, ctx.db.backend(), ctx, customer_id, SurveyKind::Testimonial, now).await
}

/// Opens a survey of `kind` for the customer and queues its mail, unless one is still open.
pub(crate) async fn send(
    conn: &mut AnyConnection,
    backend: Backend,
    ctx: &Ctx,
    customer_id: &str,
    kind: SurveyKind,
    now: i64,
) -> Result<Option<String>, LifecycleError> {
    let valid = i64::from(ctx.catalogue.lifecycle.engagement.nps_valid_days) * DAY;
    let open = sqlx::query(
        "SELECT id FROM lifecycle_surveys WHERE customer_id = $1 AND kind = $2 AND answered_at IS NULL AND created_at > $3",
    )
    .bind(customer_id)
    .bind(kind.as_str())
    .bind(now - valid)
    .fetch_optional(&mut *conn)
    .await?;
    if open.is_some() {
        return Ok(None);
    }
    let name = j1msky_accounts::customers::get_in(&mut *conn, customer_id).await?.name;
    let link = create(conn, customer_id, kind, now).await?;
    // The journeys' context shape (`customer`, `business`, `links`) plus the survey.
    let context = serde_json::json!({
        "customer": {"id": customer_id, "name": name},
        "business": {"name": ctx.catalogue.business.name, "support_email": ctx.catalogue.business.support_email},
        "links": crate::templates::links(&ctx.catalogue, &ctx.base_url),
        "survey": {"url": link.url(&ctx.base_url), "valid_days": ctx.catalogue.lifecycle.engagement.nps_valid_days},
    });
    let rendered = crate::templates::render(ctx, kind.as_str(), &context)?;
    let source = format!("survey:{}", link.survey_id);
    let msg = NewMessage {
        customer_id,
        source: &source,
        step: kind.as_str(),
        occurrence: 0,
        category: Category::Retention,
        template: kind.as_str(),
        rendered: &rendered,
        not_before: now,
        stale_at: Some(now + valid),
    };
    delivery::enqueue(conn, backend, &msg, now).await
}
