"""Marketplace metadata (issue #15): `appliance/meta.sh` on a small qcow2 made here with
qemu-img (the real disks are large; the script only measures them), read back as YAML and
checked against OpenNebula/marketplace's format (its README's example appliance, and
OpenNebula's multi-VM appliances: a disk app with `images`, VM template apps with
`type: VMTEMPLATE`, `opennebula_template` and `disks`) and against the VM templates
`flower-init vm-template` writes. `FLOWER_INIT` names the binary (default build/flower-init)."""

import hashlib
import os
import re
import subprocess
import tempfile
import unittest

import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FLOWER_INIT = os.environ.get("FLOWER_INIT", os.path.join(ROOT, "build", "flower-init"))
META = os.path.join(ROOT, "appliance", "meta.sh")

# Every key the marketplace README's example appliance has (logo aside), plus os-* and images.
APP_KEYS = {"name", "version", "publisher", "description", "short_description", "tags", "format",
            "creation_time", "os-id", "os-release", "os-arch", "hypervisor", "opennebula_version"}


def vm_template(role, image, arch="x86_64"):
    """The vectors of `flower-init vm-template` (CONTEXT, USER_INPUTS, OS, ...) as dicts (one
    `K = "v"` a line)."""
    text = subprocess.run([FLOWER_INIT, "vm-template", "--role", role, "--image", image, "--arch", arch],
                          check=True, capture_output=True, text=True).stdout
    out, vector = {}, None
    for line in text.splitlines():
        m = re.match(r'^([A-Z_]+) = \[$', line)
        if m:
            vector = out.setdefault(m.group(1), {})
            continue
        m = re.match(r'^  ([A-Z_0-9]+) = "(.*)"( \]|,)?$', line)
        if m and vector is not None:
            vector[m.group(1)] = m.group(2).replace('\\"', '"')
            if m.group(3) == " ]":
                vector = None
    return out


def run_meta(tmp, disk, size, opts, url):
    """A qcow2 of `size` at `disk`, `appliance/meta.sh OPTS` on it into tmp/market: (that
    directory, {file: its YAML read back})."""
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", disk, size], check=True)
    out = os.path.join(tmp, "market")
    r = subprocess.run([META, *opts, FLOWER_INIT, out, url, "9.9.9-test", disk], capture_output=True, text=True)
    if r.returncode != 0:
        raise AssertionError(f"meta.sh {' '.join(opts)} failed: {r.stdout}{r.stderr}")
    apps = {}
    for f in sorted(os.listdir(out)):
        with open(os.path.join(out, f)) as fh:
            apps[f] = yaml.safe_load(fh)
    return out, apps


class MetaTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory()
        cls.disk = os.path.join(cls.tmp.name, "flower-pytorch.qcow2")
        cls.out, cls.apps = run_meta(cls.tmp.name, cls.disk, "64M", [], "https://example.org/fi/")

    @classmethod
    def tearDownClass(cls):
        cls.tmp.cleanup()

    def test_one_disk_app_and_one_vm_template_app_per_role(self):
        self.assertEqual(sorted(self.apps), ["flower-pytorch-superlink.yaml", "flower-pytorch-supernode.yaml",
                                             "flower-pytorch.yaml"])
        for f, app in self.apps.items():
            self.assertLessEqual(APP_KEYS, set(app), f)
            self.assertEqual((app["format"], app["hypervisor"], app["os-arch"]), ("qcow2", "KVM", "x86_64"), f)
            self.assertEqual(app["version"], "9.9.9-test")
            self.assertEqual(app["creation_time"], int(os.stat(self.disk).st_mtime))
            self.assertIn("pytorch", app["tags"])

    def test_the_disk_app_has_the_virtual_size_and_checksums_of_the_file(self):
        img = self.apps["flower-pytorch.yaml"]["images"]
        self.assertEqual(len(img), 1)
        with open(self.disk, "rb") as fh:
            data = fh.read()
        self.assertEqual(img[0], {
            "name": "flower-pytorch", "url": "https://example.org/fi/flower-pytorch.qcow2", "type": "OS",
            "dev_prefix": "vd", "driver": "qcow2", "size": 64 * 1024 * 1024,
            "checksum": {"md5": hashlib.md5(data).hexdigest(), "sha256": hashlib.sha256(data).hexdigest()},
        })
        self.assertLess(os.path.getsize(self.disk), img[0]["size"], "size is the virtual size, not the file's")

    def test_the_vm_template_apps_are_the_vm_templates(self):
        disk_name = self.apps["flower-pytorch.yaml"]["name"]
        for role in ("superlink", "supernode"):
            app = self.apps[f"flower-pytorch-{role}.yaml"]
            self.assertEqual(app["type"], "VMTEMPLATE")
            self.assertEqual(app["disks"], [disk_name])
            t = app["opennebula_template"]
            self.assertNotIn("disk", t, "the marketplace adds the disk from `disks`")
            want = vm_template(role, "flower-pytorch")
            self.assertEqual(t["context"], want["CONTEXT"], role)
            self.assertEqual(t["user_inputs"], want["USER_INPUTS"], role)
            self.assertEqual(t["context"]["FL_ROLE"], role)
            self.assertEqual(t["inputs_order"], ",".join(want["USER_INPUTS"]))
            self.assertEqual((t["cpu_model"], t["nic_default"], t["os"]["firmware"]),
                             ({"model": "host-passthrough"}, {"model": "virtio"}, "BIOS"))

    def test_refusals_name_the_problem(self):
        raw = os.path.join(self.tmp.name, "flower-sklearn.qcow2")
        with open(raw, "wb") as fh:
            fh.write(b"\0" * 4096)
        r = subprocess.run([META, FLOWER_INIT, self.out, "https://x", "1", raw], capture_output=True, text=True)
        self.assertEqual(r.returncode, 1)
        self.assertIn("format 'raw', not qcow2", r.stderr)
        r = subprocess.run([FLOWER_INIT, "marketplace", "--framework", "sklearn", "--version", "1", "--url", "u",
                            "--virtual-size", "1", "--md5", "abc", "--sha256", "0" * 64, "--creation-time", "1",
                            "--out", self.out], capture_output=True, text=True)
        self.assertEqual(r.returncode, 2)
        self.assertIn('--md5 "abc": not 32 hex digits', r.stderr)
        r = subprocess.run([FLOWER_INIT, "marketplace", "--framework", "caffe"], capture_output=True, text=True)
        self.assertEqual(r.returncode, 2)
        self.assertIn("--framework", r.stderr)


class MetaAarch64Test(unittest.TestCase):
    """Issue #22: `appliance/meta.sh --arch aarch64` on the arm64 disk: a disk app published as
    flower-F-aarch64.qcow2 (os-arch aarch64) and the SuperNode's VM template app only (the
    SuperLink is x86_64's), whose OS is what OpenNebula's KVM guide gives ARM64 VMs."""

    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory()
        cls.disk = os.path.join(cls.tmp.name, "flower-sklearn.qcow2")  # as build/aarch64/appliance names it
        cls.out, cls.apps = run_meta(cls.tmp.name, cls.disk, "32M", ["--arch", "aarch64"], "https://example.org/fi")

    @classmethod
    def tearDownClass(cls):
        cls.tmp.cleanup()

    def test_the_arm64_disk_and_its_supernode(self):
        self.assertEqual(sorted(self.apps), ["flower-sklearn-aarch64-supernode.yaml", "flower-sklearn-aarch64.yaml"])
        for f, app in self.apps.items():
            self.assertLessEqual(APP_KEYS, set(app), f)
            self.assertEqual((app["format"], app["hypervisor"], app["os-arch"]), ("qcow2", "KVM", "aarch64"), f)
        disk = self.apps["flower-sklearn-aarch64.yaml"]
        self.assertEqual(disk["name"], "Flower sklearn disk (aarch64)")
        self.assertIn("edge", disk["tags"])
        self.assertEqual((disk["images"][0]["name"], disk["images"][0]["url"], disk["images"][0]["size"]),
                         ("flower-sklearn-aarch64", "https://example.org/fi/flower-sklearn-aarch64.qcow2", 32 << 20))
        vm = self.apps["flower-sklearn-aarch64-supernode.yaml"]
        self.assertEqual((vm["type"], vm["disks"]), ("VMTEMPLATE", [disk["name"]]))
        t = vm["opennebula_template"]
        want = vm_template("supernode", "flower-sklearn-aarch64", "aarch64")
        self.assertEqual(t["os"], {k.lower(): v for k, v in want["OS"].items()})
        self.assertEqual(t["os"], {"arch": "aarch64", "firmware": "/usr/share/AAVMF/AAVMF_CODE.fd", "machine": "virt"})
        self.assertEqual(t["context"], want["CONTEXT"])
        self.assertEqual(t["user_inputs"], want["USER_INPUTS"])
        self.assertEqual(t["memory"], "1024")

    def test_a_bad_arch_is_refused(self):
        r = subprocess.run([FLOWER_INIT, "marketplace", "--framework", "sklearn", "--version", "1", "--url", "u",
                            "--virtual-size", "1", "--md5", "0" * 32, "--sha256", "0" * 64, "--creation-time", "1",
                            "--out", self.out, "--arch", "sparc"], capture_output=True, text=True)
        self.assertEqual(r.returncode, 2)
        self.assertIn('--arch "sparc": must be x86_64 or aarch64', r.stderr)


if __name__ == "__main__":
    unittest.main()
