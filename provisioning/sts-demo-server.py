"""The demo's STS-compatible server: moto, listening on loopback (for the
metadata proxy) and on the bastion bridge gateway (for the users' AWS CLI,
via AWS_ENDPOINT_URL_STS), sharing one in-memory state, so credentials the
proxy got from one address resolve on the other.

Run by provisioning/sts-demo.sh with the venv's python:
    python sts-demo-server.py PORT ADDRESS [ADDRESS...]
An address that does not exist yet (the bridge before bastiond creates it)
is retried every second until it does.
"""

import sys
import threading
import time

from moto.moto_server.threaded_moto_server import MotoRequestHandler
from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app
from werkzeug.serving import make_server


def serve(app, address, port):
    warned = False
    while True:
        try:
            server = make_server(address, port, app, threaded=True, request_handler=MotoRequestHandler)
            break
        except OSError as error:
            if not warned:
                print(f"sts-demo: cannot listen on {address}:{port} yet ({error}); retrying every second", flush=True)
                warned = True
            time.sleep(1)
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
