#!/bin/sh
# flower-with-zygote CMD [ARG...]: the Flower container's command (flower-init puts it before
# flower-superlink / flower-supernode when the image has it; docs/app.md "How apps start").
# Starts the app fork server (zygote.py) in the background with the app command this role
# runs preloaded, puts the shims first on PATH, then execs CMD: Flower stays the direct child
# of the container's init (tini), and the zygote dies with the container.
# FLOWER_INIT_APP_START=cold: neither zygote nor shims (every app starts as Flower starts it).
# FLOWER_INIT_ZYGOTE_SOCKET and FLOWER_INIT_ZYGOTE_PYTHON override the socket and interpreter.
here=$(dirname "$(readlink -f "$0")")
case "$1" in
    */flower-superlink|flower-superlink) preload=flwr-serverapp ;;
    */flower-supernode|flower-supernode) preload=flwr-clientapp ;;
    *) preload= ;;
esac
if [ "${FLOWER_INIT_APP_START:-warm}" != cold ] && [ -n "$preload" ]; then
    FLOWER_INIT_ZYGOTE_SOCKET=${FLOWER_INIT_ZYGOTE_SOCKET:-/tmp/flower-init-zygote/apps.sock}
    PATH="$here/bin:$PATH"
    export FLOWER_INIT_ZYGOTE_SOCKET PATH
    # Not niced: the preload and Flower's start share the CPU and end at about the same time
    # either way; niced, READY would come sooner and the run's first app would wait longer for
    # the preload, inside the task-start window. READY's delay is cheaper.
    "${FLOWER_INIT_ZYGOTE_PYTHON:-/opt/flower/venv/bin/python}" "$here/zygote.py" \
        --socket "$FLOWER_INIT_ZYGOTE_SOCKET" --preload "$preload" </dev/null &
fi
exec "$@"
