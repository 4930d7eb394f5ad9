#!/bin/sh
# Register the Flower appliance in OpenNebula: the disk image (oneimage create), the VM templates
# of both roles (onetemplate create) and the OneFlow service template (oneflow-template create),
# each service role pointing at its VM template's ID. Run it on the front-end as the user who will
# own the objects, with this directory and ../oneflow next to it (docs/appliance.md).
# --arch aarch64 (the edge, docs/edge.md): the arm64 disk and its SuperNode VM template, and a
# service whose SuperLink is the x86_64 one registered before (import the x86_64 disk first).
#
# An object whose name exists already is reused, not created again, so a second run after a
# failure finishes the job. Plain POSIX sh; needs only the OpenNebula CLI.
set -eu

usage() {
    cat <<'EOF'
usage: import.sh -d DATASTORE [--framework sklearn|pytorch|tensorflow] [--firmware BIOS|UEFI|PATH]
                 [--arch x86_64|aarch64] [--one6] IMAGE
IMAGE: the flower-FRAMEWORK.qcow2 (a path oned may read: under the datastore's SAFE_DIRS, /var/tmp
by default) or an http(s) URL.
-d: the image datastore (ID or name). --framework: the image's framework (default: from IMAGE's
name). --firmware: OS/FIRMWARE of the VM templates: BIOS (default), UEFI (OpenNebula 7.0+) or a
UEFI firmware path listed in OVMF_UEFIS (6.x). --one6: register oneflow/flower-6.json (6.x format).
--arch aarch64: IMAGE is the arm64 disk (build/aarch64/appliance): registers it as
flower-FRAMEWORK-aarch64 with its SuperNode VM template (OS ARCH aarch64, MACHINE virt, firmware
/usr/share/AAVMF/AAVMF_CODE.fd unless --firmware says UEFI or another path; BIOS is refused) and a
service whose SuperLink role is the x86_64 template flower-FRAMEWORK-superlink (import that first).
EOF
}

here=$(cd "$(dirname "$0")" && pwd)
oneflow_dir=${FLOWER_ONEFLOW_DIR:-$here/../oneflow}
datastore='' framework='' firmware='' arch=x86_64 one6=no image=''
while [ $# -gt 0 ]; do
    case $1 in
        -d|--datastore) datastore=${2:?-d needs a datastore}; shift 2 ;;
        --framework) framework=${2:?--framework needs a value}; shift 2 ;;
        --firmware) firmware=${2:?--firmware needs a value}; shift 2 ;;
        --arch) arch=${2:?--arch needs a value}; shift 2 ;;
        --one6) one6=yes; shift ;;
        -h|--help) usage; exit 0 ;;
        -*) echo "import.sh: unknown option $1" >&2; usage >&2; exit 2 ;;
        *) [ -z "$image" ] || { echo "import.sh: one IMAGE only (got $image and $1)" >&2; exit 2; }
           image=$1; shift ;;
    esac
done
[ -n "$image" ] || { echo "import.sh: IMAGE is required" >&2; usage >&2; exit 2; }
[ -n "$datastore" ] || { echo "import.sh: -d DATASTORE is required (oneimage create needs it)" >&2; exit 2; }
if [ -z "$framework" ]; then
    framework=$(basename "$image" .qcow2); framework=${framework#flower-}
fi
case $framework in
    sklearn|pytorch|tensorflow) ;;
    *) echo "import.sh: framework '$framework' must be sklearn, pytorch or tensorflow (--framework)" >&2; exit 2 ;;
esac
case $firmware in
    *'"'*|*'\'*) echo "import.sh: --firmware must not contain quotes or backslashes" >&2; exit 2 ;;
esac
case $arch in
    x86_64) suffix='' roles='superlink supernode' firmware=${firmware:-BIOS} ;;
    aarch64|arm64)
        arch=aarch64 suffix=-aarch64 roles=supernode
        case $firmware in
            [Bb][Ii][Oo][Ss]) echo "import.sh: --arch aarch64: aarch64 VMs boot with UEFI only (the arm64 disk has no BIOS loader): --firmware UEFI or an AAVMF path" >&2; exit 2 ;;
        esac ;;
    *) echo "import.sh: --arch '$arch' must be x86_64 or aarch64" >&2; exit 2 ;;
esac
case $image in
    http://*|https://*) ;;
    *) [ -r "$image" ] || { echo "import.sh: cannot read $image" >&2; exit 2; } ;;
esac
if [ "$one6" = yes ]; then service_file=$oneflow_dir/flower-6.json; id_key=vm_template
else service_file=$oneflow_dir/flower-7.json; id_key=template_id; fi
for f in $(for r in $roles; do echo "$here/flower-$r$suffix.tpl"; done) "$service_file"; do
    [ -r "$f" ] || { echo "import.sh: missing $f" >&2; exit 2; }
done

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# The ID in a CLI answer: "ID: 12" (create) or the first "ID" of `show -j` JSON.
id_of() {
    sed -n -e 's/^ID: *\([0-9][0-9]*\)$/\1/p' -e 's/.*"ID": *"\{0,1\}\([0-9][0-9]*\)"\{0,1\}.*/\1/p' | head -n 1
}

# ensure KIND NAME CREATE-COMMAND...: the ID of the object NAME, created when absent.
ensure() {
    kind=$1 name=$2; shift 2
    if out=$("$kind" show -j "$name" 2>/dev/null) && id=$(printf '%s\n' "$out" | id_of) && [ -n "$id" ]; then
        echo "$kind: '$name' exists, ID $id (reused)" >&2
    else
        out=$("$@") || { echo "import.sh: $kind create '$name' failed: $out" >&2; exit 1; }
        id=$(printf '%s\n' "$out" | id_of)
        [ -n "$id" ] || { echo "import.sh: no ID in the answer of $kind create: $out" >&2; exit 1; }
        echo "$kind: '$name' created, ID $id" >&2
    fi
    echo "$id"
}

# 1. The disk. DEV_PREFIX vd: a virtio disk. Non-persistent: every VM gets its own copy (the
# state partition on it survives the VM's reboots, not its termination).
image_name=flower-$framework$suffix
cat >"$tmp/image.tpl" <<EOF
NAME = "$image_name"
PATH = "$image"
TYPE = "OS"
DRIVER = "qcow2"
FORMAT = "qcow2"
DEV_PREFIX = "vd"
DESCRIPTION = "Flower federated learning appliance disk ($framework$([ -z "$suffix" ] || echo ", $arch")), run by flower-init"
EOF
image_id=$(ensure oneimage "$image_name" oneimage create -d "$datastore" "$tmp/image.tpl")

# 2. The VM templates: the committed ones with this framework's image and the firmware (aarch64:
# the template's AAVMF path unless --firmware names another).
for role in $roles; do
    sed -e "s/\"flower-sklearn$suffix/\"$image_name/" \
        -e "${firmware:+s|^  FIRMWARE = \".*\"|  FIRMWARE = \"$firmware\"|}" \
        "$here/flower-$role$suffix.tpl" >"$tmp/$role.tpl"
    id=$(ensure onetemplate "$image_name-$role" onetemplate create "$tmp/$role.tpl")
    eval "${role}_id=\$id"
done
if [ "$arch" = aarch64 ]; then
    # The SuperLink runs on x86_64: the template the x86_64 import registered.
    sl_name=flower-$framework-superlink
    if out=$(onetemplate show -j "$sl_name" 2>/dev/null) && superlink_id=$(printf '%s\n' "$out" | id_of) && [ -n "$superlink_id" ]; then
        echo "onetemplate: '$sl_name' exists, ID $superlink_id (the x86_64 SuperLink)" >&2
    else
        echo "import.sh: --arch aarch64 needs the x86_64 SuperLink template '$sl_name': import the x86_64 disk first (import.sh -d $datastore flower-$framework.qcow2)" >&2
        exit 1
    fi
fi

# 3. The service template: its name, and each role's template ID (the committed file has 0; a
# role's "name" comes before its ID in the file, as serde_json sorts the keys).
service_name="Flower federated learning ($framework$([ -z "$suffix" ] || echo ", $arch SuperNodes"))"
awk -v sl="$superlink_id" -v sn="$supernode_id" -v key="$id_key" -v name="$service_name" '
    /^  "name": "Flower federated learning"/ { sub(/"Flower federated learning"/, "\"" name "\"") }
    /"name": "superlink"/ { role = sl }
    /"name": "supernode"/ { role = sn }
    $0 ~ "\"" key "\": 0" { if (role == "") { print "no role before " key > "/dev/stderr"; exit 1 }
                            sub("\"" key "\": 0", "\"" key "\": " role); role = "" }
    { print }' "$service_file" >"$tmp/service.json"
service_id=$(ensure oneflow-template "$service_name" oneflow-template create "$tmp/service.json")

cat <<EOF
image $image_name: ID $image_id
VM template flower-$framework-superlink: ID $superlink_id
VM template $image_name-supernode: ID $supernode_id
service template "$service_name": ID $service_id
Wait until \`oneimage show $image_id\` says READY, then: oneflow-template instantiate $service_id
EOF
