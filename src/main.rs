//! flower-init: PID 1 of the Flower appliance VMs. See README.md and `flower-init help`.

fn main() {
    let code = flower_init::cli::run(std::env::args().collect());
    std::process::exit(code);
}
