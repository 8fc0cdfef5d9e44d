//! The rollups behind the customer numbers: `insights_people` (one row per customer:
//! current plan, creation, when it first reached each funnel stage, activation) and
//! `insights_nps` (one row per NPS answer). The consumer `insights.people` keeps them
//! current; [`rebuild`] recomputes them from the source tables.
//!
//! Every handler is idempotent (a replayed event, or one handled after a rebuild,
//! changes nothing): creations and answers insert once, stage times are recomputed from
//! the customer's stage history (a first time never moves once reached), activation is
//! set only while unset.
//!
//! Reads of accounts' `customers` and `customer_stage_changes` and of tasks' `tasks` are
//! plain SQL here on purpose: they are bulk aggregations (a million customers, twenty
//! million tasks) that no per-row function of the owners could serve.

use j1msky_core::events::{Kind, Typed};
use j1msky_db::consumers::{Consumer, Handled, Handler, OnFailure};
use j1msky_db::outbox::Event;
use j1msky_db::{Backend, DbError};
use sqlx::AnyConnection;

use crate::{Ctx, InsightsError};

/// The consumer's name (its cursor).
pub const CONSUMER: &str = "insights.people";

/// A first task succeeded within this long of creation activates the customer.
pub const ACTIVATION_WINDOW: i64 = 7 * 86_400_000_000;

/// The funnel's stages in order, each with the stored stages that mean "reached it or
/// later" (a customer who skips a stage passes it at the instant of the later one).
pub const STAGES: [(&str, &str, &str); 4] = [
    ("lead", "lead_at", "('lead', 'qualified', 'trial', 'active', 'paused')"),
    ("qualified", "qualified_at", "('qualified', 'trial', 'active', 'paused')"),
    ("trial", "trial_at", "('trial', 'active', 'paused')"),
    ("paid", "paid_at", "('active', 'paused')"),
];

pub fn consumers(_ctx: &Ctx) -> Vec<Consumer> {
    let kinds = [
        Kind::CustomerCreated,
        Kind::CustomerStageChanged,
        Kind::CustomerPlanChanged,
        Kind::TaskSucceeded,
        Kind::SurveyNpsAnswered,
    ];
    vec![Consumer::new(CONSUMER, &kinds, OnFailure::SkipAndPark, OnEvent)]
}

struct OnEvent;

impl Handler for OnEvent {
    fn handle<'a>(
        &'a self,
        conn: &'a mut AnyConnection,
        _backend: Backend,
        event: &'a Event,
        _now: i64,
    ) -> Handled<'a> {
        Box::pin(async move { Ok(on_event(conn, event).await?) })
    }
}

/// What the rollups do with one event.
pub async fn on_event(conn: &mut AnyConnection, event: &Event) -> Result<(), InsightsError> {
    let Some(customer) = event.customer_id.as_deref() else { return Ok(()) };
    let Some(typed) = event.typed() else { return Ok(()) };
    match typed {
        Typed::CustomerCreated(_) => {
            sqlx::query(
                "INSERT INTO insights_people (customer_id, plan, created_at)
                 SELECT id, plan, created_at FROM customers WHERE id = $1
                 ON CONFLICT (customer_id) DO NOTHING",
            )
            .bind(customer)
            .execute(&mut *conn)
            .await?;
            refresh_stages(conn, customer).await?;
        }
        Typed::CustomerStageChanged(_) => refresh_stages(conn, customer).await?,
        Typed::CustomerPlanChanged(p) => {
            sqlx::query("UPDATE insights_people SET plan = $1 WHERE customer_id = $2")
                .bind(&p.to)
                .bind(customer)
                .execute(&mut *conn)
                .await?;
        }
        Typed::TaskSucceeded(_) => {
            // The first success counts when it came within the window of creation.
            sqlx::query(
                "UPDATE insights_people SET activated_at = $1
                 WHERE customer_id = $2 AND activated_at IS NULL AND created_at > $3 AND created_at <= $1",
            )
            .bind(event.created_at)
            .bind(customer)
            .bind(event.created_at - ACTIVATION_WINDOW)
            .execute(&mut *conn)
            .await?;
        }
        Typed::SurveyNpsAnswered(a) => {
            sqlx::query(
                "INSERT INTO insights_nps (survey_id, customer_id, score, answered_at) VALUES ($1, $2, $3, $4)
                 ON CONFLICT (survey_id) DO NOTHING",
            )
            .bind(&a.survey)
            .bind(customer)
            .bind(i64::from(a.score))
            .bind(event.created_at)
            .execute(&mut *conn)
            .await?;
        }
        _ => {}
    }
    Ok(())
}

/// Recomputes one customer's first time at each funnel stage from its stage history.
async fn refresh_stages(conn: &mut AnyConnection, customer: &str) -> Result<(), InsightsError> {
    let sets: Vec<String> = STAGES
        .iter()
        .map(|(_, col, set)| {
            format!("{col} = (SELECT MIN(at) FROM customer_stage_changes WHERE customer_id = $1 AND to_stage IN {set})")
        })
        .collect();
    sqlx::query(&format!("UPDATE insights_people SET {} WHERE customer_id = $1", sets.join(", ")))
        .bind(customer)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// The SELECT of every customer's `insights_people` row, its columns in [`PEOPLE_COLUMNS`]
/// order (the SQL rebuild inserts it; the file rebuild steps it on its reading connection).
pub(crate) fn people_select() -> String {
    let firsts: Vec<String> =
        STAGES.iter().map(|(_, col, set)| format!("MIN(CASE WHEN to_stage IN {set} THEN at END) AS {col}")).collect();
    let cols: Vec<String> = STAGES.iter().map(|(_, col, _)| format!("s.{col}")).collect();
    // A task that succeeded within the window was queued within it: the first week's
    // tasks of each customer are an index range of `tasks_customer (customer_id,
    // queued_at)`, so the rebuild never reads the millions of later tasks.
    format!(
        "SELECT c.id, c.plan, c.created_at, {cols},
                (SELECT MIN(t.finished_at) FROM tasks t
                 WHERE t.customer_id = c.id AND t.queued_at < c.created_at + {ACTIVATION_WINDOW}
                   AND t.state = 'succeeded' AND t.finished_at >= c.created_at
                   AND t.finished_at < c.created_at + {ACTIVATION_WINDOW})
         FROM customers c
         LEFT JOIN (SELECT customer_id, {firsts} FROM customer_stage_changes GROUP BY customer_id) s
             ON s.customer_id = c.id",
        cols = cols.join(", "),
        firsts = firsts.join(", "),
    )
}

/// The columns of `insights_people`, in [`people_select`]'s order.
pub(crate) const PEOPLE_COLUMNS: [&str; 8] =
    ["customer_id", "plan", "created_at", "lead_at", "qualified_at", "trial_at", "paid_at", "activated_at"];

/// Recomputes both rollups from the source tables in one transaction, through sqlx (a
/// SQLite file takes `super::direct` instead: see `people::rebuild`).
pub async fn rebuild(ctx: &Ctx) -> Result<(), InsightsError> {
    let mut tx = ctx.db.begin().await?;
    let tuned = crate::bulk::tune(&mut tx, ctx.db.backend()).await?;
    sqlx::query("DELETE FROM insights_people").execute(&mut *tx).await?;
    let indexes = crate::bulk::drop_indexes(&mut tx, ctx.db.backend(), "insights_people").await?;
    let sql = format!("INSERT INTO insights_people ({}) {}", PEOPLE_COLUMNS.join(", "), people_select());
    sqlx::query(&sql).execute(&mut *tx).await?;
    crate::bulk::create_indexes(&mut tx, &indexes).await?;
    nps(&mut tx).await?;
    crate::bulk::untune(&mut tx, tuned).await?;
    tx.commit().await.map_err(DbError::from)?;
    Ok(())
}

/// Replaces `insights_nps` by lifecycle's answers, in the caller's transaction.
pub(crate) async fn nps(conn: &mut AnyConnection) -> Result<(), InsightsError> {
    sqlx::query("DELETE FROM insights_nps").execute(&mut *conn).await?;
    let answers = j1msky_lifecycle::surveys::nps_answers(&mut *conn).await.map_err(lifecycle)?;
    for a in answers {
        sqlx::query("INSERT INTO insights_nps (survey_id, customer_id, score, answered_at) VALUES ($1, $2, $3, $4)")
            .bind(&a.survey_id)
            .bind(&a.customer_id)
            .bind(a.score)
            .bind(a.answered_at)
            .execute(&mut *conn)
            .await?;
    }
    Ok(())
}

fn lifecycle(e: j1msky_lifecycle::LifecycleError) -> InsightsError {
    match e {
        j1msky_lifecycle::LifecycleError::Db(d) => InsightsError::Db(d),
        other => InsightsError::Db(DbError::Corrupt(other.to_string())),
    }
}
