//! The pipeline's metrics through the [`metrics`] facade (cargo feature
//! `metrics`): the program installs a recorder (Prometheus, StatsD, …) and
//! receives, at every coordinator sample (every `monitoring_interval_ms`,
//! or 100 ms outside hybrid mode):
//!
//! | name | kind | labels |
//! |---|---|---|
//! | `ringweave_stage_items_in_total` | counter | `stage` |
//! | `ringweave_stage_items_out_total` | counter | `stage` |
//! | `ringweave_stage_rate` (items/s out) | gauge | `stage` |
//! | `ringweave_stage_replicas` (replicas now) | gauge | `stage` |
//! | `ringweave_replica_items_total` | counter | `stage` (`score[2]`) |
//! | `ringweave_edge_fill_ratio` (0 to 1) | gauge | `from`, `to` |
//! | `ringweave_throughput` (items/s out of the source) | gauge | |
//! | `ringweave_distributed` (1 while distributed) | gauge | |
//! | `ringweave_switches_total` | counter | `from`, `to`, `outcome` |
//! | `ringweave_latency_seconds` (sampled end to end) | histogram | |
//!
//! Counters are set to the stages' own counts (`absolute`), so a scrape
//! never sees them run ahead of `PipelineHandle::metrics`. Two pipelines in
//! one process report under the same names; tell them apart by stage name.

use crate::config::Mode;
use crate::event::{RecoveryEvent, SwitchEvent, SwitchOutcome};
use crate::shared::Shared;

/// Publishes one sample: the stages' counts and rates, the edges' fill,
/// the throughput and the mode.
pub(crate) fn sample(shared: &Shared, rates: &[f64], fills: &[f64], throughput: f64, mode: Mode) {
    for (index, name) in shared.names.iter().enumerate() {
        let (items_in, items_out) = shared.controls.get(index).counts();
        metrics::counter!("ringweave_stage_items_in_total", "stage" => name.clone())
            .absolute(items_in);
        metrics::counter!("ringweave_stage_items_out_total", "stage" => name.clone())
            .absolute(items_out);
        if let Some(&rate) = rates.get(index) {
            metrics::gauge!("ringweave_stage_rate", "stage" => name.clone()).set(rate);
        }
        let replicas = shared.replicas_in(crate::topology::NodeId(index), mode);
        metrics::gauge!("ringweave_stage_replicas", "stage" => name.clone()).set(replicas as f64);
        for (r, items) in shared.replica_items(index).into_iter().enumerate() {
            metrics::counter!("ringweave_replica_items_total", "stage" => format!("{name}[{r}]"))
                .absolute(items);
        }
    }
    for (e, link) in shared.topology.edges() {
        if let Some(&fill) = fills.get(e.0) {
            metrics::gauge!(
                "ringweave_edge_fill_ratio",
                "from" => shared.names[link.from.0].clone(),
                "to" => shared.names[link.to.0].clone()
            )
            .set(fill);
        }
    }
    metrics::gauge!("ringweave_throughput").set(throughput);
    metrics::gauge!("ringweave_distributed").set(match mode {
        Mode::InProcess => 0.0,
        Mode::Distributed => 1.0,
    });
}

/// Counts a switch.
pub(crate) fn recovered(event: &RecoveryEvent) {
    metrics::counter!("ringweave_recoveries_total", "stage" => event.stage.clone()).increment(1);
}

pub(crate) fn switched(event: &SwitchEvent) {
    let outcome = match event.outcome {
        SwitchOutcome::Completed => "completed",
        SwitchOutcome::RolledBack(_) => "rolled_back",
        SwitchOutcome::TimedOut { .. } => "timed_out",
    };
    metrics::counter!(
        "ringweave_switches_total",
        "from" => event.from.to_string(),
        "to" => event.to.to_string(),
        "outcome" => outcome
    )
    .increment(1);
}
