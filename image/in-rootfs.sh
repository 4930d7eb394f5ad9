#!/bin/sh
# Runs inside the chroot of the rootfs being built (image/build.sh step 4), with the rootfs's own
# python3. Arguments: FRAMEWORK USE_CASES_JSON BUILD_DATE REQUIREMENTS...
# /tmp/build holds this script, manifest.py, the requirement files, the app wheel and wheels/.
set -eu
framework=$1; use_cases=$2; build_date=$3; shift 3
venv=/opt/flower/venv
b=/tmp/build
pip="$venv/bin/python -m pip -q --disable-pip-version-check --no-cache-dir --no-input"
# COMPILE=host (image/build.sh, for another architecture's image): no bytecode here, where
# every Python instruction is emulated; the build machine's python3 of the same version writes
# it afterwards (bytecode does not depend on the architecture).
nocompile=; [ "${COMPILE:-here}" = host ] && nocompile=--no-compile

# The venv: pinned Flower dependencies + framework, then flwr itself without its deps (it pins a
# certifi newer than PyPI serves here; python/install.sh), then the app, also without deps so
# nothing is resolved against an index. pip leaves afterwards: nothing installs at run time.
python3 -m venv "$venv"
reqs=""; for r in "$@"; do reqs="$reqs -r $b/$r"; done
# shellcheck disable=SC2086
$pip install $nocompile --no-index --no-deps --find-links "$b/wheels" $reqs
$pip install $nocompile --no-index --no-deps --find-links "$b/wheels" "$(cat $b/flwr-version.txt)"
$pip install $nocompile --no-index --no-deps "$b"/*.whl
# Dependency check; the one known mismatch is flwr's certifi pin (see above).
problems=$($venv/bin/python -m pip --disable-pip-version-check check 2>&1 | grep -v '^flwr .* has requirement certifi' | grep -v '^No broken' || true)
[ -z "$problems" ] || { echo "in-rootfs: pip check: $problems"; exit 1; }
$venv/bin/python -m pip uninstall -q -y pip

# What no node runs (issue #18): the wheels' C/C++ headers (tensorflow/include alone is 287 MB;
# they serve compiling extensions against the package), static libraries, and the packages' own
# test suites (`tests` directories; `test` ones stay: tf.test is an API module that importing
# tensorflow needs). Licenses under *.dist-info stay. Measured in BENCHMARKS.md ("Sizes").
before=$(du -sb "$venv" | cut -f1)
find "$venv/lib" -depth -path '*/site-packages/*' -not -path '*.dist-info/*' -type d \( -name include -o -name tests \) \
    -exec rm -rf {} +
find "$venv/lib" -path '*/site-packages/*' -type f -name '*.a' -delete
echo "in-rootfs: $(( (before - $(du -sb "$venv" | cut -f1)) / 1048576 )) MiB of headers, static libraries and test suites left out of the venv"

# Warm app start (docs/app.md "How apps start"): the zygote, its launcher and the shims named
# like Flower's app commands (first on PATH once the launcher runs), and the task-window hook
# in the venv's site-packages (a .pth line: Debian's own sitecustomize shadows a venv's).
a=/opt/flower/appstart
mkdir -p "$a/bin"
install -m 0644 "$b/appstart/zygote.py" "$a/zygote.py"
install -m 0755 "$b/appstart/shim.py" "$a/shim.py"
install -m 0755 "$b/appstart/start.sh" "$a/flower-with-zygote"
ln -s ../shim.py "$a/bin/flwr-serverapp"
ln -s ../shim.py "$a/bin/flwr-clientapp"
site=$($venv/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
install -m 0644 "$b/appstart/flower_init_task_window.py" "$b/appstart/flower_init_task_window.pth" "$site/"
$venv/bin/python -c 'import flwr.supercore.corestate.sql_corestate as s; assert s.HEARTBEAT_DEFAULT_INTERVAL == 120, s.HEARTBEAT_DEFAULT_INTERVAL'
$venv/bin/python -c 'import flwr.supercore.sql_mixin as m; assert dict(m.SQLITE_PRAGMAS)["busy_timeout"] == "60000", m.SQLITE_PRAGMAS'
$venv/bin/python -c 'import flwr.supernode.start_client_internal as s; assert s.FLOWER_INIT_EXITS'

# User and group of Flower's own images: app, 49999, home /app.
groupadd --gid 49999 app
useradd --uid 49999 --gid 49999 --home-dir /app --no-create-home --shell /usr/sbin/nologin app

# Mountpoints: the root is read-only in the VM and in the container, so every directory
# something is mounted on must exist in the image.
#   VM:        /var/lib/flower (state disk), /var/lib/flower-data (data disk), /run, /tmp,
#              /run/flower-init (runtime files: resolv.conf, hosts, bundle)
#   container: /state, /certs, /app (HOME), /app/data, /tmp, /run, and on a GPU SuperNode
#              /usr/local/nvidia/{lib64,bin} (the NVIDIA driver's libraries and nvidia-smi;
#              without them runc fails: "mkdir …/usr/local/nvidia: read-only file system")
mkdir -p /var/lib/flower /var/lib/flower-data /run /tmp /state /certs /app/data /etc/flower-init \
    /usr/local/nvidia/lib64 /usr/local/nvidia/bin
chmod 0755 /var/lib/flower /var/lib/flower-data /state /certs /app /app/data
chmod 1777 /tmp
# resolv.conf and hosts are written at boot by flower-init under /run/flower-init.
rm -f /etc/resolv.conf /etc/hosts /etc/hostname
ln -s /run/flower-init/resolv.conf /etc/resolv.conf
ln -s /run/flower-init/hosts /etc/hosts
ln -s /run/flower-init/hostname /etc/hostname
: > /etc/machine-id

# The bundled app as a FAB, built by Flower's own builder (what `flwr run` would build and
# upload at every submission), so flower-init submits the run itself over the Control API
# (docs/control-api.md). Built before compileall: the FAB holds sources only.
$venv/bin/python -c 'import sys; from pathlib import Path; from flwr.cli.build import build_fab_from_disk; Path(sys.argv[2]).write_bytes(build_fab_from_disk(Path(sys.argv[1])))' \
    /opt/flower/app /opt/flower/app.fab
chmod 0644 /opt/flower/app.fab

# The SuperLink's state database, empty and migrated to this Flower's latest schema by Flower's
# own code (the factories flower-superlink uses). At its first boot on the state disk flower-init
# copies it to FL_DATABASE (src/container/rootfs.rs, seed_state_db), so Flower skips creating
# ~30 tables through its Alembic migrations: 0.3 s natively, seconds under emulation. No row in
# it belongs to any one VM (checked below: only Alembic's version and SQLite's own sequence).
rm -f /opt/flower/superlink-state.db*
$venv/bin/python - /opt/flower/superlink-state.db <<'PY'
import sqlite3, sys
from flwr.superlink.config_loader import get_objectstore_linkstate_factories
from flwr.superlink.federation import NoOpFederationManager
path = sys.argv[1]
get_objectstore_linkstate_factories(path, NoOpFederationManager())[1].state()
db = sqlite3.connect(path)
db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
tables = [n for (n,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
rows = {t: db.execute(f'SELECT count(*) FROM "{t}"').fetchone()[0] for t in tables}
extra = {t: n for t, n in rows.items() if n and t not in ("alembic_version", "sqlite_sequence")}
if extra or not rows.get("alembic_version"):
    sys.exit(f"superlink-state.db: expected empty tables at an Alembic revision, found {rows}")
db.execute("VACUUM")
db.close()
PY
rm -f /opt/flower/superlink-state.db-wal /opt/flower/superlink-state.db-shm
chmod 0644 /opt/flower/superlink-state.db

# Python cannot write bytecode at run time on a read-only root: compile it all now. pip already
# compiled what it installed; this adds Debian's stdlib and the app's source copy.
[ "${COMPILE:-here}" = host ] || python3 -m compileall -q -j0 /usr/lib/python3 /usr/lib/python3.11 /opt/flower >/dev/null

# The manifest flower-init reads (src/image.rs), with sizes measured just before it is written.
rm -rf /var/cache/* /var/log/* /var/lib/apt/lists/* /root/.cache
rootfs_bytes=$(du -sbx --exclude=/tmp/build / | cut -f1)
venv_bytes=$(du -sb "$venv" | cut -f1)
"$venv/bin/python" "$b/manifest.py" --framework "$framework" --use-cases "$use_cases" \
    --build-date "$build_date" --rootfs-bytes "$rootfs_bytes" --venv-bytes "$venv_bytes" \
    --app /opt/flower/app --fab /opt/flower/app.fab --out /etc/flower-init/image.json \
    $( [ -f /opt/nvidia-driver/driver.json ] && echo --nvidia-driver /opt/nvidia-driver )
echo "  $(cat /etc/flower-init/image.json | head -c 300)"
