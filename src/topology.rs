//! The shape of a pipeline without its stages: nodes and edges by id,
//! which edge enters and leaves each node, where each node runs while
//! distributed, and the order in which the switch barrier visits them.
//! Every walk over the pipeline goes through here, so the coordinator
//! holds no assumption about the shape itself.

use crate::error::Error;

/// A stage of the plan. Nodes are numbered as the builder added them, so
/// the source is node 0.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct NodeId(pub usize);

/// An edge of the plan: one SPSC ring, in process or in shared memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct EdgeId(pub usize);

/// Which nodes an edge joins.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Link {
    /// The node that writes the edge.
    pub from: NodeId,
    /// The node that reads it.
    pub to: NodeId,
}

/// Where a node runs while the pipeline is distributed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Placement {
    /// On a thread of this process in every mode: the source (it owns the
    /// user's iterator or `Input`), the sink (it owns the user's closure,
    /// which may hold anything of this process) and tees (they feed a
    /// branch running here).
    Local,
    /// In a forked worker process: the transforms.
    Worker,
}

/// The shape of a plan (see the module docs).
#[derive(Clone, Debug)]
pub(crate) struct Topology {
    links: Vec<Link>,
    /// Indexed by node.
    inputs: Vec<Option<EdgeId>>,
    /// Indexed by node.
    outputs: Vec<Option<EdgeId>>,
    /// Indexed by node.
    placement: Vec<Placement>,
    /// Every node, each after the nodes that feed it.
    order: Vec<NodeId>,
}

impl Topology {
    /// Checks and indexes `links` over `nodes` nodes: every node but the
    /// first has one input, every node but the last one output, and the
    /// edges form one chain from the source (the shapes the builder makes
    /// today).
    pub(crate) fn new(nodes: usize, links: &[Link]) -> Result<Self, Error> {
        let invalid = |reason: String| Error::InvalidConfig {
            field: "pipeline",
            reason,
        };
        if nodes < 2 {
            return Err(invalid(format!(
                "needs a source and a sink, got {nodes} stage(s)"
            )));
        }
        let mut inputs = vec![None; nodes];
        let mut outputs = vec![None; nodes];
        for (e, link) in links.iter().enumerate() {
            let (from, to) = (link.from.0, link.to.0);
            if from >= nodes || to >= nodes || from == to {
                return Err(invalid(format!("edge {e} joins {from} to {to} of {nodes}")));
            }
            if outputs[from].replace(EdgeId(e)).is_some() {
                return Err(invalid(format!("stage {from} has two outputs")));
            }
            if inputs[to].replace(EdgeId(e)).is_some() {
                return Err(invalid(format!("stage {to} has two inputs")));
            }
        }
        // Walk from the source; a chain reaches every node once.
        let mut order = Vec::with_capacity(nodes);
        let mut at = (0..nodes).find(|&n| inputs[n].is_none());
        while let Some(n) = at {
            if order.len() == nodes {
                break;
            }
            order.push(NodeId(n));
            at = outputs[n].map(|e| links[e.0].to.0);
        }
        if order.len() != nodes || links.len() != nodes - 1 {
            return Err(invalid(format!(
                "the {} edges do not chain the {nodes} stages from the source",
                links.len()
            )));
        }
        let placement = (0..nodes)
            .map(|n| match (inputs[n], outputs[n]) {
                (Some(_), Some(_)) => Placement::Worker,
                _ => Placement::Local,
            })
            .collect();
        Ok(Self {
            links: links.to_vec(),
            inputs,
            outputs,
            placement,
            order,
        })
    }

    /// Places `nodes` in this process in every mode (tees, which feed a
    /// branch running here).
    pub(crate) fn with_local(mut self, nodes: &[NodeId]) -> Self {
        for node in nodes {
            self.placement[node.0] = Placement::Local;
        }
        self
    }

    /// Number of nodes.
    pub(crate) fn nodes(&self) -> usize {
        self.inputs.len()
    }

    /// Number of edges.
    pub(crate) fn edge_count(&self) -> usize {
        self.links.len()
    }

    /// Every edge with the nodes it joins.
    pub(crate) fn edges(&self) -> impl Iterator<Item = (EdgeId, Link)> + '_ {
        self.links
            .iter()
            .enumerate()
            .map(|(e, link)| (EdgeId(e), *link))
    }

    /// The edge node `n` reads, if any.
    pub(crate) fn input_of(&self, n: NodeId) -> Option<EdgeId> {
        self.inputs[n.0]
    }

    /// The edge node `n` writes, if any.
    pub(crate) fn output_of(&self, n: NodeId) -> Option<EdgeId> {
        self.outputs[n.0]
    }

    /// Where node `n` runs while distributed.
    pub(crate) fn placement(&self, n: NodeId) -> Placement {
        self.placement[n.0]
    }

    /// Every node, each after the nodes that feed it: the order in which
    /// the barrier pauses them (see `coordinator.rs`).
    pub(crate) fn barrier_order(&self) -> &[NodeId] {
        &self.order
    }

    /// The nodes that run in worker processes while distributed.
    pub(crate) fn workers(&self) -> impl Iterator<Item = NodeId> + '_ {
        (0..self.nodes())
            .map(NodeId)
            .filter(|&n| self.placement(n) == Placement::Worker)
    }

    /// The node the items enter by: it is not paused by a switch that
    /// finds the pipeline draining (see `Coordinator::sample_and_maybe_switch`).
    pub(crate) fn source(&self) -> NodeId {
        self.order[0]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chain(n: usize) -> Vec<Link> {
        (0..n - 1)
            .map(|i| Link {
                from: NodeId(i),
                to: NodeId(i + 1),
            })
            .collect()
    }

    #[test]
    fn a_chain_places_its_ends_here_and_its_middle_in_workers() {
        let t = Topology::new(4, &chain(4)).unwrap();
        assert_eq!(
            t.barrier_order(),
            &[NodeId(0), NodeId(1), NodeId(2), NodeId(3)]
        );
        assert_eq!(t.workers().collect::<Vec<_>>(), vec![NodeId(1), NodeId(2)]);
        assert_eq!(t.placement(NodeId(0)), Placement::Local);
        assert_eq!(t.placement(NodeId(3)), Placement::Local);
        assert_eq!(t.input_of(NodeId(0)), None);
        assert_eq!(t.output_of(NodeId(3)), None);
        assert_eq!(t.input_of(NodeId(2)), Some(EdgeId(1)));
        assert_eq!(
            t.edges().last(),
            Some((
                EdgeId(2),
                Link {
                    from: NodeId(2),
                    to: NodeId(3)
                }
            ))
        );
        assert_eq!(t.source(), NodeId(0));
    }

    #[test]
    fn the_barrier_order_follows_the_edges_not_the_numbering() {
        // 0 → 2 → 1: node 1 is the sink.
        let links = [
            Link {
                from: NodeId(0),
                to: NodeId(2),
            },
            Link {
                from: NodeId(2),
                to: NodeId(1),
            },
        ];
        let t = Topology::new(3, &links).unwrap();
        assert_eq!(t.barrier_order(), &[NodeId(0), NodeId(2), NodeId(1)]);
        assert_eq!(t.workers().collect::<Vec<_>>(), vec![NodeId(2)]);
    }

    #[test]
    fn rejects_shapes_it_cannot_run() {
        let err = |n, links: &[Link]| Topology::new(n, links).unwrap_err().to_string();
        assert!(err(1, &[]).contains("needs a source and a sink"));
        let two_out = [
            Link {
                from: NodeId(0),
                to: NodeId(1),
            },
            Link {
                from: NodeId(0),
                to: NodeId(2),
            },
        ];
        assert!(err(3, &two_out).contains("stage 0 has two outputs"));
        let cycle = [
            Link {
                from: NodeId(0),
                to: NodeId(1),
            },
            Link {
                from: NodeId(1),
                to: NodeId(0),
            },
        ];
        assert!(err(2, &cycle).contains("two inputs") || err(2, &cycle).contains("chain"));
        assert!(err(3, &chain(2)).contains("do not chain"));
        let out_of_range = [Link {
            from: NodeId(0),
            to: NodeId(5),
        }];
        assert!(err(2, &out_of_range).contains("edge 0 joins 0 to 5 of 2"));
    }
}
