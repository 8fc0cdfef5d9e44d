#!/usr/bin/env python3
"""DuckDB baseline for `j1msky kpi rebuild` (issue 14 §4).

Exports the source tables the rebuild reads from the SQLite file to Parquet (through a
FIFO: `sqlite3 -csv` → DuckDB `read_csv` → Parquet, so no CSV lands on disk), then times
DuckDB computing the same rollups the rebuild writes, ROUNDS times on a fresh in-memory
DuckDB each, and prints one `duckdb …` line per round and a median.

The rollups mirror the rebuild of the three modules of `j1msky-insights` (their rules in
`docs/KPIS.md`); each block below names the Rust it mirrors so the two can be kept aligned:
- mrr:    `insights_mrr_customer_months`, `insights_mrr_months` (mrr/compute.rs: a
          subscription's MRR at an instant is its latest snapshot at or before it, active
          and past_due only, discount off until `discount_end`, percent rounded half up;
          a month's start is the instant before its first, its end the instant before the
          next; movements new/expansion/contraction/churn/reactivation; mrr/store.rs: the
          month sums over every month, the stored customer rows only the first, each
          movement, each change of plan, with the next stored row's month)
- usage:  `insights_tasks` (with each task's customer's plan key, migration 0030),
          `insights_usage`, `insights_model_cost`, `insights_revenue_seen`,
          `insights_revenue` (usage/rebuild.rs; its metered-API-day parts are left out: the
          generated data has no `usage_charges.api_day`), and the split of migration 0029:
          `insights_pieces`, `insights_split`, `insights_margins` (usage/split.rs `PIECES`,
          `rebuild`, `MARGINS`)
- people: `insights_people` (people/rollup.rs `rebuild`): per customer its plan, creation,
          first instant at each funnel stage or a later one, and activation (first task
          succeeded within 7 days of creation); NPS is left out (no survey answers)

What the rebuild does not write is not computed here either: the board aggregates
cohorts, the funnel and completion-time percentiles from these rollups when it reads.

Months are calendar months in the business time zone; the shipped catalogue's is UTC,
which is what this script assumes (`--tz` other than UTC is refused rather than wrong).

Usage: duckdb_baseline.py DB_FILE PARQUET_DIR [--rounds 3] [--threads N] [--through YYYY-MM]
                          [--compare]   (after `kpi rebuild`: every rollup table row by row)
"""

import argparse
import datetime as dt
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time

import duckdb

# Source tables and the columns the rebuild reads (types for DuckDB's CSV reader).
TABLES = {
    "customers": [("id", "VARCHAR"), ("stage", "VARCHAR"), ("plan", "VARCHAR"), ("created_at", "BIGINT")],
    "customer_stage_changes": [
        ("customer_id", "VARCHAR"),
        ("from_stage", "VARCHAR"),
        ("to_stage", "VARCHAR"),
        ("at", "BIGINT"),
    ],
    "subscription_history": [
        ("subscription_id", "VARCHAR"),
        ("version", "VARCHAR"),
        ("customer_id", "VARCHAR"),
        ("stripe_customer_id", "VARCHAR"),
        ("status", "VARCHAR"),
        ("plan", "VARCHAR"),
        ("currency", "VARCHAR"),
        ("amount_cents", "BIGINT"),
        ("discount_percent_bp", "BIGINT"),
        ("discount_amount_cents", "BIGINT"),
        ("discount_end", "BIGINT"),
        ("effective_at", "BIGINT"),
    ],
    "tasks": [
        ("id", "VARCHAR"),
        ("customer_id", "VARCHAR"),
        ("team", "VARCHAR"),
        ("state", "VARCHAR"),
        ("charge_micros", "BIGINT"),
        ("queued_at", "BIGINT"),
        ("finished_at", "BIGINT"),
    ],
    "llm_calls": [
        ("task_id", "VARCHAR"),
        ("model_used", "VARCHAR"),
        ("input_tokens", "BIGINT"),
        ("output_tokens", "BIGINT"),
        ("cost_micros", "BIGINT"),
        ("created_at", "BIGINT"),
    ],
    "revenue_entries": [
        ("source_id", "VARCHAR"),
        ("kind", "VARCHAR"),
        ("customer_id", "VARCHAR"),
        ("plan", "VARCHAR"),
        ("amount_cents", "BIGINT"),
        ("occurred_at", "BIGINT"),
    ],
}


def export(db, out_dir):
    """Each table to `<out_dir>/<table>.parquet` through a FIFO; returns seconds taken."""
    os.makedirs(out_dir, exist_ok=True)
    began = time.monotonic()
    con = duckdb.connect()
    with tempfile.TemporaryDirectory() as tmp:
        for table, cols in TABLES.items():
            fifo = os.path.join(tmp, table + ".csv")
            os.mkfifo(fifo)
            names = ", ".join(c for c, _ in cols)
            # NULL is written as an empty field and read back as NULL (no empty strings are
            # exported). sqlite3 writes into the FIFO from a thread while DuckDB reads it.
            status = []

            def write(path=fifo, sql=f"SELECT {names} FROM {table}"):
                with open(path, "wb") as dst:
                    status.append(subprocess.run(["sqlite3", "-csv", "-readonly", db, sql], stdout=dst).returncode)

            t = threading.Thread(target=write)
            t.start()
            types = "{" + ", ".join(f"'{c}': '{ty}'" for c, ty in cols) + "}"
            target = os.path.join(out_dir, table + ".parquet")
            con.execute(
                f"COPY (SELECT * FROM read_csv('{fifo}', header = false, columns = {types}, quote = '\"')) "
                f"TO '{target}' (FORMAT parquet, COMPRESSION zstd)"
            )
            t.join()
            if status != [0]:
                sys.exit(f"sqlite3 failed exporting {table}")
    return time.monotonic() - began


# --- the rollups -------------------------------------------------------------------------

# people/rollup.rs ACTIVATION_WINDOW: a week in micros.
WINDOW = 7 * 86_400_000_000

def month_sql(us):
    """`YYYY-MM` of a unix-micros column in UTC."""
    return f"strftime(make_timestamp({us}), '%Y-%m')"


def steps(through):
    """(name, SQL) in order; every step materialises a table like the rebuild writes one."""
    end_of_through = dt.date(int(through[:4]), int(through[5:]), 1)
    return [
        # ---- mrr (mrr/compute.rs) ----
        # One row per (subscription, effective_at): the last version at that instant.
        ("mrr_snapshots", """
            CREATE TABLE snaps AS
            SELECT subscription_id AS sub,
                   COALESCE(customer_id, 'stripe:' || stripe_customer_id) AS ckey,
                   customer_id, status, plan, lower(currency) AS currency, amount_cents AS a,
                   discount_percent_bp AS bp, discount_amount_cents AS off, discount_end AS de,
                   effective_at AS t,
                   lead(effective_at) OVER (PARTITION BY subscription_id ORDER BY version) AS next_t
            FROM subscription_history
            QUALIFY row_number() OVER (PARTITION BY subscription_id, effective_at ORDER BY version DESC) = 1"""),
        # The month boundaries: each month's last instant, from the first snapshot's month.
        ("mrr_instants", f"""
            CREATE TABLE instants AS
            SELECT strftime(m, '%Y-%m') AS month,
                   epoch_us(m) - 1 AS start_x,
                   epoch_us(m + INTERVAL 1 MONTH) - 1 AS end_x
            FROM range((SELECT date_trunc('month', make_timestamp(min(t))) FROM snaps),
                       TIMESTAMP '{end_of_through}' + INTERVAL 1 MONTH, INTERVAL 1 MONTH) r(m)"""),
        # MRR of every subscription at every boundary (as-of join), then per customer.
        ("mrr_at_instants", """
            CREATE TABLE cust_at AS
            WITH subs AS (SELECT sub, any_value(ckey) AS ckey, min(t) AS first_t FROM snaps GROUP BY sub),
                 xs AS (SELECT DISTINCT start_x AS x FROM instants UNION SELECT end_x FROM instants),
                 grid AS (SELECT s.sub, s.ckey, xs.x FROM subs s JOIN xs ON xs.x >= s.first_t),
                 v AS (
                    SELECT g.ckey, g.x, h.plan,
                           CASE WHEN h.status IN ('active', 'past_due') AND h.currency = 'usd' THEN
                               greatest(h.a - CASE WHEN h.de IS NULL OR g.x < h.de THEN
                                   COALESCE((h.a * least(greatest(h.bp, 0), 10000) + 5000) // 10000, 0)
                                   + COALESCE(greatest(h.off, 0), 0) ELSE 0 END, 0)
                           ELSE 0 END AS v
                    FROM grid g ASOF JOIN snaps h ON g.sub = h.sub AND g.x >= h.t)
            SELECT ckey, x, sum(v) AS mrr, arg_max(plan, v) FILTER (WHERE v > 0) AS plan
            FROM v GROUP BY ckey, x"""),
        # The first instant each customer paid (a snapshot paying when it took effect, or a
        # full discount ending while it held).
        ("mrr_first_paid", """
            CREATE TABLE first_paid AS
            WITH c AS (
                SELECT ckey,
                       CASE WHEN status IN ('active', 'past_due') AND currency = 'usd'
                                 AND a - CASE WHEN de IS NULL OR t < de THEN
                                        COALESCE((a * least(greatest(bp, 0), 10000) + 5000) // 10000, 0)
                                        + COALESCE(greatest(off, 0), 0) ELSE 0 END > 0 THEN t
                            WHEN status IN ('active', 'past_due') AND currency = 'usd' AND de > t
                                 AND de < COALESCE(next_t, 9223372036854775807) AND a > 0 THEN de
                       END AS paid_at
                FROM snaps)
            SELECT ckey, min(paid_at) AS paid_at FROM c WHERE paid_at IS NOT NULL GROUP BY ckey"""),
        ("mrr_full_months", """
            CREATE TABLE mrr_customer_months AS
            WITH firsts AS (SELECT ckey, min(t) AS first_t FROM snaps GROUP BY ckey),
                 rows AS (
                    SELECT i.month, f.ckey, s.mrr AS s_mrr, s.plan AS s_plan, e.mrr AS e_mrr, e.plan AS e_plan,
                           i.start_x
                    FROM firsts f
                    JOIN instants i ON i.month >= strftime(make_timestamp(f.first_t), '%Y-%m')
                    LEFT JOIN cust_at s ON s.ckey = f.ckey AND s.x = i.start_x
                    LEFT JOIN cust_at e ON e.ckey = f.ckey AND e.x = i.end_x)
            SELECT r.month, r.ckey AS customer_key,
                   CASE WHEN r.ckey LIKE 'stripe:%' THEN NULL ELSE r.ckey END AS customer_id,
                   COALESCE(CASE WHEN COALESCE(r.e_mrr, 0) > 0 THEN r.e_plan ELSE r.s_plan END, '') AS plan,
                   COALESCE(r.s_mrr, 0) AS starting_cents, COALESCE(r.e_mrr, 0) AS ending_cents,
                   CASE WHEN COALESCE(r.s_mrr, 0) = 0 AND p.paid_at < r.start_x + 1 THEN 'reactivation'
                        WHEN COALESCE(r.s_mrr, 0) = 0 THEN 'new'
                        WHEN COALESCE(r.e_mrr, 0) = 0 THEN 'churn'
                        WHEN r.e_mrr > r.s_mrr THEN 'expansion'
                        WHEN r.e_mrr < r.s_mrr THEN 'contraction'
                        ELSE 'none' END AS movement
            FROM rows r LEFT JOIN first_paid p ON p.ckey = r.ckey
            WHERE COALESCE(r.s_mrr, 0) > 0 OR COALESCE(r.e_mrr, 0) > 0"""),
        # What store::compress keeps (the first row, each movement, each change of plan,
        # the row after a gap), each with the month of the customer's next stored row.
        ("insights_mrr_customer_months", """
            CREATE TABLE mrr_stored AS
            WITH k AS (
                SELECT *, lag(month) OVER w AS prev_month, lag(plan) OVER w AS prev_plan
                FROM mrr_customer_months WINDOW w AS (PARTITION BY customer_key ORDER BY month)),
                 kept AS (
                SELECT * FROM k
                WHERE prev_month IS NULL OR movement <> 'none' OR plan <> prev_plan
                   OR strftime(strptime(prev_month, '%Y-%m') + INTERVAL 1 MONTH, '%Y-%m') <> month)
            SELECT month, customer_key, customer_id, plan, starting_cents, ending_cents, movement,
                   lead(month) OVER (PARTITION BY customer_key ORDER BY month) AS next_month
            FROM kept"""),
        ("insights_mrr_months", """
            CREATE TABLE mrr_months AS
            SELECT month, COALESCE(plan, '') AS plan,
                   sum(starting_cents) AS starting_cents,
                   sum(CASE WHEN movement = 'new' THEN ending_cents ELSE 0 END) AS new_cents,
                   sum(CASE WHEN movement = 'expansion' THEN ending_cents - starting_cents ELSE 0 END) AS expansion_cents,
                   sum(CASE WHEN movement = 'contraction' THEN starting_cents - ending_cents ELSE 0 END) AS contraction_cents,
                   sum(CASE WHEN movement = 'churn' THEN starting_cents ELSE 0 END) AS churn_cents,
                   sum(CASE WHEN movement = 'reactivation' THEN ending_cents ELSE 0 END) AS reactivation_cents,
                   sum(ending_cents) AS ending_cents,
                   count(*) FILTER (WHERE starting_cents > 0) AS paying_start,
                   count(*) FILTER (WHERE ending_cents > 0) AS paying_end,
                   count(*) FILTER (WHERE movement = 'new') AS new_customers,
                   count(*) FILTER (WHERE movement = 'churn') AS churned_customers,
                   count(*) FILTER (WHERE movement = 'reactivation') AS reactivated_customers
            FROM mrr_customer_months
            GROUP BY GROUPING SETS ((month, plan), (month))"""),
        # ---- usage (usage/rebuild.rs) ----
        ("insights_tasks", f"""
            CREATE TABLE u_tasks AS
            WITH l AS (SELECT task_id, sum(cost_micros) AS cost, max(created_at) AS last
                       FROM llm_calls WHERE task_id IS NOT NULL GROUP BY task_id)
            SELECT t.id AS task_id, {month_sql('t.finished_at')} AS month, t.customer_id, t.team,
                   t.state AS outcome,
                   CASE WHEN t.finished_at > t.queued_at THEN (t.finished_at - t.queued_at) // 1000 ELSE 0 END
                       AS duration_ms,
                   COALESCE(l.cost, 0) AS cost_micros,
                   CASE WHEN t.state = 'succeeded' THEN COALESCE(t.charge_micros, 0) ELSE 0 END AS charge_micros,
                   COALESCE(l.last, 0) AS ledger_until,
                   CASE WHEN c.id IS NULL THEN 'unattributed' ELSE COALESCE(c.plan, 'pay-per-task') END AS plan
            FROM tasks t LEFT JOIN l ON l.task_id = t.id LEFT JOIN customers c ON c.id = t.customer_id
            WHERE t.state IN ('succeeded', 'failed', 'cancelled') AND t.finished_at IS NOT NULL"""),
        ("insights_usage", """
            CREATE TABLE u_usage AS
            SELECT month, customer_id, team,
                   count(*) FILTER (WHERE outcome = 'succeeded') AS tasks_completed,
                   count(*) FILTER (WHERE outcome = 'failed') AS tasks_failed,
                   sum(cost_micros) AS cost_micros, sum(charge_micros) AS charge_micros
            FROM u_tasks GROUP BY month, customer_id, team"""),
        ("insights_model_cost", """
            CREATE TABLE u_model_cost AS
            SELECT it.month, it.customer_id, it.team, l.model_used AS model, count(*) AS calls,
                   sum(l.input_tokens) AS input_tokens, sum(l.output_tokens) AS output_tokens,
                   sum(l.cost_micros) AS cost_micros
            FROM u_tasks it JOIN llm_calls l ON l.task_id = it.task_id
            GROUP BY it.month, it.customer_id, it.team, l.model_used"""),
        ("insights_revenue_seen", f"""
            CREATE TABLE u_revenue_seen AS
            SELECT source_id, kind, {month_sql('occurred_at')} AS month, COALESCE(customer_id, '') AS customer_id,
                   CASE WHEN kind IN ('refund', 'dispute') THEN '' ELSE COALESCE(plan, '') END AS plan, amount_cents
            FROM revenue_entries WHERE kind IN ('invoice_paid', 'refund', 'dispute')"""),
        ("insights_revenue", """
            CREATE TABLE u_revenue AS
            SELECT month, customer_id, plan,
                   sum(CASE WHEN kind = 'invoice_paid' THEN amount_cents ELSE 0 END) AS subscription_cents,
                   sum(CASE WHEN kind IN ('refund', 'dispute') THEN -amount_cents ELSE 0 END) AS refunds_cents
            FROM u_revenue_seen GROUP BY month, customer_id, plan"""),
        # ---- the split (usage/split.rs): each customer month's subscription revenue and
        # refunds shared over its (team, model) pairs with cost by cumulative cost, each
        # team's pay-per-task charges over its models (sub-cent rest on the last), revenue
        # without cost `unattributed`, task counts on model ''; integer division truncating.
        ("insights_pieces", """
            CREATE TABLE u_pieces AS
            WITH mc AS (SELECT month, customer_id, team, model, cost_micros AS cost, calls FROM u_model_cost
                        WHERE cost_micros > 0),
                 rv AS (SELECT month, customer_id, sum(subscription_cents) AS s, sum(refunds_cents) AS f
                        FROM u_revenue GROUP BY month, customer_id),
                 us AS (SELECT month, customer_id, team, charge_micros AS ch, tasks_completed AS done,
                               tasks_failed AS failed FROM u_usage),
                 w AS (SELECT mc.*, COALESCE(rv.s, 0) AS s, COALESCE(rv.f, 0) AS f,
                              COALESCE(us.ch, 0) // 10000 AS chc, COALESCE(us.ch, 0) % 10000 AS rem,
                              sum(mc.cost) OVER (PARTITION BY mc.month, mc.customer_id ORDER BY mc.team, mc.model
                                                 ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS cc,
                              sum(mc.cost) OVER (PARTITION BY mc.month, mc.customer_id) AS tc,
                              sum(mc.cost) OVER (PARTITION BY mc.month, mc.customer_id, mc.team ORDER BY mc.model
                                                 ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS ct,
                              sum(mc.cost) OVER (PARTITION BY mc.month, mc.customer_id, mc.team) AS tt
                       FROM mc LEFT JOIN rv ON rv.month = mc.month AND rv.customer_id = mc.customer_id
                               LEFT JOIN us ON us.month = mc.month AND us.customer_id = mc.customer_id
                                           AND us.team = mc.team),
                 p AS (SELECT month, customer_id, team, model, cost, calls,
                              (s * cc // tc - s * (cc - cost) // tc) * 10000 AS sub,
                              (f * cc // tc - f * (cc - cost) // tc) * 10000 AS ref,
                              (chc * ct // tt - chc * (ct - cost) // tt) * 10000
                                  + CASE WHEN ct = tt THEN rem ELSE 0 END AS chg,
                              0 AS done, 0 AS failed
                       FROM w
                       UNION ALL
                       SELECT month, customer_id, 'unattributed', 'unattributed', 0, 0, s * 10000, f * 10000, 0, 0, 0
                       FROM rv WHERE (s <> 0 OR f <> 0)
                         AND NOT EXISTS (SELECT 1 FROM mc x WHERE x.month = rv.month AND x.customer_id = rv.customer_id)
                       UNION ALL
                       SELECT month, customer_id, team, 'unattributed', 0, 0, 0, 0, ch, 0, 0 FROM us
                       WHERE ch <> 0 AND NOT EXISTS (SELECT 1 FROM mc x WHERE x.month = us.month
                                                     AND x.customer_id = us.customer_id AND x.team = us.team)
                       UNION ALL
                       SELECT month, customer_id, team, '', 0, 0, 0, 0, 0, done, failed FROM us
                       WHERE done <> 0 OR failed <> 0)
            SELECT p.month, p.customer_id, p.team, p.model,
                   CASE WHEN c.id IS NULL THEN 'unattributed' WHEN c.plan IS NULL THEN 'pay-per-task' ELSE c.plan END
                       AS plan,
                   sum(p.sub) AS subscription_micros, sum(p.ref) AS refunds_micros, sum(p.chg) AS charge_micros,
                   sum(p.cost) AS cost_micros, sum(p.calls) AS calls, sum(p.done) AS completed,
                   sum(p.failed) AS failed
            FROM p LEFT JOIN customers c ON c.id = p.customer_id
            GROUP BY p.month, p.customer_id, p.team, p.model, c.id, c.plan"""),
        ("insights_split", """
            CREATE TABLE u_split AS
            SELECT month, team, model, plan, count(*) AS pieces, sum(subscription_micros) AS subscription_micros,
                   sum(refunds_micros) AS refunds_micros, sum(charge_micros) AS charge_micros,
                   sum(cost_micros) AS cost_micros, sum(calls) AS calls, sum(completed) AS completed,
                   sum(failed) AS failed
            FROM u_pieces GROUP BY month, team, model, plan"""),
        ("insights_margins", """
            CREATE TABLE u_margins AS
            SELECT month, customer_id, COALESCE(team, '') AS team, max(plan) AS plan,
                   sum(subscription_micros - refunds_micros + charge_micros) AS revenue_micros,
                   sum(cost_micros) AS cost_micros,
                   sum(subscription_micros - refunds_micros + charge_micros - cost_micros) AS margin_micros,
                   sum(completed) AS completed
            FROM u_pieces GROUP BY GROUPING SETS ((month, customer_id, team), (month, customer_id))"""),
        # ---- people (people/rollup.rs `rebuild`): insights_people, one row per customer ----
        # The first instant it reached each funnel stage or a later one (a skipped stage is
        # passed at the later one's instant), and its activation: the first task that
        # succeeded within the window after creation. The board aggregates cohorts and the
        # funnel from this table when it reads; NPS is left out (no survey answers).
        ("insights_people", f"""
            CREATE TABLE p_people AS
            WITH s AS (
                SELECT customer_id,
                       min("at") FILTER (WHERE to_stage IN ('lead', 'qualified', 'trial', 'active', 'paused')) AS lead_at,
                       min("at") FILTER (WHERE to_stage IN ('qualified', 'trial', 'active', 'paused')) AS qualified_at,
                       min("at") FILTER (WHERE to_stage IN ('trial', 'active', 'paused')) AS trial_at,
                       min("at") FILTER (WHERE to_stage IN ('active', 'paused')) AS paid_at
                FROM customer_stage_changes GROUP BY customer_id),
                 a AS (
                SELECT t.customer_id, min(t.finished_at) AS activated_at
                FROM tasks t JOIN customers c ON c.id = t.customer_id
                WHERE t.state = 'succeeded' AND t.queued_at < c.created_at + {WINDOW}
                  AND t.finished_at >= c.created_at AND t.finished_at < c.created_at + {WINDOW}
                GROUP BY t.customer_id)
            SELECT c.id AS customer_id, c.plan, c.created_at, s.lead_at, s.qualified_at, s.trial_at, s.paid_at,
                   a.activated_at
            FROM customers c LEFT JOIN s ON s.customer_id = c.id LEFT JOIN a ON a.customer_id = c.id"""),
    ]


# The rebuild's tables and the DuckDB tables that must hold the same rows.
COMPARED = {
    "insights_mrr_months": ("mrr_months", "month, plan, starting_cents, new_cents, expansion_cents, "
                            "contraction_cents, churn_cents, reactivation_cents, ending_cents, paying_start, "
                            "paying_end, new_customers, churned_customers, reactivated_customers"),
    "insights_mrr_customer_months": ("mrr_stored", "month, customer_key, customer_id, plan, starting_cents, "
                                     "ending_cents, movement, next_month"),
    "insights_tasks": ("u_tasks", "task_id, month, customer_id, team, outcome, duration_ms, cost_micros, "
                       "charge_micros, ledger_until, plan"),
    "insights_usage": ("u_usage", "month, customer_id, team, tasks_completed, tasks_failed, cost_micros, charge_micros"),
    "insights_model_cost": ("u_model_cost", "month, customer_id, team, model, calls, input_tokens, output_tokens, "
                            "cost_micros"),
    "insights_pieces": ("u_pieces", "month, customer_id, team, model, plan, subscription_micros, refunds_micros, "
                        "charge_micros, cost_micros, calls, completed, failed"),
    "insights_split": ("u_split", "month, team, model, plan, pieces, subscription_micros, refunds_micros, "
                       "charge_micros, cost_micros, calls, completed, failed"),
    "insights_margins": ("u_margins", "month, customer_id, team, plan, revenue_micros, cost_micros, margin_micros, "
                         "completed"),
    "insights_revenue_seen": ("u_revenue_seen", "source_id, kind, month, customer_id, plan, amount_cents"),
    "insights_revenue": ("u_revenue", "month, customer_id, plan, subscription_cents, refunds_cents"),
    "insights_people": ("p_people", "customer_id, plan, created_at, lead_at, qualified_at, trial_at, paid_at, "
                        "activated_at"),
}


def compare(con, db):
    """Each table the rebuild wrote against DuckDB's, as text (NULL and '' alike: the CSV
    export cannot tell them apart), both ways; exits naming the tables that differ."""
    bad = []
    with tempfile.TemporaryDirectory() as tmp:
        for table, (mine, cols) in COMPARED.items():
            path = os.path.join(tmp, table + ".csv")
            with open(path, "wb") as dst:
                subprocess.run(["sqlite3", "-csv", "-readonly", db, f"SELECT {cols} FROM {table}"], stdout=dst, check=True)
            names = [c.strip() for c in cols.split(",")]
            text = ", ".join(f"COALESCE(CAST({c} AS VARCHAR), '')" for c in names)
            theirs = f"SELECT {text} FROM read_csv('{path}', header = false, all_varchar = true, names = {names})"
            ours = f"SELECT {text} FROM {mine}"
            only_sqlite = con.execute(f"SELECT count(*) FROM ({theirs} EXCEPT ALL {ours})").fetchone()[0]
            only_duckdb = con.execute(f"SELECT count(*) FROM ({ours} EXCEPT ALL {theirs})").fetchone()[0]
            print(f"compare {table}: only in the rebuild {only_sqlite}, only in DuckDB {only_duckdb}", flush=True)
            if only_sqlite or only_duckdb:
                bad.append(table)
    if bad:
        sys.exit(f"the rebuild and DuckDB differ on {', '.join(bad)}")


def run_once(parquet_dir, threads, through, db=None):
    con = duckdb.connect()
    if threads:
        con.execute(f"SET threads = {int(threads)}")
    for table in TABLES:
        path = os.path.join(parquet_dir, table + ".parquet")
        con.execute(f"CREATE VIEW {table} AS SELECT * FROM read_parquet('{path}')")
    times = {}
    began = time.monotonic()
    for name, sql in steps(through):
        t = time.monotonic()
        con.execute(sql)
        times[name] = time.monotonic() - t
    total = time.monotonic() - began
    counts = {
        "mrr_customer_months": con.execute("SELECT count(*) FROM mrr_stored").fetchone()[0],
        "mrr_months": con.execute("SELECT count(*) FROM mrr_months").fetchone()[0],
        "tasks": con.execute("SELECT count(*) FROM u_tasks").fetchone()[0],
        "usage": con.execute("SELECT count(*) FROM u_usage").fetchone()[0],
        "model_cost": con.execute("SELECT count(*) FROM u_model_cost").fetchone()[0],
        "revenue": con.execute("SELECT count(*) FROM u_revenue").fetchone()[0],
        "pieces": con.execute("SELECT count(*) FROM u_pieces").fetchone()[0],
        "split": con.execute("SELECT count(*) FROM u_split").fetchone()[0],
        "margins": con.execute("SELECT count(*) FROM u_margins").fetchone()[0],
        "people": con.execute("SELECT count(*) FROM p_people").fetchone()[0],
        "activated": con.execute("SELECT count(activated_at) FROM p_people").fetchone()[0],
    }
    check = con.execute(
        "SELECT count(*) FROM mrr_months WHERE starting_cents + new_cents + expansion_cents + reactivation_cents"
        " - contraction_cents - churn_cents <> ending_cents"
    ).fetchone()[0]
    if check:
        sys.exit(f"MRR identity broken on {check} month rows")
    last = con.execute(
        "SELECT month, ending_cents, paying_end FROM mrr_months WHERE plan = '' AND month = ?", [through]
    ).fetchone()
    if db:
        compare(con, db)
    con.close()
    return total, times, counts, last


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("db")
    ap.add_argument("parquet_dir")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=0, help="DuckDB threads (0: DuckDB's default, every core)")
    ap.add_argument("--through", default=dt.datetime.now(dt.timezone.utc).strftime("%Y-%m"),
                    help="last month of the MRR rollups (the rebuild uses the clock's month)")
    ap.add_argument("--tz", default="UTC")
    ap.add_argument("--no-export", action="store_true", help="reuse the Parquet files already in PARQUET_DIR")
    ap.add_argument("--compare", action="store_true",
                    help="after the last round, compare every rollup table with the one `kpi rebuild` wrote")
    a = ap.parse_args()
    if a.tz != "UTC":
        sys.exit("only the UTC business zone is supported by this baseline")
    if not a.no_export:
        secs = export(a.db, a.parquet_dir)
        size = sum(os.path.getsize(os.path.join(a.parquet_dir, t + ".parquet")) for t in TABLES)
        print(f"duckdb export: {secs:.1f} s, parquet {size / 1e6:.0f} MB", flush=True)
    totals = []
    for r in range(1, a.rounds + 1):
        last_round = r == a.rounds and a.compare
        total, times, counts, last = run_once(a.parquet_dir, a.threads, a.through, a.db if last_round else None)
        totals.append(total)
        steps_txt = " ".join(f"{k}={v:.2f}" for k, v in times.items())
        print(f"duckdb round {r}: total_s={total:.2f} {steps_txt} rows={counts} mrr_{a.through}={last}", flush=True)
    threads = a.threads or duckdb.connect().execute("SELECT current_setting('threads')").fetchone()[0]
    print(f"duckdb median_s={statistics.median(totals):.2f} threads={threads}")


if __name__ == "__main__":
    main()
