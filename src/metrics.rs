//! Counters for `/metrics` (Prometheus text format). Plain atomics: no registry crate needed for
//! a handful of counters.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Debug, Default)]
pub struct Metrics {
    webhooks: Mutex<BTreeMap<String, u64>>,
    pub deliveries_processed: AtomicU64,
    pub deliveries_ignored: AtomicU64,
    pub deliveries_failed: AtomicU64,
    pub deliveries_dead: AtomicU64,
    pub deploys_started: AtomicU64,
    /// When the sweeper last finished a run (Unix seconds; 0: not yet).
    pub sweeper_last_run: AtomicU64,
    pub deploys_succeeded: AtomicU64,
    pub deploys_failed: AtomicU64,
    pub deploys_superseded: AtomicU64,
    pub teardowns: AtomicU64,
    pub report_failures: AtomicU64,
    /// Sum and count of deploy durations, in milliseconds.
    pub deploy_ms_sum: AtomicU64,
    pub deploy_ms_count: AtomicU64,
}

impl Metrics {
    pub fn webhook(&self, event: &str) {
        let mut m = self.webhooks.lock().unwrap_or_else(|p| p.into_inner());
        *m.entry(event.to_owned()).or_default() += 1;
    }

    pub fn inc(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Render every counter; `gauges` and `counters` add values computed by the caller.
    pub fn render(
        &self,
        gauges: &[(&str, &str, u64)],
        extra_counters: &[(&str, &str, u64)],
    ) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "# HELP stagebot_webhooks_total Webhook deliveries received, by event.\n# TYPE stagebot_webhooks_total counter"
        );
        for (event, n) in self
            .webhooks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
        {
            let _ = writeln!(out, "stagebot_webhooks_total{{event=\"{event}\"}} {n}");
        }
        let counters: [(&str, &str, &AtomicU64); 12] = [
            (
                "stagebot_deliveries_processed_total",
                "Deliveries processed.",
                &self.deliveries_processed,
            ),
            (
                "stagebot_deliveries_ignored_total",
                "Deliveries acknowledged and ignored.",
                &self.deliveries_ignored,
            ),
            (
                "stagebot_delivery_failures_total",
                "Failed delivery attempts.",
                &self.deliveries_failed,
            ),
            (
                "stagebot_deliveries_dead_total",
                "Deliveries given up on (dead letters).",
                &self.deliveries_dead,
            ),
            (
                "stagebot_deploys_started_total",
                "Deploys started.",
                &self.deploys_started,
            ),
            (
                "stagebot_deploys_succeeded_total",
                "Deploys that went live.",
                &self.deploys_succeeded,
            ),
            (
                "stagebot_deploys_failed_total",
                "Deploys that failed.",
                &self.deploys_failed,
            ),
            (
                "stagebot_deploys_superseded_total",
                "Deploys cancelled by a newer commit.",
                &self.deploys_superseded,
            ),
            (
                "stagebot_teardowns_total",
                "Environments torn down.",
                &self.teardowns,
            ),
            (
                "stagebot_report_failures_total",
                "Reports to GitHub that failed and wait for a retry.",
                &self.report_failures,
            ),
            (
                "stagebot_deploy_duration_ms_sum",
                "Total time spent in successful deploys.",
                &self.deploy_ms_sum,
            ),
            (
                "stagebot_deploy_duration_ms_count",
                "Successful deploys timed.",
                &self.deploy_ms_count,
            ),
        ];
        for (name, help, value) in counters {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}",
                value.load(Ordering::Relaxed)
            );
        }
        for (name, help, value) in gauges {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}"
            );
        }
        for (name, help, value) in extra_counters {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}"
            );
        }
        out
    }
}
