//! `flower-init gpu scan`: what the machine has and what the boot would do with it, changing
//! nothing (it only reads sysfs). A table by default, JSON with `--json`; exit 0 with no GPU.

use super::plan::{Decision, Driver, Plan};
use super::scan::{Scan, class_word};
use super::{Request, Selection, container_env};
use crate::args::{Args, EXIT_USAGE};
use serde::Serialize;
use std::fmt::Write as _;
use std::path::PathBuf;

const USAGE: &str = "\
usage: flower-init gpu scan [--sysfs ROOT] [--json] [--driver nvidia|vfio-pci] [--devices all|0,1]
       flower-init gpu bundle ... -- CMD [ARGS...]   (see flower-init gpu bundle --help)
  Lists the GPUs under ROOT/bus/pci/devices (ROOT defaults to /sys) and prints the plan the
  boot would follow with FL_GPU_ENABLED=YES. Reads only; changes nothing.
  --driver    what the image provides: nvidia (its NVIDIA driver, the default) or vfio-pci
              (no driver: GPUs go to vfio-pci for nested passthrough)
  --devices   FL_CUDA_VISIBLE_DEVICES (default all)
  --json      one JSON object {\"scan\", \"plan\", \"env\"}";

/// Where `--driver nvidia` assumes the image's NVIDIA userspace is (only shown, never read).
const DEFAULT_NVIDIA_DIR: &str = "/opt/nvidia-driver";

/// `flower-init gpu …`.
pub fn cli(args: &mut Args) -> i32 {
    if args.flag("--help") || args.flag("-h") {
        println!("{USAGE}");
        return 0;
    }
    match args.positional().as_deref() {
        Some("scan") => match scan_cmd(args) {
            Ok(code) => code,
            Err(e) => {
                eprintln!("flower-init gpu scan: {e}\n{USAGE}");
                EXIT_USAGE
            }
        },
        Some("bundle") => {
            eprintln!("flower-init gpu: `bundle` comes right after `gpu`: flower-init gpu bundle --help");
            EXIT_USAGE
        }
        Some(other) => {
            eprintln!("flower-init gpu: unknown command {other:?}\n{USAGE}");
            EXIT_USAGE
        }
        None => {
            eprintln!("{USAGE}");
            EXIT_USAGE
        }
    }
}

/// Parse the options, scan, plan, print.
fn scan_cmd(args: &mut Args) -> Result<i32, String> {
    let sysfs = PathBuf::from(args.opt("--sysfs")?.unwrap_or_else(|| "/sys".into()));
    let json = args.flag("--json");
    let nvidia = match args.opt("--driver")?.as_deref() {
        None | Some("nvidia") => true,
        Some("vfio-pci") => false,
        Some(d) => return Err(format!("--driver {d:?}: must be nvidia or vfio-pci")),
    };
    let devices = parse_devices(args.opt("--devices")?.as_deref().unwrap_or("all"))?;
    args.finish()?;
    let req = Request {
        enabled: true,
        devices,
        memory_fraction: 1.0,
        nvidia_driver: nvidia.then(|| PathBuf::from(DEFAULT_NVIDIA_DIR)),
        container_root: None,
    };
    let scan = match super::scan::scan_at(&sysfs) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("flower-init gpu scan: {e}");
            return Ok(1);
        }
    };
    let plan = super::plan::plan(&scan, &req);
    let env = preview_env(&req, &plan);
    if json {
        #[derive(Serialize)]
        struct Out<'a> {
            scan: &'a Scan,
            plan: &'a Plan,
            env: Vec<String>,
        }
        let env = env.iter().map(|(k, v)| format!("{k}={v}")).collect();
        match serde_json::to_string_pretty(&Out { scan: &scan, plan: &plan, env }) {
            Ok(s) => println!("{s}"),
            Err(e) => {
                eprintln!("flower-init gpu scan: encode JSON: {e}");
                return Ok(1);
            }
        }
    } else {
        print!("{}", render(&scan, &plan, &req, &env));
    }
    Ok(0)
}

/// FL_CUDA_VISIBLE_DEVICES syntax: `all` or `0,1`.
pub fn parse_devices(s: &str) -> Result<Selection, String> {
    if s.trim().eq_ignore_ascii_case("all") {
        return Ok(Selection::All);
    }
    let v: Result<Vec<u32>, _> = s.split(',').map(|x| x.trim().parse::<u32>()).collect();
    v.map(Selection::Indices).map_err(|_| format!("--devices {s:?}: must be all or a comma-separated list of indices"))
}

/// The environment the container would get if every step succeeds.
fn preview_env(req: &Request, plan: &Plan) -> Vec<(String, String)> {
    match &plan.decision {
        Decision::Bind { driver } => container_env(req, Some(*driver), plan.gpus.len()),
        _ => container_env(req, None, 0),
    }
}

/// The human-readable report.
pub fn render(scan: &Scan, plan: &Plan, req: &Request, env: &[(String, String)]) -> String {
    let mut o = String::new();
    let dir = scan.sysfs.join("bus/pci/devices");
    if scan.gpus.is_empty() {
        let _ = writeln!(o, "No GPU: no NVIDIA, AMD or Intel display controller in {}.", dir.display());
    } else {
        let _ = writeln!(o, "GPUs in {}:", dir.display());
        let rows: Vec<[String; 7]> = scan
            .gpus
            .iter()
            .map(|g| {
                [
                    g.bdf.clone(),
                    format!("{} {:04x}:{:04x}", class_word(g.class), g.vendor, g.device),
                    g.model.clone(),
                    g.driver.clone().unwrap_or_else(|| "-".into()),
                    g.iommu_group.map(|n| n.to_string()).unwrap_or_else(|| "-".into()),
                    g.numa_node.map(|n| n.to_string()).unwrap_or_else(|| "-".into()),
                    g.group_members
                        .iter()
                        .map(|m| format!("{} {} ({})", m.bdf, class_word(m.class), m.driver.as_deref().unwrap_or("no driver")))
                        .collect::<Vec<_>>()
                        .join(", "),
                ]
            })
            .collect();
        let head = ["BDF", "CLASS ID", "MODEL", "DRIVER", "IOMMU", "NUMA", "GROUP ALSO HOLDS"];
        let width = |i: usize| rows.iter().map(|r| r[i].len()).chain([head[i].len()]).max().unwrap_or(0);
        let w: Vec<usize> = (0..7).map(width).collect();
        for r in std::iter::once(head.map(String::from)).chain(rows) {
            let line = (0..7).map(|i| format!("{:<1$}", r[i], w[i])).collect::<Vec<_>>().join("  ");
            let _ = writeln!(o, "  {}", line.trim_end());
        }
    }
    for g in &scan.ignored {
        let d = g.driver.as_deref().unwrap_or("no driver");
        let _ = writeln!(o, "Ignored: {} {} ({}): not a GPU maker's (an emulated display?)", g.bdf, g.model, d);
    }
    let loaded = if scan.loaded.is_empty() { "none".to_string() } else { scan.loaded.join(", ") };
    let _ = writeln!(o, "Modules already loaded: {loaded}");
    let image = if req.nvidia_driver.is_some() { "an image with the NVIDIA driver" } else { "an image without a GPU driver" };
    let sel = match &req.devices {
        Selection::All => "all".to_string(),
        Selection::Indices(v) => v.iter().map(u32::to_string).collect::<Vec<_>>().join(","),
    };
    let _ = writeln!(o, "\nPlan for FL_GPU_ENABLED=YES, {image}, FL_CUDA_VISIBLE_DEVICES={sel}:");
    for w in &plan.warnings {
        let _ = writeln!(o, "  WARNING: {w}");
    }
    match &plan.decision {
        Decision::Disabled => {}
        Decision::Fallback { reason } => {
            let _ = writeln!(o, "  CPU fallback: {reason} (FL_GPU_AVAILABLE=NO)");
        }
        Decision::Bind { driver } => {
            for c in &plan.gpus {
                let _ = writeln!(o, "  use GPU {}: {} {}", c.index, c.bdf, c.model);
            }
            for (i, s) in plan.steps.iter().enumerate() {
                let _ = writeln!(o, "  {:>2}. {}", i + 1, s.action);
            }
            if *driver == Driver::Nvidia
                && let Some(d) = &req.nvidia_driver
            {
                let _ = writeln!(o, "  mount {}/lib read-only at {}", d.display(), super::CONTAINER_NVIDIA_LIB);
            }
        }
    }
    let env = env.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(" ");
    let _ = writeln!(o, "  container env: {env}");
    let _ = writeln!(o, "Nothing was changed (scan only reads sysfs).");
    o
}
