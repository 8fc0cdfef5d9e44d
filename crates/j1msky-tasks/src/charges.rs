//! Pay-per-task charges (`usage_charges`): this crate is the table's one owner. A charge
//! is written when a task succeeds without a plan, or when a customer's day of direct
//! API calls is metered. Billing reports them to Stripe and follows their invoices
//! through the functions below, inside its own transactions, and never with SQL of its own.

use j1msky_db::{AnyConnection, Db, DbError};

/// A charge not yet reported to Stripe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unreported {
    pub id: String,
    /// The task it charges; `None` for a day of API calls.
    pub task_id: Option<String>,
    pub tier: String,
    pub amount_micros: i64,
    /// The day of API calls it charges (`YYYY-MM-DD`); `None` for a task.
    pub api_day: Option<String>,
    /// When the charged work began (the task's queueing; for a day of API calls, the
    /// charge's writing): no charge for it, in this database or in one it was restored
    /// over, can have been reported before then.
    pub work_began_at: i64,
}

/// How an invoice line names the charge it bills.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reference<'a> {
    /// The Stripe invoice item made when it was reported.
    Item(&'a str),
    /// The task it charges.
    Task(&'a str),
    /// The charge's own id.
    Charge(&'a str),
}

/// Inside the caller's transaction: the charge for a task that succeeded (at most one
/// per task: a second is ignored). Returns whether it was written.
pub(crate) async fn insert_for_task(
    conn: &mut AnyConnection,
    customer_id: &str,
    task_id: &str,
    tier: &str,
    amount_micros: i64,
    now: i64,
) -> Result<bool, DbError> {
    let done = sqlx::query(
        "INSERT INTO usage_charges (id, customer_id, task_id, tier, amount_micros, created_at)
         VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (task_id) DO NOTHING",
    )
    .bind(j1msky_core::ids::new_id("uch"))
    .bind(customer_id)
    .bind(task_id)
    .bind(tier)
    .bind(amount_micros)
    .bind(now)
    .execute(&mut *conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// For a statement of the worker's on PostgreSQL: the charge of each row of `from` (a CTE
/// returning the task's `id`, `customer_id` and `charge_micros`) that has one, at most one
/// per task as in [`insert_for_task`]. Parameters from `$p`: the charge's id, the tier, now.
pub(crate) fn insert_for_task_from(from: &str, p: usize) -> String {
    format!(
        "INSERT INTO usage_charges (id, customer_id, task_id, tier, amount_micros, created_at)
         SELECT ${p}, customer_id, id, ${}, charge_micros, ${} FROM {from} WHERE charge_micros IS NOT NULL
         ON CONFLICT (task_id) DO NOTHING",
        p + 1,
        p + 2
    )
}

/// Inside the caller's transaction: the charge for a customer's day of API calls (at
/// most one per customer and day). Returns whether it was written.
pub(crate) async fn insert_for_api_day(
    conn: &mut AnyConnection,
    customer_id: &str,
    day: &str,
    tier: &str,
    amount_micros: i64,
    now: i64,
) -> Result<bool, DbError> {
    let done = sqlx::query(
        "INSERT INTO usage_charges (id, customer_id, api_day, tier, amount_micros, created_at)
         VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (customer_id, api_day) DO NOTHING",
    )
    .bind(j1msky_core::ids::new_id("uch"))
    .bind(customer_id)
    .bind(day)
    .bind(tier)
    .bind(amount_micros)
    .bind(now)
    .execute(&mut *conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Customers with unreported charges and when the oldest was made, oldest first
/// (ties by customer id), at most `limit`.
pub async fn customers_waiting(db: &Db, limit: i64) -> Result<Vec<(String, i64)>, DbError> {
    Ok(sqlx::query_as(
        "SELECT customer_id, MIN(created_at) FROM usage_charges WHERE reported_at IS NULL
         GROUP BY customer_id ORDER BY 2, 1 LIMIT $1",
    )
    .bind(limit)
    .fetch_all(db.pool())
    .await?)
}

type UnreportedRow = (String, Option<String>, String, i64, Option<String>, i64, Option<i64>);

/// A customer's unreported charges, oldest first, at most `limit`.
pub async fn unreported(db: &Db, customer_id: &str, limit: i64) -> Result<Vec<Unreported>, DbError> {
    let rows: Vec<UnreportedRow> = sqlx::query_as(
        "SELECT c.id, c.task_id, c.tier, c.amount_micros, c.api_day, c.created_at, t.queued_at
         FROM usage_charges c LEFT JOIN tasks t ON t.id = c.task_id
         WHERE c.customer_id = $1 AND c.reported_at IS NULL ORDER BY c.created_at, c.id LIMIT $2",
    )
    .bind(customer_id)
    .bind(limit)
    .fetch_all(db.pool())
    .await?;
    Ok(rows
        .into_iter()
        .map(|(id, task_id, tier, amount_micros, api_day, created_at, queued_at)| Unreported {
            id,
            task_id,
            tier,
            amount_micros,
            api_day,
            work_began_at: queued_at.map_or(created_at, |q| q.min(created_at)),
        })
        .collect())
}

/// Inside the caller's transaction: marks a charge reported as Stripe invoice item
/// `item_id`. False when it was already reported (by another run): the caller then
/// says nothing of it.
pub async fn mark_reported(
    conn: &mut AnyConnection,
    id: &str,
    item_id: Option<&str>,
    at: i64,
) -> Result<bool, DbError> {
    let done = sqlx::query(
        "UPDATE usage_charges SET reported_at = $1, stripe_item_id = $2 WHERE id = $3 AND reported_at IS NULL",
    )
    .bind(at)
    .bind(item_id)
    .bind(id)
    .execute(&mut *conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Customers with charges reported but on no invoice yet.
pub async fn customers_awaiting_invoice(db: &Db) -> Result<Vec<String>, DbError> {
    let rows: Vec<(String,)> = sqlx::query_as(
        "SELECT DISTINCT customer_id FROM usage_charges
         WHERE reported_at IS NOT NULL AND stripe_invoice_id IS NULL ORDER BY customer_id",
    )
    .fetch_all(db.pool())
    .await?;
    Ok(rows.into_iter().map(|(c,)| c).collect())
}

/// The Stripe invoice items of a customer's charges reported but on no invoice yet.
pub async fn items_awaiting_invoice(db: &Db, customer_id: &str) -> Result<Vec<String>, DbError> {
    let rows: Vec<(String,)> = sqlx::query_as(
        "SELECT stripe_item_id FROM usage_charges
         WHERE customer_id = $1 AND reported_at IS NOT NULL AND stripe_invoice_id IS NULL AND stripe_item_id IS NOT NULL",
    )
    .bind(customer_id)
    .fetch_all(db.pool())
    .await?;
    Ok(rows.into_iter().map(|(i,)| i).collect())
}

/// Records that Stripe put `customer_id`'s invoice item `item_id` on `invoice` (status
/// `open` unless one is known already). A charge already on an invoice keeps it.
pub async fn mark_invoiced(
    conn: &mut AnyConnection,
    customer_id: &str,
    item_id: &str,
    invoice: &str,
) -> Result<(), DbError> {
    sqlx::query(
        "UPDATE usage_charges SET stripe_invoice_id = $1, invoice_status = COALESCE(invoice_status, 'open')
         WHERE stripe_item_id = $2 AND customer_id = $3 AND stripe_invoice_id IS NULL",
    )
    .bind(invoice)
    .bind(item_id)
    .bind(customer_id)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// The charge an invoice line names: (charge id, its customer).
pub async fn find(conn: &mut AnyConnection, by: Reference<'_>) -> Result<Option<(String, String)>, DbError> {
    let (sql, value) = match by {
        Reference::Item(v) => ("SELECT id, customer_id FROM usage_charges WHERE stripe_item_id = $1", v),
        Reference::Task(v) => ("SELECT id, customer_id FROM usage_charges WHERE task_id = $1", v),
        Reference::Charge(v) => ("SELECT id, customer_id FROM usage_charges WHERE id = $1", v),
    };
    Ok(sqlx::query_as(sql).bind(value).fetch_optional(&mut *conn).await?)
}

/// Inside the caller's transaction: the invoice a charge is on and where that invoice
/// stands (`open`, `paid`, `void`, `uncollectible`).
pub async fn set_invoice_status(
    conn: &mut AnyConnection,
    id: &str,
    invoice: &str,
    status: &str,
) -> Result<(), DbError> {
    sqlx::query("UPDATE usage_charges SET stripe_invoice_id = $1, invoice_status = $2 WHERE id = $3")
        .bind(invoice)
        .bind(status)
        .bind(id)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// Records that the payment of `invoice`, which bills charge `id`, failed (Stripe retries
/// it). Only a charge still open (or already failing) moves: a late notice of a failed
/// attempt leaves one paid, voided or written off as it is.
pub async fn mark_payment_failed(conn: &mut AnyConnection, id: &str, invoice: &str) -> Result<(), DbError> {
    sqlx::query(
        "UPDATE usage_charges SET stripe_invoice_id = $1, invoice_status = 'payment_failed'
         WHERE id = $2 AND COALESCE(invoice_status, 'open') IN ('open', 'payment_failed')",
    )
    .bind(invoice)
    .bind(id)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Inside the caller's transaction: what `customer_id` owes for its pay-per-task usage,
/// as a payment standing: `unpaid` when an invoice of its charges was written off
/// (uncollectible), `past_due` when one's payment failed and is being retried, `None`
/// when every invoice of its charges is paid, open or voided.
pub async fn owed_standing(conn: &mut AnyConnection, customer_id: &str) -> Result<Option<&'static str>, DbError> {
    let (written_off, failing): (i64, i64) = sqlx::query_as(
        "SELECT COALESCE(SUM(CASE WHEN invoice_status = 'uncollectible' THEN 1 ELSE 0 END), 0),
                COALESCE(SUM(CASE WHEN invoice_status = 'payment_failed' THEN 1 ELSE 0 END), 0)
         FROM usage_charges WHERE customer_id = $1 AND invoice_status IN ('uncollectible', 'payment_failed')",
    )
    .bind(customer_id)
    .fetch_one(&mut *conn)
    .await?;
    Ok(if written_off > 0 {
        Some("unpaid")
    } else if failing > 0 {
        Some("past_due")
    } else {
        None
    })
}

/// Every metered day of direct API calls: (customer, `YYYY-MM-DD`, charge in micro-USD,
/// 0 for a day the customer's plan paid for: `api_included_days`), by customer and day
/// (the insights rebuild reads them). A day is metered one way or the other, not both.
pub async fn api_days(db: &Db) -> Result<Vec<(String, String, i64)>, DbError> {
    Ok(sqlx::query_as(
        "SELECT customer_id, api_day, amount_micros FROM usage_charges WHERE api_day IS NOT NULL
         UNION ALL SELECT customer_id, api_day, 0 FROM api_included_days
         ORDER BY 1, 2",
    )
    .fetch_all(db.pool())
    .await?)
}
