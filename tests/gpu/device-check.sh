#!/usr/bin/env bash
# The GPU device check (issue #18, docs/gpu.md "Device check"): on a machine with an NVIDIA GPU
# and its driver loaded, run the SuperNode's Flower container of the pytorch image under runc
# with exactly the device nodes, driver library mounts and environment flower-init gives it
# (`flower-init gpu bundle` writes the bundle with the boot's own GPU code: nothing of that list
# is written here), and check in it: torch.cuda.is_available(), the device's name, nvidia-smi's
# driver release, and one training step of a small CNN on the GPU.
#
#   tests/gpu/device-check.sh [--flower-init PATH] [--runc PATH] [--devices all|0,1]
#                             [--bundle-only] [--keep] IMAGE
#
#   IMAGE          the pytorch image: build/image/pytorch/image.squashfs (mounted read-only on a
#                  loop device, as a VM has it) or its unpacked rootfs directory
#   --flower-init  the static flower-init (default: next to this script, then build/flower-init
#                  of the checkout, then PATH)
#   --runc         runc, 1.1 or later (default: next to this script, then PATH)
#   --devices      FL_CUDA_VISIBLE_DEVICES (default all)
#   --bundle-only  write the bundle, print where, keep it and stop (no runc)
#   --keep         keep the work directory (bundle, driver directory, output)
#
# Needs root (loop mount, runc), no network, and runs within 10 minutes (TIMEOUT_S). The
# driver's userspace must be the loaded kernel module's release, which the image's own driver
# (535, for the VM's pinned kernel) usually is not on a GPU host: the host's libraries are
# copied into a directory laid out like the image's /opt/nvidia-driver and mounted instead.
# Exit 0 and one "PASS" line on success; non-zero and "FAIL: reason" otherwise. Every exit
# path deletes the container, unmounts the image and removes the work directory.
#
# For tests only: FI_DEVICE_CHECK_ROOT=DIR reads DIR/sys, DIR/proc, DIR/dev instead of the
# machine's; FI_DEVICE_CHECK_LIBDIRS=DIR:DIR... searches only those for the driver libraries.
set -uo pipefail

TIMEOUT_S=${DEVICE_CHECK_TIMEOUT_S:-600}
here=$(cd "$(dirname "$0")" && pwd)
t0=$SECONDS
say() { echo "device-check +$((SECONDS - t0))s: $*"; }
fail() { echo "device-check: FAIL: $*" >&2; exit 1; }
usage() { sed -n '9,19p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }

# The whole check runs under one deadline (--foreground: Ctrl-C still reaches it; the
# container's run has its own, shorter, timeout).
if [ -z "${FI_DEVICE_CHECK_TIMED:-}" ]; then
    FI_DEVICE_CHECK_TIMED=$((SECONDS + TIMEOUT_S)) exec timeout --foreground --kill-after=20 "$TIMEOUT_S" "$BASH" "$0" "$@"
fi

flower_init= runc= devices=all bundle_only= keep= image=
while [ $# -gt 0 ]; do
    case $1 in
        --flower-init) flower_init=${2:?--flower-init needs a path}; shift 2 ;;
        --runc) runc=${2:?--runc needs a path}; shift 2 ;;
        --devices) devices=${2:?--devices needs a value}; shift 2 ;;
        --bundle-only) bundle_only=1; shift ;;
        --keep) keep=1; shift ;;
        -h|--help) usage ;;
        -*) echo "device-check: unknown option $1" >&2; usage ;;
        *) [ -z "$image" ] || usage; image=$1; shift ;;
    esac
done
[ -n "$image" ] || usage
[ -e "$image" ] || fail "no image at $image (build/image/pytorch/image.squashfs or its rootfs directory)"

root=${FI_DEVICE_CHECK_ROOT:-}
sys=$root/sys proc=$root/proc dev=$root/dev
[ -n "$root" ] || { sys=/sys proc=/proc dev=/dev; }

# 1. This machine: an NVIDIA GPU, its driver loaded, the control node. All that is missing is
# named at once.
missing=()
gpus=0
for d in "$sys"/bus/pci/devices/*; do
    [ -e "$d/vendor" ] || continue
    [ "$(cat "$d/vendor")" = 0x10de ] && case $(cat "$d/class" 2>/dev/null) in 0x03*) gpus=$((gpus + 1)) ;; esac
done
[ "$gpus" -gt 0 ] || missing+=("no NVIDIA GPU (no display controller of vendor 0x10de in $sys/bus/pci/devices)")
release=
[ -r "$proc/driver/nvidia/version" ] &&
    release=$(awk 'NR == 1 { for (i = 1; i <= NF; i++) if ($i ~ /^[0-9]+\.[0-9]+(\.[0-9]+)?$/) { print $i; exit } }' "$proc/driver/nvidia/version")
[ -n "$release" ] || missing+=("no NVIDIA driver loaded (no $proc/driver/nvidia/version; install the driver, modprobe nvidia)")
[ -e "$dev/nvidiactl" ] || missing+=("no $dev/nvidiactl (the driver's nodes: run nvidia-smi once, or nvidia-modprobe -c 0)")
if [ ${#missing[@]} -gt 0 ]; then
    msg=$(printf '%s; ' "${missing[@]}")
    fail "this machine cannot run the GPU device check: ${msg%; }"
fi
say "$gpus NVIDIA GPU(s), driver $release"
[ "$(id -u)" -eq 0 ] || fail "must run as root (loop mount, runc)"

# 2. The tools that travel with the check.
if [ -z "$flower_init" ]; then
    for f in "$here/flower-init" "$here/../../build/flower-init" "$(command -v flower-init 2>/dev/null)"; do
        [ -n "$f" ] && [ -x "$f" ] && { flower_init=$f; break; }
    done
fi
[ -n "$flower_init" ] && [ -x "$flower_init" ] || fail "no flower-init: give --flower-init PATH (build/flower-init, static)"
"$flower_init" version >/dev/null 2>&1 || fail "$flower_init does not run here"
if [ -z "$bundle_only" ]; then
    if [ -z "$runc" ]; then
        for f in "$here/runc" "$(command -v runc 2>/dev/null)"; do
            [ -n "$f" ] && [ -x "$f" ] && { runc=$f; break; }
        done
    fi
    [ -n "$runc" ] && [ -x "$runc" ] || fail "no runc: give --runc PATH (docs/gpu.md, Device check: what travels)"
    # Debian's runc needs glibc 2.34+ and libseccomp.so.2 (systemd's distributions have it).
    rv=$("$runc" --version 2>&1) || fail "$runc does not run here: $rv"
    say "$("$flower_init" version), $(echo "$rv" | head -n 1)"
fi

# 3. nvidia-uvm, which CUDA needs and a host loads only on demand (the VM's boot loads it too).
if [ ! -d "$sys/module/nvidia_uvm" ]; then
    if command -v nvidia-modprobe >/dev/null 2>&1 && nvidia-modprobe -u -c 0; then :;
    elif modprobe nvidia-uvm; then :;
    else fail "nvidia-uvm is not loaded and neither nvidia-modprobe -u nor modprobe nvidia-uvm loaded it"; fi
    [ -d "$sys/module/nvidia_uvm" ] || fail "nvidia-uvm is still not loaded"
    say "loaded nvidia-uvm"
fi

work=$(mktemp -d "${TMPDIR:-/var/tmp}/fi-device-check.XXXXXX") || fail "cannot make a work directory"
id=device-check-$$
mounted= ran=
cgroup_parent=/sys/fs/cgroup/flower-init
[ -d "$cgroup_parent" ] && cgroup_existed=1 || cgroup_existed=
cleanup() {
    local rc=$?
    trap - EXIT INT TERM HUP
    if [ -n "$ran" ]; then
        "$runc" --root "$work/runc" delete --force "$id" >/dev/null 2>&1 || true
        [ -n "$cgroup_existed" ] || rmdir "$cgroup_parent" 2>/dev/null || true
    fi
    if [ -n "$mounted" ]; then
        umount "$mounted" 2>/dev/null || umount -l "$mounted" || echo "device-check: could not unmount $mounted" >&2
    fi
    if [ -n "$keep" ] || [ -n "$bundle_only" ]; then
        echo "device-check: kept $work${mounted:+ (the image is unmounted again: mount it on $mounted to run the bundle)}"
    elif ! grep -qs " $work/" /proc/mounts; then
        rm -rf "$work"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'exit 129' HUP

# 4. The host's driver userspace, laid out like the image's /opt/nvidia-driver: lib/ with the
# files of exactly release $release and their soname links, bin/nvidia-smi, driver.json.
drv=$work/nvidia-driver
mkdir -p "$drv/lib" "$drv/bin"
if [ -n "${FI_DEVICE_CHECK_LIBDIRS:-}" ]; then
    IFS=: read -r -a libdirs <<< "$FI_DEVICE_CHECK_LIBDIRS"
else
    libdirs=()
    while read -r p; do libdirs+=("$(dirname "$p")"); done < <(ldconfig -p 2>/dev/null | awk '/(libcuda|libnvidia-ml)\.so\.1 .*x86-64/ {print $NF}')
    libdirs+=(/usr/lib/x86_64-linux-gnu /usr/lib/x86_64-linux-gnu/nvidia/current /usr/lib64 /usr/lib /usr/local/nvidia/lib64 /usr/local/lib)
fi
# $1: the soname (libcuda.so.1); prints the real file of release $release behind it.
find_lib() {
    local d f
    for d in "${libdirs[@]}"; do
        f=$d/$1
        [ -e "$f" ] || continue
        f=$(readlink -f "$f")
        [ "$(basename "$f")" = "${1%%.so.*}.so.$release" ] && { echo "$f"; return 0; }
    done
    return 1
}
lacking=()
for so in libcuda.so.1 libnvidia-ml.so.1 libnvidia-ptxjitcompiler.so.1 libnvidia-nvvm.so.4; do
    if f=$(find_lib "$so"); then
        cp "$f" "$drv/lib/" && ln -s "$(basename "$f")" "$drv/lib/$so" || fail "copy $f into $drv/lib"
    elif [ "$so" != libnvidia-nvvm.so.4 ]; then
        lacking+=("$so")
    fi
done
[ ${#lacking[@]} -eq 0 ] ||
    fail "the host's NVIDIA libraries of release $release were not found: ${lacking[*]} (searched ${libdirs[*]}; ldconfig -p lists what is installed)"
ln -s libcuda.so.1 "$drv/lib/libcuda.so"
# Libraries without a short soname that the PTX JIT and NVVM of recent releases load.
for base in libnvidia-gpucomp libnvidia-pkcs11-openssl3 libnvidia-pkcs11; do
    for d in "${libdirs[@]}"; do
        if [ -f "$d/$base.so.$release" ]; then cp "$d/$base.so.$release" "$drv/lib/"; break; fi
    done
done
smi=$(command -v nvidia-smi 2>/dev/null || true)
[ -n "${FI_DEVICE_CHECK_LIBDIRS:-}" ] && smi=
for d in "${libdirs[@]}"; do [ -z "$smi" ] && [ -x "$d/nvidia-smi" ] && smi=$d/nvidia-smi; done
[ -n "$smi" ] && cp "$(readlink -f "$smi")" "$drv/bin/nvidia-smi"
printf '{"version": "%s", "from": "the host (tests/gpu/device-check.sh)"}\n' "$release" > "$drv/driver.json"
say "driver userspace $release: $(cd "$drv/lib" && ls | tr '\n' ' ')${smi:+, nvidia-smi}"

# 5. The image, read-only.
if [ -d "$image" ]; then
    rootfs=$(cd "$image" && pwd)
else
    rootfs=$work/rootfs
    mkdir -p "$rootfs"
    fstype=squashfs
    case $image in *.erofs) fstype=erofs ;; esac
    mount -t "$fstype" -o ro,loop "$image" "$rootfs" || fail "mount $image ($fstype, loop) on $rootfs"
    mounted=$rootfs
fi
manifest=$rootfs/etc/flower-init/image.json
[ -f "$manifest" ] || fail "$image is not a flower-init image: no /etc/flower-init/image.json"
venv=$(sed -n 's/^ *"venv": *"\([^"]*\)".*/\1/p' "$manifest" | head -n 1)
python=${venv:-/opt/flower/venv}/bin/python3
[ -e "$rootfs$python" ] || [ -L "$rootfs$python" ] || fail "the image has no $python"
say "image $image: $(sed -n 's/^ *"framework": *"\([^"]*\)".*/\1/p' "$manifest" | head -n 1), venv ${venv:-?}"

# 6. What runs in the container: one line "DEVICE-CHECK {json}", or "DEVICE-CHECK-FAIL reason"
# and exit 1. argv[1]: the host's driver release, which nvidia-smi in the container must say.
read -r -d '' check <<'PY'
import json, math, os, subprocess, sys, time

t_start = time.perf_counter()


def fail(why):
    print("DEVICE-CHECK-FAIL " + why, flush=True)
    sys.exit(1)


want = sys.argv[1] if len(sys.argv) > 1 else None
names = ("NVIDIA_VISIBLE_DEVICES", "CUDA_VISIBLE_DEVICES", "CUDA_DEVICE_ORDER", "LD_LIBRARY_PATH",
         "FL_GPU_AVAILABLE", "FL_GPU_MEMORY_FRACTION", "FL_ML_FRAMEWORK")
env = {k: os.environ.get(k) for k in names}
nodes = sorted(n for n in os.listdir("/dev") if n.startswith("nvidia"))
if env["FL_GPU_AVAILABLE"] != "YES":
    fail(f"FL_GPU_AVAILABLE={env['FL_GPU_AVAILABLE']!r} in the container, not YES")
try:
    import torch
except Exception as e:
    fail(f"import torch: {e!r}")
import_s = time.perf_counter() - t_start
try:
    torch.cuda.init()
except Exception as e:
    fail(f"CUDA did not initialise: {e} (nodes in /dev: {nodes}, LD_LIBRARY_PATH={env['LD_LIBRARY_PATH']})")
if not torch.cuda.is_available():
    fail(f"torch.cuda.is_available() is False (nodes in /dev: {nodes})")
count = torch.cuda.device_count()
name = torch.cuda.get_device_name(0)
cap = torch.cuda.get_device_capability(0)
# What the app does with FL_GPU_MEMORY_FRACTION.
torch.cuda.set_per_process_memory_fraction(float(env["FL_GPU_MEMORY_FRACTION"] or 1), 0)

driver = None
smi = "/usr/local/nvidia/bin/nvidia-smi"
if os.path.exists(smi):
    try:
        r = subprocess.run([smi, "--query-gpu=driver_version", "--format=csv,noheader"], capture_output=True, text=True, timeout=60)
    except Exception as e:
        fail(f"nvidia-smi in the container: {e!r}")
    if r.returncode != 0:
        fail(f"nvidia-smi in the container: exit {r.returncode}: {(r.stdout + r.stderr).strip()[-300:]}")
    driver = r.stdout.strip().splitlines()[0].strip()
    if want and driver != want:
        fail(f"nvidia-smi in the container says driver {driver}, the host's module is {want}")

# One training step of a small CNN (cuDNN convolution, cuBLAS linear layer, SGD) on the GPU,
# then a second one, timed without the first's warm-up.
dev = torch.device("cuda", 0)
torch.manual_seed(0)
model = torch.nn.Sequential(
    torch.nn.Conv2d(1, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
    torch.nn.Flatten(), torch.nn.Linear(8 * 14 * 14, 10)).to(dev)
opt = torch.optim.SGD(model.parameters(), lr=0.05)
x = torch.randn(64, 1, 28, 28, device=dev)
y = torch.randint(0, 10, (64,), device=dev)
before = [p.detach().clone() for p in model.parameters()]


def step():
    opt.zero_grad(set_to_none=True)
    loss = torch.nn.functional.cross_entropy(model(x), y)
    loss.backward()
    opt.step()
    torch.cuda.synchronize(dev)
    return loss.item()


try:
    t = time.perf_counter(); loss0 = step(); first_s = time.perf_counter() - t
    t = time.perf_counter(); loss1 = step(); step_s = time.perf_counter() - t
except Exception as e:
    fail(f"training step on {name}: {e!r}")
if not all(p.is_cuda for p in model.parameters()):
    fail("the model's parameters are not on the GPU")
if not (math.isfinite(loss0) and math.isfinite(loss1)):
    fail(f"loss is not finite: {loss0}, {loss1}")
same = sum(torch.equal(b, p.detach()) for b, p in zip(before, model.parameters()))
if same:
    fail(f"{same} of {len(before)} parameter tensors unchanged by the optimizer step")
if not loss1 < loss0:
    fail(f"the loss did not fall on the same batch: {loss0:.4f} then {loss1:.4f}")
try:
    cuda_driver = torch._C._cuda_getDriverVersion()
except Exception:
    cuda_driver = None
print("DEVICE-CHECK " + json.dumps({
    "ok": True, "device": name, "device_count": count, "capability": f"{cap[0]}.{cap[1]}",
    "driver_version": driver, "cuda_driver_api": cuda_driver, "torch": torch.__version__,
    "torch_cuda": torch.version.cuda, "cudnn": torch.backends.cudnn.version(),
    "loss": [round(loss0, 4), round(loss1, 4)], "import_s": round(import_s, 2),
    "first_step_s": round(first_s, 3), "step_s": round(step_s, 4), "nodes": nodes, "env": env}), flush=True)
PY

# 7. The bundle: flower-init's own GPU step and container spec, with this host's GPUs.
roots=()
[ -n "$root" ] && roots=(--sysfs "$sys" --procfs "$proc" --devfs "$dev")
"$flower_init" gpu bundle --rootfs "$rootfs" --out "$work/bundle" --driver-dir "$drv" --devices "$devices" \
    --id "$id" "${roots[@]}" -- "$python" -c "$check" "$release" || fail "flower-init gpu bundle refused (above)"
if [ -n "$bundle_only" ]; then
    say "bundle written: $work/bundle/config.json (not run: --bundle-only)"
    exit 0
fi

# 8. Run it, under what is left of the deadline.
left=$((FI_DEVICE_CHECK_TIMED - SECONDS - 25))
[ "$left" -gt 30 ] || fail "no time left to run the container"
say "runc run $id (at most ${left}s)"
ran=1
timeout --kill-after=10 "$left" "$runc" --root "$work/runc" run --bundle "$work/bundle" "$id" \
    < /dev/null 2>&1 | tee "$work/output" | sed -u '/^DEVICE-CHECK /d; s/^/  container: /'
rc=${PIPESTATUS[0]}
result=$(sed -n 's/^DEVICE-CHECK //p' "$work/output" | tail -n 1)
reason=$(sed -n 's/^DEVICE-CHECK-FAIL //p' "$work/output" | tail -n 1)
if [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then
    fail "the container did not finish within ${left}s"
elif [ -n "$reason" ]; then
    fail "$reason"
elif [ "$rc" -ne 0 ] || [ -z "$result" ]; then
    fail "the container exited $rc without a result: $(grep -v '^$' "$work/output" | tail -n 3 | tr '\n' ' ')"
fi
echo "$result"
say "PASS: $(echo "$result" | sed -n 's/.*"device": "\([^"]*\)".*/\1/p'), driver $release, one training step on the GPU"
