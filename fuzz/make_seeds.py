#!/usr/bin/env python3
"""Writes the seed inputs of the fuzz targets into fuzz/corpus/<target>/.

    fuzz/make_seeds.py [CAST...]

The input formats are documented at the top of each fuzz/src/<target>.rs.
Seeds are realistic: the frames bastion-shell sends, the IMDS and
container-credential requests SDKs and curl send, the provisioning/*.toml
files, and sessions (each CAST given, plus built-in ones) replayed through
the recorder. Seed files are named seed-*, so run.sh's minimisation can
tell them from what the fuzzer found; writing them again is harmless.
"""

import json
import pathlib
import struct
import sys

FUZZ = pathlib.Path(__file__).resolve().parent
ROOT = FUZZ.parent
CORPUS = FUZZ / "corpus"


def write(target, name, data):
    d = CORPUS / target
    d.mkdir(parents=True, exist_ok=True)
    (d / f"seed-{name}").write_bytes(data)


# --- first_frame -----------------------------------------------------------

def request(command=None, tty=False, size=None, env=None, version=1):
    # Field order and spacing as serde_json writes bastion::protocol::Request.
    return json.dumps(
        {"version": version, "command": command, "tty": tty, "size": size, "env": env or {}},
        separators=(",", ":"),
    ).encode()


def frame(mode_prefix, chunks, body, delta=None):
    """chunks: (descriptors, truncated, length) with length 255 = the rest."""
    out = bytes([(len(chunks) - 1) | (mode_prefix << 3)])
    for fds, truncated, length in chunks:
        out += bytes([fds | (8 if truncated else 0), length])
    if delta is not None:
        out += struct.pack("b", delta)
    return out + body


def first_frame():
    login = request(
        None, True, {"cols": 120, "rows": 40},
        {"LANG": "C.UTF-8", "SSH_CONNECTION": "127.0.0.1 42802 127.0.0.1 2222",
         "SSH_TTY": "/dev/pts/3", "TERM": "xterm-256color"},
    )
    command = request("kubectl get pods -A", env={"LANG": "C.UTF-8", "LC_ALL": "C.UTF-8"})
    scp = request("scp -t /home/alice/upload.txt")
    sftp = request("/usr/lib/openssh/sftp-server")
    rsync = request("rsync --server -vlogDtpre.iLsfxCIvu . /home/alice/dir/")
    # Exactly as bastion-shell sends: one message with three descriptors.
    write("first_frame", "login", frame(1, [(3, False, 255)], login))
    write("first_frame", "command", frame(1, [(3, False, 255)], command))
    write("first_frame", "scp", frame(1, [(3, False, 255)], scp))
    write("first_frame", "sftp", frame(1, [(3, False, 255)], sftp))
    write("first_frame", "rsync", frame(1, [(3, False, 255)], rsync))
    # The same frame in pieces, as a slow peer's reads return it.
    write("first_frame", "split-prefix", frame(1, [(3, False, 2), (0, False, 2), (0, False, 255)], command))
    write("first_frame", "split-body", frame(1, [(3, False, 10), (0, False, 30), (0, False, 255)], login))
    # Refused: descriptor counts, late or truncated descriptors, EOF,
    # trailing bytes, a bad length, bad JSON, another version.
    write("first_frame", "four-fds", frame(1, [(4, False, 255)], command))
    write("first_frame", "two-fds", frame(1, [(2, False, 255)], command))
    write("first_frame", "no-fds", frame(1, [(0, False, 255)], command))
    write("first_frame", "truncated", frame(1, [(3, True, 255)], command))
    write("first_frame", "late-fds", frame(1, [(2, False, 2), (1, False, 255)], command))
    write("first_frame", "eof", frame(1, [(3, False, 10), (0, False, 0)], command))
    write("first_frame", "trailing", frame(2, [(3, False, 255)], command + b"x", delta=-1))
    write("first_frame", "short-length", frame(2, [(3, False, 255)], command, delta=5))
    too_big = struct.pack(">I", 64 * 1024 + 1) + b"{}"
    write("first_frame", "too-large", frame(0, [(3, False, 255)], too_big))
    write("first_frame", "malformed", frame(1, [(3, False, 255)], b'{"version":1,"command":'))
    write("first_frame", "version-2", frame(1, [(3, False, 255)], request("true", version=2)))


# --- metadata_api ----------------------------------------------------------

ALICE, BOB, NORA, CAROL, UNKNOWN, LOOPBACK, BOB_MAPPED, V6_LOOPBACK = range(8)
STRICT = 8
CREDS = "/latest/meta-data/iam/security-credentials/"


def http(method, target, headers):
    head = f"{method} {target} HTTP/1.1\r\n"
    head += "".join(f"{name}: {value}\r\n" for name, value in headers)
    return (head + "\r\n").encode()


def imds(source, method, target, headers=(), host="169.254.169.254"):
    hs = ([("Host", host)] if host else []) + list(headers)
    return bytes([source]) + http(method, target, hs)


def metadata_api():
    botocore = [("User-Agent", "Botocore/1.34.46 ua/2.0 os/linux#6.1.0"), ("Accept-Encoding", "identity")]
    sdk = [("User-Agent", "aws-sdk-go-v2/1.30.3 os/linux lang/go#1.22.5 md/GOOS#linux md/GOARCH#amd64"),
           ("Amz-Sdk-Invocation-Id", "7a3c0b62-1f7d-4d7e-9c1e-0a4c2f1e9b11"), ("Accept-Encoding", "gzip")]
    ttl = ("X-aws-ec2-metadata-token-ttl-seconds", "21600")
    token = ("X-aws-ec2-metadata-token", "$TOKEN")
    seeds = {
        # IMDSv2 as botocore / the AWS CLI does it.
        "token-put": imds(ALICE, "PUT", "/latest/api/token", botocore + [ttl]),
        "role-list-v2": imds(ALICE, "GET", CREDS, botocore + [token]),
        "role-creds-v2": imds(ALICE, "GET", CREDS + "bastion-dev", botocore + [token]),
        "role-creds-strict": imds(BOB | STRICT, "GET", CREDS + "bastion-ops", botocore + [token]),
        "role-list-strict-v1": imds(BOB | STRICT, "GET", CREDS, botocore),
        "arn-role-creds": imds(CAROL, "GET", CREDS + "carol-admin", sdk + [token]),
        "no-role": imds(NORA, "GET", CREDS, [token]),
        # IMDSv1 (curl).
        "curl-v1": imds(ALICE, "GET", CREDS, [("User-Agent", "curl/7.88.1"), ("Accept", "*/*")]),
        "info": imds(ALICE, "GET", "/latest/meta-data/iam/info", [token]),
        "listing": imds(ALICE, "GET", "/latest/meta-data/", [token]),
        "root": imds(ALICE, "GET", "/", []),
        "latest": imds(ALICE, "GET", "/latest/", []),
        "passthrough-region": imds(ALICE, "GET", "/latest/meta-data/placement/region", [token]),
        "passthrough-az": imds(ALICE, "GET", "/latest/meta-data/placement/availability-zone/", []),
        "passthrough-document": imds(BOB, "GET", "/latest/dynamic/instance-identity/document", []),
        "head": imds(ALICE, "HEAD", CREDS, []),
        # The container-credentials endpoint.
        "container-creds": imds(ALICE, "GET", "/v1/credentials", sdk + [("Authorization", "alice-token")],
                                host="169.254.170.2"),
        "container-creds-other-token": imds(BOB, "GET", "/v1/credentials", [("Authorization", "alice-token")],
                                            host="169.254.170.2"),
        "container-creds-no-token": imds(CAROL | STRICT, "GET", "/v1/credentials", [], host="169.254.170.2"),
        "container-creds-post": imds(ALICE, "POST", "/v1/credentials", [("Authorization", "alice-token")],
                                     host="169.254.170.2"),
        # Attacks: another's role, stolen token, odd paths, rebinding,
        # absolute form, duplicate security headers, relayed token PUT.
        "other-role": imds(BOB, "GET", CREDS + "bastion-dev", [token]),
        "stolen-token": imds(BOB, "GET", CREDS, [("X-aws-ec2-metadata-token", "$TOKEN_ALICE")]),
        "dot-dot": imds(ALICE, "GET", CREDS + "../security-credentials/bastion-dev", []),
        "percent": imds(ALICE, "GET", CREDS + "%62astion-dev", []),
        "trailing-slash": imds(ALICE, "GET", CREDS + "bastion-dev/", []),
        "query": imds(ALICE, "GET", CREDS + "bastion-dev?x=1", []),
        "rebinding": imds(ALICE, "GET", CREDS, [], host="evil.example"),
        "own-host": imds(ALICE, "GET", CREDS, [], host="172.30.0.1:8775"),
        "absolute-form": imds(ALICE, "GET", "http://169.254.169.254" + CREDS + "bastion-dev", []),
        "two-hosts": imds(ALICE, "GET", CREDS, [("Host", "evil.example")]),
        "two-tokens": imds(ALICE, "GET", CREDS, [token, ("X-aws-ec2-metadata-token", "bogus")]),
        "forwarded-put": imds(ALICE, "PUT", "/latest/api/token", [ttl, ("X-Forwarded-For", "10.0.0.1")]),
        "unknown-source": imds(UNKNOWN, "GET", CREDS + "bastion-dev", []),
        "loopback": imds(LOOPBACK, "PUT", "/latest/api/token", [ttl]),
        "mapped-v6": imds(BOB_MAPPED, "GET", CREDS + "bastion-ops", []),
        "v6-loopback": imds(V6_LOOPBACK, "GET", "/v1/credentials", [("Authorization", "bob-token")],
                            host="169.254.170.2"),
    }
    for name, data in seeds.items():
        write("metadata_api", name, data)


# --- config_parse ----------------------------------------------------------

def config_parse():
    for path in sorted((ROOT / "provisioning").glob("*.toml")):
        write("config_parse", f"provisioning-{path.stem}", path.read_bytes())
    small = {
        "empty": "",
        "overrides": """[bastiond]
image = "bastion/user:latest"
role = "dev"
allow_users = ["alice"]
allow_groups = ["bastion-users", "sre"]
idle_stop_after = "30m"
remove_after = "7d"

[bastiond.limits]
pids = 512
memory = "2GiB"
cpus = 1.5

[bastiond.groups.sre]
role = "arn:aws:iam::123456789012:role/sre"
limits = { cpus = 4.0 }

[bastiond.users.alice]
image = "bastion/user:debug"
limits = { memory = "4GiB", pids = 1024 }
""",
        "unknown-key": '[bastiond]\nimage = "x"\nimagee = "y"\n',
        "wrong-type": '[bastiond]\n\n[bastiond.limits]\npids = "many"\n',
        "bad-value": '[bastiond]\nimage = "x"\n[bastiond.limits]\ncpus = -1.0\n',
        "bad-duration": '[bastiond]\nidle_stop_after = "soon"\n',
        "recording": """[recording]
log_dir = "/var/log/bastion"
audit_log = "/var/log/bastion/audit.jsonl"
record_input = true
max_recording_bytes = "64MiB"
on_log_failure = "allow"
banner = "Recorded.   \\n"
syslog = false
""",
        "relative-path": '[recording]\nlog_dir = "logs"\n',
        "network": '[bastiond.network]\nname = "bastion0"\nsubnet = "172.30.0.0/24"\n',
        "dotted-keys": 'bastiond.limits.cpus = 0.5\nrecording.max_recording_bytes = "1KiB"\n',
        "syntax-error": '[bastiond\nimage = "x"\n',
        # TOML's empty quoted key (the fuzzer's first find).
        "empty-key": '""= "x2"\n',
        # A key that Rust's trim() empties but TOML does not (the second).
        "vertical-tab-key": '"\x0b"\x0b\x0b\x0b\x0b\x0b\x0b= "\n',
    }
    for name, text in small.items():
        write("config_parse", name, text.encode())


# --- cast_writer -----------------------------------------------------------

def sized(data):
    if len(data) < 255:
        return bytes([len(data)]) + data
    return b"\xff" + struct.pack(">H", min(len(data), 0xFFFF)) + data[:0xFFFF]


def ops_from_events(events):
    """(code, data) events -> operations; output split inside characters."""
    out = b""
    for code, data in events:
        raw = data.encode() if isinstance(data, str) else data
        if code == "o":
            # Cut each chunk in the middle of its first multi-byte character.
            cut = next((i + 1 for i, b in enumerate(raw) if b >= 0xC0), None)
            pieces = [raw[:cut], raw[cut:]] if cut else [raw]
            out += b"".join(b"\x00" + sized(p) for p in pieces if p)
        elif code == "i":
            out += b"\x01" + sized(raw)
        elif code == "r":
            cols, rows = (int(x) for x in data.split("x"))
            out += b"\x02" + struct.pack(">HH", cols, rows)
        elif code == "m":
            out += b"\x03" + sized(raw)
    return out


def cast_writer(casts):
    for path in casts:
        lines = pathlib.Path(path).read_text().splitlines()[1:]
        events = [(e[1], e[2]) for e in map(json.loads, filter(None, lines))]
        has_input = any(code == "i" for code, _ in events)
        name = pathlib.Path(path).parent.name
        write("cast_writer", f"cast-{name}", bytes([1 if has_input else 0]) + ops_from_events(events))
    prompt = "\x1b[?2004h\x1b[1;32malice@bastion-alice\x1b[0m:\x1b[1;34m~\x1b[0m$ "
    session = [
        ("o", prompt), ("i", "kubectl get ns\r"), ("o", "kubectl get ns\r\n\x1b[?2004l\r"),
        ("o", "NAME          STATUS   AGE\r\nkube-system   Active   3d\r\nzebra-été   Active   1h\r\n"),
        ("r", "120x40"), ("m", "checkpoint \"one\""), ("o", prompt),
    ]
    write("cast_writer", "session", b"\x01" + ops_from_events(session))
    # UTF-8 cut at every byte of a 4-byte character, invalid bytes, a cut-off
    # character at the end, escapes, a run of NULs.
    emoji = "😀".encode()
    split = b"".join(b"\x00" + sized(emoji[i:i + 1]) for i in range(4))
    write("cast_writer", "utf8-split", b"\x00" + split + b"\x00" + sized("é€".encode()[:3]) + b"\x00" + sized("é€".encode()[3:]))
    write("cast_writer", "invalid-utf8", b"\x00" + b"\x00" + sized(b"ok\xffok\xe2\x82A\xed\xa0\x80\xc3\x28\xf5\x80") + b"\x00" + sized(b"ab\xe2\x82"))
    write("cast_writer", "escapes", b"\x00\x00" + sized(b'"quoted" \\back\\ \x08\x0c\t\r\n\x1b\x7f\x00\x00\x00\x00\x00\x00\x00\x00\x00\x01\xe2\x80\xa8'))
    write("cast_writer", "input-off", b"\x00\x01" + sized(b"secret\r") + b"\x00" + sized(b"$ "))
    # A small cap: the header is ~300 bytes, the cap 600.
    flood = b"\x00" + sized(b"x" * 200)
    write("cast_writer", "cap", b"\x02" + struct.pack(">H", 600) + flood * 5 + b"\x02\x00\x0a\x00\x0a")
    write("cast_writer", "cap-below-header", b"\x02" + struct.pack(">H", 10) + b"\x00" + sized(b"hi"))
    write("cast_writer", "flush-marker", b"\x01\x03" + sized("ünïcødé marker".encode()) + b"\x04\x00" + sized(b"after flush"))


if __name__ == "__main__":
    first_frame()
    metadata_api()
    config_parse()
    cast_writer(sys.argv[1:])
