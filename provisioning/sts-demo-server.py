"""The demo's STS-compatible server: moto, listening on loopback (for the
metadata proxy) and on the bastion bridge gateway (for the users' AWS CLI,
via AWS_ENDPOINT_URL_STS), sharing one in-memory state, so credentials the
proxy got from one address resolve on the other.

Loopback serves all of moto (AssumeRole for the proxy, moto's admin API).
The gateway serves one thing to the users' containers: sts:GetCallerIdentity
("who am I"), as the AWS CLI sends it (a signed form POST) and as
`aws eks get-token` presigns it (a GET with the signature in the query). Every
other request there gets a 403 AccessDenied: other actions (AssumeRole into
another user's role), moto's admin API (/moto-api/, which lists every issued
secret key), other services moto mocks, and anything whose action is
ambiguous. Accepted requests go straight to moto's STS backend, never
through moto's dispatcher (which picks a backend from the path, the
credential scope, X-Amz-Target and the body).

Loopback also stands in for the host's instance metadata service (moto's
IMDS, for the proxy's passthrough), answering a token request as the real
IMDS does: the TTL header is required (1-21600, else 400) and sent back with
the token. moto leaves that header out, and AWS SDKs refuse a token without
it.

Run by provisioning/sts-demo.sh, and by the proxy's tests, with the venv's
python:
    python sts-demo-server.py PORT ADDRESS [ADDRESS...]
The first ADDRESS gets all of moto (loopback); every other one only the
filtered STS endpoint. An address that does not exist yet (the bridge before
bastiond creates it) is retried every second until it does.
"""

import io
import re
import socket
import sys
import threading
import time
import uuid
from urllib.parse import parse_qsl, unquote

from moto.moto_server.threaded_moto_server import MotoRequestHandler
from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app
from werkzeug.serving import make_server

# The only action served on a filtered address, and the parameters its two
# forms carry (the CLI's POST: Action, Version; a presigned GET: the X-Amz-*
# query signature). Names and the Action are matched exactly as sent, never
# decoded.
ACTION = "GetCallerIdentity"
VERSION = "2011-06-15"
PRESIGN_PARAMS = {
    "X-Amz-Algorithm",
    "X-Amz-Credential",
    "X-Amz-Date",
    "X-Amz-Expires",
    "X-Amz-SignedHeaders",
    "X-Amz-Signature",
    "X-Amz-Security-Token",
}
POST_PARAMS = {"Action", "Version"}
GET_PARAMS = POST_PARAMS | PRESIGN_PARAMS
# The CLI's body is 43 bytes; anything near this is not GetCallerIdentity.
MAX_BODY = 4096
FORM_TYPE = "application/x-www-form-urlencoded"
# SigV4: the access key is the identity moto answers for; the scope must
# name STS (real STS refuses a signature scoped to another service).
SCOPE = r"[A-Z0-9]{16,128}/[0-9]{8}/[a-z0-9-]{1,32}/sts/aws4_request"
AUTHORIZATION = re.compile(
    rf"AWS4-HMAC-SHA256 Credential={SCOPE}, ?SignedHeaders=[a-z0-9;-]+, ?Signature=[0-9a-f]{{64}}"
)
# Headers that steer moto to another action, service, account or body.
FORBIDDEN_HEADERS = ("HTTP_X_AMZ_TARGET", "HTTP_TRANSFER_ENCODING", "HTTP_CONTENT_ENCODING")


class Refused(Exception):
    """A request the filtered address does not serve; the message is a fixed
    reason (never the request's own text)."""


def error_response(reason):
    body = (
        '<ErrorResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/">\n'
        "  <Error>\n"
        "    <Type>Sender</Type>\n"
        "    <Code>AccessDenied</Code>\n"
        "    <Message>the bastion demo STS server answers only sts:GetCallerIdentity "
        f"from the users' network ({reason})</Message>\n"
        "  </Error>\n"
        f"  <RequestId>{uuid.uuid4()}</RequestId>\n"
        "</ErrorResponse>\n"
    ).encode()
    return body


def parameters(text):
    """The NAME=VALUE pairs of a query string or form body, exactly as sent
    (no decoding: `Act%69on` is not `Action`). Refuses non-ASCII, a pair
    without '=', a name given twice, and text moto's own parser (urllib's,
    through werkzeug) reads otherwise."""
    if not text.isascii():
        raise Refused("non-ASCII parameters")
    pairs = {}
    for piece in text.split("&"):
        if not piece:
            continue
        name, sep, value = piece.partition("=")
        if not sep:
            raise Refused("a parameter without a value")
        if name in pairs:
            raise Refused("a parameter given twice")
        pairs[name] = value
    # moto must see the same names, and the Action as sent.
    parsed = parse_qsl(text, keep_blank_values=True)
    if sorted(n for n, _ in parsed) != sorted(pairs) or dict(parsed).get("Action") != pairs.get("Action"):
        raise Refused("parameters that do not parse unambiguously")
    return pairs


class GatewayFilter:
    """WSGI app of a filtered address: checks each request and hands the
    accepted ones to moto's STS backend app (moto's state is global, so it
    is the same state the loopback listener serves)."""

    def __init__(self, sts_app, host):
        self.sts_app = sts_app
        self.host = host

    def __call__(self, environ, start_response):
        try:
            self.check(environ)
        except Refused as refused:
            print(
                f"sts-demo: refused {environ.get('REQUEST_METHOD')} from {environ.get('REMOTE_ADDR')}: {refused}",
                file=sys.stderr,
                flush=True,
            )
            body = error_response(refused)
            start_response(
                "403 Forbidden",
                [("Content-Type", "text/xml"), ("Content-Length", str(len(body)))],
            )
            return [body]
        return self.sts_app(environ, start_response)

    def check(self, environ):
        method = environ.get("REQUEST_METHOD", "")
        if method not in ("GET", "POST"):
            raise Refused("method not allowed")
        # The path as sent (werkzeug has percent-decoded PATH_INFO and takes
        # an absolute-form request line's host as Host): only "/".
        query = environ.get("QUERY_STRING", "")
        raw_uri = environ.get("RAW_URI", "")
        if environ.get("PATH_INFO") != "/" or raw_uri not in ("/", f"/?{query}"):
            raise Refused("path not served")
        for header in FORBIDDEN_HEADERS:
            if header in environ:
                raise Refused("header not allowed")
        if any(key.startswith("HTTP_X_MOTO_") for key in environ):
            raise Refused("header not allowed")

        length = environ.get("CONTENT_LENGTH") or "0"
        if not length.isdigit():
            raise Refused("bad Content-Length")
        length = int(length)
        if length > MAX_BODY:
            raise Refused("body too large")
        if method == "GET":
            if length:
                raise Refused("a GET with a body")
            params, allowed = parameters(query), GET_PARAMS
        else:
            if query:
                raise Refused("a POST with a query string")
            mimetype, *options = [p.strip().lower() for p in environ.get("CONTENT_TYPE", "").split(";")]
            if mimetype != FORM_TYPE or any(o not in ("", "charset=utf-8") for o in options):
                raise Refused("content type not allowed")
            body = environ["wsgi.input"].read(length) if length else b""
            if len(body) != length:
                raise Refused("body shorter than its Content-Length")
            try:
                text = body.decode("ascii")
            except UnicodeDecodeError:
                raise Refused("non-ASCII parameters") from None
            params, allowed = parameters(text), POST_PARAMS
            # moto reads the body again.
            environ["wsgi.input"] = io.BytesIO(body)

        if params.get("Action") != ACTION:
            raise Refused("action not allowed")
        if not allowed.issuperset(params):
            raise Refused("a parameter GetCallerIdentity does not take")
        if params.get("Version", VERSION) != VERSION:
            raise Refused("unknown API version")

        # The identity: a SigV4 Authorization header, or a presigned query.
        authorization = environ.get("HTTP_AUTHORIZATION")
        credential = params.get("X-Amz-Credential")
        if authorization is not None:
            if credential is not None or not AUTHORIZATION.fullmatch(authorization):
                raise Refused("not signed for STS")
        elif credential is not None:
            if params.get("X-Amz-Algorithm") != "AWS4-HMAC-SHA256" or not re.fullmatch(SCOPE, unquote(credential)):
                raise Refused("not signed for STS")
            # moto finds the caller's access key only in the Authorization
            # header (it checks no signature either way).
            environ["HTTP_AUTHORIZATION"] = (
                f"AWS4-HMAC-SHA256 Credential={unquote(credential)}, SignedHeaders=host, Signature={'0' * 64}"
            )
        else:
            raise Refused("not signed")
        # Nothing downstream (moto derives a region and partition from the
        # URL) may depend on a Host the client chose.
        environ["HTTP_HOST"] = self.host


class ImdsTokenTtl:
    """moto's IMDS token endpoint as the real IMDS answers it: the
    X-aws-ec2-metadata-token-ttl-seconds header is required and echoed."""

    TOKEN_PATH = "/latest/api/token"
    MAX_TTL = 21600

    def __init__(self, app):
        self.app = app

    def __call__(self, environ, start_response):
        if environ.get("PATH_INFO") != self.TOKEN_PATH or environ.get("REQUEST_METHOD") != "PUT":
            return self.app(environ, start_response)
        ttl = environ.get("HTTP_X_AWS_EC2_METADATA_TOKEN_TTL_SECONDS", "")
        if not (ttl.isascii() and ttl.isdigit() and 1 <= int(ttl) <= self.MAX_TTL):
            start_response("400 Bad Request", [("Content-Type", "text/plain")])
            return [b"Bad Request"]

        def with_ttl(status, headers, exc_info=None):
            return start_response(status, headers + [("X-aws-ec2-metadata-token-ttl-seconds", ttl)], exc_info)

        return self.app(environ, with_ttl)


class RequestHandler(MotoRequestHandler):
    """moto's handler, logging each request without its query string: a
    presigned URL carries a session token and a signature there, and no
    secret belongs in a log."""

    def log_request(self, code="-", size="-"):
        path = getattr(self, "path", "?").split("?", 1)[0]
        if len(path) > 200:  # a client chooses the path: bound the line
            path = path[:200] + f"…[{len(path)} chars]"
        command = getattr(self, "command", "?")
        line = f"{command} {path}".translate({c: f"\\x{c:02x}" for c in range(32)})
        self.log("info", '"%s" %s %s', line, code, size)


def address_exists(address):
    """True when ADDRESS is on one of this host's interfaces (bind to port 0)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        try:
            probe.bind((address, 0))
        except OSError:
            return False
    return True


def serve(app, address, port, what):
    if not address_exists(address):
        print(f"sts-demo: {address} is not an address of this host yet; waiting for it", flush=True)
        while not address_exists(address):
            time.sleep(1)
    server = make_server(address, port, app, threaded=True, request_handler=RequestHandler)
    print(f"sts-demo: {what} listening on {address}:{port}", flush=True)
    server.serve_forever()


def main():
    if len(sys.argv) < 3:
        sys.exit("usage: sts-demo-server.py PORT ADDRESS [ADDRESS...]")
    port = int(sys.argv[1])
    loopback, *filtered = sys.argv[2:]
    full = ImdsTokenTtl(DomainDispatcherApplication(create_backend_app))
    sts_app = create_backend_app("sts")
    listeners = [(full, loopback, "moto (all of it)")] + [
        (GatewayFilter(sts_app, f"{a}:{port}"), a, "STS GetCallerIdentity only") for a in filtered
    ]
    threads = [threading.Thread(target=serve, args=(app, a, port, what), daemon=True) for app, a, what in listeners]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


if __name__ == "__main__":
    main()
