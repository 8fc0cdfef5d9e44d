//! The split rule of `data::pieces` in SQL (window functions over each customer's (team,
//! model) pairs), kept as rollups: each customer's pieces of the month
//! (`insights_pieces`), their sums per (month, team, model, plan) (`insights_split`) and
//! each customer's margin per team and over all teams (`insights_margins`). The consumer
//! recomputes one customer's month ([`refresh`]) when what it reads changed; the rebuild
//! recomputes everything ([`rebuild`]); the board reads the sums and the lowest margins.
//! `tests/usage.rs` checks the result against the in-memory computation the what-if uses.

use sqlx::AnyConnection;

use crate::InsightsError;

/// Every piece of the months and customers `{scope}` selects (a condition on `month` and
/// `customer_id`), with the customer's plan key. PostgreSQL's SUM of BIGINT is NUMERIC,
/// hence the casts (integer division must stay integer). `mc` and `us` are not
/// materialised, so each of their uses reads its table's primary key (already in the
/// windows' order) instead of a copy of the table with an index built on the fly. The
/// totals (`tc`, `tt`) are sums over the whole partition, written with the same ORDER BY
/// as the running sums and a frame that spans the partition: every window then wants
/// the primary key's order, and SQLite sorts none of them (a window without ORDER BY
/// was sorted again, twice over all the month's pieces).
const PIECES: &str = "
WITH mc AS NOT MATERIALIZED (SELECT month, customer_id, team, model, cost_micros AS cost, calls
            FROM insights_model_cost
            WHERE {scope} AND cost_micros > 0),
rv AS (SELECT month, customer_id, CAST(SUM(subscription_cents) AS BIGINT) AS s,
              CAST(SUM(refunds_cents) AS BIGINT) AS f, CAST(SUM(fees_cents) AS BIGINT) AS x
       FROM insights_revenue WHERE {scope} GROUP BY month, customer_id),
us AS NOT MATERIALIZED (SELECT month, customer_id, team, charge_micros AS ch, tasks_completed AS done, tasks_failed AS failed
       FROM insights_usage WHERE {scope}),
w AS (SELECT mc.month, mc.customer_id, mc.team, mc.model, mc.cost, mc.calls, COALESCE(rv.s, 0) AS s,
             COALESCE(rv.f, 0) AS f, COALESCE(rv.x, 0) AS x, COALESCE(us.ch, 0) / 10000 AS chc,
             COALESCE(us.ch, 0) - COALESCE(us.ch, 0) / 10000 * 10000 AS rem,
             CAST(SUM(mc.cost) OVER (PARTITION BY mc.month, mc.customer_id ORDER BY mc.team, mc.model
                                     ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS BIGINT) AS cc,
             CAST(SUM(mc.cost) OVER (PARTITION BY mc.month, mc.customer_id ORDER BY mc.team, mc.model
                                     ROWS BETWEEN UNBOUNDED PRECEDING AND UNBOUNDED FOLLOWING) AS BIGINT) AS tc,
             CAST(SUM(mc.cost) OVER (PARTITION BY mc.month, mc.customer_id, mc.team ORDER BY mc.model
                                     ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS BIGINT) AS ct,
             CAST(SUM(mc.cost) OVER (PARTITION BY mc.month, mc.customer_id, mc.team ORDER BY mc.model
                                     ROWS BETWEEN UNBOUNDED PRECEDING AND UNBOUNDED FOLLOWING) AS BIGINT) AS tt
      FROM mc LEFT JOIN rv ON rv.month = mc.month AND rv.customer_id = mc.customer_id
              LEFT JOIN us ON us.month = mc.month AND us.customer_id = mc.customer_id AND us.team = mc.team),
p AS (SELECT month, customer_id, team, model, cost, calls,
             (s * cc / tc - s * (cc - cost) / tc) * 10000 AS sub,
             (f * cc / tc - f * (cc - cost) / tc) * 10000 AS ref,
             (chc * ct / tt - chc * (ct - cost) / tt) * 10000 + CASE WHEN ct = tt THEN rem ELSE 0 END AS chg,
             CAST(0 AS BIGINT) AS done, CAST(0 AS BIGINT) AS failed,
             (x * cc / tc - x * (cc - cost) / tc) * 10000 AS fee
      FROM w
      UNION ALL
      SELECT month, customer_id, 'unattributed', 'unattributed', 0, 0, s * 10000, f * 10000, 0, 0, 0, x * 10000 FROM rv
      WHERE (s <> 0 OR f <> 0 OR x <> 0)
        AND NOT EXISTS (SELECT 1 FROM mc x WHERE x.month = rv.month AND x.customer_id = rv.customer_id)
      UNION ALL
      SELECT month, customer_id, team, 'unattributed', 0, 0, 0, 0, ch, 0, 0, 0 FROM us
      WHERE ch <> 0 AND NOT EXISTS (SELECT 1 FROM mc x WHERE x.month = us.month
                                    AND x.customer_id = us.customer_id AND x.team = us.team)
      UNION ALL
      SELECT month, customer_id, team, '', 0, 0, 0, 0, 0, done, failed, 0 FROM us WHERE done <> 0 OR failed <> 0)
SELECT p.month, p.customer_id, p.team, p.model,
       CASE WHEN c.id IS NULL THEN 'unattributed' WHEN c.plan IS NULL THEN 'pay-per-task' ELSE c.plan END,
       CAST(SUM(p.sub) AS BIGINT), CAST(SUM(p.ref) AS BIGINT), CAST(SUM(p.chg) AS BIGINT),
       CAST(SUM(p.cost) AS BIGINT), CAST(SUM(p.calls) AS BIGINT), CAST(SUM(p.done) AS BIGINT),
       CAST(SUM(p.failed) AS BIGINT), CAST(SUM(p.fee) AS BIGINT)
FROM p LEFT JOIN customers c ON c.id = p.customer_id
GROUP BY p.month, p.customer_id, p.team, p.model, c.id, c.plan";

const PIECE_COLUMNS: &str = "month, customer_id, team, model, plan, subscription_micros, refunds_micros,
    charge_micros, cost_micros, calls, completed, failed, fees_micros";

/// Each customer's margin per team and over all teams (team ''), from the pieces `{scope}` selects.
const MARGINS: &str = "
INSERT INTO insights_margins (month, customer_id, team, plan, revenue_micros, cost_micros, margin_micros, completed)
SELECT month, customer_id, team, MAX(plan), CAST(SUM(subscription_micros - refunds_micros + charge_micros) AS BIGINT),
       CAST(SUM(cost_micros) AS BIGINT),
       CAST(SUM(subscription_micros - refunds_micros + charge_micros - cost_micros - fees_micros) AS BIGINT),
       CAST(SUM(completed) AS BIGINT)
FROM insights_pieces WHERE {scope} GROUP BY month, customer_id, team
UNION ALL
SELECT month, customer_id, '', MAX(plan), CAST(SUM(subscription_micros - refunds_micros + charge_micros) AS BIGINT),
       CAST(SUM(cost_micros) AS BIGINT),
       CAST(SUM(subscription_micros - refunds_micros + charge_micros - cost_micros - fees_micros) AS BIGINT),
       CAST(SUM(completed) AS BIGINT)
FROM insights_pieces WHERE {scope} GROUP BY month, customer_id";

const ONE: &str = "month = $1 AND customer_id = $2";

/// Adds (`sign` 1) or takes back (−1) one customer's stored pieces of `month` in the sums.
async fn add_to_sums(conn: &mut AnyConnection, month: &str, customer: &str, sign: i64) -> Result<(), InsightsError> {
    sqlx::query(
        "INSERT INTO insights_split (month, team, model, plan, pieces, subscription_micros, refunds_micros,
             charge_micros, cost_micros, calls, completed, failed, fees_micros)
         SELECT month, team, model, plan, $3, $3 * subscription_micros, $3 * refunds_micros, $3 * charge_micros,
                $3 * cost_micros, $3 * calls, $3 * completed, $3 * failed, $3 * fees_micros
         FROM insights_pieces WHERE month = $1 AND customer_id = $2
         ON CONFLICT (month, team, model, plan) DO UPDATE SET
             pieces = insights_split.pieces + excluded.pieces,
             subscription_micros = insights_split.subscription_micros + excluded.subscription_micros,
             refunds_micros = insights_split.refunds_micros + excluded.refunds_micros,
             charge_micros = insights_split.charge_micros + excluded.charge_micros,
             cost_micros = insights_split.cost_micros + excluded.cost_micros,
             calls = insights_split.calls + excluded.calls,
             completed = insights_split.completed + excluded.completed,
             failed = insights_split.failed + excluded.failed,
             fees_micros = insights_split.fees_micros + excluded.fees_micros",
    )
    .bind(month)
    .bind(customer)
    .bind(sign)
    .execute(&mut *conn)
    .await?;
    if sign < 0 {
        // A sum no piece is left in (every one taken back: their sums are zero too) is
        // gone, as the rebuild, which sums the pieces there are, never writes it.
        sqlx::query("DELETE FROM insights_split WHERE month = $1 AND pieces = 0")
            .bind(month)
            .execute(&mut *conn)
            .await?;
    }
    Ok(())
}

/// Recomputes `customer`'s pieces of `month` from the usage and revenue rollups and the
/// customer's plan now, and moves the sums and margins with them.
pub async fn refresh(conn: &mut AnyConnection, month: &str, customer: &str) -> Result<(), InsightsError> {
    add_to_sums(conn, month, customer, -1).await?;
    for table in ["insights_pieces", "insights_margins"] {
        sqlx::query(&format!("DELETE FROM {table} WHERE {ONE}")).bind(month).bind(customer).execute(&mut *conn).await?;
    }
    let pieces = PIECES.replace("{scope}", ONE);
    sqlx::query(&format!("INSERT INTO insights_pieces ({PIECE_COLUMNS}) {pieces}"))
        .bind(month)
        .bind(customer)
        .execute(&mut *conn)
        .await?;
    // A sum left with no pieces stays (read as absent: `pieces > 0`) until a rebuild:
    // deleting it here would read the month's sums on every event.
    add_to_sums(conn, month, customer, 1).await?;
    sqlx::query(&MARGINS.replace("{scope}", ONE)).bind(month).bind(customer).execute(&mut *conn).await?;
    Ok(())
}

/// Recomputes every month of `customer` (its plan changed).
pub async fn refresh_customer(conn: &mut AnyConnection, customer: &str) -> Result<(), InsightsError> {
    let months: Vec<(String,)> = sqlx::query_as("SELECT DISTINCT month FROM insights_pieces WHERE customer_id = $1")
        .bind(customer)
        .fetch_all(&mut *conn)
        .await?;
    for (month,) in months {
        refresh(conn, &month, customer).await?;
    }
    Ok(())
}

/// Recomputes the three tables from the usage and revenue rollups (after they were rebuilt).
pub async fn rebuild(conn: &mut AnyConnection) -> Result<(), InsightsError> {
    for table in ["insights_pieces", "insights_split", "insights_margins"] {
        sqlx::query(&format!("DELETE FROM {table}")).execute(&mut *conn).await?;
    }
    let pieces = PIECES.replace("{scope}", "1 = 1");
    sqlx::query(&format!("INSERT INTO insights_pieces ({PIECE_COLUMNS}) {pieces}")).execute(&mut *conn).await?;
    sqlx::query(
        "INSERT INTO insights_split (month, team, model, plan, pieces, subscription_micros, refunds_micros,
             charge_micros, cost_micros, calls, completed, failed, fees_micros)
         SELECT month, team, model, plan, COUNT(*), CAST(SUM(subscription_micros) AS BIGINT),
                CAST(SUM(refunds_micros) AS BIGINT), CAST(SUM(charge_micros) AS BIGINT),
                CAST(SUM(cost_micros) AS BIGINT), CAST(SUM(calls) AS BIGINT), CAST(SUM(completed) AS BIGINT),
                CAST(SUM(failed) AS BIGINT), CAST(SUM(fees_micros) AS BIGINT)
         FROM insights_pieces GROUP BY month, team, model, plan",
    )
    .execute(&mut *conn)
    .await?;
    sqlx::query(&MARGINS.replace("{scope}", "1 = 1")).execute(&mut *conn).await?;
    Ok(())
}
