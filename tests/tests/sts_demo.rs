//! The demo STS server (provisioning/sts-demo-server.py, moto) from the
//! attacker's side: users' containers reach it on the bridge gateway only
//! to ask who they are (sts:GetCallerIdentity). Everything else moto can do
//! (AssumeRole into another user's role, its admin API listing every issued
//! secret, any other AWS service it mocks) answers on the host's loopback
//! only, which the metadata proxy uses.
#![forbid(unsafe_code)]

mod common;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use common::*;
use std::process::{Command, Output};

/// The loopback listener (the metadata proxy's `sts_endpoint`).
const LOOPBACK: &str = "127.0.0.1:5000";

/// The user all these tests attack from (group `bastion-e2e`: role
/// `e2e-role`).
fn attacker() -> User {
    e2e_user("bt-stsdemo")
}

/// The ARN suffix of `u`'s assumed role, as STS names it.
fn own_arn(u: &User) -> String {
    format!(":assumed-role/e2e-role/{}</Arn>", u.name)
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Asserts an aws CLI call in the container was refused by the filter (an
/// STS-style AccessDenied) and printed nothing of what it asked for.
fn assert_cli_refused(what: &str, out: &Output) {
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(
        !out.status.success(),
        "{what} succeeded from a container:\n{stdout}"
    );
    assert!(
        stderr.contains("AccessDenied") && stderr.contains("GetCallerIdentity"),
        "{what}: not the filter's refusal: {stderr}"
    );
    for secret in ["SecretAccessKey", "SessionToken", "AccessKeyId"] {
        assert!(
            !stdout.contains(secret),
            "{what} printed {secret}: {stdout}"
        );
    }
}

/// One raw HTTP request sent from the container to the gateway listener.
/// In `head` (request line and headers, one a line) and `body`, these are
/// replaced in the container: `{gw}` the endpoint's host:port, `{auth:SVC}`
/// a SigV4 Authorization header value with the session's own access key
/// scoped to service SVC, `{cred:SVC}` that credential scope URL-encoded
/// (for presigned queries), `{pad}` 100 000 bytes of padding.
struct Raw {
    name: &'static str,
    head: String,
    body: String,
    /// gzip the body (Content-Encoding tricks).
    gzip: bool,
    /// add Content-Length (false for chunked bodies).
    length: bool,
}

fn raw(name: &'static str, head: &str, body: &str) -> Raw {
    Raw {
        name,
        head: head.to_owned(),
        body: body.to_owned(),
        gzip: false,
        length: true,
    }
}

/// Sends the requests from inside `u`'s container (python3 and raw sockets,
/// so nothing normalises them) and returns each one's (status line, body).
fn send_raw(u: &User, requests: &[Raw]) -> Vec<(String, String)> {
    const SCRIPT: &str = r#"
import base64, gzip, json, os, socket, sys, urllib.parse, urllib.request
cases = json.loads(base64.b64decode(sys.argv[1]))
endpoint = urllib.parse.urlsplit(os.environ["AWS_ENDPOINT_URL_STS"])
host, port = endpoint.hostname, endpoint.port or 80
creds = json.load(urllib.request.urlopen(urllib.request.Request(
    os.environ["AWS_CONTAINER_CREDENTIALS_FULL_URI"],
    headers={"Authorization": os.environ["AWS_CONTAINER_AUTHORIZATION_TOKEN"]}), timeout=20))
def scope(svc):
    return creds["AccessKeyId"] + "/20250101/us-east-1/" + svc + "/aws4_request"
def fill(s):
    s = s.replace("{gw}", "%s:%d" % (host, port)).replace("{pad}", "A" * 100000)
    for svc in ("sts", "iam", "s3"):
        s = s.replace("{auth:%s}" % svc, "AWS4-HMAC-SHA256 Credential=%s, SignedHeaders=host;x-amz-date, Signature=%s" % (scope(svc), "0" * 64))
        s = s.replace("{cred:%s}" % svc, urllib.parse.quote(scope(svc), safe=""))
    return s
for case in cases:
    body = fill(case["body"]).encode()
    if case["gzip"]:
        body = gzip.compress(body)
    lines = fill(case["head"]).split("\n")
    if case["length"]:
        lines.append("Content-Length: %d" % len(body))
    lines.append("Connection: close")
    request = ("\r\n".join(lines) + "\r\n\r\n").encode() + body
    data = b""
    try:
        with socket.create_connection((host, port), timeout=20) as s:
            s.sendall(request)
            s.shutdown(socket.SHUT_WR)
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                data += chunk
    except OSError as e:
        data = ("NO-ANSWER %s\r\n\r\n" % e).encode()
    status, _, rest = data.partition(b"\r\n")
    print(json.dumps({"status": status.decode(errors="replace"),
                      "body": rest.partition(b"\r\n\r\n")[2].decode(errors="replace")[:4000]}))
"#;
    let cases: Vec<serde_json::Value> = requests
        .iter()
        .map(|r| {
            serde_json::json!({
                "head": r.head, "body": r.body, "gzip": r.gzip, "length": r.length,
            })
        })
        .collect();
    let arg = STANDARD.encode(serde_json::to_vec(&cases).unwrap());
    let out = ssh_with_input(u, &format!("python3 - {arg}"), SCRIPT.as_bytes());
    assert!(
        out.status.success(),
        "the raw request script failed: {}",
        text(&out.stderr)
    );
    let answers: Vec<(String, String)> = text(&out.stdout)
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            (
                v["status"].as_str().unwrap().to_owned(),
                v["body"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(answers.len(), requests.len(), "{}", text(&out.stdout));
    answers
}

/// Asserts each request got the filter's 403 and none of what it asked for.
fn assert_all_refused(requests: &[Raw], answers: &[(String, String)]) {
    let mut wrong = Vec::new();
    for (r, (status, body)) in requests.iter().zip(answers) {
        let refused = status.contains(" 403 ")
            && body.contains("<Code>AccessDenied</Code>")
            && !body.contains("SecretAccessKey")
            && !body.contains("<Arn>");
        if !refused {
            wrong.push(format!(
                "{}: {status}: {}",
                r.name,
                &body[..body.len().min(300)]
            ));
        }
    }
    assert!(
        wrong.is_empty(),
        "answered from a container instead of refused:\n{}",
        wrong.join("\n")
    );
}

/// The form body the AWS CLI posts for an STS action.
fn form(action: &str) -> String {
    format!("Action={action}&Version=2011-06-15")
}

/// A signed form POST of the AWS CLI's shape.
fn post(host: &str, auth: &str) -> String {
    format!(
        "POST / HTTP/1.1\nHost: {host}\nContent-Type: application/x-www-form-urlencoded; charset=utf-8\nX-Amz-Date: 20250101T000000Z\nAuthorization: {auth}"
    )
}

#[test]
fn assume_role_from_a_container_is_refused() {
    let u = attacker();
    let assume = "aws sts assume-role --endpoint-url \"$AWS_ENDPOINT_URL_STS\" \
                  --role-arn arn:aws:iam::123456789012:role/bastion-alice --role-session-name stolen";
    // With the session's own (real) credentials, and with made-up keys.
    assert_cli_refused("assume-role", &ssh_run(&u, assume));
    assert_cli_refused(
        "assume-role with made-up keys",
        &ssh_run(
            &u,
            &format!(
                "AWS_ACCESS_KEY_ID=AKIAFAKEFAKEFAKEFAKE AWS_SECRET_ACCESS_KEY=fake AWS_SESSION_TOKEN= {assume}"
            ),
        ),
    );
    let role =
        "RoleArn=arn%3Aaws%3Aiam%3A%3A123456789012%3Arole%2Fbastion-alice&RoleSessionName=stolen";
    let requests = [
        raw(
            "form POST",
            &post("{gw}", "{auth:sts}"),
            &format!("{}&{role}", form("AssumeRole")),
        ),
        raw(
            "presigned GET",
            &format!(
                "GET /?{}&{role}&X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential={{cred:sts}}&X-Amz-Date=20250101T000000Z&X-Amz-Expires=60&X-Amz-SignedHeaders=host&X-Amz-Signature={} HTTP/1.1\nHost: {{gw}}",
                form("AssumeRole"),
                "0".repeat(64)
            ),
            "",
        ),
        raw(
            "web identity (moto routes it unsigned)",
            "POST / HTTP/1.1\nHost: {gw}\nContent-Type: application/x-www-form-urlencoded",
            &format!(
                "{}&{role}&WebIdentityToken=x",
                form("AssumeRoleWithWebIdentity")
            ),
        ),
    ];
    assert_all_refused(&requests, &send_raw(&u, &requests));
}

#[test]
fn the_moto_admin_api_is_refused_from_a_container() {
    let u = attacker();
    let get =
        |target: &str| format!("GET {target} HTTP/1.1\nHost: {{gw}}\nAuthorization: {{auth:sts}}");
    let requests = [
        raw("data.json", &get("/moto-api/data.json"), ""),
        raw("dashboard", &get("/moto-api/"), ""),
        raw("without the slash", &get("/moto-api"), ""),
        raw("percent-encoded path", &get("/%6Doto-api/data.json"), ""),
        raw("double slash", &get("//moto-api/data.json"), ""),
        raw("dot segments", &get("/x/../moto-api/data.json"), ""),
        raw(
            "with an allowed query",
            &get("/moto-api/data.json?Action=GetCallerIdentity&Version=2011-06-15"),
            "",
        ),
        raw(
            "absolute-form request line",
            &get("http://127.0.0.1:5000/moto-api/data.json"),
            "",
        ),
        raw(
            "instance metadata mock",
            &get("/latest/meta-data/iam/security-credentials/"),
            "",
        ),
        // (Not /moto-api/reset: against an unfiltered server that would
        // wipe every issued credential.)
        raw("POST", "POST /moto-api/data.json HTTP/1.1\nHost: {gw}", ""),
    ];
    assert_all_refused(&requests, &send_raw(&u, &requests));
    // The loopback listener is the host's own: a container's 127.0.0.1 is
    // its own loopback, where nothing listens.
    let out = ssh_text(
        &u,
        "curl -s -m 5 -o /dev/null -w '%{http_code}' http://127.0.0.1:5000/moto-api/data.json; true",
    );
    assert_eq!(
        out.trim(),
        "000",
        "loopback moto reachable from a container"
    );
}

#[test]
fn other_actions_and_services_are_refused_from_a_container() {
    let u = attacker();
    for (what, cmd) in [
        ("iam list-roles", "aws iam list-roles"),
        ("sts get-session-token", "aws sts get-session-token"),
        (
            "sts get-federation-token",
            "aws sts get-federation-token --name stolen",
        ),
        (
            "sts get-access-key-info",
            "aws sts get-access-key-info --access-key-id AKIAIOSFODNN7EXAMPLE",
        ),
        ("s3 ls", "aws s3 ls"),
    ] {
        let out = ssh_run(
            &u,
            &format!("{cmd} --endpoint-url \"$AWS_ENDPOINT_URL_STS\" --cli-read-timeout 20"),
        );
        assert_cli_refused(what, &out);
    }
}

#[test]
fn disguised_and_ambiguous_requests_are_refused_from_a_container() {
    let u = attacker();
    let gci = form("GetCallerIdentity");
    let sts = post("{gw}", "{auth:sts}");
    let query = |q: &str| format!("GET /?{q} HTTP/1.1\nHost: {{gw}}\nAuthorization: {{auth:sts}}");
    let mut requests = vec![
        // The Action parameter: name and value in other spellings, twice,
        // in both the query and the body, hidden by URL-encoding.
        raw(
            "lowercase name",
            &sts,
            "action=AssumeRole&Version=2011-06-15",
        ),
        raw(
            "lowercase value",
            &sts,
            "Action=getcalleridentity&Version=2011-06-15",
        ),
        raw(
            "encoded name",
            &sts,
            "Act%69on=AssumeRole&Version=2011-06-15",
        ),
        raw(
            "encoded value",
            &sts,
            "Action=GetCaller%49dentity&Version=2011-06-15",
        ),
        raw(
            "plus in the value",
            &sts,
            "Action=GetCallerIdentity+&Version=2011-06-15",
        ),
        raw(
            "twice in the body",
            &sts,
            &format!(
                "{gci}&Action=AssumeRole&RoleArn=arn%3Aaws%3Aiam%3A%3A123456789012%3Arole%2Fx&RoleSessionName=xx"
            ),
        ),
        raw(
            "twice in the query",
            &query(&format!("{gci}&Action=ListRoles")),
            "",
        ),
        raw(
            "query and body",
            &sts.replacen("POST / ", "POST /?Action=ListRoles ", 1),
            &gci,
        ),
        raw(
            "semicolon separator",
            &sts,
            "Action=GetCallerIdentity;Action=ListRoles",
        ),
        raw("no Action", &sts, "Version=2011-06-15"),
        raw("empty body", &sts, ""),
        raw("an unknown parameter", &sts, &format!("{gci}&RoleArn=x")),
        // The backend: moto picks it from the credential scope, the
        // X-Amz-Target header, the Host or an absolute URL.
        raw("signed for iam", &post("{gw}", "{auth:iam}"), &gci),
        raw(
            "iam host, iam action",
            &post("iam.amazonaws.com", "{auth:iam}"),
            &form("ListRoles"),
        ),
        raw(
            "iam absolute URL",
            &post("{gw}", "{auth:iam}").replacen("POST / ", "POST http://iam.amazonaws.com/ ", 1),
            &form("ListRoles"),
        ),
        raw(
            "X-Amz-Target",
            &format!("{sts}\nX-Amz-Target: AWSSecurityTokenServiceV20110615.AssumeRole"),
            &gci,
        ),
        raw(
            "x-moto-account-id",
            &format!("{sts}\nx-moto-account-id: 111111111111"),
            &gci,
        ),
        raw(
            "presigned for iam",
            &format!(
                "GET /?{gci}&X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential={{cred:iam}}&X-Amz-Date=20250101T000000Z&X-Amz-Expires=60&X-Amz-SignedHeaders=host&X-Amz-Signature={} HTTP/1.1\nHost: {{gw}}",
                "0".repeat(64)
            ),
            "",
        ),
        raw(
            "s3 ListBuckets (GET /)",
            "GET / HTTP/1.1\nHost: {gw}\nAuthorization: {auth:s3}",
            "",
        ),
        raw(
            "unsigned",
            &format!("GET /?{gci} HTTP/1.1\nHost: {{gw}}"),
            "",
        ),
        // The body: other encodings and formats moto would decode.
        raw(
            "JSON",
            &sts.replace(
                "application/x-www-form-urlencoded; charset=utf-8",
                "application/x-amz-json-1.0",
            ),
            r#"{"Action":"GetCallerIdentity"}"#,
        ),
        raw(
            "multipart",
            &sts.replace(
                "application/x-www-form-urlencoded; charset=utf-8",
                "multipart/form-data; boundary=b",
            ),
            "--b\r\nContent-Disposition: form-data; name=\"Action\"\r\n\r\nListRoles\r\n--b--\r\n",
        ),
        raw("oversized", &sts, &format!("{gci}&Pad={{pad}}")),
        raw("GET with a body", &query(&gci), &form("ListRoles")),
        raw("PUT", &sts.replacen("POST", "PUT", 1), &gci),
    ];
    let mut gzip = raw(
        "gzip body",
        &format!("{sts}\nContent-Encoding: gzip"),
        &form("ListRoles"),
    );
    gzip.gzip = true;
    requests.push(gzip);
    let mut chunked = raw(
        "chunked body",
        &format!("{sts}\nTransfer-Encoding: chunked"),
        "13\r\nAction=ListRoles&Ve\r\ne\r\nrsion=2010-05-08\r\n0\r\n\r\n",
    );
    chunked.length = false;
    requests.push(chunked);
    assert_all_refused(&requests, &send_raw(&u, &requests));
}

#[test]
fn get_caller_identity_still_works_from_a_container() {
    let u = attacker();
    // The AWS CLI's signed POST.
    let arn = ssh_text(
        &u,
        "aws sts get-caller-identity --endpoint-url \"$AWS_ENDPOINT_URL_STS\" --query Arn --output text",
    );
    assert!(
        arn.trim()
            .ends_with(&format!(":assumed-role/e2e-role/{}", u.name)),
        "{arn}"
    );
    // The presigned GET `aws eks get-token` makes (what a cluster replays),
    // sent as is: no Authorization header, the identity is in the query.
    let script = r#"
set -e
token=$(aws eks get-token --cluster-name demo | python3 -c 'import json,sys; print(json.load(sys.stdin)["status"]["token"])')
url=$(python3 -c 'import base64,sys; t=sys.argv[1].removeprefix("k8s-aws-v1."); print(base64.urlsafe_b64decode(t + "=" * (-len(t) % 4)).decode())' "$token")
case "$url" in https://sts.*amazonaws.com/\?*) ;; *) echo "not a presigned STS URL: $url" >&2; exit 1 ;; esac
curl -sS -m 20 -H 'x-k8s-aws-id: demo' "$AWS_ENDPOINT_URL_STS/?${url#*\?}"
"#;
    let reply = ssh_text(&u, script);
    assert!(reply.contains(&own_arn(&u)), "presigned GET: {reply}");
    // The CLI's form, virtual-hosted as the real STS names itself.
    let requests = [
        raw(
            "virtual-hosted POST",
            &post("sts.amazonaws.com", "{auth:sts}"),
            &form("GetCallerIdentity"),
        ),
        raw(
            "regional host, no Version",
            &post("sts.eu-west-1.amazonaws.com", "{auth:sts}"),
            "Action=GetCallerIdentity",
        ),
    ];
    for (r, (status, body)) in requests.iter().zip(send_raw(&u, &requests)) {
        assert!(
            status.contains(" 200 ") && body.contains(&own_arn(&u)),
            "{}: {status}: {body}",
            r.name
        );
    }
}

/// `curl ARGS… URL` on the host, returning (HTTP status, body).
fn host_curl(args: &[&str]) -> (String, String) {
    let out = run_ok(
        Command::new("curl")
            .args(["-sS", "-m", "20", "-w", "\n%{http_code}"])
            .args(args),
    );
    let text = text(&out.stdout);
    let (body, status) = text.rsplit_once('\n').unwrap();
    (status.to_owned(), body.to_owned())
}

#[test]
fn loopback_serves_the_full_api_and_shares_its_state_with_the_gateway() {
    let gw = bridge_gateway();
    // moto's admin API: on loopback only.
    let (status, body) = host_curl(&[&format!("http://{LOOPBACK}/moto-api/data.json")]);
    assert_eq!(status, "200", "loopback data.json");
    assert!(
        serde_json::from_str::<serde_json::Value>(&body).is_ok_and(|v| v.is_object()),
        "loopback data.json is not moto's state"
    );
    let (status, _) = host_curl(&[&format!("http://{gw}:5000/moto-api/data.json")]);
    assert_eq!(status, "403", "gateway data.json");
    // AssumeRole: on loopback only (what the metadata proxy calls).
    let session = format!("probe{}", std::process::id());
    let assume = format!(
        "Action=AssumeRole&Version=2011-06-15&RoleArn=arn%3Aaws%3Aiam%3A%3A123456789012%3Arole%2Fbt-stsdemo-probe&RoleSessionName={session}"
    );
    let signed = |svc: &str| {
        format!(
            "Authorization: AWS4-HMAC-SHA256 Credential=AKIAHOSTHOSTHOSTHOST/20250101/us-east-1/{svc}/aws4_request, SignedHeaders=host, Signature={}",
            "0".repeat(64)
        )
    };
    let (status, body) = host_curl(&[
        "-H",
        &signed("sts"),
        "--data",
        &assume,
        &format!("http://{gw}:5000/"),
    ]);
    assert_eq!(status, "403", "gateway AssumeRole: {body}");
    let (status, body) = host_curl(&[
        "-H",
        &signed("sts"),
        "--data",
        &assume,
        &format!("http://{LOOPBACK}/"),
    ]);
    assert_eq!(status, "200", "loopback AssumeRole: {body}");
    let key = body
        .split("<AccessKeyId>")
        .nth(1)
        .and_then(|s| s.split('<').next())
        .expect("an AccessKeyId from loopback AssumeRole")
        .to_owned();
    // One state: the key loopback issued is known on the gateway, asked the
    // way a cluster replays `aws eks get-token`'s presigned URL.
    let presigned = format!(
        "http://{gw}:5000/?Action=GetCallerIdentity&Version=2011-06-15&X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential={key}%2F20250101%2Fus-east-1%2Fsts%2Faws4_request&X-Amz-Date=20250101T000000Z&X-Amz-Expires=60&X-Amz-SignedHeaders=host&X-Amz-Signature={}",
        "0".repeat(64)
    );
    let (status, body) = host_curl(&[&presigned]);
    assert_eq!(status, "200", "gateway GetCallerIdentity: {body}");
    assert!(
        body.contains(&format!(":assumed-role/bt-stsdemo-probe/{session}</Arn>")),
        "{body}"
    );
}

/// issue 9, class 8, from the host: loopback serves all of moto (every
/// issued secret, AssumeRole into any role) to root only (the metadata
/// proxy); any other local account is refused by the kernel.
#[test]
fn other_host_accounts_cannot_reach_the_full_api_on_loopback() {
    let out = run_ok(std::process::Command::new("setpriv").args([
        "--reuid=65534",
        "--regid=65534",
        "--clear-groups",
        "/usr/bin/python3",
        "-c",
        "import urllib.request\nfor p in ['/moto-api/data.json', '/']:\n    try:\n        urllib.request.urlopen('http://127.0.0.1:5000' + p, timeout=5)\n        print('REACHED', p)\n    except Exception as e:\n        print('refused', type(e).__name__)\n",
    ]));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!text.contains("REACHED"), "{text}");
    assert_eq!(
        text.lines().filter(|l| l.starts_with("refused")).count(),
        2,
        "{text}"
    );
}
