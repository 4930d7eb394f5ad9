"""The Debian package (docs/deb.md): `DEB` names the .deb `make deb` built. Its control data and
contents through dpkg-deb, an install into a scratch root (dpkg --root; runc forced, the scratch
root has none), the installed binary runs, and systemd-analyze verify accepts the installed unit
with no complaint (and does complain about a broken copy, so silence means something)."""

import os
import shutil
import subprocess
import tempfile
import unittest

DEB = os.environ.get("DEB", "")


def run(*cmd, **kw):
    return subprocess.run(list(cmd), capture_output=True, text=True, **kw)


@unittest.skipUnless(DEB, "DEB is not set (make deb-test sets it)")
class DebTest(unittest.TestCase):
    def test_control_data(self):
        info = run("dpkg-deb", "--field", DEB, "Package", "Architecture", "Depends", "Version").stdout
        self.assertIn("Package: flower-init", info)
        self.assertIn("Architecture: amd64", info)
        self.assertIn("Depends: runc", info)
        self.assertEqual(run("dpkg-deb", "--ctrl-tarfile", DEB).returncode, 0)
        members = run("dpkg-deb", "--info", DEB).stdout
        for script in ("postinst", "preinst", "prerm", "postrm"):
            self.assertNotIn(f" {script}", members, "no maintainer scripts")

    def test_contents_owned_by_root_with_the_right_modes(self):
        lines = run("dpkg-deb", "--contents", DEB).stdout.splitlines()
        entries = {l.split()[-1]: (l.split()[0], l.split()[1]) for l in lines}
        self.assertEqual(entries["./"], ("drwxr-xr-x", "root/root"))
        want = {
            "./usr/sbin/flower-init": "-rwxr-xr-x",
            "./usr/lib/systemd/system/flower-init.service": "-rw-r--r--",
            "./usr/share/doc/flower-init/copyright": "-rw-r--r--",
            "./usr/share/doc/flower-init/README.md": "-rw-r--r--",
            "./usr/share/doc/flower-init/modules.txt": "-rw-r--r--",
        }
        for path, mode in want.items():
            self.assertEqual(entries.get(path), (mode, "root/root"), path)
        self.assertTrue(all(owner == "root/root" for _, owner in entries.values()))

    def test_installs_into_a_scratch_root_and_the_unit_verifies(self):
        with tempfile.TemporaryDirectory() as root:
            os.makedirs(os.path.join(root, "var/lib/dpkg/info"))
            os.makedirs(os.path.join(root, "var/lib/dpkg/updates"))
            open(os.path.join(root, "var/lib/dpkg/status"), "w").close()
            # systemd-analyze --root resolves the unit's targets there: the host's unit files
            shutil.copytree("/usr/lib/systemd/system", os.path.join(root, "usr/lib/systemd/system"), symlinks=True)
            r = run("dpkg", f"--root={root}", "--force-depends", "-i", DEB)
            self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
            self.assertIn("flower-init depends on runc", r.stderr)
            status = run("dpkg", f"--root={root}", "-s", "flower-init").stdout
            self.assertIn("Status: install ok installed", status)
            binary = os.path.join(root, "usr/sbin/flower-init")
            self.assertTrue(run(binary, "version").stdout.startswith("flower-init "))
            self.assertIn("usage: flower-init boot", run(binary, "boot", "--help").stdout)
            if shutil.which("systemd-analyze") is None:
                self.skipTest("no systemd-analyze")
            v = run("systemd-analyze", "verify", f"--root={root}", "flower-init.service")
            self.assertEqual((v.returncode, v.stdout + v.stderr), (0, ""))
            unit = os.path.join(root, "usr/lib/systemd/system/flower-init.service")
            with open(unit) as fh:
                text = fh.read()
            self.assertIn("ExecStart=/usr/sbin/flower-init boot\n", text)
            self.assertIn("WantedBy=multi-user.target", text)
            with open(unit, "w") as fh:
                fh.write(text.replace("Type=simple", "Type=bogus"))
            v = run("systemd-analyze", "verify", f"--root={root}", "flower-init.service")
            self.assertIn("Failed to parse service type", v.stderr)


if __name__ == "__main__":
    unittest.main()
