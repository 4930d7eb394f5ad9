//! The OneFlow service template: one SuperLink, N SuperNodes, deployed in order with the
//! ready gate. The user inputs are generated from the variable table (`crate::vars`: names,
//! defaults, rules, documentation, and where each is offered), so the template cannot drift
//! from what flower-init reads.
//!
//! Schema: `src/oca/ruby/opennebula/flow/service_template.rb`. OpenNebula 7.x roles have
//! `type: "vm"`, `template_id`, `user_inputs`, `template_contents` (an object); 6.x roles have
//! `vm_template`, `custom_attrs`, `vm_template_contents` (template text). 7.x converts a 6.x
//! template on registration (`old_format?` / `convert_template`).
//!
//! How a value reaches context.sh: in 7.x OneFlow puts every user input into the role's
//! `template_contents.CONTEXT` as `KEY = "$KEY"` (`Service#generate_template_contents`); in
//! 6.x `$KEY` in `vm_template_contents` is substituted from the `custom_attrs_values`, so the
//! 6.x roles list the inputs in their CONTEXT themselves.

use crate::vars::{self, DefaultValue, Offer, Rule, Var};
use serde_json::{Map, Value, json};

/// Which OpenNebula's template format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// OpenNebula 7.x (`template_id`, `user_inputs`, `template_contents`).
    One7,
    /// OpenNebula 6.x (`vm_template`, `custom_attrs`, `vm_template_contents`).
    One6,
}

/// The VM templates (appliance images) of the two roles; 0 is a placeholder to edit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TemplateIds {
    pub superlink: u64,
    pub supernode: u64,
}

/// Name of the network the template asks for at instantiation.
pub const NETWORK: &str = "Private";
/// Role names; [`crate::onegate::SUPERLINK_ROLE`] is what SuperNodes look for.
pub const SUPERLINK: &str = crate::onegate::SUPERLINK_ROLE;
pub const SUPERNODE: &str = "supernode";
/// SuperNodes: default, minimum, maximum.
pub const SUPERNODES: (u32, u32, u32) = (2, 2, 10);

/// A user-input spec `O|type|description|options|default` for `v` (all optional: an empty
/// value means the variable's own default, as for any empty context variable).
///
/// Every input must be instantiable by pressing Enter. OpenNebula's CLI (`parse_user_inputs`,
/// src/cli/one_helper.rb) sends no value at all for an optional `list`, `number` or
/// `number-float` answered with Enter when its default is empty, and exits on a `boolean`
/// without one; oneflow-server then refuses the whole instantiate ("Verify that every User
/// Input have its corresponding value defined"). So those types are used only with a default;
/// a variable without one is a `text` input (Enter sends "", which flower-init reads as unset),
/// its description naming the accepted values and what empty means.
pub fn input_spec(v: &Var) -> String {
    let default = match v.default {
        DefaultValue::Value(s) => s.to_string(),
        DefaultValue::Image | DefaultValue::Unset(_) => String::new(),
    };
    let has_default = !default.is_empty();
    let (kind, options, with_rule) = match v.rule {
        _ if v.secret => ("password", String::new(), true),
        Rule::YesNo if has_default => ("boolean", String::new(), false),
        Rule::Words(w) if has_default => ("list", w.join(","), false),
        Rule::Int { .. } if has_default => ("number", String::new(), true),
        Rule::Float { .. } if has_default => ("number-float", String::new(), true),
        _ => ("text", String::new(), true),
    };
    let mut desc = v.doc.to_string();
    if with_rule {
        desc = format!("{desc} Format: {}.", v.rule.describe());
    }
    if !has_default && !v.doc.to_lowercase().contains("empty") {
        let empty = match v.default {
            DefaultValue::Unset(what) => what,
            _ => "the image's",
        };
        desc = format!("{desc} Empty: {empty}.");
    }
    format!("O|{kind}|{}|{options}|{default}", clean(&desc))
}

/// A description safe inside a `|`-separated spec: no `|`, no backticks, one line.
fn clean(s: &str) -> String {
    let s: String = s
        .chars()
        .map(|c| {
            if c == '|' {
                '/'
            } else if c.is_whitespace() {
                ' '
            } else {
                c
            }
        })
        .collect();
    s.replace('`', "").split(' ').filter(|w| !w.is_empty()).collect::<Vec<_>>().join(" ")
}

/// The offered variables at `level`, in table order.
fn offered(level: Offer) -> impl Iterator<Item = &'static Var> {
    vars::VARS.iter().filter(move |v| vars::offer(v) == Some(level))
}

/// `{NAME: spec}` of the inputs at `level`.
fn inputs(level: Offer) -> Map<String, Value> {
    offered(level).map(|v| (v.name.to_string(), Value::String(input_spec(v)))).collect()
}

/// The CONTEXT every role's VMs need besides the inputs: which role, the OneGate token,
/// READY reporting, the network variables.
fn base_context(role: &str) -> Vec<(&'static str, String)> {
    vec![
        ("FL_ROLE", role.to_string()),
        ("NETWORK", "YES".into()),
        ("REPORT_READY", "YES".into()),
        ("TOKEN", "YES".into()),
    ]
}

/// The service template as JSON.
pub fn service_template(format: Format, ids: TemplateIds) -> Value {
    let (n, min, max) = SUPERNODES;
    let roles = [
        (SUPERLINK, ids.superlink, Offer::SuperLink, 1, 1, 1, None),
        (SUPERNODE, ids.supernode, Offer::SuperNode, n, min, max, Some(SUPERLINK)),
    ];
    let mut out = json!({
        "name": "Flower federated learning",
        "description": "One Flower SuperLink and N SuperNodes run by flower-init. SuperNodes are deployed once the \
            SuperLink is READY (it publishes FL_ENDPOINT, FL_TLS and FL_CA_CERT first) and find it through OneGate.",
        "deployment": "straight",
        "ready_status_gate": true,
        "shutdown_action": "shutdown",
        "networks": {
            NETWORK: "M|network|Private network of the Flower cluster (SuperNodes reach the SuperLink on it)| |id:"
        },
    });
    let service_key = if format == Format::One7 { "user_inputs" } else { "custom_attrs" };
    out[service_key] = Value::Object(inputs(Offer::Service));
    let mut role_list = Vec::new();
    for (name, template, level, card, min, max, parent) in roles {
        let mut r = json!({ "name": name, "cardinality": card, "min_vms": min, "max_vms": max });
        if let Some(p) = parent {
            r["parents"] = json!([p]);
        }
        match format {
            Format::One7 => {
                r["type"] = json!("vm");
                r["template_id"] = json!(template);
                r["user_inputs"] = Value::Object(inputs(level));
                let ctx: Map<String, Value> =
                    base_context(name).into_iter().map(|(k, v)| (k.to_string(), v.into())).collect();
                r["template_contents"] = json!({ "CONTEXT": ctx, "NIC": [ { "NETWORK_ID": format!("${NETWORK}") } ] });
            }
            Format::One6 => {
                r["vm_template"] = json!(template);
                r["custom_attrs"] = Value::Object(inputs(level));
                r["vm_template_contents"] = json!(contents_6x(name, level));
            }
        }
        role_list.push(r);
    }
    out["roles"] = Value::Array(role_list);
    out
}

/// The default an input's spec offers (what pressing Enter answers).
fn spec_default(v: &Var) -> String {
    input_spec(v).rsplit('|').next().unwrap_or_default().to_string()
}

/// A merge template for `oneflow-template instantiate ID FILE`: every input at its default
/// and the network. Given a file the CLI asks nothing and oneflow-server wants a value for
/// every input (`check_user_inptus`), so the file lists them all; edit the ones to change.
/// 7.x matches roles by name, 6.x by position: they are in the template's order.
pub fn values_template(format: Format, network_id: &str) -> Value {
    let key = if format == Format::One7 { "user_inputs_values" } else { "custom_attrs_values" };
    let values = |level| -> Map<String, Value> { offered(level).map(|v| (v.name.to_string(), spec_default(v).into())).collect() };
    let roles: Vec<Value> = [(SUPERLINK, Offer::SuperLink), (SUPERNODE, Offer::SuperNode)]
        .into_iter()
        .map(|(name, level)| json!({ "name": name, key: values(level) }))
        .collect();
    json!({ key: values(Offer::Service), "roles": roles, "networks_values": [ { NETWORK: { "id": network_id } } ] })
}

/// A 6.x role's `vm_template_contents`: the NIC, then FL_ROLE and every service- and
/// role-level input as a VM attribute (`KEY = "$KEY"`, filled from the `custom_attrs_values`).
/// No CONTEXT: in 6.x a CONTEXT here replaces the VM template's whole CONTEXT (oned's
/// `Template::merge` erases it), and `APPEND="CONTEXT"` does not help: the VM then has two
/// CONTEXT vectors and oned uses the first, the VM template's own. The VM template's CONTEXT
/// takes the values with `KEY = "$KEY"` references ([`vm_context_6x`]), as OpenNebula's
/// appliances take their user inputs. A 7.x front-end converts this text without error (only
/// a CONTEXT vector would become an array that `generate_template_contents` cannot fill).
fn contents_6x(role: &str, level: Offer) -> String {
    let mut lines = vec![format!("NIC = [ NETWORK_ID = \"${NETWORK}\" ]"), format!("FL_ROLE = \"{role}\"")];
    for v in offered(Offer::Service).chain(offered(level)) {
        lines.push(format!("{0} = \"${0}\"", v.name));
    }
    lines.join("\n")
}

/// The CONTEXT the appliance's VM templates need for the 6.x service template (and that also
/// serves the 7.x one): NETWORK, TOKEN, REPORT_READY, and `KEY = "$KEY"` for FL_ROLE and every
/// offered input, which oned fills from the VM attributes the role sets (unset outside a
/// service: empty, the variable's default). Keep the template's own keys (FILES_DS,
/// SSH_PUBLIC_KEY, ...) next to these.
pub fn vm_context_6x() -> String {
    let mut lines: Vec<String> = base_context("")
        .into_iter()
        .filter(|(k, _)| *k != "FL_ROLE")
        .map(|(k, v)| format!("  {k} = \"{v}\""))
        .collect();
    lines.push("  FL_ROLE = \"$FL_ROLE\"".into());
    for v in offered(Offer::Service).chain(offered(Offer::SuperLink)).chain(offered(Offer::SuperNode)) {
        lines.push(format!("  {0} = \"${0}\"", v.name));
    }
    format!("CONTEXT = [\n{} ]\n", lines.join(",\n"))
}

/// The template as the committed files hold it: pretty JSON and a final newline.
pub fn render(format: Format, ids: TemplateIds) -> String {
    let mut s = serde_json::to_string_pretty(&service_template(format, ids)).unwrap_or_default();
    s.push('\n');
    s
}
