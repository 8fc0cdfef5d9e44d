//! The minijinja templates, compiled into the binary, and their filters (a leaf module:
//! the state builds the environment, the renderer uses it, neither imports the other).

use minijinja::Environment;

macro_rules! templates {
    ($env:ident, $($name:literal),+ $(,)?) => {
        $(
            if let Err(e) = $env.add_template($name, include_str!(concat!("../templates/", $name))) {
                // Templates are compiled in; a broken one is caught by every page test.
                tracing::error!(template = $name, error = %e, "template does not compile");
            }
        )+
    };
}

/// The template environment.
pub fn environment() -> Environment<'static> {
    let mut env = Environment::new();
    templates!(
        env,
        "layout.html",
        "login.html",
        "error.html",
        "admin/customers.html",
        "admin/board.html",
        "admin/behind.html",
        "admin/review_morning.html",
        "admin/review_evening.html",
        "admin/customer.html",
        "admin/gateway.html",
        "admin/spend.html",
        "admin/config.html",
        "app/home.html",
        "app/tasks.html",
        "app/billing.html",
        "app/billing_offer.html",
        "app/upgrade_offer.html",
        "app/task.html",
        "admin/queue.html",
        "admin/events.html",
        "admin/lifecycle_journeys.html",
        "admin/todos.html",
        "admin/surveys.html",
        "admin/newsletters.html",
        "admin/newsletter.html",
        "admin/lifecycle_messages.html",
        "admin/lifecycle_message.html",
        "admin/lifecycle_suppressions.html",
        "admin/backups.html",
        "admin/alerts.html",
        "public/survey.html",
        "public/unsubscribe.html",
        "public/start.html",
        "public/start_thanks.html",
        "public/set_password.html",
        "public/reset.html",
        "admin/leads.html",
        "admin/lead.html",
        "app/members.html",
        "app/mail.html"
    );
    env.add_filter("usd", |micros: i64| j1msky_core::Money::from_micros(micros).to_string());
    env.add_filter("age", |micros: i64| {
        let s = micros.max(0) / 1_000_000;
        if s < 120 {
            format!("{s} s")
        } else if s < 7200 {
            format!("{} min", s / 60)
        } else {
            format!("{} h", s / 3600)
        }
    });
    env.add_filter("datetime", |micros: i64| {
        j1msky_core::clock::format_utc(micros).replace('T', " ").replace('Z', " UTC")
    });
    env
}
