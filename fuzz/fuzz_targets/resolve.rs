//! Parse then validate for both roles: every value parser and cross-field rule on arbitrary
//! input must end in a config or problems, never a panic.
#![no_main]
use flower_init::config::{ImageFacts, NodeConfig, resolve};
use flower_init::vocab::Role;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(ctx) = flower_init::context::try_parse(data) {
        for role in [Role::SuperLink, Role::SuperNode] {
            let _ = resolve(&ctx, &ImageFacts::builtin(), Some(role));
        }
    }
    if let Ok(s) = std::str::from_utf8(data) {
        if let Ok(c) = NodeConfig::parse(s) {
            if c.0.iter().all(|(_, v)| v.representable()) {
                // Compared as text: NaN is a valid TOML float and never equals itself.
                let again = NodeConfig::parse(&c.to_arg()).expect("rendered node-config parses");
                assert_eq!(again.to_arg(), c.to_arg(), "node-config round trip");
            }
        }
    }
});
