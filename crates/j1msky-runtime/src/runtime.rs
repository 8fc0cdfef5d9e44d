//! Starting the background loops of a process's roles, and stopping them together.

use std::collections::BTreeSet;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use j1msky_core::catalogue::LiveCatalogue;
use j1msky_core::Clock;
use j1msky_db::Db;
use j1msky_gateway::Gateway;
use tokio::sync::{watch, Notify};
use tokio::task::JoinHandle;

use crate::Role;

/// What the runtime starts besides the roles themselves.
#[derive(Debug, Clone)]
pub struct Settings {
    pub roles: BTreeSet<Role>,
    /// Task workers (role `tasks`).
    pub workers: usize,
    pub worker_config: j1msky_tasks::WorkerConfig,
    /// Names this process's workers in the tasks table (`serve`, `worker`).
    pub worker_prefix: &'static str,
    /// The Stripe client, when billing is configured: the billing jobs need it.
    pub stripe: Option<j1msky_billing::Stripe>,
    /// How lifecycle mail leaves this process; absent: the lifecycle engine does not
    /// run here (its messages wait in the queue for a process that has a transport).
    pub mail: Option<Mail>,
    /// The hourly backups (run by the `billing` role), when a directory is configured.
    pub backup: Option<j1msky_ops::backup::Schedule>,
}

/// The lifecycle engine's mail settings.
#[derive(Clone)]
pub struct Mail {
    pub transport: Arc<dyn j1msky_lifecycle::transport::Transport>,
    /// The public base URL links in mail point to.
    pub base_url: String,
    pub templates_dir: std::path::PathBuf,
}

impl std::fmt::Debug for Mail {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mail").field("base_url", &self.base_url).field("templates_dir", &self.templates_dir).finish()
    }
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            roles: BTreeSet::from(Role::ALL),
            workers: 2,
            worker_config: j1msky_tasks::WorkerConfig::default(),
            worker_prefix: "serve",
            stripe: None,
            mail: None,
            backup: None,
        }
    }
}

/// A loop the runtime waits for at shutdown.
struct Running {
    name: String,
    handle: JoinHandle<()>,
}

/// The background work of one process and what its parts share.
pub struct Runtime {
    roles: BTreeSet<Role>,
    gateway: Arc<Gateway>,
    stripe: Option<j1msky_billing::Stripe>,
    mail: Option<Mail>,
    billing_wake: Arc<Notify>,
    /// Woken by the Stripe applier when it applied something, so the consumers of what
    /// billing announced run at once rather than at their next poll.
    reactions_wake: Arc<Notify>,
    stop: watch::Sender<bool>,
    running: Vec<Running>,
}

impl Runtime {
    /// Starts every loop of `settings.roles` on `gateway`'s database, catalogue and clock.
    /// Fails only when taking back tasks abandoned by a dead process fails.
    pub async fn start(gateway: Arc<Gateway>, settings: Settings) -> Result<Runtime, j1msky_tasks::TaskError> {
        let (stop, _) = watch::channel(false);
        let mut rt = Runtime {
            roles: settings.roles,
            gateway,
            stripe: settings.stripe,
            mail: settings.mail,
            billing_wake: Arc::default(),
            reactions_wake: Arc::default(),
            stop,
            running: Vec::new(),
        };
        tracing::info!(
            roles = %rt.roles.iter().map(|r| r.name()).collect::<Vec<_>>().join(","),
            limits_in_process = rt.gateway.limits_in_process(),
            "starting"
        );
        // Holding a SQLite database's limits means no other process runs on it: a task
        // still running was left by one that died (kill -9, power loss).
        if rt.gateway.limits_in_process() {
            j1msky_tasks::reclaim::reclaim_abandoned(rt.db(), rt.clock().now_micros()).await?;
        }
        rt.start_tasks(settings.workers, settings.worker_config, settings.worker_prefix);
        rt.start_billing();
        rt.start_backups(settings.backup);
        rt.start_reactions();
        let sweeper = reservation_sweeper(rt.gateway.clone(), rt.stop_signal());
        // Beside it, the customers' slices given back when customers change (PostgreSQL).
        let (gateway, stop) = (rt.gateway.clone(), rt.stop_signal());
        let slices = async move { gateway.follow_customer_changes(stop).await };
        rt.spawn_always("reservation sweeper", async move {
            tokio::join!(sweeper, slices);
        });
        // Every process serves the catalogue version in force, whatever its roles.
        let every = Duration::from_secs(1);
        let follow =
            j1msky_ops::config_history::follow(rt.db().clone(), rt.catalogue().clone(), every, rt.stop_signal());
        rt.spawn_always("catalogue follower", follow);
        // Cached keys and customers follow changes made by other processes (PostgreSQL).
        let invalidations = j1msky_db::invalidation::listen(rt.db().clone(), rt.stop_signal());
        rt.spawn_always("cache invalidations", invalidations);
        Ok(rt)
    }

    fn start_tasks(&mut self, n: usize, config: j1msky_tasks::WorkerConfig, prefix: &str) {
        let host = std::process::id();
        for i in 0..n {
            let worker = j1msky_tasks::Worker::new(
                self.db().clone(),
                self.catalogue().clone(),
                self.gateway.clone(),
                self.clock().clone(),
                format!("{prefix}-{host}-{i}-{}", j1msky_core::ids::new_id("w")),
                config,
            );
            let run = worker.run(self.stop_signal());
            self.spawn(Role::Tasks, format!("task worker {i}"), run);
        }
    }

    fn start_billing(&mut self) {
        let (db, catalogue, clock) = (self.db().clone(), self.catalogue().clone(), self.clock().clone());
        let applier = j1msky_billing::jobs::run_applier(
            db.clone(),
            catalogue.clone(),
            clock.clone(),
            self.billing_wake.clone(),
            self.reactions_wake.clone(),
            Duration::from_secs(5),
            self.stop_signal(),
        );
        self.spawn(Role::Billing, "stripe applier", applier);
        // Direct API calls are metered once their day is over: charges for pay-per-task
        // calls, included days (model cost without a charge) for calls a plan paid for.
        let meter = j1msky_tasks::api_usage::run_meter(
            db.clone(),
            catalogue.clone(),
            clock.clone(),
            Duration::from_secs(600),
            self.stop_signal(),
        );
        self.spawn(Role::Billing, "api usage meter", meter);
        if let Some(stripe) = self.stripe.clone() {
            let jobs = j1msky_billing::jobs::run_billing_jobs(
                db.clone(),
                catalogue.clone(),
                clock.clone(),
                stripe.clone(),
                self.stop_signal(),
            );
            // A restored database catches up with Stripe before any billing job runs.
            let jobs = j1msky_ops::backup::reconciled_first(db, catalogue, clock, stripe, self.stop_signal(), jobs);
            self.spawn(Role::Billing, "billing jobs", jobs);
        }
    }

    /// The hourly backup timer, with the billing role.
    fn start_backups(&mut self, schedule: Option<j1msky_ops::backup::Schedule>) {
        if let Some(s) = schedule {
            let run = j1msky_ops::backup::run_schedule(s, self.stop_signal());
            self.spawn(Role::Billing, "hourly backups", run);
        }
    }

    /// The outbox's consumers (today accounts' reaction to subscription state), each
    /// batch leased so several processes never handle an event twice.
    fn start_reactions(&mut self) {
        let mut all = j1msky_accounts::reactions::consumers();
        all.extend(j1msky_tasks::reactions::consumers(self.catalogue()));
        all.extend(j1msky_insights::rollups::consumers(&self.insights()));
        if let Some(ctx) = self.lifecycle() {
            all.extend(j1msky_lifecycle::consumers(&ctx));
            let timers = j1msky_db::timers::run(
                ctx.db.clone(),
                j1msky_lifecycle::timer_handlers(&ctx),
                ctx.clock.clone(),
                self.stop_signal(),
            );
            self.spawn(Role::Reactions, "lifecycle timers", timers);
            // Alerts to operators and the report mails go out through the same mail.
            let ops =
                j1msky_ops::Ctx { db: ctx.db.clone(), catalogue: ctx.catalogue.clone(), clock: ctx.clock.clone() };
            let notifier = j1msky_ops::notify::Notifier::new(ops, ctx.templates_dir.clone(), &ctx.base_url);
            all.push(j1msky_ops::notify::consumer(&notifier));
            all.push(j1msky_ops::leads::next::consumer());
            self.spawn(Role::Reactions, "ops alert timers", j1msky_ops::timers::run(notifier, self.stop_signal()));
            let sender = j1msky_lifecycle::delivery::run_sender(ctx, self.stop_signal());
            self.spawn(Role::Reactions, "lifecycle mail", sender);
        }
        let consumers = j1msky_db::consumers::run(
            self.db().clone(),
            all,
            self.clock().clone(),
            self.reactions_wake.clone(),
            self.stop_signal(),
        );
        self.spawn(Role::Reactions, "event consumers", consumers);
    }

    /// The insights' context (their rollup consumers run in every `reactions` process).
    pub fn insights(&self) -> j1msky_insights::Ctx {
        j1msky_insights::Ctx { db: self.db().clone(), catalogue: self.catalogue().clone(), clock: self.clock().clone() }
    }

    /// The lifecycle engine's context, when this process has a mail transport.
    pub fn lifecycle(&self) -> Option<j1msky_lifecycle::Ctx> {
        let mail = self.mail.as_ref()?;
        Some(j1msky_lifecycle::Ctx {
            db: self.db().clone(),
            // The live handle: new runs, templates, sender settings and survey rules follow an
            // applied version; a journey run keeps the definition pinned when it started.
            catalogue: self.catalogue().clone(),
            clock: self.clock().clone(),
            transport: mail.transport.clone(),
            stripe: self.stripe.clone(),
            base_url: mail.base_url.clone(),
            templates_dir: mail.templates_dir.clone(),
        })
    }

    /// Runs `future` until shutdown when this process has `role`; returns whether it
    /// started. The future must end soon after [`Runtime::stop_signal`] turns true.
    pub fn spawn(
        &mut self,
        role: Role,
        name: impl Into<String>,
        future: impl Future<Output = ()> + Send + 'static,
    ) -> bool {
        if !self.roles.contains(&role) {
            return false;
        }
        self.spawn_always(name, future);
        true
    }

    /// Runs `future` whatever the roles (work every role relies on, like the gateway's).
    #[allow(clippy::disallowed_methods)] // the one place background loops are started and tracked
    pub fn spawn_always(&mut self, name: impl Into<String>, future: impl Future<Output = ()> + Send + 'static) {
        let name = name.into();
        tracing::debug!(%name, "started");
        self.running.push(Running { name, handle: tokio::spawn(future) });
    }

    /// Turns true when shutdown begins; hand a clone to every loop given to `spawn`.
    pub fn stop_signal(&self) -> watch::Receiver<bool> {
        self.stop.subscribe()
    }

    pub fn has(&self, role: Role) -> bool {
        self.roles.contains(&role)
    }

    /// The first loop that ended although shutdown has not begun (it returned or
    /// panicked): the process no longer does all its work, so its supervisor should
    /// restart it. Every loop runs until [`Runtime::stop_signal`].
    pub fn ended_early(&self) -> Option<&str> {
        if *self.stop.borrow() {
            return None;
        }
        self.running.iter().find(|r| r.handle.is_finished()).map(|r| r.name.as_str())
    }

    /// The names of the loops running, in the order started.
    pub fn running(&self) -> Vec<&str> {
        self.running.iter().map(|r| r.name.as_str()).collect()
    }

    pub fn gateway(&self) -> &Arc<Gateway> {
        &self.gateway
    }

    pub fn db(&self) -> &Db {
        &self.gateway.db
    }

    pub fn catalogue(&self) -> &LiveCatalogue {
        &self.gateway.catalogue
    }

    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.gateway.clock
    }

    pub fn stripe(&self) -> Option<&j1msky_billing::Stripe> {
        self.stripe.as_ref()
    }

    /// Wakes the Stripe applier at once (a webhook was just stored).
    pub fn billing_wake(&self) -> &Arc<Notify> {
        &self.billing_wake
    }

    /// Stops every loop and waits for each (a task worker finishes the step in hand; an
    /// unfinished task resumes from its last step), then writes the gateway's last
    /// ledger rows and closes the database.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        for r in self.running {
            if let Err(e) = r.handle.await {
                tracing::error!(name = %r.name, error = %e, "a background loop ended abnormally");
            }
        }
        tracing::info!("background work stopped; writing the last ledger rows and closing the database");
        self.gateway.flush().await;
        self.gateway.db.close().await;
    }
}

/// Every lease renewal period, releases the budget reservations of processes that died
/// (limits in the database only; in-memory limits carry theirs over as spent).
async fn reservation_sweeper(gateway: Arc<Gateway>, mut stop: watch::Receiver<bool>) {
    if gateway.limits_in_process() {
        // Nothing to sweep, but a loop ends only at shutdown (see `Runtime::ended_early`).
        let _ = stop.wait_for(|s| *s).await;
        return;
    }
    while !*stop.borrow() {
        if let Err(e) = gateway.release_expired_reservations().await {
            tracing::error!(error = %e, "cannot release expired budget reservations");
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_micros(
                j1msky_gateway::limits::RESERVATION_RENEW_EVERY.unsigned_abs(),
            )) => {}
            _ = stop.changed() => {}
        }
    }
}
