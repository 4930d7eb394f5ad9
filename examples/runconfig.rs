//! Renders a `--run-config` argument with flower-init's own code, for the app tests
//! (tests/app): they submit real runs with it and compare it with flwr's own parser.
//!
//!   runconfig SCHEMA.json < VALUES.json
//!
//! SCHEMA.json: the app's pyproject.toml as JSON; VALUES.json: a flat object of overrides.
//! Prints the argument, or every validation problem on stderr and exits 1.

use flower_init::runconfig::{AppSchema, RunConfig};
use std::io::Read;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let Some(schema_path) = args.get(1) else {
        eprintln!("usage: runconfig SCHEMA.json < VALUES.json");
        std::process::exit(2);
    };
    let result = (|| -> Result<String, Vec<String>> {
        let schema_text = std::fs::read_to_string(schema_path).map_err(|e| vec![format!("read {schema_path}: {e}")])?;
        let schema = AppSchema::from_pyproject_json(&schema_text).map_err(|e| vec![e.to_string()])?;
        let mut input = String::new();
        std::io::stdin().read_to_string(&mut input).map_err(|e| vec![format!("read stdin: {e}")])?;
        let values: serde_json::Value = serde_json::from_str(&input).map_err(|e| vec![format!("parse stdin: {e}")])?;
        let rc = RunConfig::from_json_object(&values).map_err(|e| vec![e.to_string()])?;
        schema.validate(&rc).map_err(|errs| errs.iter().map(|e| e.to_string()).collect::<Vec<_>>())?;
        Ok(rc.render())
    })();
    match result {
        Ok(s) => println!("{s}"),
        Err(problems) => {
            for p in problems {
                eprintln!("{p}");
            }
            std::process::exit(1);
        }
    }
}
