"""Network namespaces for host-side federation tests: one namespace per node, joined by veth
pairs to a bridge that lives in a namespace of its own (the "private network" of the
OpenNebula service). Nothing is added to the host's own namespace.

    topo = Topology("fi-e2e", "10.91.0")      # bridge namespace fi-e2e-br, 10.91.0.1/24
    topo.add_node("sl", mac="02:00:0a:5b:00:0a")  # namespace fi-e2e-sl, interface eth0
    topo.run("sl", ["ip", "-br", "addr"])
    topo.destroy()

Node interfaces start without addresses: flower-init configures them from the context
(ETH0_MAC/ETH0_IP/...) over netlink, as it does in a VM.
"""
import subprocess


def sh(*argv, check=True):
    return subprocess.run(list(argv), check=check, capture_output=True, text=True)


class Topology:
    def __init__(self, prefix, subnet):
        self.prefix, self.subnet = prefix, subnet
        self.bridge_ns = f"{prefix}-br"
        self.nodes = {}
        self.destroy()  # leftovers of an interrupted run
        sh("ip", "netns", "add", self.bridge_ns)
        b = ["ip", "-n", self.bridge_ns]
        sh(*b, "link", "set", "lo", "up")
        sh(*b, "link", "add", "br0", "type", "bridge")
        sh(*b, "addr", "add", f"{subnet}.1/24", "dev", "br0")
        sh(*b, "link", "set", "br0", "up")

    @property
    def gateway(self):
        return f"{self.subnet}.1"

    def ns(self, node):
        return f"{self.prefix}-{node}"

    def add_node(self, node, mac):
        """A namespace with `eth0` (the given MAC) cabled to the bridge; no address yet."""
        ns = self.ns(node)
        peer = f"b-{node}"[:15]
        sh("ip", "netns", "add", ns)
        sh("ip", "link", "add", "tmp-" + node[:10], "type", "veth", "peer", "name", peer[:15])
        sh("ip", "link", "set", "tmp-" + node[:10], "netns", ns)
        sh("ip", "link", "set", peer, "netns", self.bridge_ns)
        sh("ip", "-n", ns, "link", "set", "tmp-" + node[:10], "name", "eth0")
        sh("ip", "-n", ns, "link", "set", "eth0", "address", mac)
        sh("ip", "-n", self.bridge_ns, "link", "set", peer, "master", "br0")
        sh("ip", "-n", self.bridge_ns, "link", "set", peer, "up")
        self.nodes[node] = ns
        return ns

    def add_tap(self, name):
        """A tap device on the bridge, for a qemu VM run inside the bridge namespace."""
        b = ["ip", "-n", self.bridge_ns]
        sh(*b, "tuntap", "add", "dev", name, "mode", "tap")
        sh(*b, "link", "set", name, "master", "br0")
        sh(*b, "link", "set", name, "up")
        return name

    def exec_prefix(self, node=None):
        """argv prefix that runs a command inside a node's namespace (or the bridge's)."""
        return ["ip", "netns", "exec", self.ns(node) if node else self.bridge_ns]

    def run(self, node, argv, check=True):
        return sh(*self.exec_prefix(node), *argv, check=check)

    def destroy(self):
        listed = sh("ip", "netns", "list", check=False).stdout.split("\n")
        for line in listed:
            name = line.split(" ")[0]
            if name.startswith(self.prefix + "-"):
                sh("ip", "netns", "del", name, check=False)
