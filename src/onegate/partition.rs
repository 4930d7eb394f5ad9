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
use super::ServiceInfo;

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::onegate::{Node, RoleInfo};

    fn service(roles: &[(&str, u32, &[u64])]) -> ServiceInfo {
        ServiceInfo {
            id: 7,
            name: "flower".into(),
            state: Some(2),
            roles: roles
                .iter()
                .map(|(name, card, ids)| RoleInfo {
                    name: name.to_string(),
                    cardinality: *card,
                    state: Some(2),
                    nodes: ids.iter().map(|&deploy_id| Node { deploy_id, vm: None }).collect(),
                })
                .collect(),
        }
    }

    #[test]
    fn partition_ids_are_unique_and_dense_in_deploy_id_order() {
        // Creation order reshuffled by a scale-down/scale-up: ids still follow deploy_id.
        let ids: &[u64] = &[117, 103, 110, 101, 130, 104, 125, 102, 140, 108];
        let s = service(&[("superlink", 1, &[100]), ("supernode", 10, ids)]);
        let mut got: Vec<u32> = ids
            .iter()
            .map(|&id| {
                let p = partition_for(&s, id).unwrap();
                assert_eq!((p.num_partitions, p.role.as_str()), (10, "supernode"));
                p.partition_id
            })
            .collect();
        assert_eq!(partition_for(&s, 101).unwrap().partition_id, 0);
        assert_eq!(partition_for(&s, 140).unwrap().partition_id, 9);
        got.sort_unstable();
        assert_eq!(got, (0..10).collect::<Vec<u32>>());
        assert_eq!(
            partition_for(&s, 100).unwrap(),
            Partition { partition_id: 0, num_partitions: 1, role: "superlink".into() }
        );
        assert_eq!(partition_for(&s, 999), None);
    }

    #[test]
    fn num_partitions_covers_nodes_while_a_scale_is_under_way() {
        // Scaling 2 -> 4 with only 3 VMs created yet: the target size.
        let s = service(&[("supernode", 4, &[5, 6, 7])]);
        assert_eq!(partition_for(&s, 7).unwrap().num_partitions, 4);
        // Scaling 4 -> 2 with the extra VMs not yet removed: every id stays below the count.
        let s = service(&[("supernode", 2, &[5, 6, 7, 8])]);
        assert_eq!((partition_for(&s, 8).unwrap().partition_id, partition_for(&s, 8).unwrap().num_partitions), (3, 4));
    }

    #[test]
    fn the_users_node_config_wins() {
        let p = Partition { partition_id: 2, num_partitions: 5, role: "supernode".into() };
        assert_eq!(p.node_config().to_arg(), "partition-id=2 num-partitions=5");
        let auto = PartitionOutcome::Assigned(p.clone());
        assert_eq!(node_config(None, &auto), (Some(p.node_config()), Some(2)));
        let user = NodeConfig::parse("partition-id=7 num-partitions=9 name=\"a\"").unwrap();
        assert_eq!(node_config(Some(&user), &auto), (Some(user.clone()), Some(7)));
        let other = NodeConfig(vec![("site".into(), NodeValue::Str("x".into()))]);
        assert_eq!(node_config(Some(&other), &auto), (Some(other.clone()), None));
        assert_eq!(node_config(None, &PartitionOutcome::Skipped("not in a service".into())), (None, None));
    }
}
