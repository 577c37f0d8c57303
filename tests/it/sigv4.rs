//! SigV4 re-signing (`[[sign]]`, kind `aws-sigv4`) against moto with signature checks on:
//! boto3, configured with dummy keys, lists and reads a Secrets Manager secret, lists IAM
//! access keys (the response names the real key id, which is scrubbed) and puts and gets an
//! S3 object through the proxy, in route mode and as a forward proxy; the same dummy keys
//! without the proxy are refused. curl's requests over HTTP/2 and inside a CONNECT tunnel are
//! signed too. A request to a host outside the sign rule keeps the agent's own
//! `Authorization`; a body over the bound is 413 with nothing sent; the access events have
//! kind `aws_sigv4`; neither key reaches a trace log. With `HTTPS_PROXY`, as SDKs talk to AWS,
//! boto3's requests to the real AWS host names are signed inside the TLS the proxy intercepts,
//! and go on over TLS to moto serving a certificate for those names.

use std::process::Command;
use std::time::Duration;

use serde_json::{Value, json};

use crate::providers::{Moto, xml_text};
use crate::sidecar::Sidecar;
use crate::support::until;
use crate::upstream::{PemFiles, Upstream};

const ACCESS_KEY_PATH: &str = "aws/prod/access-key-id";
const SECRET_KEY_PATH: &str = "aws/prod/secret-access-key";
const DB_SECRET: &str = "db-password-from-moto";
/// What an agent's SDK signs with: keys moto never issued.
const DUMMY_AUTH: &str = "AWS4-HMAC-SHA256 Credential=AKIDUMMYAGENTKEY/20260101/us-east-1/secretsmanager/aws4_request, \
                          SignedHeaders=host;x-amz-date, Signature=0000";

const SCRIPT: &str = r#"
import json, sys
import boto3
from botocore.config import Config
from botocore.exceptions import ClientError

endpoint, tag = sys.argv[1], sys.argv[2]
cfg = Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1, "mode": "standard"})
kw = dict(endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="AKIDUMMYAGENTKEY",
          aws_secret_access_key="dummy-agent-secret-key", config=cfg)
out = {}
try:
    sm = boto3.client("secretsmanager", **kw)
    out["names"] = sorted(s["Name"] for s in sm.list_secrets()["SecretList"])
    out["secret"] = sm.get_secret_value(SecretId="app/db")["SecretString"]
    iam = boto3.client("iam", **kw)
    out["listed_key"] = iam.list_access_keys(UserName="airlock")["AccessKeyMetadata"][0]["AccessKeyId"]
    s3 = boto3.client("s3", **kw)
    bucket = "bucket-" + tag
    s3.create_bucket(Bucket=bucket)
    s3.put_object(Bucket=bucket, Key="dir/hello world.txt", Body=b"hello from " + tag.encode())
    out["object"] = s3.get_object(Bucket=bucket, Key="dir/hello world.txt")["Body"].read().decode()
except ClientError as e:
    out["error"] = e.response["Error"]["Code"]
print(json.dumps(out))
"#;

/// With the user's real keys, straight to moto: a role the agent's requests act as, and
/// temporary credentials for it (an access key id, a secret key and a session token).
const ASSUME_ROLE: &str = r#"
import json, sys
import boto3
kw = dict(endpoint_url=sys.argv[1], region_name="us-east-1", aws_access_key_id=sys.argv[2],
          aws_secret_access_key=sys.argv[3])
iam, sts = boto3.client("iam", **kw), boto3.client("sts", **kw)
trust = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Principal": {"AWS": "*"}, "Action": "sts:AssumeRole"}]}
arn = iam.create_role(RoleName="agent-role", AssumeRolePolicyDocument=json.dumps(trust))["Role"]["Arn"]
everything = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}
iam.put_role_policy(RoleName="agent-role", PolicyName="all", PolicyDocument=json.dumps(everything))
c = sts.assume_role(RoleArn=arn, RoleSessionName="airlock")["Credentials"]
print(json.dumps({k: c[k] for k in ["AccessKeyId", "SecretAccessKey", "SessionToken"]}))
"#;

const SESSION_TOKEN_PATH: &str = "aws/prod/session-token";

struct Setup {
    moto: Moto,
    sc: Sidecar,
    plain: Upstream,
    key_id: String,
    secret_key: String,
    /// The session token the proxy signs with, for temporary credentials.
    token: Option<String>,
    script: std::path::PathBuf,
}

fn moto_port(moto: &Moto) -> u16 {
    moto.endpoint.rsplit(':').next().unwrap().parse().unwrap()
}

fn start() -> Option<Setup> {
    start_with(false)
}

/// Moto with a user and its keys, a secret, and a sidecar whose sign rule signs requests to
/// moto with the user's keys, or (`temporary`) with credentials of a role it assumed.
fn start_with(temporary: bool) -> Option<Setup> {
    // Four unchecked requests set up a user with a key and a policy, and a secret; every
    // request after them must carry a valid signature by a key moto issued.
    let moto = Moto::start_with(&[("INITIAL_NO_AUTH_ACTION_COUNT", "4")])?;
    let (key_id, secret_key) = seed(&moto);
    let (key_id, secret_key, token) = if temporary {
        let out = Command::new("python3")
            .args(["-c", ASSUME_ROLE, &moto.endpoint, &key_id, &secret_key])
            .output()
            .expect("python3 runs");
        assert!(out.status.success(), "assume role: {}", String::from_utf8_lossy(&out.stderr));
        let creds: Value = serde_json::from_slice(&out.stdout).unwrap();
        let text = |k: &str| creds[k].as_str().unwrap().to_owned();
        (text("AccessKeyId"), text("SecretAccessKey"), Some(text("SessionToken")))
    } else {
        (key_id, secret_key, None)
    };
    let token_line = if token.is_some() {
        format!("session_token = \"{{{{secret:{SESSION_TOKEN_PATH}}}}}\"")
    } else {
        String::new()
    };

    let plain = Upstream::start_plain();
    let policy = format!(
        r#"
[agent]
name = "research-agent"

[egress]
allow = ["127.0.0.1", "localhost"]
deny_private_networks = false

[[grant]]
secrets = "aws/prod/*"
hosts = ["127.0.0.1"]

[[route]]
name = "moto"
upstream = "http://127.0.0.1:{}"

[[sign]]
host = "127.0.0.1"
kind = "aws-sigv4"
access_key = "{{{{secret:{ACCESS_KEY_PATH}}}}}"
secret_key = "{{{{secret:{SECRET_KEY_PATH}}}}}"
{token_line}
"#,
        moto_port(&moto)
    );
    let sc = Sidecar::start_custom(&policy, &[]);
    sc.server.create(ACCESS_KEY_PATH, &key_id);
    sc.server.create(SECRET_KEY_PATH, &secret_key);
    if let Some(token) = &token {
        sc.server.create(SESSION_TOKEN_PATH, token);
    }
    let script = sc.dir.path().join("agent.py");
    std::fs::write(&script, SCRIPT).unwrap();
    Some(Setup { moto, sc, plain, key_id, secret_key, token, script })
}

/// The four requests moto takes unchecked: a user `airlock` with a policy allowing
/// everything and an access key, and the secret `app/db`; the key's id and secret key.
fn seed(moto: &Moto) -> (String, String) {
    moto.iam(&[("Action", "CreateUser"), ("UserName", "airlock")]);
    let policy = json!({"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]});
    moto.iam(&[
        ("Action", "PutUserPolicy"),
        ("UserName", "airlock"),
        ("PolicyName", "all"),
        ("PolicyDocument", &policy.to_string()),
    ]);
    let created = moto.iam(&[("Action", "CreateAccessKey"), ("UserName", "airlock")]);
    moto.call("CreateSecret", json!({ "Name": "app/db", "SecretString": DB_SECRET }));
    (xml_text(&created, "AccessKeyId"), xml_text(&created, "SecretAccessKey"))
}

/// Runs the boto3 script against `endpoint`, through `http_proxy` when given.
fn boto3(s: &Setup, endpoint: &str, tag: &str, http_proxy: Option<&str>) -> Value {
    let proxy = http_proxy.map(|p| ("HTTP_PROXY", p));
    python(&s.script, &[endpoint, tag], proxy).0
}

/// Runs the python `script` with `args` and no proxy or AWS profile from the environment but
/// `proxy` (a variable and its value); its JSON output, and its whole output as text.
fn python(script: &std::path::Path, args: &[&str], proxy: Option<(&str, &str)>) -> (Value, String) {
    let mut cmd = Command::new("python3");
    cmd.arg(script).args(args);
    for var in ["HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy", "NO_PROXY", "no_proxy", "ALL_PROXY"] {
        cmd.env_remove(var);
    }
    for var in ["AWS_PROFILE", "AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE", "AWS_CA_BUNDLE", "REQUESTS_CA_BUNDLE"]
    {
        cmd.env_remove(var);
    }
    if let Some((var, proxy)) = proxy {
        cmd.env(var, proxy);
    }
    let out = cmd.output().expect("python3 runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let all = format!("{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "python script failed: {all}");
    let json = serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("{e}: {stdout}"));
    (json, all)
}

fn expect_served(out: &Value, tag: &str) {
    assert_eq!(out["names"], json!(["app/db"]), "{out}");
    assert_eq!(out["secret"], DB_SECRET, "{out}");
    // moto answered with the real key id; the agent sees its placeholder.
    assert_eq!(out["listed_key"], format!("{{{{secret:{ACCESS_KEY_PATH}}}}}"), "{out}");
    assert_eq!(out["object"], format!("hello from {tag}"), "{out}");
}

/// curl `args` with the dummy SigV4 `Authorization` of an agent; (status, output).
fn curl(args: &[&str]) -> (u16, String) {
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "20", "-w", "\n%{http_code}", "-H", &format!("Authorization: {DUMMY_AUTH}")])
        .args(args)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or((&text, "0"));
    (code.trim().parse().unwrap_or(0), format!("{body}{}", String::from_utf8_lossy(&out.stderr)))
}

const LIST_SECRETS: [&str; 6] = [
    "-H",
    "Content-Type: application/x-amz-json-1.1",
    "-H",
    "X-Amz-Target: secretsmanager.ListSecrets",
    "--data-binary",
    "{}",
];

#[test]
fn boto3_with_dummy_keys_is_signed_with_the_real_ones() {
    let Some(s) = start() else { return };
    let proxy = format!("http://{}", s.sc.proxy_addr);

    // Without the proxy, moto refuses the agent's dummy keys.
    let direct = boto3(&s, &s.moto.endpoint, "direct", None);
    assert!(direct["error"].is_string() && direct.get("names").is_none(), "{direct}");

    // Route mode: the SDK's endpoint is the route.
    let routed = boto3(&s, &format!("{proxy}/r/moto"), "route", None);
    expect_served(&routed, "route");
    // Forward proxy: the SDK's endpoint is moto's, HTTP_PROXY the proxy.
    let forwarded = boto3(&s, &s.moto.endpoint, "forward", Some(&proxy));
    expect_served(&forwarded, "forward");

    // HTTP/2 (route) and a CONNECT tunnel carrying plain HTTP/1.1 are signed too.
    let (status, out) = curl(&[&["--http2-prior-knowledge", &format!("{proxy}/r/moto/")][..], &LIST_SECRETS].concat());
    assert_eq!(status, 200, "{out}");
    assert!(out.contains("app/db"), "{out}");
    let moto_url = format!("{}/", s.moto.endpoint);
    let tunnelled = [&["--proxytunnel", "--proxy", &proxy, &moto_url][..], &LIST_SECRETS].concat();
    let (status, out) = curl(&tunnelled);
    assert_eq!(status, 200, "{out}");
    // A presigned URL toward the sign host is refused, nothing sent.
    let (status, out) = curl(&[&format!("{proxy}/r/moto/bucket-route/x?X-Amz-Signature=00&X-Amz-Credential=a")]);
    assert_eq!(status, 400, "{out}");
    assert!(out.contains("presigned"), "{out}");

    // Each signed request records one event per value, of kind aws_sigv4.
    let events = |path: &str| {
        let (_, page) = s.sc.server.admin(
            "GET",
            &format!("/v1/secrets/{}/access-events?limit=1000", path.replace('/', "%2F")),
            None,
        );
        page["events"].as_array().cloned().unwrap_or_default()
    };
    let injected = |path: &str| {
        events(path)
            .iter()
            .filter(|e| e["detail"]["outcome"] == "injected")
            .map(|e| e["detail"]["count"].as_u64().unwrap())
            .sum::<u64>()
    };
    // Two SDK runs of six calls, and two curl calls (the presigned URL was refused).
    let signed = 2 * 6 + 2;
    until(Duration::from_secs(10), || injected(ACCESS_KEY_PATH) >= signed && injected(SECRET_KEY_PATH) >= signed);
    assert_eq!(injected(ACCESS_KEY_PATH), signed);
    assert_eq!(injected(SECRET_KEY_PATH), signed);
    for event in events(ACCESS_KEY_PATH).iter().chain(&events(SECRET_KEY_PATH)) {
        if event["detail"]["outcome"] == "injected" {
            assert_eq!(event["detail"]["kind"], "aws_sigv4", "{event}");
            assert_eq!(event["detail"]["host"], "127.0.0.1", "{event}");
        }
    }

    no_key_in_the_logs(&s);
}

/// Neither key (nor the token) reaches a trace log, the proxy's or the server's.
fn no_key_in_the_logs(s: &Setup) {
    keys_not_logged(&s.sc, &s.key_id, &s.secret_key, s.token.as_deref());
}

fn keys_not_logged(sc: &Sidecar, key_id: &str, secret_key: &str, token: Option<&str>) {
    let server_log = std::fs::read_to_string(sc.server.log_path()).unwrap_or_default();
    for (name, log) in [("proxy", sc.log()), ("server", server_log)] {
        assert!(!log.is_empty(), "the {name} wrote no log");
        let keys = [("access key id", Some(key_id)), ("secret key", Some(secret_key)), ("token", token)];
        for (what, key) in keys.into_iter().filter_map(|(what, key)| Some((what, key?))) {
            if let Some(line) = log.lines().find(|l| l.contains(key)) {
                panic!("the {what} reached the {name} log: {}", line.replace(key, "<KEY>"));
            }
        }
    }
}

/// Temporary credentials: moto checks that `X-Amz-Security-Token` is the session token of the
/// assumed role's key; the proxy adds it (signed) in place of the agent's dummy one.
#[test]
fn temporary_credentials_are_signed_with_their_session_token() {
    let Some(s) = start_with(true) else { return };
    let proxy = format!("http://{}", s.sc.proxy_addr);
    let out = boto3(&s, &format!("{proxy}/r/moto"), "session", None);
    assert_eq!(out["names"], json!(["app/db"]), "{out}");
    assert_eq!(out["secret"], DB_SECRET, "{out}");
    assert_eq!(out["object"], "hello from session", "{out}");
    let token_events = || {
        let path = SESSION_TOKEN_PATH.replace('/', "%2F");
        let (_, page) = s.sc.server.admin("GET", &format!("/v1/secrets/{path}/access-events?limit=100"), None);
        let events = page["events"].as_array().cloned().unwrap_or_default();
        events
            .iter()
            .filter(|e| e["detail"]["kind"] == "aws_sigv4")
            .filter_map(|e| e["detail"]["count"].as_u64())
            .sum::<u64>()
    };
    until(Duration::from_secs(10), || token_events() == 6);
    assert_eq!(token_events(), 6, "one use of the token per signed request");
    // The secret's usage names the rule that signs with it, and as what.
    let (status, usage) = s.sc.server.admin("GET", "/v1/secrets/aws%2Fprod%2Fsession-token/usage", None);
    assert_eq!(status, 200, "{usage}");
    assert_eq!(
        usage["agents"][0]["signs"],
        json!([{"host": "127.0.0.1", "kind": "aws-sigv4", "role": "session_token"}])
    );
    no_key_in_the_logs(&s);
}

#[test]
fn other_hosts_are_not_signed_and_the_body_bound_holds() {
    let Some(s) = start() else { return };
    let proxy = format!("http://{}", s.sc.proxy_addr);

    // A host outside the sign rule gets the agent's own Authorization, unchanged.
    let url = format!("http://localhost:{}/plain", s.plain.port);
    let (status, out) = curl(&["--proxy", &proxy, &url]);
    assert_eq!(status, 200, "{out}");
    let seen = s.plain.requests();
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(seen[0].header("authorization"), Some(DUMMY_AUTH));
    assert!(seen[0].header("x-amz-date").is_none());
    assert!(!seen[0].contains(&s.key_id));

    // Over the bound: 413 body_too_large, declared or not, and moto is sent nothing.
    let big = s.sc.dir.path().join("big");
    std::fs::write(&big, vec![b'x'; 8 * 1024 * 1024 + 1]).unwrap();
    let data = format!("@{}", big.display());
    let route = format!("{proxy}/r/moto/");
    let (status, out) = curl(&["-i", "-H", "Content-Type: application/x-amz-json-1.1", "--data-binary", &data, &route]);
    assert_eq!(status, 413, "{out}");
    assert!(out.contains("body_too_large"), "{out}");
    let chunked = ["-i", "-H", "Transfer-Encoding: chunked", "-H", "Content-Type: application/x-amz-json-1.1"];
    let (status, out) = curl(&[&chunked[..], &["--data-binary", &data, &route]].concat());
    assert_eq!(status, 413, "{out}");
    // At the bound the request goes (and moto checks its signature).
    std::fs::write(&big, vec![b' '; 8 * 1024 * 1024]).unwrap();
    let (status, out) = curl(&[
        "-H",
        "Content-Type: application/x-amz-json-1.1",
        "-H",
        "X-Amz-Target: secretsmanager.ListSecrets",
        "--data-binary",
        &data,
        &route,
    ]);
    assert_ne!(status, 413, "{out}");
    assert_ne!(status, 403, "{out}");
}

const SM_HOST: &str = "secretsmanager.us-east-1.amazonaws.com";
const IAM_HOST: &str = "iam.amazonaws.com";
const S3_HOST: &str = "s3.amazonaws.com";

/// As an AWS SDK is used: the real endpoints, `HTTPS_PROXY`, and the proxy's CA to verify.
const TLS_SCRIPT: &str = r#"
import json, sys
import boto3
from botocore.config import Config
from botocore.exceptions import ClientError

sm_endpoint, iam_endpoint, s3_endpoint, ca = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]
kw = dict(region_name="us-east-1", aws_access_key_id="AKIDUMMYAGENTKEY", aws_secret_access_key="dummy-agent-secret-key",
          config=Config(retries={"max_attempts": 1, "mode": "standard"}), verify=ca)
out = {}
try:
    sm = boto3.client("secretsmanager", endpoint_url=sm_endpoint, **kw)
    out["names"] = sorted(s["Name"] for s in sm.list_secrets()["SecretList"])
    out["secret"] = sm.get_secret_value(SecretId="app/db")["SecretString"]
    iam = boto3.client("iam", endpoint_url=iam_endpoint, **kw)
    out["listed_key"] = iam.list_access_keys(UserName="airlock")["AccessKeyMetadata"][0]["AccessKeyId"]
    # Over HTTPS, boto3 uploads with an aws-chunked body and a checksum trailer
    # (STREAMING-UNSIGNED-PAYLOAD-TRAILER): the body streams, the head is signed.
    s3 = boto3.client("s3", endpoint_url=s3_endpoint, **dict(kw, config=Config(
        retries={"max_attempts": 1, "mode": "standard"}, s3={"addressing_style": "path"})))
    s3.create_bucket(Bucket="tls-bucket")
    s3.put_object(Bucket="tls-bucket", Key="note.txt", Body=b"through the intercepted tls")
    out["object"] = s3.get_object(Bucket="tls-bucket", Key="note.txt")["Body"].read().decode()
except ClientError as e:
    out["error"] = e.response["Error"]["Code"]
print(json.dumps(out))
"#;

/// `HTTPS_PROXY`, the way AWS SDKs reach AWS: boto3 sends `CONNECT` for the real AWS host
/// names, the proxy intercepts the TLS with its own CA, re-signs with the real keys and speaks
/// TLS to moto (serving a certificate for those names by a test CA the proxy is given, and
/// pinned to them). Moto checks the signatures; the real key id never reaches the agent.
#[test]
fn boto3_through_https_proxy_is_signed_inside_the_intercepted_tls() {
    let certs = tempfile::tempdir().unwrap();
    let tls = PemFiles::write(certs.path(), "moto-", &[SM_HOST, IAM_HOST, S3_HOST, "127.0.0.1"]);
    let Some(moto) = Moto::start_tls(&[("INITIAL_NO_AUTH_ACTION_COUNT", "4")], &tls) else { return };
    let (key_id, secret_key) = seed(&moto);
    let port = moto_port(&moto);
    let policy = format!(
        r#"
[agent]
name = "research-agent"

[egress]
allow = ["*.amazonaws.com"]
deny_private_networks = false

[[grant]]
secrets = "aws/prod/*"
hosts = ["*.amazonaws.com"]

[[sign]]
host = "*.amazonaws.com"
kind = "aws-sigv4"
access_key = "{{{{secret:{ACCESS_KEY_PATH}}}}}"
secret_key = "{{{{secret:{SECRET_KEY_PATH}}}}}"
"#
    );
    let pins = [SM_HOST, IAM_HOST, S3_HOST].map(|host| format!("{host}=127.0.0.1:{port}"));
    let args = ["--resolve", &pins[0], "--resolve", &pins[1], "--resolve", &pins[2]];
    let sc = Sidecar::start_custom_against(&policy, &args, port, &tls.ca);
    sc.server.create(ACCESS_KEY_PATH, &key_id);
    sc.server.create(SECRET_KEY_PATH, &secret_key);
    let script = sc.dir.path().join("agent_tls.py");
    std::fs::write(&script, TLS_SCRIPT).unwrap();

    // Straight to moto over TLS, the dummy keys are refused: moto checks signatures.
    let direct = format!("https://127.0.0.1:{port}");
    let moto_ca = tls.ca.to_str().unwrap();
    let (out, _) = python(&script, &[&direct, &direct, &direct, moto_ca], None);
    assert!(out["error"].is_string() && out.get("names").is_none(), "{out}");

    // Through HTTPS_PROXY, verifying the proxy's CA: served, and the key id is a placeholder.
    let (sm, iam, s3) = (format!("https://{SM_HOST}"), format!("https://{IAM_HOST}"), format!("https://{S3_HOST}"));
    let proxy = format!("http://{}", sc.proxy_addr);
    let ca = sc.ca_path();
    let (out, all) = python(&script, &[&sm, &iam, &s3, ca.to_str().unwrap()], Some(("HTTPS_PROXY", &proxy)));
    assert_eq!(out["names"], json!(["app/db"]), "{out}");
    assert_eq!(out["secret"], DB_SECRET, "{out}");
    assert_eq!(out["listed_key"], format!("{{{{secret:{ACCESS_KEY_PATH}}}}}"), "{out}");
    assert_eq!(out["object"], "through the intercepted tls", "{out}");
    assert!(!all.contains(key_id.as_str()), "the real key id reached the agent");

    // Six signed requests, one event per key each, of kind aws_sigv4 for the host signed.
    let injected = |path: &str| {
        let path = path.replace('/', "%2F");
        let (_, page) = sc.server.admin("GET", &format!("/v1/secrets/{path}/access-events?limit=100"), None);
        let events = page["events"].as_array().cloned().unwrap_or_default();
        events.into_iter().filter(|e| e["detail"]["outcome"] == "injected").collect::<Vec<_>>()
    };
    let count = |path: &str| injected(path).iter().filter_map(|e| e["detail"]["count"].as_u64()).sum::<u64>();
    until(Duration::from_secs(10), || count(ACCESS_KEY_PATH) >= 6 && count(SECRET_KEY_PATH) >= 6);
    assert_eq!((count(ACCESS_KEY_PATH), count(SECRET_KEY_PATH)), (6, 6));
    let mut hosts = Vec::new();
    for event in injected(ACCESS_KEY_PATH).iter().chain(&injected(SECRET_KEY_PATH)) {
        assert_eq!(event["detail"]["kind"], "aws_sigv4", "{event}");
        hosts.push(event["detail"]["host"].as_str().unwrap_or_default().to_owned());
    }
    for host in [SM_HOST, IAM_HOST, S3_HOST] {
        assert!(hosts.iter().any(|h| h == host), "{host} not in {hosts:?}");
    }
    assert!(hosts.iter().all(|h| [SM_HOST, IAM_HOST, S3_HOST].contains(&h.as_str())), "{hosts:?}");

    keys_not_logged(&sc, &key_id, &secret_key, None);
}
