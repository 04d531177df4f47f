"""The demo's STS-compatible server: moto, listening on loopback (for the
metadata proxy) and on the bastion bridge gateway (for the users' AWS CLI,
via AWS_ENDPOINT_URL_STS), sharing one in-memory state, so credentials the
proxy got from one address resolve on the other.

Run by provisioning/sts-demo.sh with the venv's python:
    python sts-demo-server.py PORT ADDRESS [ADDRESS...]
An address that does not exist yet (the bridge before bastiond creates it)
is retried every second until it does.
"""

import socket
import sys
import threading
import time

from moto.moto_server.threaded_moto_server import MotoRequestHandler
from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app
from werkzeug.serving import make_server


def address_exists(address):
    """True when ADDRESS is on one of this host's interfaces (bind to port 0)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        try:
            probe.bind((address, 0))
        except OSError:
            return False
    return True


def serve(app, address, port):
    if not address_exists(address):
        print(f"sts-demo: {address} is not an address of this host yet; waiting for it", flush=True)
        while not address_exists(address):
            time.sleep(1)
    server = make_server(address, port, app, threaded=True, request_handler=MotoRequestHandler)
    print(f"sts-demo: STS (moto) listening on {address}:{port}", flush=True)
    server.serve_forever()


def main():
    if len(sys.argv) < 3:
        sys.exit("usage: sts-demo-server.py PORT ADDRESS [ADDRESS...]")
    port = int(sys.argv[1])
    app = DomainDispatcherApplication(create_backend_app)
    threads = [threading.Thread(target=serve, args=(app, a, port), daemon=True) for a in sys.argv[2:]]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


if __name__ == "__main__":
    main()
