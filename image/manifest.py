"""Write the image manifest /etc/flower-init/image.json (read by flower-init, src/image.rs).

Runs inside the rootfs being built, with the venv's python (3.11: tomllib), so the versions it
records are the installed ones. The app's `[tool.flwr.app.config]` table is carried as
{key: {"type": string|integer|float|boolean, "default": value}} so flower-init can check a run
config without a TOML parser. Flower flattens nested tables to dotted keys; so does this.
"""
import argparse
import hashlib
import importlib.metadata as md
import json
import os
import subprocess
import sys
import tomllib

TYPES = {bool: "boolean", int: "integer", float: "float", str: "string"}


def flatten(table, prefix=""):
    """Nested TOML tables become dotted keys, as Flower's own config flattening does."""
    for k, v in table.items():
        if isinstance(v, dict):
            yield from flatten(v, f"{prefix}{k}.")
        else:
            yield f"{prefix}{k}", v


def config_schema(table):
    out = {}
    for key, value in flatten(table):
        kind = TYPES.get(type(value))
        if kind is None:
            sys.exit(f"manifest: [tool.flwr.app.config] {key} = {value!r}: Flower run configs hold "
                     f"only strings, integers, floats and booleans")
        out[key] = {"type": kind, "default": value}
    return out


def fab_entry(path):
    """The FAB's path, sha256 (Flower's `Fab.hash_str`) and size."""
    with open(path, "rb") as f:
        content = f.read()
    return {"path": path, "sha256": hashlib.sha256(content).hexdigest(), "bytes": len(content)}


def debian_version(pkg):
    r = subprocess.run(["dpkg-query", "-W", "-f=${Version}", pkg], capture_output=True, text=True)
    return r.stdout.strip() or None


def nvidia_entry(d):
    """The GPU image's driver: where it is and what it was built for (its driver.json)."""
    with open(os.path.join(d, "driver.json")) as f:
        drv = json.load(f)
    for f in drv["load_order"]:
        if not os.path.isfile(os.path.join(d, "modules", drv["kernel"], f)):
            sys.exit(f"manifest: {d}: module {f} for {drv['kernel']} is missing")
    return {"dir": d, "version": drv["version"], "kernel": drv["kernel"], "vermagic": drv["vermagic"],
            "modules": drv["modules"], "load_order": drv["load_order"]}


def main():
    ap = argparse.ArgumentParser()
    for a in ("--framework", "--use-cases", "--build-date", "--app", "--out"):
        ap.add_argument(a, required=True)
    ap.add_argument("--fab", help="the app built as a FAB (Flower's builder), submitted by flower-init")
    ap.add_argument("--nvidia-driver", help="the NVIDIA driver directory (image/nvidia-driver.sh's layout)")
    ap.add_argument("--rootfs-bytes", type=int, required=True)
    ap.add_argument("--venv-bytes", type=int, required=True)
    a = ap.parse_args()
    with open(f"{a.app}/pyproject.toml", "rb") as f:
        pyproject = tomllib.load(f)
    project = pyproject.get("project", {})
    flwr_app = pyproject.get("tool", {}).get("flwr", {}).get("app", {})
    components = flwr_app.get("components", {})
    for need in ("serverapp", "clientapp"):
        if need not in components:
            sys.exit(f"manifest: {a.app}/pyproject.toml has no [tool.flwr.app.components] {need}")
    packages = {d.metadata["Name"].lower(): d.version for d in md.distributions()}
    manifest = {
        "flower_version": md.version("flwr"),
        "framework": a.framework,
        "use_cases": json.loads(a.use_cases),
        "role": None,
        "python_version": sys.version.split()[0],
        "venv": sys.prefix,
        "app": {
            "path": a.app,
            "name": project.get("name"),
            "version": project.get("version"),
            "publisher": flwr_app.get("publisher"),
            "serverapp": components["serverapp"],
            "clientapp": components["clientapp"],
            "config": config_schema(flwr_app.get("config", {})),
            "fab": fab_entry(a.fab) if a.fab else None,
        },
        "packages": dict(sorted(packages.items())),
        "debian": {p: debian_version(p) for p in ("python3", "runc", "tini", "ca-certificates")},
        "build_date": a.build_date,
        "sizes": {"rootfs_bytes": a.rootfs_bytes, "venv_bytes": a.venv_bytes},
        "nvidia_driver": nvidia_entry(a.nvidia_driver) if a.nvidia_driver else None,
    }
    with open(a.out, "w") as f:
        json.dump(manifest, f, indent=2)
        f.write("\n")


if __name__ == "__main__":
    main()
