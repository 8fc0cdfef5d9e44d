#!/usr/bin/env python3
"""Writes the SQL `kpi rebuild` issues for usage, the split and people (as the Rust has it
now, read from the source) into OUT_DIR, for bench/insights/rebuild-statements to time one
by one. Usage: rebuild_sql.py DB_FILE REPO_ROOT OUT_DIR (UTC business zone only)."""
# Builds the rebuild's usage/split/people statements (as the Rust issues them) for the sqlite3 shell.
import re, sqlite3, sys, datetime as dt
db = sys.argv[1]; src = sys.argv[2]; OUT = sys.argv[3]
con = sqlite3.connect(db)
def month_case(col, lo, hi):
    def m_of(us): d = dt.datetime.fromtimestamp(us/1e6, dt.timezone.utc); return (d.year, d.month)
    a, b = m_of(lo), m_of(hi); ms = []
    y, m = a
    while (y, m) <= b: ms.append((y, m)); y, m = (y + (m == 12), m % 12 + 1)
    if len(ms) == 1: return f"'{ms[0][0]:04d}-{ms[0][1]:02d}'"
    s = "CASE"
    for (y, m) in ms[:-1]:
        ny, nm = (y + (m == 12), m % 12 + 1)
        s += f" WHEN {col} < {int(dt.datetime(ny, nm, 1, tzinfo=dt.timezone.utc).timestamp()) * 1000000} THEN '{y:04d}-{m:02d}'"
    return s + f" ELSE '{ms[-1][0]:04d}-{ms[-1][1]:02d}' END"
rs = open(f"{src}/crates/j1msky-insights/src/usage/rebuild.rs").read()
sp = open(f"{src}/crates/j1msky-insights/src/usage/split.rs").read()
parts = open(f"{src}/crates/j1msky-insights/src/usage/parts.rs").read()
plan_key = re.search(r'pub const PLAN_KEY: &str = "(.*?)";', parts, re.S).group(1)
lo, hi = con.execute("SELECT MIN(finished_at), MAX(finished_at) FROM tasks WHERE state IN ('succeeded','failed','cancelled') AND finished_at IS NOT NULL").fetchone()
month = month_case("t.finished_at", lo, hi)
rlo, rhi = con.execute("SELECT MIN(occurred_at), MAX(occurred_at) FROM revenue_entries WHERE kind IN ('invoice_paid','refund','dispute')").fetchone()
rmonth = month_case("occurred_at", rlo, rhi)
def rust_strings(fn_src):
    out = []
    for m in re.finditer(r'sqlx::query(?:_as)?\((&format!\()?\s*"(.*?)"', fn_src, re.S):
        out.append(m.group(2))
    return out
tasks_fn = rs[rs.index("async fn tasks"):rs.index("async fn revenue")]
rev_fn = rs[rs.index("async fn revenue"):]
stmts = []
for s in rust_strings(tasks_fn)[1:]:
    stmts.append(s.replace("{month}", month).replace("{plan}", plan_key.replace("{id}", "t.customer_id")).replace("{FINISHED}", "state IN ('succeeded', 'failed', 'cancelled') AND finished_at IS NOT NULL"))
for s in rust_strings(rev_fn)[1:]:
    stmts.append(s.replace("{month}", rmonth).replace("{KINDS}", "kind IN ('invoice_paid', 'refund', 'dispute')"))
print(len(stmts), file=sys.stderr)
for i, s in enumerate(stmts): open(f"{OUT}/u{i}.sql", "w").write(s + ";\n")
# split
pieces = re.search(r'const PIECES: &str = "(.*?)";\n', sp, re.S).group(1).replace("{scope}", "1 = 1")
cols = re.search(r'const PIECE_COLUMNS: &str = "(.*?)";', sp, re.S).group(1)
margins = re.search(r'const MARGINS: &str = "(.*?)";\n', sp, re.S).group(1).replace("{scope}", "1 = 1")
reb = sp[sp.index("pub async fn rebuild"):]
split_ins = [s for s in rust_strings(reb) if s.lstrip().startswith("INSERT INTO insights_split")][0]
open(f"{OUT}/s0.sql", "w").write(f"INSERT INTO insights_pieces ({cols}) {pieces};\n")
open(f"{OUT}/s1.sql", "w").write(split_ins + ";\n")
open(f"{OUT}/s2.sql", "w").write(margins + ";\n")
# people (people/rollup.rs `rebuild`, with its STAGES and ACTIVATION_WINDOW written out)
open(f"{OUT}/p0.sql", "w").write("""INSERT INTO insights_people (customer_id, plan, created_at, lead_at, qualified_at, trial_at, paid_at, activated_at)
         SELECT c.id, c.plan, c.created_at, s.lead_at, s.qualified_at, s.trial_at, s.paid_at,
                (SELECT MIN(t.finished_at) FROM tasks t
                 WHERE t.customer_id = c.id AND t.queued_at < c.created_at + 604800000000
                   AND t.state = 'succeeded' AND t.finished_at >= c.created_at
                   AND t.finished_at < c.created_at + 604800000000)
         FROM customers c
         LEFT JOIN (SELECT customer_id, MIN(CASE WHEN to_stage IN ('lead', 'qualified', 'trial', 'active', 'paused') THEN at END) AS lead_at,
           MIN(CASE WHEN to_stage IN ('qualified', 'trial', 'active', 'paused') THEN at END) AS qualified_at,
           MIN(CASE WHEN to_stage IN ('trial', 'active', 'paused') THEN at END) AS trial_at,
           MIN(CASE WHEN to_stage IN ('active', 'paused') THEN at END) AS paid_at FROM customer_stage_changes GROUP BY customer_id) s
             ON s.customer_id = c.id;
""")
# the rollups' secondary indexes the rebuild drops and builds again (insights::bulk)
tables = "('insights_tasks', 'insights_pieces', 'insights_margins', 'insights_people')"
idx = con.execute(f"SELECT name, sql FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL AND tbl_name IN {tables}").fetchall()
open(f"{OUT}/idx_drop.sql", "w").write("".join(f"DROP INDEX {n};\n" for n, _ in idx))
open(f"{OUT}/idx_create.sql", "w").write("".join(f"{q};\n" for _, q in idx))
