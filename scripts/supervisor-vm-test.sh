#!/usr/bin/env bash
# Run acpi::tests::vm_power_button_is_a_shutdown_request on a real Debian kernel under qemu:
# button.ko loaded, the supervisor loop watching the acpi_event genetlink group, and the host
# pressing the ACPI power button with `system_powerdown` on qemu's monitor (what libvirt and
# `onevm terminate` do). `make supervisor-vm-test`.
#
# KERNEL_DIR: a directory holding vmlinuz (or boot/vmlinuz-*) and lib/modules/<version>/
# (an extracted linux-image-*-amd64 package); default build/kernel, fetched with
# `apt-get download` + `dpkg -x` when missing.
set -euo pipefail
cd "$(dirname "$0")/.."
work=build/supervisor-vm
kdir=${KERNEL_DIR:-build/kernel}
if [ ! -e "$kdir/vmlinuz" ] && ! ls "$kdir"/boot/vmlinuz-* >/dev/null 2>&1; then
    echo "supervisor-vm-test: fetching a Debian kernel into $kdir"
    pkg=$(apt-cache depends linux-image-amd64 | awk '/Depends: linux-image-/{print $2; exit}')
    mkdir -p "$kdir" && (cd "$kdir" && apt-get download "$pkg" && dpkg -x ./*.deb . && rm -f ./*.deb)
fi
vmlinuz=$(readlink -f "$kdir/vmlinuz" 2>/dev/null || true)
[ -f "$vmlinuz" ] || vmlinuz=$(ls "$kdir"/boot/vmlinuz-* | head -1)
moddir=$(ls -d "$kdir"/lib/modules/* | head -1)

# The unit-test binary, static (musl), debug profile (quicker to build; behaviour is the same).
bin=$(cargo test --locked --target x86_64-unknown-linux-musl --lib --no-run --message-format=json 2>/dev/null \
    | sed -n 's/.*"executable":"\([^"]*\)".*/\1/p' | tail -1)
[ -x "$bin" ] || { echo "supervisor-vm-test: no test binary"; exit 1; }

rm -rf "$work" && mkdir -p "$work"/root/{bin,mod,proc,sys,dev,tmp}
file -L /bin/busybox | grep -q "statically linked" || { echo "supervisor-vm-test: /bin/busybox is not static (install busybox-static)"; exit 1; }
cp /bin/busybox "$work/root/bin/busybox"
cp "$bin" "$work/root/bin/sv-test"
f=$(ls "$moddir"/kernel/drivers/acpi/button.ko* | head -1)
case "$f" in
    *.xz) xz -dc "$f" > "$work/root/mod/button.ko" ;;
    *.zst) zstd -qdc "$f" > "$work/root/mod/button.ko" ;;
    *) cp "$f" "$work/root/mod/button.ko" ;;
esac
cat > "$work/root/init" <<'INIT'
#!/bin/busybox sh
/bin/busybox mount -t proc proc /proc
/bin/busybox mount -t sysfs sys /sys
/bin/busybox mount -t devtmpfs dev /dev
/bin/busybox mount -t tmpfs tmp /tmp
/bin/busybox insmod /mod/button.ko
FI_ACPI_VM=1 /bin/sv-test --ignored --exact acpi::tests::vm_power_button_is_a_shutdown_request --nocapture --test-threads=1
echo "ACPI-VM-RESULT=$?"
/bin/busybox poweroff -f
INIT
chmod +x "$work/root/init"
(cd "$work/root" && find . | cpio -o -H newc --quiet | gzip -1) > "$work/initrd.gz"

# TCG: /dev/kvm is not usable on every build machine. -M pc has ACPI and its power button.
log="$work/console.log" mon="$work/monitor.sock"
timeout 300 qemu-system-x86_64 -accel tcg -cpu max -m 512 -M pc -nographic -no-reboot -net none \
    -monitor "unix:$mon,server,nowait" \
    -kernel "$vmlinuz" -initrd "$work/initrd.gz" -append "console=ttyS0 panic=-1 quiet" \
    </dev/null > "$log" 2>&1 &
qemu=$!
for _ in $(seq 240); do grep -q "ACPI-VM-READY" "$log" && break; kill -0 $qemu 2>/dev/null || break; sleep 1; done
if grep -q "ACPI-VM-READY" "$log"; then
    echo "supervisor-vm-test: guest listening; pressing the power button (system_powerdown)"
    python3 - "$mon" <<'PY'
import socket, sys, time
s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1]); time.sleep(0.5)
s.sendall(b"system_powerdown\n"); time.sleep(0.5); s.close()
PY
fi
wait $qemu || true
grep -E "ACPI-VM-|test acpi|panicked" "$log" || true
grep -q "ACPI-VM-RESULT=0" "$log" || { echo "supervisor-vm-test: FAILED (console: $log)"; exit 1; }
echo "supervisor-vm-test: passed"
