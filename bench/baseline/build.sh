#!/usr/bin/env bash
# The comparison VM: a conventional Debian 12 + systemd appliance running the same pinned Flower
# (python/), booted with Debian's stock initramfs-tools initrd. Recreated from
# ../shared/research/baseline-systemd-vm.md (same units, probe and qemu flags), with two changes:
# the kernel is the project's pinned Debian kernel package installed *in* the image (so both sides
# boot the same kernel), and Flower is the project's pinned 1.42.0 (the research used 1.41.0).
#   bench/baseline/build.sh KVER    -> build/baseline/appliance.img, vmlinuz, initrd.img
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd); root=$(cd "$here/../.." && pwd)
kver=${1:?kernel version, e.g. 6.1.0-56-amd64}
out=$root/build/baseline; R=$out/rootfs
mkdir -p "$out"
if [ ! -f "$out/.rootfs-$kver" ]; then
    rm -rf "$R"
    mmdebstrap --quiet --variant=minbase \
        --include=systemd-sysv,udev,dbus,kmod,iproute2,python3,python3-venv,ca-certificates,initramfs-tools,linux-image-$kver \
        bookworm "$R" \
        "deb http://deb.debian.org/debian bookworm main" \
        "deb http://deb.debian.org/debian-security bookworm-security main"
    touch "$out/.rootfs-$kver"
fi
# The same pinned Flower venv as the appliance image, installed offline from cached wheels with
# the image's own python (Debian 3.11).
wheels=${WHEELS:-$root/build/wheels}
python3 -m pip download -q --disable-pip-version-check --no-deps --only-binary=:all: -d "$wheels" \
    -r "$root/python/requirements-flwr-deps.txt" "$(cat "$root/python/flwr-version.txt")"
rm -rf "$R/opt/flwr" "$R/tmp/wheels" "$R/tmp/python"
cp -a "$wheels" "$R/tmp/wheels"; cp -a "$root/python" "$R/tmp/python"
unshare -m -p -f --mount-proc="$R/proc" chroot "$R" /bin/sh -c '
  python3 -m venv /opt/flwr &&
  /opt/flwr/bin/pip install -q --no-index --no-deps --find-links /tmp/wheels -r /tmp/python/requirements-flwr-deps.txt &&
  /opt/flwr/bin/pip install -q --no-index --no-deps --find-links /tmp/wheels "$(cat /tmp/python/flwr-version.txt)"'
rm -rf "$R/tmp/wheels" "$R/tmp/python" "$R/root/.cache"
echo appliance > "$R/etc/hostname"
printf '127.0.0.1 localhost\n127.0.1.1 appliance\n' > "$R/etc/hosts"
printf '/dev/vda / ext4 rw,relatime 0 1\n' > "$R/etc/fstab"
chroot "$R" passwd -d root >/dev/null
: > "$R/etc/machine-id"
mkdir -p "$R/etc/systemd/network"
cat > "$R/etc/systemd/network/20-wired.network" <<'NET'
[Match]
Name=en* eth*
[Network]
DHCP=ipv4
NET
install -m 0755 "$here/boot-probe.py" "$R/usr/local/bin/boot-probe.py"
cat > "$R/etc/systemd/system/flower-superlink.service" <<'UNIT'
[Unit]
Description=Flower SuperLink
After=network.target

[Service]
Type=simple
Environment=FLWR_TELEMETRY_ENABLED=0 FLWR_DISABLE_UPDATE_CHECK=1
Environment=PATH=/opt/flwr/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
Environment=HOME=/root
ExecStart=/opt/flwr/bin/flower-superlink --insecure --host 0.0.0.0 --port 8000
Restart=on-failure

[Install]
WantedBy=multi-user.target
UNIT
cat > "$R/etc/systemd/system/boot-probe.service" <<'UNIT'
[Unit]
Description=Harness: wait for SuperLink /health, report, power off
Wants=flower-superlink.service
After=flower-superlink.service

[Service]
Type=simple
ExecStart=/usr/local/bin/boot-probe.py
StandardOutput=journal+console
StandardError=journal+console

[Install]
WantedBy=multi-user.target
UNIT
chroot "$R" systemctl enable systemd-networkd.service flower-superlink.service boot-probe.service >/dev/null 2>&1
cp "$R/boot/vmlinuz-$kver" "$out/vmlinuz"; cp "$R/boot/initrd.img-$kver" "$out/initrd.img"
rm -f "$out/appliance.img"
mkfs.ext4 -q -F -L root -d "$R" "$out/appliance.img" 2000M
ls -l "$out"
