//! The OneFlow service template (7.x and 6.x formats). Issue #4.
//!
//! [`template`]: `flower-init oneflow-template [--one6]`, generated from `crate::vars`; the
//! committed `oneflow/flower-7.json`, `oneflow/flower-6.json` and `oneflow/flower-6-context.txt`
//! are its output (a test keeps them equal and checks them against `service_template.rb`'s
//! schema rules); `opennebula` (tests) models what OpenNebula 6.x and 7.x do with them. The partition a
//! SuperNode trains on is computed from OneGate's service view: `crate::onegate::partition`.

mod template;

pub use template::{
    Format, NETWORK, SUPERLINK, SUPERNODE, SUPERNODES, TemplateIds, input_spec, render, service_template, values_template,
    vm_context_6x,
};

use crate::args::{Args, EXIT_USAGE};

const USAGE: &str = "\
usage: flower-init oneflow-template [--one6] [--superlink-template ID] [--supernode-template ID]
       flower-init oneflow-template [--one6] --values --network ID
       flower-init oneflow-template --vm-context
Print the OneFlow service template of a Flower cluster (JSON) on stdout: OpenNebula 7.x format,
or 6.x with --one6. The IDs are the VM templates of the SuperLink and SuperNode appliances
(default 0: edit before registering it with `oneflow-template create`).
--values prints a file for `oneflow-template instantiate TEMPLATE_ID FILE`: every user input at
its default and the network ID (given a file, the CLI asks nothing, and OneFlow wants a value
for every input).
--vm-context prints the CONTEXT the appliance's VM templates need for the 6.x service template
(add its keys to the VM templates' CONTEXT; see docs/oneflow.md).";

/// `flower-init oneflow-template [--one6] [--superlink-template ID] [--supernode-template ID]`.
pub fn cli_template(args: &mut Args) -> i32 {
    if args.flag("--help") || args.flag("-h") {
        println!("{USAGE}");
        return 0;
    }
    let one6 = args.flag("--one6");
    if args.flag("--vm-context") {
        if let Err(e) = args.finish() {
            eprintln!("flower-init oneflow-template: {e}\n{USAGE}");
            return EXIT_USAGE;
        }
        print!("{}", vm_context_6x());
        return 0;
    }
    if args.flag("--values") {
        let network = match args.opt("--network") {
            Ok(Some(n)) if !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) => n,
            Ok(Some(n)) => {
                eprintln!("flower-init oneflow-template: --network {n:?} is not a network ID (a number)\n{USAGE}");
                return EXIT_USAGE;
            }
            Ok(None) => {
                eprintln!("flower-init oneflow-template: --values needs --network ID (the Private network)\n{USAGE}");
                return EXIT_USAGE;
            }
            Err(e) => {
                eprintln!("flower-init oneflow-template: {e}\n{USAGE}");
                return EXIT_USAGE;
            }
        };
        if let Err(e) = args.finish() {
            eprintln!("flower-init oneflow-template: {e}\n{USAGE}");
            return EXIT_USAGE;
        }
        let format = if one6 { Format::One6 } else { Format::One7 };
        let mut s = serde_json::to_string_pretty(&values_template(format, &network)).unwrap_or_default();
        s.push('\n');
        print!("{s}");
        return 0;
    }
    let mut ids = TemplateIds::default();
    for (opt, slot) in [("--superlink-template", &mut ids.superlink), ("--supernode-template", &mut ids.supernode)] {
        match args.opt(opt) {
            Ok(None) => {}
            Ok(Some(v)) => match v.parse() {
                Ok(id) => *slot = id,
                Err(_) => {
                    eprintln!("flower-init oneflow-template: {opt} {v:?} is not a template ID (a number)\n{USAGE}");
                    return EXIT_USAGE;
                }
            },
            Err(e) => {
                eprintln!("flower-init oneflow-template: {e}\n{USAGE}");
                return EXIT_USAGE;
            }
        }
    }
    if let Err(e) = args.finish() {
        eprintln!("flower-init oneflow-template: {e}\n{USAGE}");
        return EXIT_USAGE;
    }
    print!("{}", render(if one6 { Format::One6 } else { Format::One7 }, ids));
    0
}

#[cfg(test)]
mod opennebula;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_instantiate;
