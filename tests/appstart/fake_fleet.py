"""A Fleet API that lets a SuperNode register and activate, then answers its first
pull-messages with 500, as Flower 1.42's SuperLink does on `database is locked` under load.
Prints its port, then each request as `<path> <status>` (stdout, line-buffered)."""

import http.server
import sys
import threading

from flwr.proto import fleet_pb2 as f, heartbeat_pb2 as h

OK = {
    "/v1/fleet/register-node": f.RegisterNodeFleetResponse(node_id=42),
    "/v1/fleet/activate-node": f.ActivateNodeResponse(node_id=42),
    "/v1/fleet/deactivate-node": f.DeactivateNodeResponse(),
    "/v1/fleet/unregister-node": f.UnregisterNodeFleetResponse(),
    "/v1/fleet/send-node-heartbeat": h.SendNodeHeartbeatResponse(success=True),
}


# The server answers each request on its own thread: one line per request, written whole under
# a lock (print() writes the path, the space, the code and the newline separately, and two
# threads' pieces interleaved: "…/send-node-heartbeat/v1/fleet/pull-messages 500" then "200").
OUT = threading.Lock()


def record(path, code):
    with OUT:
        sys.stdout.write(f"{path} {code}\n")
        sys.stdout.flush()


class Handler(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        self.rfile.read(int(self.headers.get("content-length") or 0))
        msg = OK.get(self.path)
        if msg is not None:
            body, code, ctype = msg.SerializeToString(), 200, "application/protobuf"
        else:
            body, code, ctype = b'{"code": 0, "detail": "database is locked"}', 500, "application/json"
        record(self.path, code)
        self.send_response(code)
        self.send_header("content-type", ctype)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_):
        pass


server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
print(server.server_address[1], flush=True)
server.serve_forever()
