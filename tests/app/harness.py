"""A real Flower federation on loopback for the app tests: one SuperLink and N SuperNodes
(flwr 1.42 from the venv), insecure, on free ports, each process with its own FLWR_HOME,
and `flwr` CLI helpers. Everything it starts is killed by `stop()`.
"""

import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
APP_DIR = ROOT / "apps" / "appliance"
VENV = Path(os.environ.get("APP_TEST_VENV", ROOT / "build" / "venv"))
START_TIMEOUT_S = 120
RUN_TIMEOUT_S = 600


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def base_env(flwr_home: Path) -> dict:
    env = dict(os.environ)
    env.update(FLWR_HOME=str(flwr_home), FLWR_TELEMETRY_ENABLED="0",
               FLWR_DISABLE_UPDATE_CHECK="1", PATH=f"{VENV / 'bin'}:{env.get('PATH', '')}",
               PYTHONDONTWRITEBYTECODE="1")
    env.pop("FL_ML_FRAMEWORK", None)
    return env


def connection_toml(address: str) -> str:
    return f'[superlink]\ndefault = "appliance"\n\n[superlink.appliance]\naddress = "{address}"\ninsecure = true\n'


class Federation:
    """SuperLink + `nodes` SuperNodes; node i gets partition-id=i num-partitions=nodes and
    the extra node config in node_config[i] (e.g. data-dir)."""

    def __init__(self, nodes: int, node_config: list[dict] | None = None, node_env: list[dict] | None = None):
        self.tmp = Path(tempfile.mkdtemp(prefix="fi-app-fed-"))
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.procs: list[subprocess.Popen] = []
        self.run_outputs: dict[int, str] = {}  # run id -> stdout of `flwr run --format json`
        self.logs: list[Path] = []
        self.nodes = nodes
        self.node_config = node_config or [{} for _ in range(nodes)]
        self.node_env = node_env or [{} for _ in range(nodes)]

    def _spawn(self, name: str, argv: list[str], env: dict) -> subprocess.Popen:
        log = self.tmp / f"{name}.log"
        self.logs.append(log)
        p = subprocess.Popen(argv, env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT,
                             cwd=self.tmp, start_new_session=True)
        self.procs.append(p)
        return p

    def start(self) -> "Federation":
        home = self.tmp / "superlink-home"
        home.mkdir()
        self._spawn("superlink", ["flower-superlink", "--insecure", "--host", "127.0.0.1",
                                  "--port", str(self.port), "--disable-runtime-dependency-installation",
                                  "--database", str(self.tmp / "state.db")], base_env(home))
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            try:
                with urllib.request.urlopen(f"http://{self.address}/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline or self.procs[0].poll() is not None:
                raise RuntimeError(f"SuperLink not healthy: {self.logs[0].read_text()[-3000:]}")
            time.sleep(0.1)
        for i in range(self.nodes):
            home = self.tmp / f"node{i}-home"
            home.mkdir()
            cfg = {"partition-id": i, "num-partitions": self.nodes, **self.node_config[i]}
            env = base_env(home)
            env.update(self.node_env[i])
            self._spawn(f"node{i}", ["flower-supernode", "--insecure", "--superlink", self.address,
                                     "--port", str(free_port()), "--node-config", render_node_config(cfg)],
                        env)
        while not all("SuperNode ID" in self.logs[1 + i].read_text() for i in range(self.nodes)):
            if time.monotonic() > deadline or any(p.poll() is not None for p in self.procs):
                raise RuntimeError("SuperNodes did not register: " +
                                   " | ".join(log.read_text()[-1500:] for log in self.logs[1:]))
            time.sleep(0.1)
        return self

    def kill_node(self, i: int) -> None:
        """SIGKILL SuperNode i and its ClientApp processes (a VM pulled mid-run)."""
        p = self.procs[1 + i]
        os.killpg(p.pid, signal.SIGKILL)
        p.wait()

    def stop(self) -> None:
        for p in reversed(self.procs):
            if p.poll() is None:
                try:
                    os.killpg(p.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        for p in self.procs:
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
        if os.environ.get("APP_TEST_KEEP") != "1":
            shutil.rmtree(self.tmp, ignore_errors=True)

    # --- the flwr CLI, with an isolated FLWR_HOME per caller ---------------------------

    def cli_home(self, where: Path) -> Path:
        home = Path(where) / "flwr-home"
        home.mkdir(parents=True, exist_ok=True)
        (home / "config.toml").write_text(connection_toml(self.address))
        return home

    def flwr(self, home: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        p = subprocess.run(["flwr", *args], env=base_env(home), capture_output=True, text=True,
                           timeout=120)
        if check and p.returncode != 0:
            raise RuntimeError(f"flwr {' '.join(args)} exited {p.returncode}: {p.stdout}\n{p.stderr}")
        return p

    def submit(self, home: Path, run_config: str, app_dir: Path = APP_DIR) -> int:
        p = self.flwr(home, "run", str(app_dir), "appliance", "--run-config", run_config,
                      "--format", "json")
        out = json.loads(p.stdout)
        if not out.get("success"):
            raise RuntimeError(f"flwr run failed: {p.stdout}")
        self.run_outputs[int(out["run-id"])] = p.stdout
        return int(out["run-id"])

    def ls_output(self, home: Path, run_id: int) -> str:
        return self.flwr(home, "ls", "appliance", "--run-id", str(run_id), "--format", "json").stdout

    def run_status(self, home: Path, run_id: int) -> dict:
        return json.loads(self.ls_output(home, run_id))["runs"][0]

    def wait_finished(self, home: Path, run_id: int, timeout: float = RUN_TIMEOUT_S) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            st = self.run_status(home, run_id)
            if st["status"].startswith("finished:"):
                return st
            if time.monotonic() > deadline:
                raise TimeoutError(f"run {run_id} still {st['status']} after {timeout}s")
            time.sleep(2)

    def run_log(self, home: Path, run_id: int) -> str:
        return self.flwr(home, "log", str(run_id), "appliance", "--show", check=False).stdout


def render_node_config(cfg: dict) -> str:
    parts = []
    for k, v in cfg.items():
        parts.append(f'{k}="{v}"' if isinstance(v, str) else f"{k}={v}")
    return " ".join(parts)
