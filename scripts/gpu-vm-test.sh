#!/usr/bin/env bash
# Run gpu::tests::vm_moves_a_real_display_function_and_its_audio_to_vfio on a real Debian kernel
# under qemu: q35 with a virtual IOMMU (intel-iommu, intel_iommu=on), an emulated ATI VGA
# (vendor AMD, 1002:5046) and an HD-audio controller as functions 0 and 1 of one slot (so one
# IOMMU group), both bound to pci-stub first, so the driver_override / unbind / drivers_probe
# writes, the driver-link check and /dev/vfio/<group> all meet the real kernel; QEMU's standard
# VGA (1234:1111) must be ignored. `make gpu-vm-test`.
#
# KERNEL_DIR: a directory holding vmlinuz (or boot/vmlinuz-*) and lib/modules/<version>/
# (an extracted linux-image-*-amd64 package or a Debian rootfs); default build/kernel,
# fetched with `apt-get download` + `dpkg -x` when missing.
set -euo pipefail
cd "$(dirname "$0")/.."
work=build/gpu-vm
kdir=${KERNEL_DIR:-build/kernel}
if [ ! -e "$kdir/vmlinuz" ] && ! ls "$kdir"/boot/vmlinuz-* >/dev/null 2>&1; then
    echo "gpu-vm-test: fetching a Debian kernel into $kdir"
    pkg=$(apt-cache depends linux-image-amd64 | awk '/Depends: linux-image-/{print $2; exit}')
    mkdir -p "$kdir" && (cd "$kdir" && apt-get download "$pkg" && dpkg -x ./*.deb . && rm -f ./*.deb)
fi
vmlinuz=$(readlink -f "$kdir/vmlinuz" 2>/dev/null || true)
[ -f "$vmlinuz" ] || vmlinuz=$(ls "$kdir"/boot/vmlinuz-* | head -1)
moddir=$(ls -d "$kdir"/lib/modules/* | head -1)

# The test binary, static (musl), built like the real one.
bin=$(cargo test --locked --release --target x86_64-unknown-linux-musl --lib --no-run --message-format=json 2>/dev/null \
    | sed -n 's/.*"executable":"\([^"]*\)".*/\1/p' | tail -1)
[ -x "$bin" ] || { echo "gpu-vm-test: no test binary"; exit 1; }

rm -rf "$work" && mkdir -p "$work"/root/{bin,mod,proc,sys,dev,run,tmp}
file -L /bin/busybox | grep -q "statically linked" || { echo "gpu-vm-test: /bin/busybox is not static (install busybox-static)"; exit 1; }
cp /bin/busybox "$work/root/bin/busybox"
cp "$bin" "$work/root/bin/gpu-test"
mods="virt/lib/irqbypass drivers/vfio/vfio drivers/vfio/vfio_virqfd drivers/vfio/vfio_iommu_type1
      drivers/vfio/pci/vfio-pci-core drivers/vfio/pci/vfio-pci drivers/pci/pci-stub"
for m in $mods; do
    f=$(ls "$moddir/kernel/$m".ko* | head -1)
    case "$f" in
        *.xz) xz -dc "$f" > "$work/root/mod/$(basename "$m").ko" ;;
        *.zst) zstd -qdc "$f" > "$work/root/mod/$(basename "$m").ko" ;;
        *) cp "$f" "$work/root/mod/" ;;
    esac
done
cat > "$work/root/init" <<'INIT'
#!/bin/busybox sh
/bin/busybox mount -t proc proc /proc
/bin/busybox mount -t sysfs sys /sys
/bin/busybox mount -t devtmpfs dev /dev
/bin/busybox mount -t tmpfs run /run
/bin/busybox mount -t tmpfs tmp /tmp
# Hold both functions with pci-stub first, as a host driver would, so the unbind step runs.
/bin/busybox insmod /mod/pci-stub.ko ids=1002:5046,8086:2668
for m in irqbypass vfio vfio_virqfd vfio_iommu_type1 vfio-pci-core vfio-pci; do /bin/busybox insmod /mod/$m.ko; done
FI_GPU_VM=1 /bin/gpu-test --ignored --exact gpu::tests::vm_moves_a_real_display_function_and_its_audio_to_vfio --nocapture --test-threads=1
echo "GPU-VM-RESULT=$?"
/bin/busybox poweroff -f
INIT
chmod +x "$work/root/init"
(cd "$work/root" && find . | cpio -o -H newc --quiet | gzip -1) > "$work/initrd.gz"

# TCG: /dev/kvm is not usable on every build machine. intel-iommu must come before the devices.
timeout 300 qemu-system-x86_64 -accel tcg -cpu max -m 512 -nographic -no-reboot -machine q35 \
    -device intel-iommu -device VGA,bus=pcie.0,addr=02.0 \
    -device ati-vga,bus=pcie.0,addr=05.0,multifunction=on \
    -device intel-hda,bus=pcie.0,addr=05.1 \
    -kernel "$vmlinuz" -initrd "$work/initrd.gz" -append "console=ttyS0 intel_iommu=on panic=-1 quiet" \
    </dev/null > "$work/console.log" 2>&1 || true
sed -n '/^GPUs in/,/^Nothing was changed/p' "$work/console.log"
grep -E "gpu-vm:|test gpu|panicked|GPU-VM-RESULT" "$work/console.log" || true
grep -q "GPU-VM-RESULT=0" "$work/console.log" || { echo "gpu-vm-test: FAILED (console: $work/console.log)"; exit 1; }
echo "gpu-vm-test: passed"
