//! What the coordinator, the stage threads, the worker processes and the
//! handle all read: names, shape, control blocks, clock, telemetry.

use crate::config::Mode;
use crate::event::{LatencySummary, RecoveryEvent};
use crate::latency::LatencyRecorder;
use crate::metrics::{EdgeMetrics, Metrics, StageMetrics, SwitchImpact};
use crate::replica::Replicas;
use crate::topology::{NodeId, Placement, Topology};
use parking_lot::Mutex;
use ringweave_ipc::control::ControlTable;
use std::time::{Duration, Instant};

/// Live state shared by the coordinator, the stage threads and the handle.
pub(crate) struct Shared {
    /// Stage names, indexed by node.
    pub names: Vec<String>,
    /// The shape of the pipeline.
    pub topology: Topology,
    /// Each stage's replica counts, indexed by node.
    pub replicas: Vec<Replicas>,
    /// One control block per stage, in the same order.
    pub controls: ControlTable,
    /// When `spawn` was called.
    pub started: Instant,
    /// The run's clock and sampled latency histogram.
    pub latency: LatencyRecorder,
    /// What the coordinator measured at its last sample.
    pub telemetry: Mutex<Telemetry>,
}

/// The coordinator's measurements, read by `PipelineHandle::metrics`.
#[derive(Default)]
pub(crate) struct Telemetry {
    pub mode: Option<Mode>,
    /// Windowed items/s leaving the source.
    pub throughput: f64,
    /// Windowed items/s out of each stage.
    pub stage_rates: Vec<f64>,
    /// Fill of each edge's ring, 0 to 1.
    pub fills: Vec<f64>,
    /// p99 latency of the last full window.
    pub p99: Duration,
    pub switches: Vec<SwitchImpact>,
    pub recoveries: Vec<RecoveryEvent>,
}

impl Shared {
    /// How many replicas `node` runs as in `mode`.
    pub(crate) fn replicas_in(&self, node: NodeId, mode: Mode) -> usize {
        let in_worker =
            mode == Mode::Distributed && self.topology.placement(node) == Placement::Worker;
        self.replicas[node.0].count(in_worker)
    }

    /// Items each replica of stage `index` has taken (empty for a stage of
    /// one replica in every mode).
    pub(crate) fn replica_items(&self, index: usize) -> Vec<u64> {
        let most = self.replicas[index].max();
        if most < 2 {
            return Vec::new();
        }
        let counters = &self.controls.slot(index).replica_items.0;
        // Relaxed: informational counters.
        counters[..most]
            .iter()
            .map(|c| c.load(ringweave_ipc::sync::atomic::Ordering::Relaxed))
            .collect()
    }

    /// A metrics snapshot: live counters plus the coordinator's last sample.
    pub(crate) fn metrics(&self) -> Metrics {
        let telemetry = self.telemetry.lock();
        let stages = self
            .names
            .iter()
            .enumerate()
            .map(|(index, name)| {
                let (items_in, items_out) = self.controls.get(index).counts();
                StageMetrics {
                    name: name.clone(),
                    items_in,
                    items_out,
                    rate_out: telemetry.stage_rates.get(index).copied().unwrap_or(0.0),
                    replicas: self
                        .replicas_in(NodeId(index), telemetry.mode.unwrap_or(Mode::InProcess)),
                    replica_items: self.replica_items(index),
                }
            })
            .collect();
        let edges = self
            .topology
            .edges()
            .map(|(e, link)| EdgeMetrics {
                from: self.names[link.from.0].clone(),
                to: self.names[link.to.0].clone(),
                fill: telemetry.fills.get(e.0).copied().unwrap_or(0.0),
            })
            .collect();
        Metrics {
            mode: telemetry.mode.unwrap_or(Mode::InProcess),
            elapsed: self.started.elapsed(),
            throughput: telemetry.throughput,
            stages,
            edges,
            latency: LatencySummary::of(&self.latency.histogram.lock()),
            switches: telemetry.switches.clone(),
            recoveries: telemetry.recoveries.clone(),
        }
    }
}
