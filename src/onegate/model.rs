//! The JSON OneGate answers with, parsed tolerantly.
//!
//! Shapes (`onegate-server.rb`): `build_vm_hash` (l.626-661) gives
//! `{"VM":{"NAME","ID":"49","STATE":"3","LCM_STATE":"3","USER_TEMPLATE":{..},"TEMPLATE":{"NIC":[..],"NIC_ALIAS":[..]}}}`
//! with ids as strings and NIC always an array; `build_service_hash` (l.663-710) gives
//! `{"SERVICE":{"name","id":"21","state":2,"roles":[{"name","cardinality","state","nodes":[{"deploy_id":49,"running":null,"vm_info":{"VM":{ID,UID,GID,UNAME,GNAME,NAME}}}]}]}}`
//! where `vm_info` is only what OneFlow stores (`role.rb` `VM_INFO`, `fill_node_info`), or
//! `null` when OneFlow could not read the VM. With `?extended=true` `vm_info` is the full
//! `vm.to_hash`: not normalised, so a single NIC is an object. Numbers may come as strings
//! and strings as numbers; missing USER_TEMPLATE or TEMPLATE means empty.

use serde_json::Value;
use std::collections::BTreeMap;

/// A VM as `GET /vm`, `GET /vms/:id` or an extended service node shows it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct VmInfo {
    pub id: u64,
    pub name: String,
    pub state: Option<u32>,
    pub lcm_state: Option<u32>,
    /// USER_TEMPLATE attributes with text values (vector attributes as their JSON text).
    pub user_template: BTreeMap<String, String>,
    pub nics: Vec<Nic>,
}

impl VmInfo {
    /// A USER_TEMPLATE attribute, `None` when absent or empty.
    pub fn attr(&self, key: &str) -> Option<&str> {
        self.user_template.get(key).map(String::as_str).filter(|v| !v.is_empty())
    }
}

/// A NIC as OneGate shows it (`NIC_VALID_KEYS`: IP, IP6_*, NETWORK, MAC, NAME, …).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Nic {
    pub ip: Option<String>,
    pub mac: Option<String>,
    pub name: Option<String>,
    pub network: Option<String>,
}

/// `GET /service`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ServiceInfo {
    pub id: u64,
    pub name: String,
    pub state: Option<u32>,
    pub roles: Vec<RoleInfo>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RoleInfo {
    pub name: String,
    /// The role's target size (what the operator asked for).
    pub cardinality: u32,
    pub state: Option<u32>,
    pub nodes: Vec<Node>,
}

/// One VM of a role.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Node {
    /// The VM's ID.
    pub deploy_id: u64,
    /// What OneGate includes: the reduced record, the full VM (extended), or nothing.
    pub vm: Option<VmInfo>,
}

impl ServiceInfo {
    /// The role named `name` (exact, as OneFlow's `${role.…}` references match).
    pub fn role(&self, name: &str) -> Option<&RoleInfo> {
        self.roles.iter().find(|r| r.name == name)
    }

    /// The role that lists VM `vmid` among its nodes.
    pub fn role_of(&self, vmid: u64) -> Option<&RoleInfo> {
        self.roles.iter().find(|r| r.nodes.iter().any(|n| n.deploy_id == vmid))
    }
}

/// An unsigned number given as a JSON number or a decimal string.
fn uint(v: &Value) -> Option<u64> {
    match v {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// A text value: strings as they are, numbers and booleans as JSON text.
fn text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// `x` or `[x, y]` as a list (XML→hash makes one child an object and several an array).
fn list(v: Option<&Value>) -> Vec<&Value> {
    match v {
        Some(Value::Array(a)) => a.iter().collect(),
        Some(Value::Null) | None => Vec::new(),
        Some(other) => vec![other],
    }
}

/// Parse a `{"VM": {...}}` body.
pub fn parse_vm(body: &str) -> Result<VmInfo, String> {
    let v: Value = serde_json::from_str(body).map_err(|e| format!("not JSON: {e}"))?;
    vm_from(&v)
}

/// A VM from a `{"VM": {...}}` value.
pub fn vm_from(v: &Value) -> Result<VmInfo, String> {
    let vm = v.get("VM").filter(|x| x.is_object()).ok_or("no \"VM\" object")?;
    let id = vm.get("ID").and_then(uint).ok_or("VM has no numeric \"ID\"")?;
    let mut user_template = BTreeMap::new();
    if let Some(Value::Object(ut)) = vm.get("USER_TEMPLATE") {
        for (k, val) in ut {
            let s = text(val).unwrap_or_else(|| val.to_string());
            user_template.insert(k.clone(), s);
        }
    }
    let nics = list(vm.get("TEMPLATE").and_then(|t| t.get("NIC")))
        .into_iter()
        .filter(|n| n.is_object())
        .map(|n| Nic {
            ip: n.get("IP").and_then(text),
            mac: n.get("MAC").and_then(text),
            name: n.get("NAME").and_then(text),
            network: n.get("NETWORK").and_then(text),
        })
        .collect();
    Ok(VmInfo {
        id,
        name: vm.get("NAME").and_then(text).unwrap_or_default(),
        state: vm.get("STATE").and_then(uint).and_then(|s| u32::try_from(s).ok()),
        lcm_state: vm.get("LCM_STATE").and_then(uint).and_then(|s| u32::try_from(s).ok()),
        user_template,
        nics,
    })
}

/// Parse a `{"SERVICE": {...}}` body.
pub fn parse_service(body: &str) -> Result<ServiceInfo, String> {
    let v: Value = serde_json::from_str(body).map_err(|e| format!("not JSON: {e}"))?;
    let s = v.get("SERVICE").filter(|x| x.is_object()).ok_or("no \"SERVICE\" object")?;
    let mut roles = Vec::new();
    for (i, r) in list(s.get("roles")).into_iter().enumerate() {
        let name = r.get("name").and_then(text).ok_or_else(|| format!("role #{i} has no \"name\""))?;
        let mut nodes = Vec::new();
        for (j, n) in list(r.get("nodes")).into_iter().enumerate() {
            let deploy_id = n
                .get("deploy_id")
                .and_then(uint)
                .ok_or_else(|| format!("role {name:?} node #{j} has no numeric \"deploy_id\""))?;
            // The reduced record has no TEMPLATE/USER_TEMPLATE; null when OneFlow lost it.
            let vm = n.get("vm_info").filter(|x| x.is_object()).and_then(|x| vm_from(x).ok());
            nodes.push(Node { deploy_id, vm });
        }
        roles.push(RoleInfo {
            cardinality: r.get("cardinality").and_then(uint).and_then(|c| u32::try_from(c).ok()).unwrap_or(0),
            state: r.get("state").and_then(uint).and_then(|c| u32::try_from(c).ok()),
            name,
            nodes,
        });
    }
    Ok(ServiceInfo {
        id: s.get("id").and_then(uint).unwrap_or_default(),
        name: s.get("name").and_then(text).unwrap_or_default(),
        state: s.get("state").and_then(uint).and_then(|c| u32::try_from(c).ok()),
        roles,
    })
}
