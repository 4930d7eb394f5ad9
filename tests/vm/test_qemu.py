#!/usr/bin/env python3
"""The harness's own guards (tests/vm/qemu.py), run first by `make vm-test`:

- the KVM probe believes KVM only when a real guest prints its marker under it: a qemu that
  starts but whose guest never prints (what an openable but broken /dev/kvm does, and what
  the old `-S` probe accepted), and a qemu that aborts on an MSR write, both give TCG within
  the deadline, with the reason; the probe's real guest (the pinned kernel + its initramfs)
  does print the marker (run here under TCG by a wrapper, since KVM does not work on every
  machine);
- FLOWER_INIT_ACCEL overrides the probe, and a wrong value is a clear error;
- a real guest that prints nothing on its console is killed after the silence bound with a
  message naming the accelerator, the bound and the console log, long before the caller's
  own timeout.

The fake qemu binaries are shell scripts put first on PATH; /dev/kvm is replaced by a file
the test makes, so the fake runs whether or not this machine has KVM.
"""
import os
import shutil
import stat
import sys
import tempfile
import time
import unittest
from unittest import mock

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import qemu  # noqa: E402

REAL_QEMU = shutil.which(qemu.QEMU)


class FakeQemu:
    """A directory with an executable `qemu-system-x86_64` first on PATH: a shell script that
    appends one line per start to calls.log, then runs `sh` (shell) or `py` (Python, argv kept)."""

    def __init__(self, sh=None, py=None):
        self.dir = tempfile.mkdtemp(prefix="fi-fake-qemu-")
        self.calls = os.path.join(self.dir, "calls.log")
        path = os.path.join(self.dir, qemu.QEMU)
        if py:
            with open(os.path.join(self.dir, "impl.py"), "w") as f:
                f.write(py)
            sh = f'exec {sys.executable} {self.dir}/impl.py "$@"'
        with open(path, "w") as f:
            f.write(f"#!/bin/sh\necho \"$*\" >> {self.calls}\n{sh}\n")
        os.chmod(path, stat.S_IRWXU)
        self.kvm = os.path.join(self.dir, "kvm")  # stands for an openable /dev/kvm
        open(self.kvm, "w").close()
        self.env = mock.patch.dict(os.environ, {"PATH": f"{self.dir}:{os.environ['PATH']}"})

    def __enter__(self):
        self.env.start()
        return self

    def __exit__(self, *exc):
        self.env.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def starts(self):
        if not os.path.exists(self.calls):
            return 0
        with open(self.calls) as f:
            return len(f.read().splitlines())


# What a KVM that "works" for `-S` but never runs a guest does: the monitor's `quit` ends it
# (the old probe's test), a real start prints nothing and never ends.
HANGS = 'case " $* " in *" -S "*) read -r line; exit 0;; esac\nexec sleep 600'
# What this project's build machines do: qemu aborts on the first MSR write.
ABORTS = (f'echo "{qemu.QEMU}: error: failed to set MSR 0x10a to 0x69" >&2\n'
          'kill -ABRT $$')
# The real qemu with the probe's flags turned into TCG: the probe's real guest, on any machine.
AS_TCG = f"""import os, sys
argv = sys.argv[1:]
assert argv[:4] == ["-accel", "kvm", "-cpu", "host"], argv
os.execv({REAL_QEMU!r}, [{REAL_QEMU!r}, "-accel", "tcg", "-cpu", "max"] + argv[4:])
"""


class Probe(unittest.TestCase):
    def setUp(self):
        qemu.kernel_path(qemu.PINNED_KERNEL_DIR)  # FileNotFoundError: run `make kernel`

    def test_a_guest_that_never_prints_means_tcg_within_the_deadline(self):
        with FakeQemu(sh=HANGS) as fake:
            t = time.monotonic()
            p = qemu.probe_kvm(within=2, device=fake.kvm)
            took = time.monotonic() - t
        self.assertFalse(p.usable, p.why)
        self.assertIn("the marker did not come within 2s under kvm: the guest printed nothing", p.why)
        self.assertLess(took, 2 + 3, "the probe waits for its deadline, not longer")

    def test_a_qemu_that_aborts_means_tcg_with_its_reason(self):
        with FakeQemu(sh=ABORTS) as fake:
            p = qemu.probe_kvm(within=5, device=fake.kvm)
        self.assertFalse(p.usable, p.why)
        self.assertIn("killed by SIGABRT", p.why)
        self.assertIn("failed to set MSR 0x10a", p.why)
        self.assertLess(p.seconds, 5)

    def test_no_kvm_device_means_tcg_without_starting_qemu(self):
        with FakeQemu(sh=HANGS) as fake:
            p = qemu.probe_kvm(within=2, device=os.path.join(fake.dir, "no-such-kvm"))
            self.assertEqual(fake.starts(), 0)
        self.assertFalse(p.usable)
        self.assertIn("not there or not accessible", p.why)

    def test_the_probe_guest_prints_its_marker_when_the_vcpu_runs(self):
        with FakeQemu(py=AS_TCG) as fake:
            # TCG boots the kernel in 10-20 s on a loaded 2-core machine (KVM: under 1 s).
            p = qemu.probe_kvm(within=180, device=fake.kvm)
            self.assertEqual(fake.starts(), 1)
        self.assertTrue(p.usable, p.why)
        self.assertIn("the pinned kernel reached userspace under KVM in", p.why)


class Accelerator(unittest.TestCase):
    def setUp(self):
        qemu._ACCEL = None
        self.env = mock.patch.dict(os.environ)
        self.env.start()
        os.environ.pop(qemu.ACCEL_ENV, None)

    def tearDown(self):
        self.env.stop()
        qemu._ACCEL = None

    def test_the_override_wins_and_nothing_is_probed(self):
        with FakeQemu(sh=HANGS) as fake:
            for value in ("kvm", "tcg"):
                qemu._ACCEL = None
                os.environ[qemu.ACCEL_ENV] = value
                self.assertEqual(qemu.accelerator(), (value, f"{qemu.ACCEL_ENV}={value}"))
                self.assertEqual(qemu.accel_args("auto")[1], value)
            self.assertEqual(fake.starts(), 0)

    def test_an_empty_override_is_unset(self):
        os.environ[qemu.ACCEL_ENV] = ""
        with mock.patch.object(qemu, "probe_kvm", return_value=qemu.Probe(False, "x", 0)) as p:
            self.assertEqual(qemu.accelerator()[0], "tcg")
            self.assertEqual(p.call_count, 1)

    def test_a_wrong_override_is_a_clear_error(self):
        os.environ[qemu.ACCEL_ENV] = "KVM "
        with self.assertRaises(ValueError) as e:
            qemu.accelerator()
        self.assertEqual(str(e.exception), f"{qemu.ACCEL_ENV}='KVM ' is not an accelerator: set it to kvm or tcg, "
                                           "or unset it to let the probe decide")

    def test_the_probe_runs_once_per_process(self):
        with FakeQemu(sh=ABORTS) as fake, mock.patch.object(qemu, "probe_kvm", return_value=qemu.Probe(False, "x", 0)) as p:
            want = ("tcg", f"KVM probe, 0.0s: x; {qemu.ACCEL_ENV}=kvm|tcg overrides")
            self.assertEqual(qemu.accelerator(), want)
            self.assertEqual(qemu.accelerator(), want)
            self.assertEqual(p.call_count, 1)
            self.assertEqual(fake.starts(), 0)


class SilentGuest(unittest.TestCase):
    def test_a_guest_that_prints_nothing_is_reported_within_the_bound(self):
        """The pinned kernel with its console on a screen the VM does not have: a real guest
        that runs and prints nothing on the serial console."""
        tmp = tempfile.mkdtemp(prefix="fi-silent-")
        try:
            initrd = qemu.busybox_initramfs(os.path.join(tmp, "sleep.cpio"), "/bin/busybox sleep 600\n")
            vm = qemu.Vm("silent", qemu.kernel_path(qemu.PINNED_KERNEL_DIR), initrd, "console=tty0 panic=0",
                         memory=256, accel="tcg", logdir=tmp, silent_within=3)
            vm.start()
            t = time.monotonic()
            with self.assertRaises(qemu.GuestSilent) as e:
                vm.wait_for("never printed", 600)
            took = time.monotonic() - t
            self.assertLess(took, 3 + 5, "reported at the bound, not at the caller's 600 s")
            self.assertEqual(str(e.exception),
                             f"silent: the guest printed nothing on its console within 3s of qemu starting, "
                             f"under tcg (asked for); qemu killed; console log {vm.log_path}")
            self.assertIsNotNone(vm.wait_exit(5), "qemu was killed")
            vm.kill()
            with open(vm.log_path) as f:
                self.assertIn("[harness] silent: the guest printed nothing", f.read())
        finally:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    unittest.main(verbosity=2)
