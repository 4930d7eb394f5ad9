"""The warm app start of the image (image/appstart): the zygote, the shims, the launcher and the
task-window hook, run for real with the pinned Flower 1.42 of build/venv.

    build/venv/bin/python -m pytest tests/appstart      (make appstart-test)
"""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
APPSTART = ROOT / "image" / "appstart"
HERE = Path(__file__).resolve().parent
VENV_PY = Path(sys.executable)
PROGRAMS = {"probe": "probe_app:report", "sleeper": "probe_app:sleeper", "suicide": "probe_app:die_by_signal"}
COLD = '#!/bin/sh\necho "{\\"cold\\": \\"$0\\", \\"argv\\": \\"$*\\"}"\nexit ${PROBE_EXIT:-0}\n'


def wait_for(fn, timeout=30.0, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = fn()
        if v:
            return v
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


class Layout:
    """The image's /opt/flower/appstart in a tempdir, a 'real' command directory after it on
    PATH (shell scripts that say they ran cold), and a zygote serving the probe programs."""

    def __init__(self, tmp: Path):
        self.tmp = tmp
        self.bin = tmp / "appstart" / "bin"
        self.bin.mkdir(parents=True)
        for f in ("zygote.py", "shim.py", "start.sh"):
            (tmp / "appstart" / f).write_bytes((APPSTART / f).read_bytes())
        (tmp / "appstart" / "shim.py").chmod(0o755)
        (tmp / "appstart" / "start.sh").chmod(0o755)
        self.real = tmp / "real"
        self.real.mkdir()
        for name in [*PROGRAMS, "flwr-clientapp"]:
            (self.bin / name).symlink_to("../shim.py")
            (self.real / name).write_text(COLD)
            (self.real / name).chmod(0o755)
        self.socket = tmp / "z" / "apps.sock"
        self.zygote = None
        self.log = tmp / "zygote.log"

    def env(self, **extra):
        env = dict(os.environ)
        env.update(PATH=f"{self.bin}:{self.real}:{os.environ['PATH']}", FLOWER_INIT_ZYGOTE_SOCKET=str(self.socket),
                   PYTHONPATH=str(HERE))
        env.update(extra)
        return env

    def start_zygote(self, *extra, env=None, prefix=()):
        args = [str(VENV_PY), str(self.tmp / "appstart" / "zygote.py"), "--socket", str(self.socket),
                "--manifest", "/nonexistent", "--preload", "flwr-clientapp"]
        for name, target in PROGRAMS.items():
            args += ["--program", f"{name}={target}"]
        self.zygote = subprocess.Popen([*prefix, *args, *extra], env=env or self.env(), stdout=subprocess.DEVNULL,
                                       stderr=self.log.open("w"), stdin=subprocess.DEVNULL)
        wait_for(lambda: "zygote: " in self.log.read_text(), 120, "the zygote's ready line")
        return self

    def shim(self, program, *args, input="", cwd=None, **env):
        return subprocess.run([program, *args], env=self.env(**env), input=input, capture_output=True,
                              text=True, cwd=cwd or self.tmp, timeout=60)

    def stop(self):
        if self.zygote and self.zygote.poll() is None:
            self.zygote.kill()
            self.zygote.wait()


@pytest.fixture
def layout(tmp_path):
    lay = Layout(tmp_path)
    yield lay
    lay.stop()


def test_warm_start_hands_over_argv_env_cwd_stdio_and_the_exit_status(layout):
    layout.start_zygote()
    assert "ready in" in layout.log.read_text(), layout.log.read_text()
    work = layout.tmp / "work dir"
    work.mkdir()
    r = layout.shim("probe", "--token", "a b", "-x", input="on stdin\n", cwd=work, PROBE_VALUE="v=1", PROBE_EXIT="3")
    assert r.returncode == 3, r
    out = json.loads(r.stdout)
    assert out["argv"] == [str(layout.real / "probe"), "--token", "a b", "-x"]
    assert out["cwd"] == str(work) and out["probe"] == "v=1" and out["stdin"] == "on stdin\n"
    assert out["ppid"] == layout.zygote.pid, "forked by the zygote"
    assert out["warm"], "Flower's clientapp entry point was already imported"
    assert r.stderr == "to stderr\n"
    assert "probe: started warm as pid" in layout.log.read_text()


@pytest.mark.parametrize("without_cap_sys_nice, preload_nice", [(False, 19), (True, 0)])
def test_the_preload_runs_niced_only_when_it_can_come_back(layout, without_cap_sys_nice, preload_nice):
    # Root here may renice at will (CAP_SYS_NICE): preload at 19, back to 0, apps at 0. Without
    # that capability and with RLIMIT_NICE 0 (a container where runc could not raise it) it
    # could not come back, so it does not go: everything at 0. (The container's RLIMIT_NICE 20
    # path is checked in the VM: tests/vm/vm_test.py reads the zygote's ready line.)
    nice_log = layout.tmp / "preload-nice"
    (layout.tmp / "nice_probe.py").write_text(
        f"import os\nopen({str(nice_log)!r}, 'w').write(str(os.getpriority(os.PRIO_PROCESS, 0)))\n")
    path = f"{HERE}:{layout.tmp}"
    wrapper = ["setpriv", "--inh-caps=-sys_nice", "--bounding-set=-sys_nice", "prlimit", "--nice=0", "--"]
    layout.start_zygote("--program", "niceprobe=nice_probe:__name__", "--preload", "niceprobe",
                        prefix=wrapper if without_cap_sys_nice else (), env=layout.env(PYTHONPATH=path))
    text = layout.log.read_text()
    assert "ready in" in text, text
    assert nice_log.read_text() == str(preload_nice), "the preload's priority"
    if preload_nice:
        assert "preloaded at nice 19, apps at 0" in text, text
    else:
        assert "preloaded at nice 0, not 19: RLIMIT_NICE 0 would not let it return" in text, text
    r = layout.shim("probe", input="", PYTHONPATH=path)
    out = json.loads(r.stdout)
    assert out["warm"] and out["nice"] == 0, (r, text)
    assert "problems" not in text, text


def test_an_app_arriving_during_the_preload_gives_it_the_app_priority(layout):
    # The preload yields (nice 19) while Flower starts; once an app waits for it, it is on the
    # app's critical path: the shim renices it to its own priority (shim.py, hurry).
    go, seen = layout.tmp / "go", layout.tmp / "preload-nice"
    (layout.tmp / "slow_probe.py").write_text(
        "import os, time\n"
        f"deadline = time.monotonic() + 120\n"
        f"while not os.path.exists({str(go)!r}) and time.monotonic() < deadline:\n"
        "    time.sleep(0.02)\n"
        f"open({str(seen)!r}, 'w').write(str(os.getpriority(os.PRIO_PROCESS, 0)))\n")
    path = f"{HERE}:{layout.tmp}"
    args = [str(VENV_PY), str(layout.tmp / "appstart" / "zygote.py"), "--socket", str(layout.socket),
            "--manifest", "/nonexistent", "--preload", "slowprobe", "--program", "slowprobe=slow_probe:__name__"]
    for name, target in PROGRAMS.items():
        args += ["--program", f"{name}={target}"]
    layout.zygote = subprocess.Popen(args, env=layout.env(PYTHONPATH=path), stdout=subprocess.DEVNULL,
                                     stderr=layout.log.open("w"), stdin=subprocess.DEVNULL)
    wait_for(lambda: layout.socket.exists() and os.getpriority(os.PRIO_PROCESS, layout.zygote.pid) == 19, 60,
             "the zygote preloading at nice 19")
    shim = subprocess.Popen(["probe"], env=layout.env(PYTHONPATH=path), stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=layout.tmp)
    wait_for(lambda: os.getpriority(os.PRIO_PROCESS, layout.zygote.pid) == 0, 60, "the shim renicing the preload")
    go.write_text("")
    out, err = shim.communicate(timeout=120)
    assert seen.read_text() == "0", "the rest of the preload ran at the app's priority"
    report = json.loads(out)
    assert report["ppid"] == layout.zygote.pid and report["nice"] == 0, (out, err)


def _zygote_with_probe(layout, probe_name, extra_env, prefix=()):
    """Start the zygote preloading a program that records that the preload ran (and at which
    priority) into a file; returns the file."""
    seen = layout.tmp / f"{probe_name}-ran"
    (layout.tmp / f"{probe_name}.py").write_text(
        f"import os\nopen({str(seen)!r}, 'w').write(str(os.getpriority(os.PRIO_PROCESS, 0)))\n")
    path = f"{HERE}:{layout.tmp}"
    args = [str(VENV_PY), str(layout.tmp / "appstart" / "zygote.py"), "--socket", str(layout.socket),
            "--manifest", "/nonexistent", "--preload", probe_name, "--program", f"{probe_name}={probe_name}:__name__"]
    for name, target in PROGRAMS.items():
        args += ["--program", f"{name}={target}"]
    layout.zygote = subprocess.Popen([*prefix, *args], env=layout.env(PYTHONPATH=path, **extra_env),
                                     stdout=subprocess.DEVNULL, stderr=layout.log.open("w"), stdin=subprocess.DEVNULL)
    return seen, path


def _not_yet_listening():
    """A TCP port on 127.0.0.1 that refuses connections until the returned socket listens."""
    import socket
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind(("127.0.0.1", 0))
    return s, f"127.0.0.1:{s.getsockname()[1]}"


ONE_CPU = ["taskset", "-c", "0"]


def test_on_one_cpu_the_preload_waits_until_flower_serves(layout):
    flower, addr = _not_yet_listening()
    with flower:
        seen, path = _zygote_with_probe(layout, "waitprobe", {"FLOWER_INIT_PRELOAD_AFTER": addr}, prefix=ONE_CPU)
        wait_for(layout.socket.exists, 60, "the zygote's socket")
        time.sleep(1.5)  # several of its connect attempts
        assert not seen.exists(), "no preload while Flower does not serve yet"
        assert layout.zygote.poll() is None, layout.log.read_text()
        flower.listen(1)
        wait_for(lambda: "ready in" in layout.log.read_text(), 60, "the preload after Flower serves")
    text = layout.log.read_text()
    assert "one CPU: started after Flower served" in text and "preloaded at nice 19, apps at 0" in text, text
    assert seen.read_text() == "19", "the preload still yields to what runs after Flower's start"
    r = layout.shim("probe", input="", PYTHONPATH=path)
    assert json.loads(r.stdout)["ppid"] == layout.zygote.pid, "forked by the zygote"


def test_on_one_cpu_an_app_that_comes_first_ends_the_wait(layout):
    flower, addr = _not_yet_listening()
    with flower:
        seen, path = _zygote_with_probe(layout, "earlyprobe", {"FLOWER_INIT_PRELOAD_AFTER": addr}, prefix=ONE_CPU)
        wait_for(layout.socket.exists, 60, "the zygote's socket")
        r = layout.shim("probe", input="", PYTHONPATH=path)
    text = layout.log.read_text()
    out = json.loads(r.stdout)
    assert out["ppid"] == layout.zygote.pid and out["nice"] == 0, (r, text)
    assert "one CPU: started when an app came, before Flower served" in text, text
    assert seen.read_text() == "0", "an app is waiting: the preload runs at the app's priority"


def test_with_two_cpus_the_preload_does_not_wait(layout):
    if len(os.sched_getaffinity(0)) < 2:
        pytest.skip("this machine gives the tests one CPU: the two-CPU case cannot be run here")
    flower, addr = _not_yet_listening()
    with flower:
        seen, _ = _zygote_with_probe(layout, "parprobe", {"FLOWER_INIT_PRELOAD_AFTER": addr})
        wait_for(lambda: "ready in" in layout.log.read_text(), 60, "the preload, Flower not serving")
    text = layout.log.read_text()
    assert "one CPU" not in text and seen.read_text() == "19", text


def test_real_flower_entry_point_runs_warm(layout):
    layout.start_zygote()
    r = layout.shim("flwr-clientapp", "--bogus")
    assert r.returncode == 2, r  # argparse: the real flwr-clientapp's error
    assert "one of the arguments --token --token-file is required" in r.stderr
    assert "cold" not in r.stdout and "flwr-clientapp: started warm" in layout.log.read_text()


def test_signals_reach_the_app_and_its_death_by_signal_comes_back(layout):
    layout.start_zygote()
    pidf, sigf = layout.tmp / "pid", layout.tmp / "sig"
    p = subprocess.Popen(["sleeper", str(pidf), str(sigf)], env=layout.env(), cwd=layout.tmp)
    wait_for(lambda: pidf.exists() and pidf.read_text(), what="the app's pid")
    assert int(pidf.read_text()) != p.pid
    p.send_signal(signal.SIGTERM)
    assert p.wait(30) == 7
    assert sigf.read_text() == str(int(signal.SIGTERM))
    r = layout.shim("suicide")
    assert r.returncode == -signal.SIGUSR1, r


def test_a_killed_shim_takes_its_app_with_it(layout):
    layout.start_zygote()
    pidf = layout.tmp / "pid"
    p = subprocess.Popen(["sleeper", str(pidf), str(layout.tmp / "sig")], env=layout.env(), cwd=layout.tmp)
    app = int(wait_for(lambda: pidf.exists() and pidf.read_text(), what="the app's pid"))
    p.kill()
    p.wait()
    wait_for(lambda: not Path(f"/proc/{app}").exists(), 30, "the app to die with its shim")


def test_without_a_zygote_the_shim_runs_the_real_command(layout):
    r = layout.shim("probe", "--token", "t", PROBE_EXIT="4")  # no zygote started
    assert r.returncode == 4
    assert json.loads(r.stdout)["cold"] == str(layout.real / "probe")
    assert "cold start of probe: zygote at" in r.stderr
    r = layout.shim("probe", FLOWER_INIT_ZYGOTE_SOCKET="")
    assert json.loads(r.stdout)["cold"] and r.stderr == "", "disabled: cold and quiet"


def test_a_different_flower_environment_is_served_cold(layout):
    layout.start_zygote()
    r = layout.shim("probe", FLWR_LOG_LEVEL="DEBUG")
    assert json.loads(r.stdout)["cold"], r
    assert "environment differs from the zygote's in FLWR_LOG_LEVEL" in r.stderr


def test_variables_the_preload_sets_neither_refuse_warm_starts_nor_go_missing(layout):
    layout.start_zygote("--program", "added=env_import:main", "--preload", "added")
    out = json.loads(layout.shim("probe").stdout)
    assert "cold" not in out and out["added"] == "by-import", out


def test_a_preload_that_starts_a_thread_makes_every_start_cold(layout):
    layout.start_zygote("--program", "threaded=threaded_import:main", "--preload", "threaded")
    assert "serving cold starts only (2 Python threads after the preload" in layout.log.read_text()
    r = layout.shim("probe")
    assert json.loads(r.stdout)["cold"] and "forking is unsafe" in r.stderr


def test_the_launcher_starts_the_zygote_and_execs_flower(layout):
    """start.sh as the container runs it: the zygote serving, the shims first on PATH."""
    script = 'import os, shutil, sys; print(shutil.which("flwr-clientapp")); print(os.environ.get("FLOWER_INIT_ZYGOTE_SOCKET", "-"))'
    fake = layout.tmp / "flower-supernode"
    fake.write_text(f"#!{VENV_PY}\n{script}\n")
    fake.chmod(0o755)
    env = layout.env(FLOWER_INIT_ZYGOTE_PYTHON=str(VENV_PY), PATH=f"{layout.real}:{os.environ['PATH']}")

    def launch():
        out = layout.tmp / "launcher.out"
        # Its own session: the zygote it leaves in the background is killed with it below.
        p = subprocess.Popen([str(layout.tmp / "appstart" / "start.sh"), str(fake)], env=env, stdout=out.open("w"),
                             stderr=subprocess.STDOUT, start_new_session=True)
        assert p.wait(60) == 0, out.read_text()
        return p, out.read_text().split()

    p, (which, sock) = launch()
    try:
        assert which == str(layout.bin / "flwr-clientapp") and sock == str(layout.socket)
        wait_for(lambda: layout.socket.exists() and "ready in" in (layout.tmp / "launcher.out").read_text(), 120,
                 "the launcher's zygote")
        r = layout.shim("flwr-clientapp", "--bogus")
        assert r.returncode == 2 and "cold" not in r.stdout + r.stderr, r
        assert "flwr-clientapp: started warm" in (layout.tmp / "launcher.out").read_text()
    finally:
        os.killpg(p.pid, signal.SIGKILL)
    env["FLOWER_INIT_APP_START"] = "cold"
    env.pop("FLOWER_INIT_ZYGOTE_SOCKET")
    p, lines = launch()
    assert lines == [str(layout.real / "flwr-clientapp"), "-"], "cold: no shims, no zygote"


WINDOW_CHECK = """
import site, sys
site.addsitedir(sys.argv[1])
import flwr.common.constant as c
import flwr.supercore.corestate.sql_corestate as sql, flwr.supercore.corestate.in_memory_corestate as mem
import flwr.supercore.heartbeat as hb, flwr.supernode.fleet_http_connection as fleet
print(c.HEARTBEAT_DEFAULT_INTERVAL, sql.HEARTBEAT_DEFAULT_INTERVAL, mem.HEARTBEAT_DEFAULT_INTERVAL,
      hb.HEARTBEAT_DEFAULT_INTERVAL, fleet.HEARTBEAT_DEFAULT_INTERVAL)
"""


@pytest.mark.parametrize("value,expect", [(None, 120), ("300", 300), ("5", 120), ("x", 120)])
def test_the_task_window_hook_sets_the_names_flower_binds(tmp_path, value, expect):
    """The .pth hook, as the image's venv has it: the names the corestate modules bound."""
    for f in ("flower_init_task_window.py", "flower_init_task_window.pth"):
        (tmp_path / f).write_bytes((APPSTART / f).read_bytes())
    env = dict(os.environ)
    env.pop("FLOWER_INIT_TASK_WINDOW", None)
    if value is not None:
        env["FLOWER_INIT_TASK_WINDOW"] = value
    r = subprocess.run([str(VENV_PY), "-c", WINDOW_CHECK, str(tmp_path)], env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == [str(expect)] * 5
    assert ("must be whole seconds in 10..1800" in r.stderr) == (value in ("5", "x"))


CLAIM = """
import site, sys
if sys.argv[1] != "-":
    site.addsitedir(sys.argv[1])
from datetime import timedelta
from flwr.supercore.corestate.in_memory_corestate import InMemoryCoreState
import flwr.supercore.corestate.in_memory_corestate as mem
print(mem.HEARTBEAT_DEFAULT_INTERVAL)
"""


def test_without_the_hook_flower_keeps_its_30_s(tmp_path):
    """What the hook changes: Flower 1.42's own value is 30 s."""
    r = subprocess.run([str(VENV_PY), "-c", CLAIM, "-"], capture_output=True, text=True, timeout=120)
    assert r.stdout.split() == ["30"], r.stderr


BUSY_CHECK = """
import site, sys
if sys.argv[1] != "-":
    site.addsitedir(sys.argv[1])
import flwr.supercore.sql_mixin as m
print(dict(m.SQLITE_PRAGMAS)["busy_timeout"])
"""


@pytest.mark.parametrize("value,expect", [(None, "60000"), ("2000", "2000"), ("10", "60000"), ("x", "60000")])
def test_the_hook_lengthens_sqlites_busy_timeout_where_flower_binds_it(tmp_path, value, expect):
    """Flower 1.42 waits 5 s for SQLite's lock, then the Fleet API answers 500 ('database is
    locked', seen in make demo under load); the hook sets the pragma sql_mixin applies."""
    for f in ("flower_init_task_window.py", "flower_init_task_window.pth"):
        (tmp_path / f).write_bytes((APPSTART / f).read_bytes())
    env = {k: v for k, v in os.environ.items() if k != "FLOWER_INIT_SQLITE_BUSY_MS"}
    if value is not None:
        env["FLOWER_INIT_SQLITE_BUSY_MS"] = value
    r = subprocess.run([str(VENV_PY), "-c", BUSY_CHECK, str(tmp_path)], env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == [expect]
    assert ("must be whole milliseconds in 1000..600000" in r.stderr) == (value in ("10", "x"))
    r = subprocess.run([str(VENV_PY), "-c", BUSY_CHECK, "-"], env=env, capture_output=True, text=True, timeout=120)
    assert r.stdout.split() == ["5000"], "Flower's own value, without the hook"


SUPERNODE = """
import site, sys
if sys.argv[1] != "-":
    site.addsitedir(sys.argv[1])
sys.argv = ["flower-supernode", "--insecure", "--superlink", sys.argv[2], "--host", "127.0.0.1",
            "--port", sys.argv[3], "--isolation", "process"]
from flwr.supernode.cli.flower_supernode import flower_supernode
flower_supernode()
"""


def free_port():
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def fleet():
    """The fake Fleet API (fake_fleet.py): its address and the requests it has seen."""
    p = subprocess.Popen([str(VENV_PY), str(HERE / "fake_fleet.py")], stdout=subprocess.PIPE, text=True)
    port = int(p.stdout.readline())
    seen = []

    def read():
        for line in p.stdout:
            seen.append(line.strip())

    import threading
    threading.Thread(target=read, daemon=True).start()
    yield f"127.0.0.1:{port}", seen
    p.kill()
    p.wait()


@pytest.mark.parametrize("hook", [True, False])
def test_a_supernode_whose_connection_ends_exits_so_it_is_restarted(tmp_path, fleet, hook):
    """A 500 on pull-messages ends Flower's connection loop (only 502/503/504 are retried): the
    node deactivates and unregisters itself. Without the hook its process lives on, out of the
    federation and healthy; with it the process exits 75 so that flower-init restarts it."""
    addr, seen = fleet
    site = str(tmp_path) if hook else "-"
    if hook:
        for f in ("flower_init_task_window.py", "flower_init_task_window.pth"):
            (tmp_path / f).write_bytes((APPSTART / f).read_bytes())
    p = subprocess.Popen([str(VENV_PY), "-c", SUPERNODE, site, addr, str(free_port())],
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        wait_for(lambda: "/v1/fleet/unregister-node 200" in seen, timeout=120, what="the node unregistering itself")
        assert "/v1/fleet/pull-messages 500" in seen, seen
        if hook:
            out, _ = p.communicate(timeout=60)
            assert p.returncode == 75, out[-3000:]
            assert "flower-init: the SuperNode's connection to the SuperLink ended" in out, out[-3000:]
        else:
            with pytest.raises(subprocess.TimeoutExpired):
                p.wait(timeout=10)  # what the hook fixes: nothing ends it
    finally:
        if p.poll() is None:
            p.kill()
        p.wait()
