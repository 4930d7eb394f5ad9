#!/usr/bin/env python3
"""Tests of the OneGate/OneFlow stand-in: the behaviours of onegate-server.rb it claims, over
real HTTP on ephemeral loopback ports.  python3 -m unittest tools/test_onegate_standin.py"""

import json
import os
import socket
import sys
import time
import unittest
import urllib.error
import urllib.parse
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import onegate_standin as sut  # noqa: E402

SERVICE = {
    "id": 7,
    "name": "flower",
    "roles": [
        {"name": "superlink", "parents": [],
         "vms": [{"id": 100, "name": "superlink_0_(service_7)", "ip": "10.9.0.10",
                  "mac": "02:00:0a:09:00:0a", "token": "tok-100"}]},
        {"name": "supernode", "parents": ["superlink"],
         "vms": [{"id": 102, "name": "supernode_1_(service_7)", "ip": "10.9.0.12", "token": "tok-102"},
                 {"id": 101, "name": "supernode_0_(service_7)", "ip": "10.9.0.11", "token": "tok-101"}]},
    ],
}
LONER = {"id": 200, "name": "loner", "ip": "10.9.0.200", "token": "tok-200"}


class StandInTest(unittest.TestCase):
    """Every behaviour, as OpenNebula 7.2 and later answer (StandInBefore72Test: before)."""
    opennebula = "7.2"

    def setUp(self):
        self.s = sut.StandIn(opennebula=self.opennebula).start()
        self.admin("POST", "/service", SERVICE)
        self.admin("POST", "/vms", [LONER])

    def tearDown(self):
        self.s.shutdown()

    def admin(self, method, path, data=None):
        body = json.dumps(data).encode() if data is not None else None
        req = urllib.request.Request(self.s.admin_url + path, data=body, method=method)
        with urllib.request.urlopen(req, timeout=10) as r:
            return json.loads(r.read())

    def og(self, method, path, vmid=100, token=None, body=None, ctype=None, headers=None):
        """One OneGate request: (status, content type, body text)."""
        h = {} if headers is not None else {"X-ONEGATE-VMID": str(vmid), "X-ONEGATE-TOKEN": token or "tok-%d" % vmid}
        h.update(headers or {})
        if ctype:
            h["Content-Type"] = ctype
        data = body.encode() if isinstance(body, str) else body
        req = urllib.request.Request(self.s.onegate_url + path, data=data, method=method, headers=h)
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                return r.status, r.headers.get("Content-Type"), r.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, e.headers.get("Content-Type"), e.read().decode()

    def put(self, data, vmid=100, kind=1):
        body = urllib.parse.urlencode({"data": data, "type": kind})
        return self.og("PUT", "/vm", vmid, body=body, ctype="application/x-www-form-urlencoded")

    def ut(self, vmid):
        return self.admin("GET", "/user_template/%d" % vmid)

    # -- authentication, routes, content type ---------------------------------------------------
    def test_bad_or_missing_token_is_401_plain_text(self):
        self.assertEqual(self.og("GET", "/vm", token="wrong"), (401, sut.JSON_TYPE, "Not authorized"))
        self.assertEqual(self.og("GET", "/vm", headers={})[0], 401)
        self.assertEqual(self.og("GET", "/vm", headers={"X-ONEGATE-TOKEN": "tok-100"})[0], 401)
        # A SuperNode before its role is deployed does not exist yet.
        self.assertEqual(self.og("GET", "/vm", vmid=101)[0], 401)

    def test_unknown_routes_are_400_even_unauthenticated(self):
        for method, path in [("GET", "/nope"), ("GET", "/vm/"), ("DELETE", "/vm"), ("POST", "/vm"),
                             ("GET", "/vms"), ("PUT", "/service")]:
            self.assertEqual(self.og(method, path, headers={}),
                             (400, sut.JSON_TYPE, "OneGate server doesn't support this feature"), (method, path))

    def test_permissions_are_checked_before_authentication(self):
        self.admin("POST", "/config", {"permissions": {"vm": {"update": False}}})
        self.assertEqual(self.og("PUT", "/vm", token="wrong", body="A=1")[2],
                         "Action (update) on resource (vm) not supported")

    def test_root_lists_the_resources(self):
        code, _, body = self.og("GET", "/")
        self.assertEqual(code, 200)
        self.assertTrue(json.loads(body)["vm_info"].endswith("/vm"))

    # -- PUT /vm ----------------------------------------------------------------------------------
    def test_form_data_updates_user_template(self):
        code, ctype, body = self.put("FL_ENDPOINT=10.9.0.10:9092\nFL_CA_CERT=LS0+/w==\nREADY=YES")
        self.assertEqual((code, ctype, body), (200, sut.JSON_TYPE, ""))
        ut = self.ut(100)
        self.assertEqual((ut["FL_ENDPOINT"], ut["FL_CA_CERT"], ut["READY"]), ("10.9.0.10:9092", "LS0+/w==", "YES"))
        self.assertEqual((ut["SERVICE_ID"], ut["ROLE_NAME"]), ("7", "superlink"))

    def test_raw_body_and_literal_backslash_n(self):
        self.assertEqual(self.og("PUT", "/vm", body="APP_LOAD = 9.7")[0], 200)
        self.assertEqual(self.og("PUT", "/vm", body="A=1\\nB=2", ctype="text/plain")[0], 200)
        ut = self.ut(100)
        # escape_attr quotes from the '=' on: `APP_LOAD =" 9.7"` keeps the space.
        self.assertEqual((ut["APP_LOAD"], ut["A"], ut["B"]), (" 9.7", "1", "2"))
        # A form body without `data` (curl -d K=V): the raw body is used.
        self.og("PUT", "/vm", body="C=3", ctype="application/x-www-form-urlencoded")
        self.assertEqual(self.ut(100)["C"], "3")

    def test_values_are_replaced_and_deleted(self):
        self.put("X=1")
        self.put("x=2")
        self.assertEqual(self.ut(100)["X"], "2")
        self.assertEqual(self.put("X", kind=2)[0], 200)
        self.assertNotIn("X", self.ut(100))
        # Deleting what is not there: delete_element removed nothing. 7.2's `error 500`
        # handler replaces the halt's text (env['sinatra.error'] is nil after a halt).
        missing = "Internal server error" if self.opennebula >= "7.2" else "attribute not found"
        self.assertEqual(self.put("X", kind=2)[::2], (500, missing))
        self.assertEqual(self.put("NEVER_SET", kind=2)[::2], (500, missing))
        # A template syntax error (vm.update's rc.message) is hidden the same way since 7.2.
        code, _, body = self.put("K=a,b")
        self.assertEqual(code, 500)
        if self.opennebula >= "7.2":
            self.assertEqual(body, "Internal server error")
        else:
            self.assertTrue(body.startswith("[one.vm.update] Error parsing template"), body)

    def test_error_values_keep_their_equals_signs(self):
        # escape_attr keeps every `=` after the first of a line (escape is on), so `>=` survives
        # the real server; only `,` `[` `]` `\` and line breaks end the quoted value.
        self.assertEqual(self.put("FL_ERROR=2 problems: FL_X must be >= 1 | a=b")[0], 200)
        self.assertEqual(self.ut(100)["FL_ERROR"], "2 problems: FL_X must be >= 1 | a=b")

    def test_restricted_attributes_are_403(self):
        self.assertEqual(self.put("service_id=9")[::2], (403, "Attribute (service_id) cannot be modified"))
        self.assertEqual(self.put("ROLE_NAME", kind=2)[::2], (403, "Attribute (ROLE_NAME) cannot be deleted"))
        self.assertEqual(self.put("A=1\nSCHED_REQUIREMENTS=x")[0], 403)
        self.assertNotIn("A", self.ut(100))

    def test_escape_attr_quirks(self):
        self.assertEqual(self.put("K=a,b")[0], 500)           # the comma closes the quote
        self.assertEqual(self.put("K=x [y]")[0], 500)
        self.assertEqual(self.put("S=two words\nV=[A=b]")[0], 200)
        ut = self.ut(100)
        self.assertEqual((ut["S"], ut["V"]), ("two words", {"A": "b"}))
        self.put("E=")                                          # unterminated: stores a quote
        self.assertEqual(self.ut(100)["E"], '"')
        self.assertEqual(sut.escape_attr("A=1\\nB=2"), 'A="1"\nB="2"')

    # -- GET shapes ----------------------------------------------------------------------------------
    def test_vm_hash_shape(self):
        self.put("FL_ROLE=superlink")
        vm = json.loads(self.og("GET", "/vm")[2])["VM"]
        self.assertEqual(list(vm), ["NAME", "ID", "STATE", "LCM_STATE", "USER_TEMPLATE", "TEMPLATE"])
        self.assertEqual((vm["ID"], vm["STATE"], vm["LCM_STATE"]), ("100", "3", "3"))
        self.assertEqual(vm["TEMPLATE"]["NIC"], [{"IP": "10.9.0.10", "MAC": "02:00:0a:09:00:0a", "NAME": "NIC0",
                                                  "NETWORK": "Private"}])
        self.assertEqual(vm["TEMPLATE"]["NIC_ALIAS"], [])

    def test_service_hash_shape_and_extended(self):
        s = json.loads(self.og("GET", "/service")[2])["SERVICE"]
        self.assertEqual((s["id"], s["name"], s["state"]), ("7", "flower", 1))
        sl, sn = s["roles"]
        self.assertEqual((sl["cardinality"], sl["state"], sn["state"], sn["nodes"]), (1, 1, 0, []))
        node = sl["nodes"][0]
        self.assertEqual(node, {"deploy_id": 100, "running": None, "vm_info": {"VM": {
            "ID": "100", "UID": "0", "GID": "0", "UNAME": "oneadmin", "GNAME": "oneadmin",
            "NAME": "superlink_0_(service_7)"}}})
        ext = json.loads(self.og("GET", "/service?extended=true")[2])["SERVICE"]
        full = ext["roles"][0]["nodes"][0]["vm_info"]["VM"]
        self.assertEqual(full["TEMPLATE"]["NIC"]["IP"], "10.9.0.10")   # one NIC: an object
        self.assertIn("USER_TEMPLATE", full)
        # Any value of `extended` counts, as a form body on GET too (onegate.rb sends it so).
        body = json.loads(self.og("GET", "/service", body="extended=false",
                                  ctype="application/x-www-form-urlencoded")[2])
        self.assertIn("TEMPLATE", body["SERVICE"]["roles"][0]["nodes"][0]["vm_info"]["VM"])

    def test_outside_a_service(self):
        self.assertEqual(self.og("GET", "/service", vmid=200)[::2], (400, "Empty or invalid SERVICE_ID"))
        self.assertEqual(self.og("GET", "/vms/100", vmid=200)[0], 400)
        self.assertEqual(self.og("GET", "/vms/200", vmid=200)[0], 200)

    def test_vms_by_id_only_within_the_service(self):
        self.put("READY=YES")
        code, _, body = self.og("GET", "/vms/101", vmid=100)
        self.assertEqual((code, json.loads(body)["VM"]["NAME"]), (200, "supernode_0_(service_7)"))
        self.assertEqual(self.og("GET", "/vms/200", vmid=100)[::2], (400, "Service 7 does not contain VM 200."))
        self.assertEqual(self.og("GET", "/vms/100", vmid=101)[0], 200)

    def test_ready_gate_releases_children_after_every_parent_vm(self):
        self.assertEqual(self.admin("GET", "/deployable")["roles"], ["superlink"])
        self.put("FL_ENDPOINT=10.9.0.10:9092")
        self.assertEqual(self.admin("GET", "/deployable")["roles"], ["superlink"])
        self.put("READY=YES")
        self.assertEqual(self.admin("GET", "/deployable")["roles"], ["supernode"])
        ids = [n["deploy_id"] for n in json.loads(self.og("GET", "/service")[2])["SERVICE"]["roles"][1]["nodes"]]
        self.assertEqual(ids, [102, 101])
        self.put("READY=YES", vmid=101)
        self.assertEqual(self.admin("GET", "/service")["state"], 1)
        self.put("READY=YES", vmid=102)
        svc = self.admin("GET", "/service")
        self.assertEqual((svc["state"], [r["state_str"] for r in svc["roles"]]), (2, ["RUNNING", "RUNNING"]))

    def test_actions_and_scale(self):
        self.put("READY=YES")
        act = json.dumps({"action": {"perform": "poweroff"}})
        self.assertEqual(self.og("POST", "/vms/101/action", body=act)[0], 204)
        self.assertEqual(self.og("POST", "/vms/101/action", body=json.dumps({"action": {"perform": "reboot"}}))[0], 403)
        self.assertEqual(self.og("POST", "/vms/101/action", body="{")[0], 400)
        self.assertEqual(self.og("PUT", "/service/role/supernode", body='{"cardinality": 4}')[0], 200)
        self.assertEqual(self.admin("GET", "/roles")["roles"][1]["scale_requests"], [4])
        self.assertEqual(self.og("GET", "/vrouter")[::2], (400, "Empty or invalid VROUTER_ID"))

    # -- admin, counts, faults ---------------------------------------------------------------------
    def test_requests_are_counted_per_route(self):
        self.admin("POST", "/requests/reset")
        self.og("GET", "/vms/100")
        self.og("GET", "/vms/100")
        self.put("A=1")
        self.og("GET", "/x", headers={})
        reqs = self.admin("GET", "/requests")
        self.assertEqual(reqs["counts"], {"GET /vms/:id": 2, "PUT /vm": 1, "GET *": 1})
        self.assertEqual(reqs["log"][2]["keys"], ["A"])

    def test_faults_status_garbage_delay_drop(self):
        self.admin("POST", "/faults", {"status": {"code": 500, "count": 1}, "garbage": {"count": 1}})
        self.assertEqual(self.og("GET", "/vm")[0], 500)
        code, _, body = self.og("GET", "/vm")
        self.assertEqual(code, 200)
        self.assertRaises(ValueError, json.loads, body)
        self.assertEqual(json.loads(self.og("GET", "/vm")[2])["VM"]["ID"], "100")
        self.admin("POST", "/faults", {"delay": {"seconds": 0.3, "count": 1}})
        t = time.monotonic()
        self.og("GET", "/vm")
        self.assertGreaterEqual(time.monotonic() - t, 0.3)
        self.admin("POST", "/faults", {"drop": {"count": 1}})
        with self.assertRaises((urllib.error.URLError, ConnectionError, OSError)):
            urllib.request.urlopen(self.s.onegate_url + "/vm", timeout=10)
        self.assertEqual(self.og("GET", "/vm")[0], 200)
        # A fault without a count applies to every request until cleared; routes narrow it.
        self.admin("POST", "/faults", {"status": {"code": 503}, "routes": ["GET /service"]})
        self.assertEqual([self.og("GET", "/service")[0] for _ in range(3)], [503, 503, 503])
        self.assertEqual(self.og("GET", "/vm")[0], 200)
        self.admin("POST", "/faults/clear")
        self.assertEqual(self.og("GET", "/service")[0], 200)

    def test_add_vms_to_a_role(self):
        self.put("READY=YES")
        self.admin("POST", "/roles/supernode/vms", {"vms": [{"id": 103, "token": "tok-103"}], "cardinality": 3})
        roles = self.admin("GET", "/roles")["roles"]
        self.assertEqual((roles[1]["cardinality"], len(roles[1]["vms"])), (3, 3))
        self.assertEqual(self.og("GET", "/vm", vmid=103)[0], 200)

    def test_scale_down_removes_a_vm_from_its_role(self):
        self.put("READY=YES")
        self.admin("POST", "/roles/supernode/vms", {"vms": [{"id": 103, "token": "tok-103"}]})
        self.assertEqual(self.og("GET", "/vms/103")[0], 200)
        roles = self.admin("DELETE", "/roles/supernode/vms/103")["roles"]
        self.assertNotIn(103, [v["id"] for v in roles[1]["vms"]])
        # Terminated: it no longer authenticates, and the service's VMs cannot read it.
        self.assertEqual(self.og("GET", "/vm", vmid=103)[0], 401)
        status, _, body = self.og("GET", "/vms/103")
        self.assertEqual(status, 400, body)
        nodes = json.loads(self.og("GET", "/service")[2])["SERVICE"]["roles"][1]["nodes"]
        self.assertNotIn(103, [n["deploy_id"] for n in nodes])


class StandInBefore72Test(StandInTest):
    """The same behaviours as OpenNebula 7.0 (and 6.x) answer: halt bodies reach the client."""
    opennebula = "7.0"


class VersionTest(unittest.TestCase):
    def test_error_bodies_by_version(self):
        eb = sut.error_body
        self.assertEqual(eb((7, 0), 500, "attribute not found", False), "attribute not found")
        self.assertEqual(eb((7, 2), 500, "attribute not found", False), "Internal server error")
        self.assertEqual(eb((7, 4), 500, "ERROR: [one.vm.info] boom", True), "[one.vm.info] boom")
        self.assertEqual(eb((6, 10), 500, "boom", True), "<h1>Internal Server Error</h1>")
        self.assertEqual(eb((7, 2), 403, "Attribute (X) cannot be deleted", False),
                         "Attribute (X) cannot be deleted")
        self.assertEqual(sut.parse_version("7.2.0"), (7, 2))
        self.assertRaises(ValueError, sut.parse_version, "seven")

    def test_environment_selects_the_version(self):
        old = os.environ.get(sut.OPENNEBULA_ENV)
        os.environ[sut.OPENNEBULA_ENV] = "7.0"
        try:
            s = sut.StandIn()
            s.onegate.server_close()
            s.admin.server_close()
            self.assertEqual(s.world.opennebula, (7, 0))
        finally:
            if old is None:
                del os.environ[sut.OPENNEBULA_ENV]
            else:
                os.environ[sut.OPENNEBULA_ENV] = old


class DownForTest(unittest.TestCase):
    def test_refuses_then_answers(self):
        s = sut.StandIn(down_for=1.0).start()
        try:
            port = s.onegate.server_address[1]
            with self.assertRaises(ConnectionRefusedError):
                socket.create_connection(("127.0.0.1", port), timeout=5).close()
            deadline = time.monotonic() + 30
            while True:
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=5).close()
                    break
                except ConnectionRefusedError:
                    self.assertLess(time.monotonic(), deadline)
                    time.sleep(0.1)
        finally:
            s.shutdown()


class CommandLineTest(unittest.TestCase):
    def test_prints_its_urls_and_loads_a_service_file(self):
        import subprocess
        import tempfile
        with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
            json.dump(SERVICE, f)
        proc = subprocess.Popen([sys.executable, sut.__file__, "--service", f.name],
                                stdout=subprocess.PIPE, text=True)
        try:
            urls = json.loads(proc.stdout.readline())
            with urllib.request.urlopen(urls["admin"] + "/deployable", timeout=10) as r:
                self.assertEqual(json.loads(r.read())["roles"], ["superlink"])
            req = urllib.request.Request(urls["onegate"] + "/vm",
                                         headers={"X-ONEGATE-VMID": "100", "X-ONEGATE-TOKEN": "tok-100"})
            with urllib.request.urlopen(req, timeout=10) as r:
                self.assertEqual(json.loads(r.read())["VM"]["ID"], "100")
        finally:
            proc.kill()
            proc.wait()
            proc.stdout.close()
            os.unlink(f.name)


class TemplateParserTest(unittest.TestCase):
    def test_parser_follows_template_parser_l(self):
        p = sut.parse_template
        self.assertEqual(p('A = "x y"\nb=plain\n# comment\nV = [ K = "1", l = two ]'),
                         [("A", "x y"), ("B", "plain"), ("V", {"K": "1", "L": "two"})])
        self.assertEqual(p('E =\nQ="say \\"hi\\""'), [("E", ""), ("Q", 'say "hi"')])
        for bad in ['A="1",B', "=x", "A", 'V=[K="1"']:
            self.assertRaises(sut.TemplateError, p, bad)


if __name__ == "__main__":
    unittest.main()
