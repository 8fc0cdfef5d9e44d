//! The operator's board (`/admin`), its drill-down and CSV exports, the morning and
//! evening reviews with the what-if, the customer list's new home at `/admin/customers`
//! and the customer's `/app` home, over real HTTP on the engine the run selects: their
//! structure, filters, validation, CSV and access, and the insights crate's hand-computed
//! MRR story shown month by month on the board.

// A test stops at the first surprise: unwrap and expect are its assertions.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::disallowed_methods)]

use crate::common;
// The insights crate's hand-computed MRR story, shown here through the board.
use crate::mrr_support;
// And its hand-computed month of revenue, cost and margins.
use crate::usage_support;

use common::{operator, spawn_app, spawn_app_with_catalogue, TestApp, PASSWORD};
use j1msky_audit::Actor;

async fn get(browser: &reqwest::Client, app: &TestApp, path: &str) -> (u16, String, String) {
    let resp = browser.get(app.url(path)).send().await.unwrap();
    let status = resp.status().as_u16();
    let ctype = resp.headers().get("content-type").map(|v| v.to_str().unwrap().to_string()).unwrap_or_default();
    // Links as a browser reads them (the templates escape `/` and `&` in attributes).
    let body = resp.text().await.unwrap().replace("&#x2f;", "/").replace("&amp;", "&");
    (status, ctype, body)
}

/// Runs the insights' consumers over everything written so far, as the server's
/// `reactions` role keeps the rollups; returns the insights' context of the app.
async fn rollups_kept(app: &TestApp) -> j1msky_insights::Ctx {
    let ctx = j1msky_insights::Ctx {
        db: app.db.clone(),
        catalogue: app.catalogue.clone().into(),
        clock: std::sync::Arc::new(app.clock.clone()),
    };
    let runner = j1msky_db::consumers::Runner::new("test");
    let consumers = j1msky_insights::rollups::consumers(&ctx);
    while j1msky_db::consumers::run_once(&app.db, &runner, &consumers, &app.clock).await.unwrap().moved() {}
    ctx
}

/// The `data-value` of the tile `data-kpi="key"`.
fn tile_value(html: &str, key: &str) -> String {
    let marker = format!("data-kpi=\"{key}\" data-value=\"");
    let start = html.find(&marker).unwrap_or_else(|| panic!("no tile {key}")) + marker.len();
    html[start..start + html[start..].find('"').unwrap()].to_string()
}

#[tokio::test]
async fn the_board_is_the_operators_home_with_tiles_charts_filters_and_tables() {
    let app = spawn_app().await;
    let op = operator(&app).await;
    // Logging in lands on the board.
    let (status, _, html) = get(&op, &app, "/admin").await;
    assert_eq!(status, 200);
    assert!(html.contains("<h1>Board · 2026-11</h1>"), "this month by default");
    assert!(html.contains("<form id=\"filters\" method=\"get\""));
    for field in ["name=\"month\" value=\"2026-11\"", "name=\"plan\"", "name=\"team\""] {
        assert!(html.contains(field), "{field}");
    }
    for key in [
        "mrr.ending_cents",
        "mrr.new_cents",
        "mrr.expansion_cents",
        "mrr.contraction_cents",
        "mrr.churn_cents",
        "mrr.reactivation_cents",
        "mrr.paying_end",
        "customers.churn_rate_bp",
        "customers.arpa_cents",
        "customers.ltv_cents",
        "customers.cac_cents",
        "customers.activation_bp",
        "customers.nps",
        "usage.revenue_micros",
        "usage.model_cost_micros",
        "usage.gross_margin_micros",
        "usage.cost_per_completed_task_micros",
        "usage.success_rate_bp",
    ] {
        tile_value(&html, key);
    }
    // The stubs' numbers: MRR is zero (an integer), a rate with no denominator is empty.
    assert_eq!(tile_value(&html, "mrr.ending_cents"), "0");
    assert_eq!(tile_value(&html, "customers.churn_rate_bp"), "");
    // Charts are inline SVG, titled, with every point in words.
    for chart in ["mrr", "revenue"] {
        let open = format!("<svg class=\"chart\" data-chart=\"{chart}\"");
        let at = html.find(&open).unwrap_or_else(|| panic!("chart {chart}"));
        let svg = &html[at..at + html[at..].find("</svg>").unwrap()];
        assert!(svg.contains("<title>"), "{chart} has a title");
        assert!(svg.contains("2025-12: 0.00") && svg.contains("2026-11: 0.00"), "{chart}: 12 months in <desc>");
        assert!(svg.contains("<polyline") || svg.contains("<path"), "{chart} draws lines");
    }
    // Tables with their CSV links; drill-down links on the MRR tiles.
    for table in
        ["mrr_by_plan", "margin_by_plan", "margin_by_team", "margin_by_model", "margin_by_customer", "completion"]
    {
        assert!(html.contains(&format!("data-table=\"{table}\"")), "{table}");
        assert!(html.contains(&format!("/admin?month=2026-11&table={table}&format=csv")), "{table} csv link");
    }
    assert!(html.contains("/admin/insights/behind?tile=mrr.new_cents&month=2026-11"));
    // Navigation: Board and Reviews for operators.
    assert!(html.contains("href=\"/admin\" class=\"on\">Board</a>"), "the board is marked current");
    assert!(html.contains("href=\"/admin/review/morning\""));
    assert!(html.contains("href=\"/admin/customers\""));
}

/// An app on Berlin time holding the hand-computed MRR story, its rollups as the
/// `reactions` role's MRR consumer keeps them.
async fn story_app() -> (TestApp, j1msky_insights::Ctx) {
    let mut catalogue = j1msky_core::catalogue::Catalogue::from_json_str(j1msky_core::catalogue::SHIPPED).unwrap();
    catalogue.business.time_zone = "Europe/Berlin".into();
    let app = spawn_app_with_catalogue(j1msky_sim::SimConfig::default(), catalogue).await;
    let ctx = j1msky_insights::Ctx {
        db: app.db.clone(),
        catalogue: app.catalogue.clone().into(),
        clock: std::sync::Arc::new(app.clock.clone()),
    };
    let w = mrr_support::on(ctx.clone(), app.clock.clone());
    let s = mrr_support::story::story(&w).await;
    w.deliver(&s.events).await;
    w.consume().await;
    (app, ctx)
}

#[tokio::test]
async fn the_board_shows_the_hand_computed_story_month_by_month() {
    use mrr_support::story::{expected, expected_counts, expected_rates};
    let (app, _) = story_app().await;
    let op = operator(&app).await;
    let rates = expected_rates();
    let shown = |v: Option<i64>| v.map(|v| v.to_string()).unwrap_or_default();
    for (month, want) in expected() {
        let (status, _, html) = get(&op, &app, &format!("/admin?month={month}")).await;
        assert_eq!(status, 200, "{month}");
        assert!(html.contains(&format!("<h1>Board · {month}</h1>")), "{month}");
        let (_, paying_end, ..) = expected_counts(month);
        for (key, value) in [
            ("mrr.ending_cents", want.ending_cents),
            ("mrr.new_cents", want.new_cents),
            ("mrr.expansion_cents", want.expansion_cents),
            ("mrr.contraction_cents", want.contraction_cents),
            ("mrr.churn_cents", want.churn_cents),
            ("mrr.reactivation_cents", want.reactivation_cents),
            ("mrr.paying_end", paying_end),
        ] {
            assert_eq!(tile_value(&html, key), value.to_string(), "{month}: {key}");
        }
        let (_, churn, gross, net, arpa) = rates.iter().find(|r| r.0 == month).expect("rates for every month");
        assert_eq!(tile_value(&html, "customers.churn_rate_bp"), shown(*churn), "{month}: churn rate");
        assert_eq!(tile_value(&html, "customers.gross_revenue_churn_bp"), shown(*gross), "{month}: gross churn");
        assert_eq!(tile_value(&html, "customers.net_revenue_churn_bp"), shown(*net), "{month}: net churn");
        assert_eq!(tile_value(&html, "customers.arpa_cents"), shown(*arpa), "{month}: ARPA");
        // MRR by plan, as its CSV has it.
        let (_, _, csv) = get(&op, &app, &format!("/admin?month={month}&table=mrr_by_plan&format=csv")).await;
        let mut rows: Vec<&str> = csv.split("\r\n").filter(|l| !l.is_empty()).collect();
        assert_eq!(rows.remove(0), "plan,customers,mrr_cents");
        let mut want_rows: Vec<String> =
            want.by_plan.iter().map(|p| format!("{},{},{}", p.plan, p.customers, p.cents)).collect();
        want_rows.sort();
        rows.sort();
        assert_eq!(rows, want_rows, "{month}: MRR by plan");
    }
    // A tile's drill-down names the customer behind it: March's win-back.
    let (_, _, html) = get(&op, &app, "/admin/insights/behind?tile=mrr.reactivation_cents&month=2026-03").await;
    assert!(html.contains("Winback GmbH") && html.contains("59.40"), "{html}");
    assert!(!html.contains("Upgrade Ltd"), "only the customer behind the movement: {html}");
}

/// Every tile of the board, as its CSV gives it, is the number `j1msky kpi --json` prints
/// for the month (the library's `Kpis` at the tile's key): over the hand-computed story,
/// with acquisition spend entered so that CAC has values too.
#[tokio::test]
async fn every_tile_is_the_number_kpi_json_prints_for_the_month() {
    use mrr_support::story::expected;
    let (app, ctx) = story_app().await;
    let op = operator(&app).await;
    let mut compared = 0;
    let mut valued = std::collections::BTreeSet::new();
    for (n, (month, _)) in expected().into_iter().enumerate() {
        let m = j1msky_insights::Month::parse(month).unwrap();
        let cents = 10_000 * (n as i64 + 1);
        j1msky_insights::people::set_spend(&ctx, m, cents, &j1msky_audit::Actor::cli()).await.unwrap();
        let library = j1msky_insights::kpis::for_month(&ctx, m, &Default::default()).await.unwrap();
        let json = serde_json::to_value(&library).unwrap();
        let (status, _, csv) = get(&op, &app, &format!("/admin?month={month}&table=tiles&format=csv")).await;
        assert_eq!(status, 200, "{month}");
        for line in csv.split("\r\n").skip(1).filter(|l| !l.is_empty()) {
            let (key, shown) = (line.split(',').next().unwrap(), line.rsplit(',').next().unwrap());
            let want = match key {
                // The tile is this month's signup cohort, and the NPS score of the answers.
                "customers.activation_bp" => library
                    .customers
                    .activation
                    .iter()
                    .find(|c| c.month == library.month)
                    .and_then(|c| c.rate_bp)
                    .map(|v| v.to_string()),
                "customers.nps" => library.customers.nps.as_ref().map(|n| n.score.to_string()),
                _ => {
                    let at = json.pointer(&format!("/{}", key.replace('.', "/")));
                    let at = at.unwrap_or_else(|| panic!("{key}: not a number of `kpi --json`"));
                    assert!(at.is_i64() || at.is_null(), "{key}: {at}");
                    at.as_i64().map(|v| v.to_string())
                }
            };
            assert_eq!(shown, want.clone().unwrap_or_default(), "{month}: {key}");
            compared += 1;
            if want.is_some_and(|v| v != "0") {
                valued.insert(key.to_string());
            }
        }
    }
    assert!(compared >= 28 * 3, "{compared} tiles compared");
    for key in ["mrr.ending_cents", "customers.gross_revenue_churn_bp", "customers.arpa_cents", "customers.cac_cents"] {
        assert!(valued.contains(key), "{key} had a value in some month: {valued:?}");
    }
}

#[tokio::test]
async fn the_board_shows_the_hand_computed_month_of_revenue_cost_and_margins() {
    use usage_support::{at, november, BY_CUSTOMER, COMPLETION, TOTALS};
    let app = spawn_app().await;
    november(&app.db, &app.catalogue).await;
    app.clock.advance_secs((at(28, 12) - app.now()) / 1_000_000);
    // The rollups as the `reactions` role's consumers keep them.
    rollups_kept(&app).await;
    let op = operator(&app).await;
    let (status, _, html) = get(&op, &app, "/admin?month=2026-11").await;
    assert_eq!(status, 200);
    for (field, value) in TOTALS {
        let key = format!("usage.{field}");
        if html.contains(&format!("data-kpi=\"{key}\"")) {
            assert_eq!(tile_value(&html, &key), value.to_string(), "{key}");
        }
    }
    for key in ["revenue_micros", "model_cost_micros", "gross_margin_micros", "cost_per_completed_task_micros"] {
        assert!(html.contains(&format!("data-kpi=\"usage.{key}\"")), "a tile for {key}");
    }
    // Each customer's margin, the loss-makers first; completion times per team.
    let csv = |table: &'static str| {
        let (op, app) = (&op, &app);
        async move {
            let (status, _, body) = get(op, app, &format!("/admin?month=2026-11&table={table}&format=csv")).await;
            assert_eq!(status, 200, "{table}");
            body.split("\r\n").skip(1).filter(|l| !l.is_empty()).map(str::to_string).collect::<Vec<_>>()
        }
    };
    let listed: Vec<String> = csv("margin_by_customer")
        .await
        .iter()
        .map(|l| {
            // customer,name,revenue_micros,cost_micros,margin_micros,margin_bp,tasks
            let cells: Vec<&str> = l.split(',').collect();
            format!("{},{},{},{},{}", cells[1], cells[2], cells[3], cells[4], cells[6])
        })
        .collect();
    let want: Vec<String> = BY_CUSTOMER.iter().map(|(n, r, c, m, t)| format!("{n},{r},{c},{m},{t}")).collect();
    assert_eq!(listed, want);
    let want: Vec<String> = COMPLETION.iter().map(|(t, n, m, p)| format!("{t},{n},{m},{p}")).collect();
    assert_eq!(csv("completion").await, want);

    // The what-if as a file: Opus routed to Kimi ($0.60 / $3.00 per million tokens). Dud's
    // 2,000,000 in + 2,000,000 out cost 1,200,000 + 6,000,000 = 7,200,000 µ$ instead of
    // 60,000,000; Bolt's 11,000 in + 41,800 out, 6,600 + 125,400 = 132,000 instead of
    // 1,100,000. The biggest change first; Acme's and Cold's margins do not change.
    let token = app.page_token(&op, "/admin/review/evening").await;
    let form =
        [("csrf_token", token.as_str()), ("month", "2026-11"), ("route.claude-opus", "kimi-k2.5"), ("format", "csv")];
    let resp = op.post(app.url("/admin/review/evening")).form(&form).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let body = resp.text().await.unwrap();
    let rows: Vec<&str> = body.split("\r\n").filter(|l| !l.is_empty()).collect();
    let names: Vec<&str> = rows.iter().skip(1).map(|l| l.split(',').nth(1).unwrap_or_default()).collect();
    assert_eq!(names[..2], ["Dud", "Bolt"], "{body}");
    let tail = |row: &str| row.split(',').skip(2).collect::<Vec<_>>().join(",");
    assert_eq!(tail(rows[1]), "49000000,60000000,-11000000,49000000,7200000,41800000,52800000");
    assert_eq!(tail(rows[2]), "10500000,1100000,9400000,10500000,132000,10368000,968000");
    let mut unchanged: Vec<(&str, String)> =
        rows[3..].iter().map(|r| (r.split(',').nth(1).unwrap_or_default(), tail(r))).collect();
    unchanged.sort();
    assert_eq!(
        unchanged,
        [
            ("Acme", "69000000,80000,68920000,69000000,80000,68920000,0".to_string()),
            ("Cold", "49000000,0,49000000,49000000,0,49000000,0".to_string())
        ]
    );
}

#[tokio::test]
async fn filters_are_kept_and_bad_ones_are_refused_naming_the_field() {
    let app = spawn_app().await;
    let op = operator(&app).await;
    let (status, _, html) = get(&op, &app, "/admin?month=2026-03&plan=pro&team=code").await;
    assert_eq!(status, 200);
    assert!(html.contains("Board · 2026-03 · plan pro · team code"));
    assert!(html.contains("<option selected>pro</option>") && html.contains("<option selected>code</option>"));
    assert!(html.contains("2026-02"), "compared with the month before");
    assert!(html.contains("/admin?month=2026-03&plan=pro&team=code&table=margin_by_team&format=csv"));
    // Empty fields are the defaults.
    assert_eq!(get(&op, &app, "/admin?month=&plan=&team=").await.0, 200);
    for (query, field) in [
        ("month=2026-13", "month"),
        ("month=march", "month"),
        ("month=2026-03%27%3B--", "month"),
        ("plan=platinum", "plan"),
        ("team=%3Cscript%3E", "team"),
        ("format=xlsx", "format"),
        ("format=csv&table=secrets", "table"),
    ] {
        let (status, _, html) = get(&op, &app, &format!("/admin?{query}")).await;
        assert_eq!(status, 422, "{query}");
        assert!(html.contains(&format!("{field}:")), "{query}: names {field}");
        assert!(!html.contains("<script>"), "{query}: input is escaped");
    }
}

#[tokio::test]
async fn every_table_exports_csv_and_text_cells_cannot_become_formulas() {
    let app = spawn_app().await;
    let op = operator(&app).await;
    let (status, ctype, body) = get(&op, &app, "/admin?month=2026-11&table=tiles&format=csv").await;
    assert_eq!(status, 200);
    assert!(ctype.starts_with("text/csv"), "{ctype}");
    let mut lines = body.split("\r\n");
    assert_eq!(lines.next(), Some("kpi,label,value"));
    assert!(body.contains("\r\nmrr.ending_cents,MRR,0\r\n"), "{body}");
    assert!(body.contains("\r\ncustomers.ltv_to_cac_x100,LTV : CAC,\r\n"), "an unknown number is empty: {body}");
    for table in [
        "mrr_by_plan",
        "margin_by_plan",
        "margin_by_team",
        "margin_by_model",
        "margin_by_customer",
        "completion",
        "activation",
        "funnel",
    ] {
        let (status, ctype, _) = get(&op, &app, &format!("/admin?table={table}&format=csv")).await;
        assert_eq!((status, ctype.starts_with("text/csv")), (200, true), "{table}");
    }
    // A formula in stored text (an alert's message) is neutralised in the morning review's CSV.
    let mut conn = app.db.pool().acquire().await.unwrap();
    let detail = serde_json::json!({});
    j1msky_audit::alerts::record(&mut conn, "a1", "budget", "=HYPERLINK(\"http://evil\",\"x\")", &detail, app.now())
        .await
        .unwrap();
    drop(conn);
    let (status, ctype, body) = get(&op, &app, "/admin/review/morning?format=csv").await;
    assert_eq!((status, ctype.starts_with("text/csv")), (200, true));
    assert!(body.starts_with("severity,area,title,detail,link\r\n"), "{body}");
    assert!(body.contains(",\"'=HYPERLINK(\"\"http://evil\"\",\"\"x\"\")\",/admin/alerts"), "{body}");
    assert!(!body.contains(",=HYPERLINK"), "{body}");
}

#[tokio::test]
async fn the_drill_down_lists_the_customers_behind_a_tile() {
    let app = spawn_app().await;
    let op = operator(&app).await;
    let (status, _, html) =
        get(&op, &app, "/admin/insights/behind?tile=mrr.new_cents&month=2026-10&plan=starter").await;
    assert_eq!(status, 200);
    assert!(html.contains("New MRR · 2026-10 · plan starter"));
    assert!(html.contains("data-table=\"behind\""));
    assert!(html.contains("href=\"/admin?month=2026-10&plan=starter\""), "back to the same board");
    let (status, ctype, body) =
        get(&op, &app, "/admin/insights/behind?tile=usage.gross_margin_micros&month=2026-10&format=csv").await;
    assert_eq!((status, ctype.starts_with("text/csv")), (200, true));
    assert_eq!(body, "customer_id,name,plan,value_micros,detail\r\n");
    for (query, field) in
        [("tile=customers.ltv_cents", "tile"), ("tile=", "tile"), ("tile=mrr.new_cents&month=2026-00", "month")]
    {
        let (status, _, html) = get(&op, &app, &format!("/admin/insights/behind?{query}")).await;
        assert_eq!(status, 422, "{query}");
        assert!(html.contains(&format!("{field}:")), "{query}");
    }
    // The customer numbers open on their customers too: this month's signups (not
    // activated yet), the funnel's stages, the NPS answers; revenue and cost open on the
    // margin ranking.
    let acme = starter_with_owner(&app, "Acme", "owner@acme.test").await;
    let solo = j1msky_accounts::customers::create(
        &app.db,
        &app.catalogue,
        &Actor::cli(),
        j1msky_accounts::customers::NewCustomer { name: "Solo".into(), ..Default::default() },
        app.now(),
    )
    .await
    .unwrap()
    .id;
    let ctx = rollups_kept(&app).await;
    let month = ctx.this_month().to_string();
    let (status, _, html) =
        get(&op, &app, &format!("/admin/insights/behind?tile=customers.activation_bp&month={month}")).await;
    assert_eq!(status, 200);
    assert!(html.contains(&format!("href=\"/admin/customers/{acme}\"")) && html.contains("not activated"), "{html}");
    let (status, _, body) =
        get(&op, &app, &format!("/admin/insights/behind?tile=customers.activation_bp&month={month}&format=csv")).await;
    assert_eq!(status, 200);
    assert!(
        body.starts_with("customer_id,name,plan,value_hours,detail\r\n") && body.contains(&format!("{acme},Acme,")),
        "{body}"
    );
    for tile in ["customers.nps", "funnel.lead", "funnel.paid", "usage.revenue_micros", "usage.model_cost_micros"] {
        let (status, _, _) = get(&op, &app, &format!("/admin/insights/behind?tile={tile}&month={month}")).await;
        assert_eq!(status, 200, "{tile}");
    }
    let (_, _, html) = get(&op, &app, &format!("/admin?month={month}")).await;
    for tile in ["customers.activation_bp", "customers.nps", "usage.revenue_micros", "mrr.reactivated_customers"] {
        assert!(html.contains(&format!("/admin/insights/behind?tile={tile}&")), "{tile} opens its customers");
    }
    assert!(html.contains("data-kpi=\"mrr.paying_start\""));
    // The funnel table's stages open their customers too, from the stage's cell.
    for stage in ["lead", "qualified", "trial", "paid"] {
        let link = format!("<a href=\"/admin/insights/behind?tile=funnel.{stage}&month={month}");
        assert!(html.contains(&link), "the funnel's {stage} row links to its customers: {html}");
    }
    // Pay-per-task customers (no plan) and direct API calls (no team) are rows of the
    // margin tables, so the filters take them too; the signups split by plan.
    for (plan, listed, not) in [("pay-per-task", &solo, &acme), ("starter", &acme, &solo)] {
        let url = format!("/admin/insights/behind?tile=customers.activation_bp&month={month}&plan={plan}&format=csv");
        let (status, _, body) = get(&op, &app, &url).await;
        assert_eq!(status, 200, "{plan}");
        assert!(body.contains(listed.as_str()) && !body.contains(not.as_str()), "{plan}: {body}");
    }
    for query in ["plan=pay-per-task", "team=api", "plan=unattributed"] {
        let (status, _, html) = get(&op, &app, &format!("/admin?month={month}&{query}")).await;
        assert_eq!(status, 200, "{query}");
        let (key, value) = query.split_once('=').unwrap();
        assert!(html.contains(&format!("<option selected>{value}</option>")), "{key} kept in its filter");
    }
    let (status, _, html) = get(&op, &app, "/admin?plan=platinum").await;
    assert_eq!(status, 422);
    assert!(html.contains("plan:") && html.contains("pay-per-task"), "the error lists what a plan may be");
}

#[tokio::test]
async fn only_operators_see_the_board_the_reviews_and_the_exports() {
    let app = spawn_app().await;
    app.customer_with_owner("Acme", "owner@acme.test").await;
    let customer = app.browser();
    assert_eq!(app.login(&customer, "owner@acme.test", PASSWORD).await.status(), 303);
    let anonymous = app.browser();
    for path in [
        "/admin",
        "/admin?table=tiles&format=csv",
        "/admin/customers",
        "/admin/insights/behind?tile=mrr.new_cents",
        "/admin/review/morning",
        "/admin/review/morning?format=csv",
        "/admin/review/evening",
    ] {
        let (status, ctype, _) = get(&customer, &app, path).await;
        assert_eq!(status, 403, "customer on {path}");
        assert!(!ctype.starts_with("text/csv"), "{path}");
        let resp = anonymous.get(app.url(path)).send().await.unwrap();
        assert_eq!(resp.status(), 303, "anonymous on {path}");
        assert!(common::location(&resp).starts_with("/login?next="), "{path}");
    }
    let resp = customer.post(app.url("/admin/review/evening")).form(&[("month", "2026-11")]).send().await.unwrap();
    assert_eq!(resp.status(), 403);
}

#[tokio::test]
async fn the_customer_list_lives_at_admin_customers() {
    let app = spawn_app().await;
    app.active_customer("Globex", "pro").await;
    let op = operator(&app).await;
    let (status, _, html) = get(&op, &app, "/admin/customers").await;
    assert_eq!(status, 200);
    assert!(html.contains("Globex") && html.contains("Add a customer"));
    assert!(html.contains("href=\"/admin/customers?stage=active\""));
    let (status, _, html) = get(&op, &app, "/admin/customers?stage=active").await;
    assert_eq!(status, 200);
    assert!(html.contains("href=\"/admin/customers\">show all</a>"));
    let token = app.page_token(&op, "/admin/customers").await;
    let resp = op
        .post(app.url("/admin/customers"))
        .form(&[("csrf_token", token.as_str()), ("name", "Initech"), ("stage", "lead")])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 303);
    let detail = common::location(&resp);
    assert!(detail.starts_with("/admin/customers/cus_"), "{detail}");
    let (_, _, html) = get(&op, &app, &detail).await;
    assert!(html.contains("<a href=\"/admin/customers\">← Customers</a>"));
}

async fn starter_with_owner(app: &TestApp, name: &str, email: &str) -> String {
    let c = j1msky_accounts::customers::create(
        &app.db,
        &app.catalogue,
        &Actor::cli(),
        j1msky_accounts::customers::NewCustomer {
            name: name.into(),
            stage: Some(j1msky_core::vocab::Stage::Active),
            plan: Some("starter".into()),
            chosen_teams: vec!["code".into(), "content".into()],
            ..Default::default()
        },
        app.now(),
    )
    .await
    .unwrap();
    app.user_of(&c.id, email, j1msky_core::vocab::UserRole::Owner).await;
    c.id
}

async fn submit(app: &TestApp, customer: &str, n: usize) -> Vec<String> {
    let mut ids = Vec::new();
    for i in 0..n {
        let input = j1msky_tasks::NewTask {
            team: "code".into(),
            title: Some(format!("task {i}")),
            prompt: Some("write a haiku about ledgers".into()),
            template: None,
            fields: Default::default(),
            priority: j1msky_tasks::Priority::Normal,
            category: None,
        };
        ids.push(
            j1msky_tasks::submit(&app.db, &app.catalogue, customer, &input, None, app.now()).await.unwrap().task.id,
        );
    }
    ids
}

/// Sets a task's outcome as a worker would have left it (the worker is not under test).
async fn finish(app: &TestApp, task: &str, state: &str) {
    sqlx::query("UPDATE tasks SET state = $1, started_at = $2, finished_at = $2 WHERE id = $3")
        .bind(state)
        .bind(app.now())
        .bind(task)
        .execute(app.db.pool())
        .await
        .unwrap();
}

/// A paused customer's home shows the pause plan it is held to (no tasks a month, its
/// small model budget), not the plan it paused, as submitting and admission count them.
#[tokio::test]
async fn a_paused_customer_s_home_shows_the_pause_plan_s_allowance() {
    let app = spawn_app().await;
    let c = app.active_customer("Resting", "pro").await;
    app.user_of(&c.id, "owner@resting.test", j1msky_core::vocab::UserRole::Owner).await;
    let browser = app.browser();
    assert_eq!(app.login(&browser, "owner@resting.test", PASSWORD).await.status(), 303);
    let (_, _, html) = get(&browser, &app, "/app").await;
    assert!(html.contains("0 <span class=\"muted\">(unlimited)</span>"), "Pro: unlimited tasks");
    assert!(html.contains("$0.00 / $99.00"), "Pro's model budget");
    j1msky_accounts::customers::set_stage(&app.db, &Actor::cli(), &c.id, j1msky_core::vocab::Stage::Paused, app.now())
        .await
        .unwrap();
    let (_, _, html) = get(&browser, &app, "/app").await;
    let paused = &app.catalogue.plans[&app.catalogue.pause_plan];
    let tasks = paused.tasks_per_month.expect("the pause plan's allowance");
    assert!(html.contains(&format!("Tasks used of {tasks}")) && html.contains(&format!("0 / {tasks}")), "{html}");
    let budget = paused.monthly_model_budget.expect("the pause plan's budget");
    assert!(html.contains(&format!("$0.00 / {budget}")), "the pause plan's model budget: {html}");
    // Submitting agrees: a paused customer starts no task.
    let input = j1msky_tasks::NewTask { team: "code".into(), prompt: Some("p".into()), ..Default::default() };
    let refused = j1msky_tasks::submit(&app.db, &app.catalogue, &c.id, &input, None, app.now()).await;
    assert!(
        matches!(
            refused,
            Err(j1msky_tasks::TaskError::LimitReached { .. } | j1msky_tasks::TaskError::TeamNotInPlan { .. })
        ),
        "{refused:?}"
    );
}

#[tokio::test]
async fn the_customers_home_shows_its_own_month_against_its_plan() {
    let app = spawn_app().await;
    let acme = starter_with_owner(&app, "Acme", "owner@acme.test").await;
    let other = starter_with_owner(&app, "Other", "owner@other.test").await;
    let tasks = submit(&app, &acme, 5).await;
    finish(&app, &tasks[0], "succeeded").await;
    finish(&app, &tasks[1], "succeeded").await;
    finish(&app, &tasks[2], "succeeded").await;
    finish(&app, &tasks[3], "failed").await;
    sqlx::query("UPDATE tasks SET state = 'running', started_at = $1 WHERE id = $2")
        .bind(app.now())
        .bind(&tasks[4])
        .execute(app.db.pool())
        .await
        .unwrap();
    // Another customer's busy month is not Acme's.
    submit(&app, &other, 7).await;
    let browser = app.browser();
    assert_eq!(app.login(&browser, "owner@acme.test", PASSWORD).await.status(), 303);
    let (status, _, html) = get(&browser, &app, "/app").await;
    assert_eq!(status, 200);
    assert_eq!(tile_value(&html, "app.succeeded"), "3");
    assert_eq!(tile_value(&html, "app.failed"), "1");
    assert_eq!(tile_value(&html, "app.running"), "1");
    assert_eq!(tile_value(&html, "app.success_rate_bp"), "7500");
    assert_eq!(tile_value(&html, "app.tasks_used"), "5");
    assert!(html.contains("5 / 100"), "against the starter plan's 100 tasks a month");
    assert!(html.contains("$0.00 / $49.00"), "the starter plan's monthly model budget");
    // A quarter of the shipped $50 day is what Acme may spend today.
    assert_eq!(tile_value(&html, "app.today_spent_micros"), "0");
    assert!(html.contains("$0.00 / $12.50"), "the customer's share of the day");
    // With a budget set by the operator, its use shows.
    j1msky_gateway::controls::set_customer_budget(
        &app.db,
        &Actor::cli(),
        &acme,
        Some(j1msky_core::Money::from_micros(25_000_000)),
        "test",
        app.now(),
    )
    .await
    .unwrap();
    let (_, _, html) = get(&browser, &app, "/app").await;
    assert_eq!(tile_value(&html, "app.budget_spent_micros"), "0");
    assert!(html.contains("$0.00 / $25.00"), "budget shown");
    // Next month starts from zero.
    app.clock.advance_secs(20 * 86_400);
    let browser = app.browser();
    assert_eq!(app.login(&browser, "owner@acme.test", PASSWORD).await.status(), 303);
    let (_, _, html) = get(&browser, &app, "/app").await;
    assert_eq!(tile_value(&html, "app.tasks_used"), "0");
    assert_eq!(tile_value(&html, "app.success_rate_bp"), "");
}

#[tokio::test]
async fn the_morning_review_lists_what_needs_the_operator_worst_first() {
    let app = spawn_app().await;
    let op = operator(&app).await;
    let (status, _, html) = get(&op, &app, "/admin/review/morning").await;
    assert_eq!(status, 200);
    assert!(html.contains("href=\"/admin/review/morning\" class=\"on\">Reviews</a>"));
    // Seed one of each: queued tasks waiting 40 minutes, a failed task, an alert, a
    // customer whose payment failed, an overdue to-do.
    let acme = starter_with_owner(&app, "Acme", "owner@acme.test").await;
    let tasks = submit(&app, &acme, 3).await;
    app.clock.advance_secs(40 * 60);
    finish(&app, &tasks[0], "failed").await;
    let mut tx = app.db.begin().await.unwrap();
    j1msky_accounts::access::set_billing_status(
        &mut tx,
        app.db.backend(),
        &Actor::cli(),
        &acme,
        Some("unpaid"),
        app.now(),
    )
    .await
    .unwrap();
    j1msky_audit::alerts::record(
        &mut tx,
        "a1",
        "provider_auth",
        "provider refused our key",
        &serde_json::json!({}),
        app.now(),
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
    j1msky_lifecycle::todos::open_manual(&app.db, &Actor::cli(), Some(&acme), "call them", app.now() - 1, app.now())
        .await
        .unwrap();
    // A provider refused two calls; the customer reached its plan's monthly allowance.
    let attempt = |n: i64| j1msky_gateway::ledger::Attempt {
        request_id: "req_1".into(),
        attempt: n,
        customer_id: Some(acme.clone()),
        task_id: None,
        team: None,
        role: None,
        category: None,
        provider: "anthropic".into(),
        model_requested: "claude-opus".into(),
        model_used: "claude-opus".into(),
        input_tokens: 0,
        output_tokens: 0,
        cost: j1msky_core::Money::ZERO,
        latency_micros: 1,
        outcome: if n < 3 { "rate_limited".into() } else { "ok".into() },
        fallback_reason: None,
        created_at: app.now(),
    };
    let mut tx = app.db.begin().await.unwrap();
    j1msky_gateway::ledger::record(&mut tx, &[attempt(1), attempt(2), attempt(3)]).await.unwrap();
    tx.commit().await.unwrap();
    j1msky_accounts::activity::limit_hit(&app.db, &acme, "tasks_per_month", "100/100", app.now()).await;
    let items = j1msky_insights::morning::review(&j1msky_insights::Ctx {
        db: app.db.clone(),
        catalogue: app.catalogue.clone().into(),
        clock: std::sync::Arc::new(app.clock.clone()),
    })
    .await
    .unwrap();
    let got: Vec<(String, String)> = items.iter().map(|i| (format!("{:?}", i.severity), i.title.clone())).collect();
    assert_eq!(
        got,
        vec![
            ("Critical".into(), "2 task(s) queued, 0 running".into()),
            ("Critical".into(), "Alert: provider_auth".into()),
            ("Critical".into(), "Payment failed: Acme".into()),
            ("Warning".into(), "1 task(s) failed in the last 24 h".into()),
            ("Warning".into(), "2 upstream call(s) rate-limited in the last 24 h".into()),
            ("Warning".into(), "1 staff to-do(s) overdue".into()),
            ("Info".into(), "1 plan limit hit(s) by 1 customer(s) in the last 24 h".into()),
        ],
        "worst first: {items:#?}"
    );
    assert!(items[0].detail.contains("oldest waits 40 min"), "{:?}", items[0]);
    assert_eq!(items[2].link, format!("/admin/customers/{acme}"));
    assert_eq!(items[5].link, "/admin/todos?filter=overdue");
    let (status, _, html) = get(&op, &app, "/admin/review/morning").await;
    assert_eq!(status, 200);
    let critical = html.find("data-severity=\"critical\"").unwrap();
    let warning = html.find("data-severity=\"warning\"").unwrap();
    assert!(critical < warning, "critical lines come first on the page");
    assert!(html.contains(&format!("href=\"/admin/customers/{acme}\"")));
    // A day later the failure is no longer this morning's news; the alert nobody
    // acknowledged still is, until someone does.
    app.clock.advance_secs(25 * 3600);
    let (_, _, html) = get(&op, &app, "/admin/review/morning").await;
    for gone in ["failed in the last 24 h", "rate-limited", "plan limit hit"] {
        assert!(!html.contains(gone), "{gone} is yesterday's news");
    }
    assert!(html.contains("Payment failed: Acme"), "still unpaid");
    assert!(html.contains("Alert: provider_auth"), "still open");
    j1msky_audit::alerts::acknowledge(&app.db, &Actor::cli(), "a1", app.now()).await.unwrap();
    let (_, _, html) = get(&op, &app, "/admin/review/morning").await;
    assert!(!html.contains("Alert: provider_auth"), "acknowledged");
}

#[tokio::test]
async fn the_evening_review_and_its_what_if_validate_every_field_and_store_nothing() {
    let app = spawn_app().await;
    let op = operator(&app).await;
    let (status, _, html) = get(&op, &app, "/admin/review/evening").await;
    assert_eq!(status, 200);
    assert!(html.contains("data-kpi=\"evening.spend_micros\" data-value=\"0\""));
    for f in [
        "name=\"price_in.claude-opus\"",
        "name=\"price_out.kimi-k2.5\"",
        "name=\"route.claude-opus\"",
        "name=\"plan_price.pro\"",
    ] {
        assert!(html.contains(f), "{f}");
    }
    for table in ["by_model", "by_team", "spend_by_customer", "by_customer"] {
        let (status, ctype, body) = get(&op, &app, &format!("/admin/review/evening?format=csv&table={table}")).await;
        assert_eq!((status, ctype.starts_with("text/csv")), (200, true), "{table}");
        assert!(body.starts_with("key,name,revenue_micros,cost_micros,margin_micros,margin_bp,tasks\r\n"));
    }
    assert_eq!(get(&op, &app, "/admin/review/evening?format=csv&table=nope").await.0, 422);
    let token = app.page_token(&op, "/admin/review/evening").await;
    let events_before = j1msky_db::outbox::newest_seq(&app.db).await.unwrap();
    let audit_before = j1msky_audit::audit::list(&app.db, None, 1000).await.unwrap().len();
    let post = |fields: Vec<(&'static str, &'static str)>| {
        let mut form = vec![("csrf_token", token.clone())];
        form.extend(fields.into_iter().map(|(k, v)| (k, v.to_string())));
        op.post(app.url("/admin/review/evening")).form(&form).send()
    };
    let resp = post(vec![
        ("month", "2026-11"),
        ("plan", "pro"),
        ("price_in.claude-opus", "3.50"),
        ("price_out.claude-opus", ""),
        ("route.claude-opus", "claude-sonnet"),
        ("plan_price.pro", "129"),
    ])
    .await
    .unwrap();
    assert_eq!(resp.status(), 200);
    let html = resp.text().await.unwrap();
    assert!(html.contains("id=\"what-if-result\""));
    assert!(html.contains("data-kpi=\"what_if.margin_micros\" data-value=\"0\""));
    assert!(html.contains("value=\"3.50\""), "the form keeps what was typed");
    assert!(html.contains("name=\"format\" value=\"csv\""), "the form offers its result as CSV");
    // The same scenario as a file: each customer as it was and as it would have been.
    let resp =
        post(vec![("month", "2026-11"), ("route.claude-opus", "claude-sonnet"), ("format", "csv")]).await.unwrap();
    assert_eq!(resp.status(), 200);
    let ctype = resp.headers()["content-type"].to_str().unwrap().to_string();
    assert!(ctype.starts_with("text/csv"), "{ctype}");
    assert_eq!(
        resp.text().await.unwrap(),
        "customer,name,revenue_micros,cost_micros,margin_micros,would_revenue_micros,would_cost_micros,\
         would_margin_micros,change_micros\r\n"
    );
    let resp = post(vec![("month", "2026-11"), ("format", "pdf")]).await.unwrap();
    assert_eq!(resp.status(), 422);
    assert!(resp.text().await.unwrap().contains("format:"), "a format it cannot give names the field");
    for (k, v, field) in [
        ("price_in.claude-opus", "-1", "price_in.claude-opus"),
        ("price_out.kimi-k2.5", "1e9", "price_out.kimi-k2.5"),
        ("price_in.claude-opus", "999999999", "price_in.claude-opus"),
        ("price_in.gpt-9", "1", "price_in.gpt-9"),
        ("route.claude-opus", "gpt-9", "route.claude-opus"),
        ("plan_price.platinum", "10", "plan_price.platinum"),
        ("plan_price.pro", "9.999", "plan_price.pro"),
        ("month", "2026-13", "month"),
        ("plan", "platinum", "plan"),
        ("drop_table", "1", "drop_table"),
    ] {
        let resp = post(vec![(k, v)]).await.unwrap();
        assert_eq!(resp.status(), 422, "{k}={v}");
        let html = resp.text().await.unwrap();
        assert!(html.contains(&format!("{field}:")), "{k}={v} names {field}");
        assert!(html.contains("id=\"what-if-form\""), "{k}={v}: the form again");
    }
    // The same field twice is refused rather than guessed at.
    let form = [("csrf_token", token.as_str()), ("plan_price.pro", "10"), ("plan_price.pro", "20")];
    let resp = op.post(app.url("/admin/review/evening")).form(&form).send().await.unwrap();
    assert_eq!(resp.status(), 422);
    // Without the CSRF token: refused.
    let resp = op.post(app.url("/admin/review/evening")).form(&[("plan_price.pro", "10")]).send().await.unwrap();
    assert_eq!(resp.status(), 403);
    // A simulation: no event, no audit line, the catalogue as it was.
    assert_eq!(j1msky_db::outbox::newest_seq(&app.db).await.unwrap(), events_before);
    assert_eq!(j1msky_audit::audit::list(&app.db, None, 1000).await.unwrap().len(), audit_before);
    assert_eq!(app.catalogue.plans["pro"].monthly_price, j1msky_core::Money::from_micros(99_000_000));
}
