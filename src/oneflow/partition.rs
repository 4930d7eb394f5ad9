//! Partition assignment: which slice of the data a SuperNode trains on when FL_NODE_CONFIG is
//! empty, computed from the OneFlow role it belongs to.
//!
//! OneFlow appends a node `{deploy_id: <VM ID>, vm_info}` to the role for each VM it creates
//! (`src/flow/lib/models/role.rb` `fill_node_info`) and removes nodes on scale-down. The order
//! of `nodes` is creation order, which a scale-down/scale-up cycle reshuffles, so we sort by
//! `deploy_id` (VM IDs only grow): every VM of the role computes the same list and takes its
//! index. `num-partitions` is the role's cardinality (the size the operator asked for); while
//! a scale-up is still creating VMs the list can be longer than the old cardinality or shorter
//! than the new one, so it is `max(cardinality, nodes)`, which keeps every id below it.
//! Ids are unique and dense (0..n-1) once all of the role's VMs exist.

use crate::config::{NodeConfig, NodeValue};
use crate::onegate::ServiceInfo;

/// This VM's slice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Partition {
    pub partition_id: u32,
    pub num_partitions: u32,
    /// The role it was computed from.
    pub role: String,
}

impl Partition {
    /// `partition-id=<i> num-partitions=<n>`, Flower's `--node-config` for the bundled apps.
    pub fn node_config(&self) -> NodeConfig {
        NodeConfig(vec![
            ("partition-id".into(), NodeValue::Int(i64::from(self.partition_id))),
            ("num-partitions".into(), NodeValue::Int(i64::from(self.num_partitions))),
        ])
    }
}

/// How the partition question was answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PartitionOutcome {
    /// FL_NODE_CONFIG is given: nothing to compute.
    NotWanted,
    Assigned(Partition),
    /// Could not be computed (not in a OneFlow service, OneGate not usable, …): the warning.
    Skipped(String),
}

/// The partition of VM `vmid` in the role that lists it; `None` when no role lists it (OneFlow
/// has not recorded the VM yet).
pub fn partition_for(service: &ServiceInfo, vmid: u64) -> Option<Partition> {
    let role = service.role_of(vmid)?;
    let mut ids: Vec<u64> = role.nodes.iter().map(|n| n.deploy_id).collect();
    ids.sort_unstable();
    ids.dedup();
    let index = ids.iter().position(|&id| id == vmid)?;
    let count = u32::try_from(ids.len()).unwrap_or(u32::MAX);
    Some(Partition {
        partition_id: u32::try_from(index).unwrap_or(u32::MAX),
        num_partitions: role.cardinality.max(count),
        role: role.name.clone(),
    })
}

/// The `--node-config` to run with and the FL_PARTITION_ID to publish: the user's
/// FL_NODE_CONFIG wins (its `partition-id`, if an integer, is published); else the computed
/// partition; else none (the outcome's warning says why).
pub fn node_config(user: Option<&NodeConfig>, outcome: &PartitionOutcome) -> (Option<NodeConfig>, Option<u32>) {
    if let Some(u) = user {
        let id = match u.get("partition-id") {
            Some(NodeValue::Int(i)) => u32::try_from(*i).ok(),
            _ => None,
        };
        return (Some(u.clone()), id);
    }
    match outcome {
        PartitionOutcome::Assigned(p) => (Some(p.node_config()), Some(p.partition_id)),
        PartitionOutcome::NotWanted | PartitionOutcome::Skipped(_) => (None, None),
    }
}
