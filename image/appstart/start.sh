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
    # The zygote preloads at nice 19 (FLOWER_INIT_ZYGOTE_NICE) and returns to nice 0 before it
    # forks any app: Flower's start gets the CPU first, so READY is not delayed on a one-CPU VM
    # (it was, by the preload's whole length), and the first app waits for the rest of the
    # preload well inside the widened task-start window (flower_init_task_window.py).
    "${FLOWER_INIT_ZYGOTE_PYTHON:-/opt/flower/venv/bin/python}" "$here/zygote.py" \
        --socket "$FLOWER_INIT_ZYGOTE_SOCKET" --preload "$preload" </dev/null &
fi
exec "$@"
