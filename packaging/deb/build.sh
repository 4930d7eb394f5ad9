#!/bin/sh
# Build the flower-init Debian package without root: dpkg-deb --root-owner-group makes every
# file root:root in the archive. packaging/deb/build.sh BINARY VERSION OUT.deb
set -eu
[ $# -eq 3 ] || { echo "usage: $0 BINARY VERSION OUT.deb" >&2; exit 2; }
bin=$1 version=$2 out=$3
here=$(cd "$(dirname "$0")" && pwd)
stage=$(mktemp -d)
chmod 0755 "$stage"
trap 'rm -rf "$stage"' EXIT
install -D -m 0755 "$bin" "$stage/usr/sbin/flower-init"
install -D -m 0644 "$here/flower-init.service" "$stage/usr/lib/systemd/system/flower-init.service"
install -D -m 0644 "$here/../../docs/deb.md" "$stage/usr/share/doc/flower-init/README.md"
install -D -m 0644 "$here/copyright" "$stage/usr/share/doc/flower-init/copyright"
install -D -m 0644 "$here/../../initramfs/modules.txt" "$stage/usr/share/doc/flower-init/modules.txt"
mkdir -p "$stage/DEBIAN"
size=$(du -sk --exclude=DEBIAN "$stage" | cut -f1)
cat >"$stage/DEBIAN/control" <<CTL
Package: flower-init
Version: $version
Architecture: amd64
Maintainer: flower-init maintainers <flower-init@localhost>
Installed-Size: $size
Depends: runc
Section: admin
Priority: optional
Homepage: https://flower.ai
Description: Flower federated learning appliance init for OpenNebula VMs
 flower-init reads the OpenNebula context, starts a Flower SuperLink or
 SuperNode with runc, publishes it to OneGate and supervises it. This
 package runs it as a systemd service (flower-init.service, not enabled on
 install) for images that keep their own init.
CTL
mkdir -p "$(dirname "$out")"
dpkg-deb --root-owner-group -Zxz --build "$stage" "$out"
