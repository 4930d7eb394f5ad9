# The supernode VM template of the Flower appliance (flower-init vm-template --role supernode --arch aarch64).
# Generated from the variable table: edit src/vars.rs, then `make appliance-templates`.
NAME = "flower-sklearn-aarch64-supernode"
DESCRIPTION = "Flower SuperNode (trains next to its data) on aarch64, run by flower-init; joins an x86_64 SuperLink (docs/edge.md)."
HYPERVISOR = "kvm"
CPU = "1"
VCPU = "2"
MEMORY = "1024"
CPU_MODEL = [
  MODEL = "host-passthrough" ]
OS = [
  ARCH = "aarch64",
  FIRMWARE = "/usr/share/AAVMF/AAVMF_CODE.fd",
  MACHINE = "virt" ]
DISK = [
  IMAGE = "flower-sklearn-aarch64" ]
NIC_DEFAULT = [
  MODEL = "virtio" ]
GRAPHICS = [
  LISTEN = "0.0.0.0",
  TYPE = "VNC" ]
CONTEXT = [
  NETWORK = "YES",
  TOKEN = "YES",
  REPORT_READY = "YES",
  SSH_PUBLIC_KEY = "$USER[SSH_PUBLIC_KEY]",
  FL_ROLE = "supernode",
  FLOWER_VERSION = "$FLOWER_VERSION",
  FL_USE_CASE = "$FL_USE_CASE",
  FL_LOG_LEVEL = "$FL_LOG_LEVEL",
  FL_TLS_ENABLED = "$FL_TLS_ENABLED",
  ML_FRAMEWORK = "$ML_FRAMEWORK",
  FL_SUPERLINK_ADDRESS = "$FL_SUPERLINK_ADDRESS",
  FL_JOIN = "$FL_JOIN",
  FL_NODE_CONFIG = "$FL_NODE_CONFIG",
  FL_MAX_RETRIES = "$FL_MAX_RETRIES",
  FL_MAX_WAIT_TIME = "$FL_MAX_WAIT_TIME",
  FL_DISCOVERY_RETRIES = "$FL_DISCOVERY_RETRIES",
  FL_DISCOVERY_INTERVAL = "$FL_DISCOVERY_INTERVAL",
  FL_GPU_ENABLED = "$FL_GPU_ENABLED",
  FL_CUDA_VISIBLE_DEVICES = "$FL_CUDA_VISIBLE_DEVICES",
  FL_GPU_MEMORY_FRACTION = "$FL_GPU_MEMORY_FRACTION" ]
USER_INPUTS = [
  FLOWER_VERSION = "O|text|Must equal the Flower version baked into the image: nothing is downloaded at boot. Format: a version X.Y.Z. Empty: the image's.||",
  FL_USE_CASE = "O|list|Bundled use case to run; none leaves the SuperLink idle for flwr run. Must be shipped by the image and fit its framework (tabular: sklearn; LLM: pytorch).|none,image-classification,tabular-classification,llm-fine-tuning|none",
  FL_LOG_LEVEL = "O|list|Log level of flower-init and Flower (FLWR_LOG_LEVEL).|DEBUG,INFO,WARNING,ERROR|INFO",
  FL_TLS_ENABLED = "O|text|SuperLink: serve TLS (default YES). SuperNode: YES requires TLS, NO forces plain text, unset follows the SuperLink (a CA in FL_SSL_CA_CERTFILE also means TLS). Format: YES or NO. Empty: SuperLink: YES; SuperNode: follow the SuperLink's OneGate FL_TLS.||",
  ML_FRAMEWORK = "O|text|Must equal the image variant's framework (no fallback to another variant). ONEAPP_FL_FRAMEWORK is the existing public appliance's name. Format: one of pytorch, tensorflow, sklearn. Empty: the image's.||",
  FL_SUPERLINK_ADDRESS = "O|text|The SuperLink's address; skips OneGate discovery. Format: host:port (IPv6 in brackets: [2001:db8::1]:8000). Empty: discovered through OneGate.||",
  FL_JOIN = "O|text|Everything needed to join a SuperLink at another site in one value: its endpoint, its CA certificate (with the SHA-256) and whether it serves TLS. Copy it from the SuperLink (/status join, or its OneGate FL_JOIN). Replaces FL_SUPERLINK_ADDRESS, FL_SSL_CA_CERTFILE and FL_TLS_ENABLED (giving FL_SUPERLINK_ADDRESS or FL_SSL_CA_CERTFILE as well is an error, FL_TLS_ENABLED may only agree) and skips OneGate discovery of the SuperLink (OneGate still gives the partition). Format: a join value flwr1:… as the SuperLink shows it (its /status join, or its OneGate attribute FL_JOIN). Empty: FL_SUPERLINK_ADDRESS, FL_SSL_CA_CERTFILE and FL_TLS_ENABLED, or OneGate discovery.||",
  FL_NODE_CONFIG = "O|text|Flower --node-config, e.g. partition-id=0 num-partitions=2 name=\"site-a\". Format: space-separated key=value pairs, values in TOML: 1, 0.5, true, \"text\" (as flower-supernode --node-config). Empty: partition-id/num-partitions from the OneFlow role.||",
  FL_MAX_RETRIES = "O|number|flower-supernode --max-retries on connection failures; 0 = unlimited. Format: an integer >= 0.||0",
  FL_MAX_WAIT_TIME = "O|number|flower-supernode --max-wait-time in seconds; 0 = unlimited. Format: an integer >= 0.||0",
  FL_DISCOVERY_RETRIES = "O|number|OneGate look-ups for the SuperLink's FL_ENDPOINT before giving up. Format: an integer from 1 to 100000.||30",
  FL_DISCOVERY_INTERVAL = "O|number|Seconds between OneGate look-ups. Format: an integer from 1 to 3600.||10",
  FL_GPU_ENABLED = "O|boolean|Give the Flower container the passed-through GPUs; none found is a warning (CPU fallback).||NO",
  FL_CUDA_VISIBLE_DEVICES = "O|text|Which GPUs the container sees (CUDA_VISIBLE_DEVICES). Format: all, or a comma-separated list of GPU indices (0,1).||all",
  FL_GPU_MEMORY_FRACTION = "O|number-float|Fraction of each GPU's memory the framework may use. Format: a number > 0 and <= 1.||1.0" ]
INPUTS_ORDER = "FLOWER_VERSION,FL_USE_CASE,FL_LOG_LEVEL,FL_TLS_ENABLED,ML_FRAMEWORK,FL_SUPERLINK_ADDRESS,FL_JOIN,FL_NODE_CONFIG,FL_MAX_RETRIES,FL_MAX_WAIT_TIME,FL_DISCOVERY_RETRIES,FL_DISCOVERY_INTERVAL,FL_GPU_ENABLED,FL_CUDA_VISIBLE_DEVICES,FL_GPU_MEMORY_FRACTION"
