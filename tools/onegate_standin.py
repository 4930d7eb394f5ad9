#!/usr/bin/env python3
"""A OneGate + OneFlow stand-in for tests and the local demo (Python 3 standard library only).

OpenNebula itself cannot be installed here, so this server reproduces what a VM sees of it,
from the sources (paths in OpenNebula/one unless noted):

OneGate (src/onegate/onegate-server.rb, a Sinatra app):
- every answer has Content-Type application/json;charset=utf-8, errors included, and errors
  are plain-text bodies (`halt <code>, "<text>"`), the `before` filter (l.131-133);
- routes: GET /, GET/PUT /vm, GET /service[?extended], GET/PUT /vms/:id, POST /vms/:id/action,
  PUT /service/role/:role, GET /vrouter, GET /vnet/:id; anything else is 400 "OneGate server
  doesn't support this feature" (the catch-all `%w[get head post put delete options patch]`,
  l.1054-1060);
- each route checks its permission first (403 "Action (x) on resource (y) not supported"),
  then authenticates: X-ONEGATE-TOKEN and X-ONEGATE-VMID must match a VM that exists, else
  401 "Not authorized" (OneGateCloudAuth; the real token is AES of "VMID:STIME", here a table
  of per-VM tokens);
- PUT /vm (`update`, l.566-623): `params[:data]` (form field, parsed by Rack for form content types and
  from the query string) or else the raw body; `type` 1 updates (default), anything else
  deletes; the text goes through `escape_attr` (l.512-560) with its quirks (a `,` `[` `]` `\\` or newline in
  a value closes the quote, literal backslash-n becomes a newline), restricted attributes
  (SERVICE_ID, ROLE_NAME, SCHED_REQUIREMENTS) give 403 "Attribute (X) cannot be modified", then
  the result is parsed as an OpenNebula template (src/parsers/template_parser.l, a syntax
  error is 500) and merged into USER_TEMPLATE (same names replaced); deleting a missing
  attribute is 500 "attribute not found" (`delete_element` removed nothing); a delete that
  finds it rewrites the whole USER_TEMPLATE (`vm.update(user_template_str)`, not appended);
- errors, by version (`--opennebula`, env ONEGATE_STANDIN_OPENNEBULA; default 7.2):
  before 7.2 a `halt 500, msg` answers `msg` ("attribute not found", the template parser's
  message) and an uncaught exception Sinatra's "<h1>Internal Server Error</h1>"; since 7.2
  (commit e734a43, OpenNebula/one#7251) an `error 500` handler answers every `halt 500` with
  "Internal server error" (`env['sinatra.error']` is nil after a halt) and an exception with
  its message, a leading "ERROR: " stripped. Clients cannot tell a missing attribute from any
  other 500 any more;
- `build_vm_hash` (l.626-661): NAME, ID, STATE, LCM_STATE as strings, USER_TEMPLATE, TEMPLATE with NIC and
  NIC_ALIAS always arrays of NIC_VALID_KEYS only;
- `build_service_hash` (l.663-710): id a string, state an int, roles with int cardinality/state and nodes
  `{deploy_id: int, running: null, vm_info: {VM: {ID, UID, GID, UNAME, GNAME, NAME}}}` (what
  OneFlow stores, src/flow/lib/models/role.rb VM_INFO / fill_node_info); with `extended`
  (any value) each vm_info is the whole VM, not normalised (one NIC is an object);
- GET /service: 400 "Empty or invalid SERVICE_ID" outside a service, 400 "Service N does not
  contain VM M." when the VM is not among the nodes; GET /vms/:id only for the VM itself or
  VMs of its service (`get_requested_vm`).

OneFlow (src/flow/lib/strategy/straight.rb, EventManager.rb): with deployment "straight" a
role is deployed only once all its parents are RUNNING; with ready_status_gate a role is
RUNNING once every VM has USER_TEMPLATE/READY=YES. A VM exists (can authenticate, is listed
in its role's nodes) only once its role is deployed. SERVICE_ID and ROLE_NAME are in each
VM's USER_TEMPLATE (role.rb init_template_attributes).

The admin interface listens on a separate port (JSON): load a service, add VMs, read role
states, deployable roles, USER_TEMPLATEs, per-route request counts, inject faults. See
docs/onegate.md for both APIs.

    python3 tools/onegate_standin.py [--host 127.0.0.1] [--port 0] [--admin-port 0]
                                     [--service FILE.json] [--down-for SECONDS]
                                     [--opennebula 7.0|7.2]
                                     [--tls-cert CHAIN.pem --tls-key KEY.pem]  (OneGate over https)

It prints one JSON line with both URLs on stdout once the admin port answers.
"""

import argparse
import copy
import json
import os
import re
import secrets
import ssl
import sys
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

JSON_TYPE = "application/json;charset=utf-8"
# The OpenNebula release whose onegate-server.rb is modelled (see the module documentation).
DEFAULT_OPENNEBULA = "7.2"
OPENNEBULA_ENV = "ONEGATE_STANDIN_OPENNEBULA"
# Since 7.2 (release-7.2.0 has e734a43): the `error 500` handler's answer to a halt.
ERROR_500_72 = "Internal server error"
# Before 7.2: Sinatra's own answer to an uncaught exception (production, show_exceptions off).
ERROR_500_SINATRA = "<h1>Internal Server Error</h1>"
NOT_SUPPORTED = "OneGate server doesn't support this feature"
RESTRICTED_ATTRS = ["SCHED_REQUIREMENTS", "SERVICE_ID", "ROLE_NAME"]
RESTRICTED_ACTIONS = ["reboot"]
NIC_VALID_KEYS = ["IP", "IP6_LINK", "IP6_SITE", "IP6_GLOBAL", "NETWORK", "MAC", "NAME", "PARENT",
                  "EXTERNAL", "EXTERNAL_IP"]
VM_INFO = ["ID", "UID", "GID", "UNAME", "GNAME", "NAME"]
ACTIONS = ["deploy", "hold", "livemigrate", "migrate", "resume", "release", "stop", "suspend",
           "saveas", "snapshot_create", "snapshot_revert", "snapshot_delete", "terminate",
           "reboot", "poweroff", "chown", "chmod", "resize", "attachdisk", "detachdisk",
           "attachnic", "detachnic", "rename", "undeploy", "resched", "unresched", "recover",
           "delete", "shutdown"]
# role.rb STATE and onegate.rb Service::STATE.
ROLE_STATES = ["PENDING", "DEPLOYING", "RUNNING", "UNDEPLOYING", "WARNING", "DONE",
               "FAILED_UNDEPLOYING", "FAILED_DEPLOYING", "SCALING", "FAILED_SCALING", "COOLDOWN",
               "HOLD"]
PENDING, DEPLOYING, RUNNING = 0, 1, 2
DEFAULT_PERMISSIONS = {
    "vm": {"show": True, "show_by_id": True, "update": True, "update_by_id": True,
           "action_by_id": True},
    "service": {"show": True, "change_cardinality": True},
    "vrouter": {"show": True},
    "vnet": {"show_by_id": True},
}


class Halt(Exception):
    """Sinatra's `halt code, body`."""

    def __init__(self, code, body=""):
        super().__init__(body)
        self.code, self.body = code, body


def parse_version(text):
    """"7.2" or "7.2.0" -> (7, 2); anything else raises ValueError naming the value."""
    m = re.fullmatch(r"(\d+)\.(\d+)(?:\.\d+)?", (text or "").strip())
    if not m:
        raise ValueError("OpenNebula version %r: expected MAJOR.MINOR such as 7.0 or 7.2" % text)
    return int(m.group(1)), int(m.group(2))


def error_body(version, status, text, exception):
    """What the client reads for an error the route produced: since 7.2 the `error 500`
    handler replaces every `halt 500` body and strips "ERROR: " from an exception's message."""
    if status != 500:
        return text
    if version >= (7, 2):
        return re.sub(r"^ERROR:\s*", "", text) if exception else ERROR_500_72
    return ERROR_500_SINATRA if exception else text


def ruby_to_i(s):
    """Ruby's String#to_i: leading whitespace, optional sign, digits; else 0."""
    m = re.match(r"\s*([+-]?\d+)", s or "")
    return int(m.group(1)) if m else 0


# ---------------------------------------------------------------------------------------------
# escape_attr and the template parser
# ---------------------------------------------------------------------------------------------

def escape_attr(attr):
    """onegate-server.rb `escape_attr`, char for char (Ruby's attr[-1] is the last char)."""
    a = list(attr)
    n = len(a)

    def at(i):
        if i < 0:
            return a[n + i] if n + i >= 0 else None
        return a[i] if i < n else None

    ret = []
    escape = False
    for idx, s in enumerate(a):
        if s == "=" and escape:
            ret.append(s)
            continue
        if s == "=" and at(idx + 1) != "[" and at(idx + 1) != '"':
            ret.append('="')
            escape = True
        elif s == "," and at(idx - 1) != '"':
            ret.append('",')
        elif s == "[" and at(idx - 1) != "=" and at(idx - 1) != '"':
            ret.append('"[')
        elif s == "]" and at(idx - 1) != "=" and at(idx - 1) != '"':
            ret.append('"]')
            escape = False
        elif s == "\\" and at(idx - 1) != '"':
            ret.append('"\\')
            escape = False
        elif s == "\n" and at(idx - 1) != '"':
            ret.append('"\n')
            escape = False
        else:
            ret.append(s)
    out = "".join(ret).replace("\\n", "\n")
    if escape and not out.endswith("]") and not out.endswith('"'):
        out += '"'
    return out


class TemplateError(Exception):
    pass


_BLANK = " \t"
_STRING = re.compile(r'[^=#\s,\[\]]+')          # template_parser.l STRING ([:blank:] and \n)
_QUOTED = re.compile(r'"((?:\\"|[^"])*)"')       # \"{VALUE_STRING}\"
_VARIABLE = re.compile(r"[A-Za-z0-9_]+")


def parse_template(text):
    """An OpenNebula template (`KEY = value`, `KEY = "v"`, `KEY = [ A = b, ... ]`) as a list
    of (NAME, value) with value a str or a dict; names upper-cased (template_parser.l,
    template_syntax.y). Raises TemplateError like the parser's syntax errors."""
    i, n = 0, len(text)
    out = []

    def line(i):
        return text.count("\n", 0, i) + 1

    def skip_ws(i):
        while i < n:
            if text[i] in _BLANK + "\n":
                i += 1
            elif text[i] == "#" and (i == 0 or text[i - 1] in _BLANK + "\n"):
                while i < n and text[i] != "\n":
                    i += 1
            else:
                break
        return i

    def value(i):
        """After `=`: the VALUE start condition. Returns (value, i)."""
        j = i
        while j < n and text[j] in _BLANK:
            j += 1
        q = _QUOTED.match(text, j)
        s = _STRING.match(text, j)
        ql = q.end() - j if q else -1
        sl = s.end() - j if s else -1
        if ql < 0 and sl < 0:
            raise TemplateError("syntax error, unexpected end of value at line %d" % line(j))
        if ql >= sl:   # longest match; a tie goes to the quoted rule (listed first)
            return q.group(1).replace('\\"', '"'), q.end()
        return s.group(0), s.end()

    while True:
        i = skip_ws(i)
        if i >= n:
            break
        m = _VARIABLE.match(text, i)
        if not m:
            raise TemplateError("syntax error, unexpected %r at line %d" % (text[i], line(i)))
        name = m.group(0).upper()
        i = m.end()
        j = i
        while j < n and text[j] in _BLANK:
            j += 1
        if j >= n or text[j] != "=":
            raise TemplateError("syntax error, expecting EQUAL after %s at line %d" % (name, line(j)))
        j += 1
        while j < n and text[j] in _BLANK:
            j += 1
        if j < n and text[j] == "\n":          # EQUAL_EMPTY
            out.append((name, ""))
            i = j + 1
            continue
        if j < n and text[j] == "[":           # OBRACKET: a vector attribute
            i = j + 1
            vec = {}
            while True:
                i = skip_ws(i)
                m = _VARIABLE.match(text, i)
                if not m:
                    raise TemplateError("syntax error in vector %s at line %d" % (name, line(i)))
                sub = m.group(0).upper()
                i = m.end()
                while i < n and text[i] in _BLANK:
                    i += 1
                if i >= n or text[i] != "=":
                    raise TemplateError("syntax error in vector %s, expecting EQUAL" % name)
                val, i = value(i + 1)
                vec[sub] = val
                i = skip_ws(i)
                if i < n and text[i] == ",":
                    i += 1
                    continue
                if i < n and text[i] == "]":
                    i += 1
                    break
                raise TemplateError("syntax error in vector %s, expecting COMMA or CBRACKET" % name)
            out.append((name, vec))
            continue
        val, i = value(j)
        out.append((name, val))
        # After a value only blanks, a newline or the next attribute may follow.
        k = i
        while k < n and text[k] in _BLANK:
            k += 1
        if k < n and text[k] in ",]":
            raise TemplateError("syntax error, unexpected %s at line %d"
                                % ("COMMA" if text[k] == "," else "CBRACKET", line(k)))
    return out


def merge_template(user_template, attrs):
    """vm.update(text, append=true): names present in the update replace the old ones; a
    name repeated in the update becomes a list (XML -> hash of repeated elements)."""
    grouped = {}
    for name, val in attrs:
        grouped.setdefault(name, []).append(val)
    for name, vals in grouped.items():
        user_template.pop(name, None)
        user_template[name] = vals[0] if len(vals) == 1 else vals


# ---------------------------------------------------------------------------------------------
# The world: VMs, the service, faults, counts
# ---------------------------------------------------------------------------------------------

class Vm:
    def __init__(self, spec, role=None, service_id=None):
        self.id = int(spec["id"])
        self.name = spec.get("name") or ("vm-%d" % self.id)
        self.ip = spec.get("ip")
        self.mac = spec.get("mac")
        self.network = spec.get("network", "Private")
        self.token = spec.get("token") or secrets.token_urlsafe(24)
        self.nics = spec.get("nics")            # optional list of NIC dicts (several NICs)
        self.context = dict(spec.get("context", {}))
        self.role = role
        self.service_id = service_id
        self.stime = int(time.time())
        self.user_template = {}
        if service_id is not None:
            self.user_template["SERVICE_ID"] = str(service_id)
            self.user_template["ROLE_NAME"] = role
        self.user_template.update({k: v for k, v in spec.get("user_template", {}).items()})
        self.actions = []

    def nic_list(self):
        if self.nics is not None:
            return [dict(n) for n in self.nics]
        if self.ip is None and self.mac is None:
            return []
        nic = {"IP": self.ip, "MAC": self.mac, "NAME": "NIC0", "NETWORK": self.network,
               "NETWORK_ID": "0", "NIC_ID": "0", "SECURITY_GROUPS": "0"}
        return [{k: v for k, v in nic.items() if v is not None}]

    def ready(self):
        return self.user_template.get("READY") == "YES"

    def vm_hash(self):
        """build_vm_hash."""
        nics = [{k: v for k, v in nic.items() if k in NIC_VALID_KEYS} for nic in self.nic_list()]
        return {"VM": {
            "NAME": self.name,
            "ID": str(self.id),
            "STATE": "3",
            "LCM_STATE": "3",
            "USER_TEMPLATE": {k: v for k, v in self.user_template.items() if k != "SCHED_MESSAGE"},
            "TEMPLATE": {"NIC": nics, "NIC_ALIAS": []},
        }}

    def full_hash(self):
        """vm.to_hash: the whole VM, XML-shaped (one NIC is an object, several an array)."""
        nics = self.nic_list()
        template = {"CONTEXT": dict(self.context, VMID=str(self.id)), "VMID": str(self.id)}
        if len(nics) == 1:
            template["NIC"] = nics[0]
        elif nics:
            template["NIC"] = nics
        return {"VM": {
            "ID": str(self.id), "UID": "0", "GID": "0", "UNAME": "oneadmin", "GNAME": "oneadmin",
            "NAME": self.name, "STATE": "3", "LCM_STATE": "3", "STIME": str(self.stime),
            "ETIME": "0", "DEPLOY_ID": "one-%d" % self.id, "MONITORING": {},
            "TEMPLATE": template, "USER_TEMPLATE": copy.deepcopy(self.user_template),
            "HISTORY_RECORDS": {},
        }}

    def reduced_info(self):
        """What OneFlow stores per node (role.rb VM_INFO)."""
        full = self.full_hash()["VM"]
        return {"VM": {k: full[k] for k in VM_INFO}}


class Role:
    def __init__(self, spec, service_id):
        self.name = spec["name"]
        self.parents = list(spec.get("parents", []))
        self.vms = [Vm(v, self.name, service_id) for v in spec.get("vms", [])]
        self.cardinality = int(spec.get("cardinality", len(self.vms)))
        self.state = PENDING
        self.scale_requests = []


class World:
    def __init__(self, opennebula=DEFAULT_OPENNEBULA):
        self.lock = threading.Lock()
        self.opennebula = parse_version(opennebula)
        self.standalone = {}
        self.service = None            # dict: id, name, deployment, gate, roles, state
        self.permissions = copy.deepcopy(DEFAULT_PERMISSIONS)
        self.restricted_attrs = list(RESTRICTED_ATTRS)
        self.restricted_actions = list(RESTRICTED_ACTIONS)
        self.counts = {}
        self.log = []
        self.faults = {}

    # ---- admin side -------------------------------------------------------------------------
    def load_service(self, spec):
        sid = int(spec["id"])
        roles = [Role(r, sid) for r in spec.get("roles", [])]
        names = [r.name for r in roles]
        for r in roles:
            for p in r.parents:
                if p not in names:
                    raise ValueError("role %s: parent %s is not a role" % (r.name, p))
        self.service = {
            "id": sid,
            "name": spec.get("name", "service"),
            "deployment": spec.get("deployment", "straight"),
            "gate": bool(spec.get("ready_status_gate", True)),
            "roles": roles,
            "has_roles": "roles" in spec,
        }
        self.refresh()

    def add_vms(self, specs):
        for s in specs:
            vm = Vm(s)
            self.standalone[vm.id] = vm

    def add_role_vms(self, role_name, specs, cardinality=None):
        role = self.role(role_name)
        if role is None:
            raise KeyError(role_name)
        role.vms.extend(Vm(v, role.name, self.service["id"]) for v in specs)
        role.cardinality = int(cardinality) if cardinality is not None else len(role.vms)
        if role.state == RUNNING:
            role.state = DEPLOYING
        self.refresh()

    def remove_role_vm(self, role_name, vmid):
        """OneFlow's scale down (role.rb `shutdown_nodes` then the node's removal): the VM
        leaves the role's nodes and is terminated, so it no longer authenticates and no other
        VM of the service can read it."""
        role = self.role(role_name)
        if role is None:
            raise KeyError(role_name)
        before = len(role.vms)
        role.vms = [v for v in role.vms if v.id != vmid]
        if len(role.vms) == before:
            raise KeyError("VM %d is not in role %s" % (vmid, role_name))
        role.cardinality = len(role.vms)
        self.refresh()

    def role(self, name):
        if not self.service:
            return None
        return next((r for r in self.service["roles"] if r.name == name), None)

    def refresh(self):
        """OneFlow's straight strategy with the ready gate, run to a fixed point."""
        if not self.service:
            return
        roles = {r.name: r for r in self.service["roles"]}
        changed = True
        while changed:
            changed = False
            for r in self.service["roles"]:
                if r.state == PENDING:
                    straight = self.service["deployment"] == "straight"
                    if not straight or all(roles[p].state == RUNNING for p in r.parents):
                        r.state, changed = DEPLOYING, True
                if r.state == DEPLOYING:
                    if not self.service["gate"] or all(vm.ready() for vm in r.vms):
                        r.state, changed = RUNNING, True

    def service_state(self):
        roles = self.service["roles"]
        return RUNNING if all(r.state == RUNNING for r in roles) else DEPLOYING

    def roles_json(self):
        if not self.service:
            return []
        return [{
            "name": r.name, "state": r.state, "state_str": ROLE_STATES[r.state],
            "parents": r.parents, "cardinality": r.cardinality,
            "deployable": r.state == DEPLOYING,
            "deployed": r.state != PENDING,
            "vms": [{"id": v.id, "name": v.name, "ready": v.ready()} for v in r.vms],
            "scale_requests": r.scale_requests,
        } for r in self.service["roles"]]

    def vm_admin_json(self, vm):
        return {"id": vm.id, "name": vm.name, "role": vm.role, "token": vm.token,
                "exists": self.find_vm(vm.id) is not None, "ready": vm.ready(),
                "user_template": vm.user_template, "actions": vm.actions}

    # ---- lookups ----------------------------------------------------------------------------
    def all_vms(self):
        vms = list(self.standalone.values())
        if self.service:
            for r in self.service["roles"]:
                vms.extend(r.vms)
        return vms

    def find_vm(self, vmid):
        """A VM that exists: standalone, or of a deployed role."""
        if vmid in self.standalone:
            return self.standalone[vmid]
        if self.service:
            for r in self.service["roles"]:
                if r.state == PENDING:
                    continue
                for vm in r.vms:
                    if vm.id == vmid:
                        return vm
        return None

    def any_vm(self, vmid):
        return next((v for v in self.all_vms() if v.id == vmid), None)

    # ---- OneGate helpers (onegate-server.rb helpers block) -------------------------------------
    def check_permissions(self, resource, action):
        if not self.permissions.get(resource, {}).get(action):
            raise Halt(403, "Action (%s) on resource (%s) not supported" % (action, resource))

    def authenticate(self, headers):
        token = headers.get("X-ONEGATE-TOKEN")
        vmid = headers.get("X-ONEGATE-VMID")
        if token is None or vmid is None:
            raise Halt(401, "Not authorized")
        vm = self.find_vm(ruby_to_i(vmid))
        if vm is None or vm.token != token:
            raise Halt(401, "Not authorized")
        return vm

    def get_vm(self, vmid):
        vm = self.find_vm(vmid)
        if vm is None:
            raise Halt(404, "[one.vm.info] Error getting virtual machine [%d]." % vmid)
        return vm

    def get_service(self, service_id):
        if service_id is None or not re.fullmatch(r"\d+", str(service_id)):
            raise Halt(400, "Empty or invalid SERVICE_ID")
        if not self.service or self.service["id"] != int(service_id):
            raise Halt(404, "Service %s not found" % service_id)
        return self.service

    def build_service_hash(self, service, extended):
        if not service["has_roles"]:
            return None
        roles = []
        for r in service["roles"]:
            nodes = []
            if r.state != PENDING:
                for vm in r.vms:
                    nodes.append({
                        "deploy_id": vm.id,
                        "running": None,
                        "vm_info": vm.full_hash() if extended else vm.reduced_info(),
                    })
            roles.append({"name": r.name, "cardinality": r.cardinality, "state": r.state,
                          "nodes": nodes})
        return {"SERVICE": {"name": service["name"], "id": str(service["id"]),
                            "state": self.service_state(), "roles": roles}}

    def check_vm_in_service(self, requested_vm_id, service_id, extended=False):
        service = self.get_service(service_id)
        response = self.build_service_hash(service, extended)
        if response is None:
            raise Halt(400, "Service %s is empty." % service_id)
        ids = [n["deploy_id"] for r in response["SERVICE"]["roles"] for n in r["nodes"]]
        if not ids or int(requested_vm_id) not in ids:
            raise Halt(400, "Service %s does not contain VM %s." % (service_id, requested_vm_id))
        return response

    def get_requested_vm(self, requested_vm_id, source):
        if source.id == requested_vm_id:
            return source
        service_id = source.user_template.get("SERVICE_ID")
        if service_id is not None:
            self.check_vm_in_service(requested_vm_id, service_id)
            return self.get_vm(requested_vm_id)
        raise Halt(400, "This VM does not belong to any Virtual Router or Service, so it cannot "
                        "retrieve information from other VMs")

    def update(self, vm, params, body):
        """onegate-server.rb `update`."""
        attr = params.get("data")
        typ = params.get("type")
        typ = 1 if typ is None else ruby_to_i(typ)
        if attr is None:
            attr = body
        attr = escape_attr(attr)
        error = "cannot be modified" if typ == 1 else "cannot be deleted"
        for key_value in attr.split("\n"):
            parts = key_value.split("=")
            if parts[0] and parts[0].upper() in self.restricted_attrs:
                raise Halt(403, "Attribute (%s) %s" % (parts[0], error))
        if typ == 1:
            try:
                attrs = parse_template(attr)
            except TemplateError as e:
                raise Halt(500, "[one.vm.update] Error parsing template: %s" % e)
            merge_template(vm.user_template, attrs)
            self.refresh()
            return [name for name, _ in attrs]
        if attr not in vm.user_template:
            raise Halt(500, "attribute not found")
        del vm.user_template[attr]
        return [attr]


# ---------------------------------------------------------------------------------------------
# HTTP: OneGate routes
# ---------------------------------------------------------------------------------------------

ROUTES = [
    ("GET", re.compile(r"^/$"), "/"),
    ("PUT", re.compile(r"^/vm$"), "/vm"),
    ("GET", re.compile(r"^/vm$"), "/vm"),
    ("GET", re.compile(r"^/service$"), "/service"),
    ("GET", re.compile(r"^/vrouter$"), "/vrouter"),
    ("GET", re.compile(r"^/vnet/([^/]+)$"), "/vnet/:id"),
    ("GET", re.compile(r"^/vms/([^/]+)$"), "/vms/:id"),
    ("POST", re.compile(r"^/vms/([^/]+)/action$"), "/vms/:id/action"),
    ("PUT", re.compile(r"^/service/role/([^/]+)$"), "/service/role/:role"),
    ("PUT", re.compile(r"^/vms/([^/]+)$"), "/vms/:id"),
]
JSON_ROUTES = {"/", "/vm", "/service", "/vrouter", "/vnet/:id", "/vms/:id"}


def route_of(method, path):
    m = "GET" if method == "HEAD" else method   # Sinatra answers HEAD with the GET route
    for rm, rx, name in ROUTES:
        if rm == m:
            match = rx.match(path)
            if match:
                return name, match.groups()
    return None, ()


def onegate(world, method, path, query, headers, body):
    """Answer one OneGate request: (status, body text). Raises Halt for errors."""
    name, args = route_of(method, path)
    params = dict(urllib.parse.parse_qsl(query, keep_blank_values=True))
    ctype = (headers.get("Content-Type") or "").split(";")[0].strip().lower()
    if ctype in ("application/x-www-form-urlencoded", "multipart/form-data") or \
            (method == "POST" and not ctype):
        params.update(urllib.parse.parse_qsl(body, keep_blank_values=True))
    if name is None:
        raise Halt(400, NOT_SUPPORTED)
    if name == "/":
        world.authenticate(headers)
        base = "http://%s" % (headers.get("Host") or "localhost")
        return 200, json.dumps({"vm_info": base + "/vm", "service_info": base + "/service"}), []
    if name == "/vm" and method == "PUT":
        world.check_permissions("vm", "update")
        vm = world.authenticate(headers)
        return 200, "", world.update(world.get_vm(vm.id), params, body)
    if name == "/vm":
        world.check_permissions("vm", "show")
        vm = world.authenticate(headers)
        return 200, json.dumps(world.get_vm(vm.id).vm_hash()), []
    if name == "/service":
        world.check_permissions("service", "show")
        vm = world.authenticate(headers)
        service_id = vm.user_template.get("SERVICE_ID")
        extended = params.get("extended") is not None
        return 200, json.dumps(world.check_vm_in_service(vm.id, service_id, extended)), []
    if name == "/vrouter":
        world.check_permissions("vrouter", "show")
        world.authenticate(headers)
        raise Halt(400, "Empty or invalid VROUTER_ID")
    if name == "/vnet/:id":
        world.check_permissions("vnet", "show_by_id")
        world.authenticate(headers)
        if not re.fullmatch(r"[+-]?\d+", args[0]):
            raise Halt(400, "Invalid id format (ID: %s). ID must be an integer." % args[0])
        raise Halt(400, "Virtual networks information can only be retrieved from Virtual Routers.")
    if name == "/vms/:id" and method == "PUT":
        world.check_permissions("vm", "update_by_id")
        vm = world.authenticate(headers)
        target = world.get_requested_vm(ruby_to_i(args[0]), vm)
        return 200, "", world.update(target, params, body)
    if name == "/vms/:id":
        world.check_permissions("vm", "show_by_id")
        vm = world.authenticate(headers)
        return 200, json.dumps(world.get_requested_vm(ruby_to_i(args[0]), vm).vm_hash()), []
    if name == "/vms/:id/action":
        world.check_permissions("vm", "action_by_id")
        vm = world.authenticate(headers)
        target = world.get_requested_vm(ruby_to_i(args[0]), vm)
        try:
            action = json.loads(body)
        except ValueError as e:
            raise Halt(400, str(e))
        if not isinstance(action, dict) or "action" not in action:
            raise Halt(400, "Error parsing JSON: Wrong resource type")
        perform = (action["action"] or {}).get("perform")
        if perform and perform.lower() in world.restricted_actions:
            raise Halt(403, "Action (%s) is not allowed on this resource" % perform)
        if perform not in ACTIONS:
            raise Halt(500, "%s action not  available for this resource" % perform)
        target.actions.append({"perform": perform, "params": action["action"].get("params")})
        return 204, "", []
    if name == "/service/role/:role":
        world.check_permissions("service", "change_cardinality")
        vm = world.authenticate(headers)
        service_id = vm.user_template.get("SERVICE_ID")
        world.check_vm_in_service(vm.id, service_id)
        try:
            cardinality = json.loads(body)["cardinality"]
        except (ValueError, KeyError, TypeError) as e:
            raise Halt(500, str(e))
        role = world.role(args[0])
        if role is None:
            raise Halt(400, "Error performing action on service %s role %s" % (service_id, args[0]))
        role.scale_requests.append(cardinality)
        return 200, "", []
    raise Halt(400, NOT_SUPPORTED)


class OneGateHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    world = None

    def log_message(self, fmt, *args):
        pass

    def _handle(self):
        world = self.world
        url = urllib.parse.urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length).decode("utf-8", "replace") if length else ""
        route, _ = route_of(self.command, url.path)
        key = "%s %s" % (self.command, route or "*")
        entry = {"method": self.command, "path": self.path, "route": key,
                 "vmid": self.headers.get("X-ONEGATE-VMID"), "t": time.time()}
        with world.lock:
            world.counts[key] = world.counts.get(key, 0) + 1
            world.log.append(entry)
            fault = take_fault(world, key, route in JSON_ROUTES and self.command in ("GET", "HEAD"))
        if fault.get("delay"):
            time.sleep(fault["delay"])
        if fault.get("drop"):
            entry["status"] = "dropped"
            self.close_connection = True
            return
        if "status" in fault:
            status, text, keys = fault["status"], "Internal server error (injected)", []
        elif fault.get("garbage"):
            status, text, keys = 200, '{"VM": {"NAME": "garb', []
        else:
            try:
                with world.lock:
                    status, text, keys = onegate(world, self.command, url.path, url.query,
                                                 self.headers, body)
            except Halt as h:
                status, text, keys = h.code, error_body(world.opennebula, h.code, h.body, False), []
            except Exception as e:   # an uncaught exception: Sinatra's or 7.2's error handler
                status, text, keys = 500, error_body(world.opennebula, 500, str(e), True), []
        entry["status"] = status
        if keys:
            entry["keys"] = keys
        self._reply(status, text)

    def _reply(self, status, text):
        data = text.encode()
        self.send_response(status)
        self.send_header("Content-Type", JSON_TYPE)
        if status != 204:
            self.send_header("Content-Length", str(len(data)))
        self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD" and status != 204:
            self.wfile.write(data)
        self.close_connection = True

    do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = do_OPTIONS = do_PATCH = _handle


def take_fault(world, key, json_route):
    """The faults this request gets; counted ones are used up."""
    f = world.faults
    routes = f.get("routes")
    if routes and key not in routes:
        return {}
    out = {}

    def use(kind):
        rule = f.get(kind)
        if rule is None:         # `{}` is a fault with no count: every request
            return None
        count = rule.get("count")
        if count is not None:
            if count <= 0:
                return None
            rule["count"] = count - 1
        return rule

    d = use("delay")
    if d is not None:
        out["delay"] = float(d.get("seconds", 1))
    if use("drop") is not None:
        out["drop"] = True
    else:
        s = use("status")
        if s is not None:
            out["status"] = int(s.get("code", 500))
        elif json_route and use("garbage") is not None:
            out["garbage"] = True
    return out


# ---------------------------------------------------------------------------------------------
# HTTP: admin interface
# ---------------------------------------------------------------------------------------------

class AdminHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    world = None
    stop = None

    def log_message(self, fmt, *args):
        pass

    def _handle(self):
        world = self.world
        url = urllib.parse.urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length).decode() if length else ""
        try:
            data = json.loads(raw) if raw.strip() else None
        except ValueError as e:
            return self._reply(400, {"error": "bad JSON: %s" % e})
        try:
            with world.lock:
                code, out = admin(world, self.command, url.path, data)
        except (KeyError, ValueError, TypeError) as e:
            code, out = 400, {"error": "%s: %s" % (type(e).__name__, e)}
        self._reply(code, out)
        if url.path == "/shutdown" and code == 200:
            threading.Thread(target=self.stop, daemon=True).start()

    def _reply(self, code, obj):
        data = (json.dumps(obj) + "\n").encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(data)
        self.close_connection = True

    do_GET = do_POST = do_PUT = do_DELETE = _handle


def admin(world, method, path, data):
    """The admin API: (status, JSON)."""
    parts = [p for p in path.split("/") if p]
    if method == "GET" and parts == ["health"]:
        return 200, {"ok": True, "opennebula": "%d.%d" % world.opennebula}
    if method == "POST" and parts == ["service"]:
        world.load_service(data)
        return 200, {"roles": world.roles_json()}
    if method == "POST" and parts == ["vms"]:
        world.add_vms(data if isinstance(data, list) else data["vms"])
        return 200, {"vms": sorted(world.standalone)}
    if method == "POST" and len(parts) == 3 and parts[0] == "roles" and parts[2] == "vms":
        world.add_role_vms(parts[1], data["vms"], data.get("cardinality"))
        return 200, {"roles": world.roles_json()}
    if method == "DELETE" and len(parts) == 4 and parts[0] == "roles" and parts[2] == "vms":
        world.remove_role_vm(parts[1], int(parts[3]))
        return 200, {"roles": world.roles_json()}
    if method == "GET" and parts == ["roles"]:
        return 200, {"roles": world.roles_json()}
    if method == "GET" and parts == ["deployable"]:
        return 200, {"roles": [r["name"] for r in world.roles_json() if r["deployable"]]}
    if method == "GET" and parts == ["service"]:
        if not world.service:
            return 404, {"error": "no service loaded"}
        return 200, {"id": world.service["id"], "name": world.service["name"],
                     "state": world.service_state(), "roles": world.roles_json()}
    if method == "GET" and len(parts) == 2 and parts[0] in ("vms", "user_template"):
        vm = world.any_vm(int(parts[1]))
        if vm is None:
            return 404, {"error": "no VM %s" % parts[1]}
        return 200, vm.user_template if parts[0] == "user_template" else world.vm_admin_json(vm)
    if method == "GET" and parts == ["requests"]:
        return 200, {"counts": world.counts, "total": sum(world.counts.values()), "log": world.log}
    if method == "POST" and parts == ["requests", "reset"]:
        world.counts.clear()
        del world.log[:]
        return 200, {"counts": {}}
    if method == "GET" and parts == ["faults"]:
        return 200, world.faults
    if method == "POST" and parts == ["faults"]:
        world.faults.update(data or {})
        return 200, world.faults
    if method == "POST" and parts == ["faults", "clear"]:
        world.faults = {}
        return 200, {}
    if method == "POST" and parts == ["config"]:
        for res, acts in (data.get("permissions") or {}).items():
            world.permissions.setdefault(res, {}).update(acts)
        if "restricted_attrs" in data:
            world.restricted_attrs = [a.upper() for a in data["restricted_attrs"]]
        if "restricted_actions" in data:
            world.restricted_actions = [a.lower() for a in data["restricted_actions"]]
        return 200, {"permissions": world.permissions, "restricted_attrs": world.restricted_attrs}
    if method == "POST" and parts == ["shutdown"]:
        return 200, {"ok": True}
    return 404, {"error": "no admin route %s %s" % (method, path)}


# ---------------------------------------------------------------------------------------------
# Start-up
# ---------------------------------------------------------------------------------------------

class StandIn:
    """Both servers in threads. `down_for`: the OneGate port is bound at once (so its number is
    known) but listens only after that many seconds; until then connections are refused."""

    def __init__(self, host="127.0.0.1", port=0, admin_port=0, down_for=0.0, opennebula=None, tls=None):
        self.world = World(opennebula or os.environ.get(OPENNEBULA_ENV) or DEFAULT_OPENNEBULA)
        og = type("Handler", (OneGateHandler,), {"world": self.world})
        self.onegate = ThreadingHTTPServer((host, port), og, bind_and_activate=False)
        self.onegate.daemon_threads = True
        self.onegate.allow_reuse_address = True
        self.onegate.server_bind()
        self.https = tls is not None
        if tls:   # (certificate chain file, key file): OneGate over https, the admin port stays http
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(*tls)
            self.onegate.socket = ctx.wrap_socket(self.onegate.socket, server_side=True)
        ad = type("Admin", (AdminHandler,), {"world": self.world, "stop": self.shutdown})
        self.admin = ThreadingHTTPServer((host, admin_port), ad)
        self.admin.daemon_threads = True
        self.host = host
        self.down_for = down_for
        self.threads = []

    @property
    def onegate_url(self):
        scheme = "https" if self.https else "http"
        return "%s://%s:%d" % (scheme, self.host, self.onegate.server_address[1])

    @property
    def admin_url(self):
        return "http://%s:%d" % (self.host, self.admin.server_address[1])

    def start(self):
        # Listening before start() returns when not delayed: a client right after start()
        # (the unit tests) must not race the serving thread's listen() (it was refused).
        if self.down_for <= 0:
            self.onegate.server_activate()

        def serve_onegate():
            if self.down_for > 0:
                time.sleep(self.down_for)
                self.onegate.server_activate()
            self.onegate.serve_forever(poll_interval=0.1)

        for target in (serve_onegate, lambda: self.admin.serve_forever(poll_interval=0.1)):
            t = threading.Thread(target=target, daemon=True)
            t.start()
            self.threads.append(t)
        return self

    def shutdown(self):
        self.admin.shutdown()
        try:
            self.onegate.shutdown()
        except Exception:   # never activated
            pass
        self.onegate.server_close()
        self.admin.server_close()


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0, help="OneGate port (0: any free one)")
    ap.add_argument("--admin-port", type=int, default=0, help="admin port (0: any free one)")
    ap.add_argument("--service", help="JSON file of a service to load at start")
    ap.add_argument("--down-for", type=float, default=0.0,
                    help="refuse OneGate connections for this many seconds first")
    ap.add_argument("--opennebula", default=None,
                    help="the onegate-server.rb to model: 7.0 (before the error 500 handler) or "
                         "7.2 and later (default: $%s, else %s)" % (OPENNEBULA_ENV, DEFAULT_OPENNEBULA))
    ap.add_argument("--tls-cert", help="serve OneGate over https with this PEM certificate chain")
    ap.add_argument("--tls-key", help="the PEM private key of --tls-cert")
    args = ap.parse_args(argv)
    if bool(args.tls_cert) != bool(args.tls_key):
        ap.error("--tls-cert and --tls-key go together")
    try:
        s = StandIn(args.host, args.port, args.admin_port, args.down_for, args.opennebula,
                    (args.tls_cert, args.tls_key) if args.tls_cert else None)
    except ValueError as e:
        ap.error(str(e))
    if args.service:
        with open(args.service) as f:
            s.world.load_service(json.load(f))
    s.start()
    print(json.dumps({"onegate": s.onegate_url, "admin": s.admin_url,
                      "opennebula": "%d.%d" % s.world.opennebula,
                      "onegate_port": s.onegate.server_address[1],
                      "admin_port": s.admin.server_address[1]}), flush=True)
    try:
        while any(t.is_alive() for t in s.threads):
            time.sleep(0.5)
    except KeyboardInterrupt:
        s.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
