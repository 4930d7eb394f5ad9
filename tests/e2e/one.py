"""A miniature OpenNebula for the local federation: instantiate a OneFlow service template
(7.x format, oneflow/flower-7.json) into per-VM contexts the way oned + OneFlow would.

What it reproduces (see ../shared/research/opennebula.md §§3, 5):
- user inputs: service-level values merged with role-level values (the role wins), each key
  put into the VM's CONTEXT (OneFlow 7.x `generate_template_contents`); defaults come from the
  `M|type|description|options|default` spec when no value is given;
- the role's `template_contents.CONTEXT` entries, with `$KEY` references resolved;
- NETWORK=YES: ETH0_* variables for one NIC on the private network (OpenNebula's MAC
  convention 02:00:<IPv4 bytes>), with the empty keys OpenNebula emits;
- TOKEN=YES: ONEGATE_ENDPOINT, VMID and a per-VM token (token.txt);
- SERVICE_ID / ROLE_NAME go to the VM's USER_TEMPLATE (the OneGate stand-in), not the context.
"""
import json
import secrets


def mac_for(ip):
    return "02:00:" + ":".join(f"{int(b):02x}" for b in ip.split("."))


def parse_input(spec):
    """`M|list|Strategy|FedAvg,FedProx|FedAvg` -> (mandatory, type, description, options, default)."""
    parts = spec.split("|")
    parts += [""] * (5 - len(parts))
    return parts[0] == "M", parts[1], parts[2], parts[3], "|".join(parts[4:])


class Vm:
    def __init__(self, vmid, role, index, ip, service_id):
        self.vmid, self.role, self.index, self.ip = vmid, role, index, ip
        self.name = f"{role}_{index}_(service_{service_id})"
        self.mac = mac_for(ip)
        self.token = secrets.token_urlsafe(24)
        self.context = {}


def instantiate(template, values, *, subnet, gateway, onegate, service_id=7, first_vmid=100,
                first_host=10, cardinality=None, extra_context=None):
    """Return the VMs of the service in deployment order (parents first).

    values: {"service": {...}, "<role>": {...}} user-input values; cardinality: {"role": n}.
    """
    cardinality = cardinality or {}
    service_inputs = template.get("user_inputs", {})
    vms, vmid, host = [], first_vmid, first_host
    for role in template["roles"]:
        inputs = dict(service_inputs)
        inputs.update(role.get("user_inputs", {}))
        merged = {k: parse_input(v)[4] for k, v in inputs.items()}
        merged.update({k: v for k, v in values.get("service", {}).items()})
        merged.update({k: v for k, v in values.get(role["name"], {}).items()})
        for k, v in merged.items():
            mandatory = parse_input(inputs.get(k, "O|text||"))[0]
            if mandatory and v == "":
                raise ValueError(f"user input {k} of role {role['name']} is mandatory")
        n = cardinality.get(role["name"], role.get("cardinality", 1))
        for i in range(n):
            vm = Vm(vmid, role["name"], i, f"{subnet}.{host}", service_id)
            ctx = {}
            for k, v in role.get("template_contents", {}).get("CONTEXT", {}).items():
                ctx[k] = merged.get(v[1:], "") if isinstance(v, str) and v.startswith("$") else str(v)
            ctx.update({k: str(v) for k, v in merged.items()})
            ctx.update({
                "NETWORK": "YES",
                "ETH0_MAC": vm.mac, "ETH0_IP": vm.ip, "ETH0_MASK": "255.255.255.0",
                "ETH0_NETWORK": f"{subnet}.0", "ETH0_GATEWAY": gateway, "ETH0_DNS": "",
                "ETH0_MTU": "", "ETH0_METHOD": "static", "ETH0_IP6": "", "ETH0_IP6_METHOD": "",
                "ETH0_IP6_GATEWAY": "", "ETH0_IP6_PREFIX_LENGTH": "", "ETH0_IP6_ULA": "",
                "ETH0_SEARCH_DOMAIN": "", "ETH0_VLAN_ID": "", "ETH0_VROUTER_IP": "",
                "ETH0_VROUTER_MANAGEMENT": "", "ETH0_EXTERNAL": "", "ETH0_METRIC": "",
                "SET_HOSTNAME": vm.name.split("_(")[0].replace("_", "-"),
                "TOKEN": "YES", "ONEGATE_ENDPOINT": onegate, "VMID": str(vm.vmid),
                "REPORT_READY": ctx.get("REPORT_READY", "YES"),
                "DISK_ID": "1", "TARGET": "hda",
            })
            ctx.update(extra_context or {})
            vm.context = ctx
            vms.append(vm)
            vmid += 1
            host += 1
    return vms


def standin_service(template, vms, service_id=7):
    """The service definition the OneGate/OneFlow stand-in serves for these VMs."""
    return {
        "id": service_id,
        "name": template.get("name", "flower"),
        "roles": [
            {"name": r["name"], "parents": r.get("parents", []),
             "vms": [{"id": v.vmid, "name": v.name, "ip": v.ip, "mac": v.mac, "token": v.token}
                     for v in vms if v.role == r["name"]]}
            for r in template["roles"]
        ],
    }


def load(path):
    with open(path) as f:
        return json.load(f)
