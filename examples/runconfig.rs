//! flower-init's run-config and flwr-output code as a small CLI, for the app tests (tests/app):
//! they submit real runs with its rendering and feed it what the real flwr printed.
//!
//!   runconfig SCHEMA.json < VALUES.json      render + validate a --run-config argument
//!   runconfig --parse run|ls|status < TEXT   parse `flwr run`/`flwr ls --format json` or the
//!                                            app's status file; print what flower-init read, as JSON
//!
//! SCHEMA.json: the app's pyproject.toml as JSON; VALUES.json: a flat object of overrides.
//! Prints the argument (or the parsed JSON), or every problem on stderr and exits 1.

use flower_init::runconfig::{self, AppSchema, RunConfig};
use serde_json::json;
use std::io::Read;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let mut input = String::new();
    if let Err(e) = std::io::stdin().read_to_string(&mut input) {
        fail(vec![format!("read stdin: {e}")]);
    }
    let result = match args.get(1).map(String::as_str) {
        Some("--parse") => parse(args.get(2).map(String::as_str).unwrap_or(""), &input).map_err(|e| vec![e]),
        Some(schema_path) => render(schema_path, &input),
        None => Err(vec!["usage: runconfig SCHEMA.json < VALUES.json | runconfig --parse run|ls|status < TEXT".into()]),
    };
    match result {
        Ok(s) => println!("{s}"),
        Err(problems) => fail(problems),
    }
}

/// Print every problem and exit 1.
fn fail(problems: Vec<String>) -> ! {
    for p in problems {
        eprintln!("{p}");
    }
    std::process::exit(1);
}

/// The `--run-config` argument for the overrides in `input`, validated against the schema.
fn render(schema_path: &str, input: &str) -> Result<String, Vec<String>> {
    let schema_text = std::fs::read_to_string(schema_path).map_err(|e| vec![format!("read {schema_path}: {e}")])?;
    let schema = AppSchema::from_pyproject_json(&schema_text).map_err(|e| vec![e.to_string()])?;
    let values: serde_json::Value = serde_json::from_str(input).map_err(|e| vec![format!("parse stdin: {e}")])?;
    let rc = RunConfig::from_json_object(&values).map_err(|e| vec![e.to_string()])?;
    schema.validate(&rc).map_err(|errs| errs.iter().map(|e| e.to_string()).collect::<Vec<_>>())?;
    Ok(rc.render())
}

/// What flower-init reads from a real flwr output or status file (run ids as strings).
fn parse(kind: &str, input: &str) -> Result<String, String> {
    let value = match kind {
        "run" => {
            let s = runconfig::parse_run_output(input).map_err(|e| e.to_string())?;
            json!({"run_id": s.run_id.to_string(), "fab_id": s.fab_id, "fab_version": s.fab_version})
        }
        "ls" => {
            let runs = runconfig::parse_ls_output(input).map_err(|e| e.to_string())?;
            let rows: Vec<_> = runs
                .iter()
                .map(|r| {
                    json!({"run_id": r.run_id.to_string(), "state": r.state.as_str(),
                           "finished": r.state.is_finished(), "details": r.details})
                })
                .collect();
            json!(rows)
        }
        "status" => {
            let st = runconfig::parse_status_file(input)?;
            let attrs: serde_json::Map<String, serde_json::Value> =
                st.attributes().into_iter().map(|(k, v)| (k.to_string(), json!(v))).collect();
            json!(attrs)
        }
        other => return Err(format!("--parse {other:?}: expected run, ls or status")),
    };
    Ok(value.to_string())
}
