#!/usr/bin/env python3
"""tests/gpu/device-check.sh where there is no NVIDIA GPU (docs/gpu.md, "Device check").

    tests/gpu/device_check_test.py FLOWER_INIT [--image IMAGE]   (make gpu-device-check-test; root, ~1 s)

1. On this machine, if it has no NVIDIA driver: the script refuses, naming each thing missing.
2. Over fake /sys, /proc, /dev trees (FI_DEVICE_CHECK_ROOT): a GPU without a driver, then a
   driver without the host's libraries of its release: refused with the reason, nothing left
   behind in the work directory's parent.
3. A fake host with the driver up (its libraries behind soname links, as Debian installs them)
   and a fake image root: `--bundle-only` assembles the driver directory and has the real
   flower-init write the bundle: the nodes of the fake driver, the assembled libraries mounted
   where the boot mounts them, the check script as the command under tini.

With --image (the real GPU image, build/image/pytorch/image.squashfs or its rootfs; make
gpu-device-check-test GPU_IMAGE=...), step 3 runs over that image instead of the fake root:
what travels to a GPU machine passes every check but the GPU itself (its manifest, the library
mountpoints, the venv's python3), loop-mounted read-only as there.

The container itself (torch on a GPU) needs a GPU machine: the script is run there by hand.
"""

import json
import os
import stat
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
SCRIPT = os.path.join(HERE, "device-check.sh")
MANIFEST = os.path.join(HERE, "..", "..", "src", "image", "testdata-image.json")
RELEASE = "550.90.07"
BDF = "0000:01:00.0"


def run(args, env=None, tmpdir=None):
    e = dict(os.environ)
    e.pop("FI_DEVICE_CHECK_TIMED", None)
    e.update(env or {})
    if tmpdir:
        e["TMPDIR"] = tmpdir
    r = subprocess.run(["bash", SCRIPT, *args], capture_output=True, text=True, env=e, timeout=120)
    return r.returncode, r.stdout, r.stderr


def write(path, text):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(text)


def fake_gpu(root):
    """An A100 bound to nvidia in ROOT/sys, laid out as the kernel's (src/gpu/fixture.rs)."""
    sys_ = os.path.join(root, "sys")
    d = os.path.join(sys_, "devices/pci0000:00", BDF)
    for name, value in [("class", "0x030200"), ("vendor", "0x10de"), ("device", "0x20b5"), ("subsystem_vendor", "0x10de"),
                        ("subsystem_device", "0x1533"), ("numa_node", "0"), ("driver_override", "(null)")]:
        write(os.path.join(d, name), value + "\n")
    os.makedirs(os.path.join(sys_, "bus/pci/devices"), exist_ok=True)
    os.symlink(f"../../../devices/pci0000:00/{BDF}", os.path.join(sys_, "bus/pci/devices", BDF))
    os.makedirs(os.path.join(sys_, "bus/pci/drivers/nvidia"), exist_ok=True)
    os.symlink("../../../bus/pci/drivers/nvidia", os.path.join(d, "driver"))
    os.makedirs(os.path.join(root, "dev"), exist_ok=True)
    os.makedirs(os.path.join(root, "proc"), exist_ok=True)


def fake_driver(root):
    """The driver loaded: modules, /proc/driver/nvidia, /proc/devices, /dev/nvidiactl (c 195:255)."""
    for m in ("nvidia", "nvidia_uvm"):
        os.makedirs(os.path.join(root, "sys/module", m), exist_ok=True)
    proc = os.path.join(root, "proc")
    write(os.path.join(proc, "driver/nvidia/version"),
          f"NVRM version: NVIDIA UNIX Open Kernel Module for x86_64  {RELEASE}  Release Build  (dvs-builder@U16-I3-B03-4-3)  Fri May 31 09:30:47 UTC 2024\n")
    write(os.path.join(proc, "driver/nvidia/gpus", BDF, "information"),
          f"Model: \t\t NVIDIA H200\nBus Location: \t {BDF}\nDevice Minor: \t 3\n")
    write(os.path.join(proc, "devices"), "Character devices:\n  1 mem\n195 nvidia\n508 nvidia-uvm\n\nBlock devices:\n  7 loop\n")
    os.mknod(os.path.join(root, "dev/nvidiactl"), stat.S_IFCHR | 0o666, os.makedev(195, 255))


def fake_libs(d):
    """The host's userspace as Debian installs it: the files of the release, soname links through
    a second directory, and an older release's libcuda beside it."""
    real = os.path.join(d, "nvidia/current")
    os.makedirs(real)
    for base, so in [("libcuda", "1"), ("libnvidia-ml", "1"), ("libnvidia-ptxjitcompiler", "1"), ("libnvidia-nvvm", "4")]:
        write(os.path.join(real, f"{base}.so.{RELEASE}"), f"{base} {RELEASE}\n")
        os.symlink(f"nvidia/current/{base}.so.{RELEASE}", os.path.join(d, f"{base}.so.{so}"))
    write(os.path.join(d, f"libnvidia-gpucomp.so.{RELEASE}"), "gpucomp\n")
    write(os.path.join(d, "libcuda.so.535.309.01"), "old\n")


def fake_image(d):
    """An image root: the manifest, the library mountpoints, the venv's python3 (a link to the
    image's own python, as venv makes it)."""
    with open(MANIFEST) as f:
        write(os.path.join(d, "etc/flower-init/image.json"), f.read())
    for m in ("usr/local/nvidia/lib64", "usr/local/nvidia/bin"):
        os.makedirs(os.path.join(d, m))
    os.makedirs(os.path.join(d, "opt/flower/venv/bin"))
    os.symlink("/usr/bin/python3.11", os.path.join(d, "opt/flower/venv/bin/python3"))


def expect_fail(rc, err, *phrases, absent=()):
    assert rc == 1, f"exit {rc}, want 1: {err}"
    line = [l for l in err.splitlines() if l.startswith("device-check: FAIL: ")]
    assert line, f"no FAIL line: {err}"
    for p in phrases:
        assert p in line[-1], f"{p!r} not in {line[-1]!r}"
    for p in absent:
        assert p not in line[-1], f"{p!r} in {line[-1]!r}"
    return line[-1]


def main():
    flower_init = os.path.abspath(sys.argv[1])
    real_image = None
    if sys.argv[2:3] == ["--image"] and len(sys.argv) == 4:
        real_image = os.path.abspath(sys.argv[3])
        assert os.path.exists(real_image), f"--image {real_image}: no such image (make image FRAMEWORK=pytorch)"
    elif len(sys.argv) != 2:
        sys.exit("usage: device_check_test.py FLOWER_INIT [--image IMAGE]")
    assert os.access(flower_init, os.X_OK), f"{flower_init}: not an executable (make build)"
    with tempfile.TemporaryDirectory(prefix="fi-dc-test.") as t:
        image = os.path.join(t, "image.squashfs")
        write(image, "")
        tmp = os.path.join(t, "tmp")
        os.makedirs(tmp)

        # 1. This machine.
        if os.path.exists("/proc/driver/nvidia/version"):
            print("device-check-test: this machine has an NVIDIA driver: the real-machine refusal is not checked")
        else:
            rc, out, err = run(["--flower-init", flower_init, image], tmpdir=tmp)
            line = expect_fail(rc, err, "this machine cannot run the GPU device check", "no NVIDIA driver loaded (no /proc/driver/nvidia/version",
                               "no /dev/nvidiactl")
            print(f"device-check-test: this machine: {line}")

        # 2. Fake trees: a GPU without its driver, then without the host's libraries.
        root = os.path.join(t, "root")
        fake_gpu(root)
        env = {"FI_DEVICE_CHECK_ROOT": root}
        rc, out, err = run(["--flower-init", flower_init, image], env, tmp)
        expect_fail(rc, err, f"no NVIDIA driver loaded (no {root}/proc/driver/nvidia/version", f"no {root}/dev/nvidiactl", absent=["no NVIDIA GPU"])
        empty = os.path.join(t, "nolibs")
        os.makedirs(empty)
        is_root = os.geteuid() == 0
        if not is_root:
            print("device-check-test: not root: the checks past the driver's nodes are skipped (make gpu-device-check-test runs as root)")
            return
        fake_driver(root)
        env["FI_DEVICE_CHECK_LIBDIRS"] = empty
        rc, out, err = run(["--flower-init", flower_init, image], env, tmp)
        expect_fail(rc, err, f"the host's NVIDIA libraries of release {RELEASE} were not found: libcuda.so.1 libnvidia-ml.so.1 libnvidia-ptxjitcompiler.so.1")
        assert os.listdir(tmp) == [], f"work directory left behind: {os.listdir(tmp)}"

        # 3. The bundle the script has flower-init write over the fake host.
        libs = os.path.join(t, "libs")
        os.makedirs(libs)
        fake_libs(libs)
        rootfs = os.path.join(t, "rootfs")
        fake_image(rootfs)
        env["FI_DEVICE_CHECK_LIBDIRS"] = libs
        rc, out, err = run(["--flower-init", flower_init, "--bundle-only", real_image or rootfs], env, tmp)
        assert rc == 0, f"exit {rc}:\n{out}\n{err}"
        [work] = os.listdir(tmp)
        work = os.path.join(tmp, work)
        drv = os.path.join(work, "nvidia-driver")
        lib = os.path.join(drv, "lib")
        assert sorted(os.listdir(lib)) == sorted(
            ["libcuda.so", "libcuda.so.1", f"libcuda.so.{RELEASE}", "libnvidia-ml.so.1", f"libnvidia-ml.so.{RELEASE}",
             "libnvidia-ptxjitcompiler.so.1", f"libnvidia-ptxjitcompiler.so.{RELEASE}", "libnvidia-nvvm.so.4",
             f"libnvidia-nvvm.so.{RELEASE}", f"libnvidia-gpucomp.so.{RELEASE}"]), os.listdir(lib)
        assert os.readlink(os.path.join(lib, "libcuda.so.1")) == f"libcuda.so.{RELEASE}"
        assert os.readlink(os.path.join(lib, "libcuda.so")) == "libcuda.so.1"
        with open(os.path.join(lib, "libcuda.so.1")) as f:
            assert f.read() == f"libcuda {RELEASE}\n", "the file of the module's release, not the older one"
        with open(os.path.join(drv, "driver.json")) as f:
            assert json.load(f)["version"] == RELEASE
        with open(os.path.join(work, "bundle/config.json")) as f:
            c = json.load(f)
        node = lambda p, a, b: {"path": p, "type": "c", "major": a, "minor": b, "fileMode": 0o666, "uid": 0, "gid": 0}
        assert c["linux"]["devices"] == [node("/dev/nvidiactl", 195, 255), node("/dev/nvidia3", 195, 3), node("/dev/nvidia-uvm", 508, 0),
                                         node("/dev/nvidia-uvm-tools", 508, 1)], c["linux"]["devices"]
        binds = {m["destination"]: m["source"] for m in c["mounts"] if m["type"] == "bind"}
        assert binds == {"/usr/local/nvidia/lib64": lib, "/usr/local/nvidia/bin": os.path.join(drv, "bin")}, binds
        args = c["process"]["args"]
        assert args[:4] == ["/usr/bin/tini", "--", "/opt/flower/venv/bin/python3", "-c"], args[:4]
        assert "torch.cuda.is_available()" in args[4] and "loss.backward()" in args[4], "the check script"
        assert args[5:] == [RELEASE], args[5:]
        assert "CUDA_VISIBLE_DEVICES=0" in c["process"]["env"] and "FL_GPU_AVAILABLE=YES" in c["process"]["env"]
        if real_image is None:
            assert c["root"] == {"path": rootfs, "readonly": True}
        elif os.path.isdir(real_image):
            assert c["root"] == {"path": real_image, "readonly": True}
        else:
            # Loop-mounted in the work directory (unmounted again at the end: --bundle-only).
            assert c["root"]["readonly"] and c["root"]["path"].startswith(work), c["root"]
            assert not os.path.ismount(c["root"]["path"]), "the image is unmounted again"
        assert "bundle written: " in out and f"device-check: kept {work}" in out, out
        # The check script itself compiles (it runs only on a GPU machine).
        compile(args[4], "device-check", "exec")
        print(f"device-check-test: --bundle-only over a fake host and {real_image or 'a fake image root'}: "
              f"{len(c['linux']['devices'])} nodes, {len(os.listdir(lib))} library files of {RELEASE}, the check under tini")
    print("device-check-test: passed")


if __name__ == "__main__":
    main()
