//! The GCP Secret Manager client. Values, versions, fields, listing and health against drongo's
//! implementation of the Secret Manager REST API (`drongo server`, from PyPI's `drongo`),
//! written with its own HTTP API; and the service-account flow (a JWT signed with the key,
//! exchanged for a token, the token sent as the bearer) against a recorded exchange replayed
//! by a raw listener here, in the shapes Google's REST reference documents, since no local
//! implementation of Google's token endpoint exists. Nothing here reaches Google.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};

use airlock::providers::{self, AddressRule, Environment, FileRule, Provider, ProviderError, ProviderKind};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use serde_json::{Value, json};

use crate::providers::{Running, failure, free_port, have_tool, read};
use crate::support::{MARKER, Server, block_on, secret_value};

const PROJECT: &str = "airlock-test";

struct Drongo {
    _process: Option<Running>,
    endpoint: String,
    http: reqwest::blocking::Client,
}

impl Drongo {
    fn start() -> Option<Drongo> {
        if !have_tool("drongo", "drongo==0.8.0") {
            return None;
        }
        airlock::install_crypto_provider();
        let http = reqwest::blocking::Client::new();
        for _ in 0..3 {
            let port = free_port();
            let child = Command::new("drongo")
                .args(["server", "--host", "127.0.0.1", "--port", &port.to_string()])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("drongo is on PATH but does not start");
            let endpoint = format!("http://127.0.0.1:{port}");
            if let Some(child) = crate::support::until_ready(child, &http, &format!("{endpoint}/drongo/health")) {
                return Some(Drongo { _process: Some(Running(child)), endpoint, http });
            }
        }
        panic!("drongo server did not come up on three ports");
    }

    fn call(&self, path: &str, body: Value) -> Value {
        let resp =
            self.http.post(format!("{}/v1/projects/{PROJECT}/{path}", self.endpoint)).json(&body).send().unwrap();
        let status = resp.status();
        let text = resp.text().unwrap();
        assert!(status.is_success(), "{path}: {status} {text}");
        serde_json::from_str(&text).unwrap()
    }

    /// Creates the secret if needed and adds a version holding `data`; its version number.
    fn add(&self, secret: &str, data: &[u8]) -> String {
        let url = format!("{}/v1/projects/{PROJECT}/secrets/{secret}", self.endpoint);
        if !self.http.get(&url).send().unwrap().status().is_success() {
            self.call(&format!("secrets?secretId={secret}"), json!({ "replication": { "automatic": {} } }));
        }
        let version =
            self.call(&format!("secrets/{secret}:addVersion"), json!({ "payload": { "data": STANDARD.encode(data) } }));
        version["name"].as_str().unwrap().rsplit('/').next().unwrap().to_owned()
    }

    fn provider(&self, env: &Environment) -> Arc<dyn Provider> {
        let config = json!({ "endpoint": self.endpoint, "project": PROJECT });
        providers::build(ProviderKind::GcpSecretManager, &config, env).unwrap()
    }
}

fn token_env() -> Environment {
    Environment::from_pairs([(providers::gcp::TOKEN_VAR, "ya29.test-token")])
}

fn reference(secret: &str) -> String {
    format!("gcp-sm://projects/{PROJECT}/secrets/{secret}")
}

#[test]
fn gcp_secret_manager_versions_fields_list_and_health() {
    let Some(mut drongo) = Drongo::start() else { return };
    assert_eq!(drongo.add("api", secret_value("gcp-v1").as_bytes()), "1");
    assert_eq!(drongo.add("api", secret_value("gcp-v2").as_bytes()), "2");
    let creds = json!({ "user": "svc", "password": secret_value("gcp-db") });
    drongo.add("db", creds.to_string().as_bytes());
    drongo.add("bin", &[0xff, 0xfe, 0x00, 0x01]);
    let p = drongo.provider(&token_env());

    let api = reference("api");
    assert_eq!(read(&*p, &api, None).unwrap(), (secret_value("gcp-v2"), Some("2".into())));
    assert_eq!(read(&*p, &api, Some("latest")).unwrap(), (secret_value("gcp-v2"), Some("2".into())));
    assert_eq!(read(&*p, &api, Some("1")).unwrap(), (secret_value("gcp-v1"), Some("1".into())));
    assert_eq!(read(&*p, &format!("{}#password", reference("db")), None).unwrap().0, secret_value("gcp-db"));
    let e = failure(&*p, &format!("{}#nope", reference("db")), None);
    assert!(matches!(e, ProviderError::Unusable { .. }) && e.to_string().contains("password, user"), "{e}");
    let e = failure(&*p, &format!("{api}#field"), None);
    assert!(e.to_string().contains("not a JSON object"), "{e}");
    assert!(matches!(failure(&*p, &api, Some("9")), ProviderError::NotFound { .. }));
    let e = failure(&*p, &reference("missing"), None);
    assert!(matches!(e, ProviderError::NotFound { .. }) && e.to_string().contains("secrets/missing"), "{e}");
    assert!(failure(&*p, &reference("bin"), None).to_string().contains("binary"));

    let listed = block_on(p.list(None, 50, None)).unwrap();
    let mut refs: Vec<&str> = listed.candidates.iter().map(|c| c.external_ref.as_str()).collect();
    refs.sort();
    assert_eq!(refs, [reference("api"), reference("bin"), reference("db")]);
    assert!(listed.candidates.iter().any(|c| c.name == "db"));
    let health = block_on(p.health());
    assert!(health.ok, "{health:?}");

    // No credentials: the health check says which to give.
    let bare = drongo.provider(&Environment::default());
    let health = block_on(bare.health());
    assert!(!health.ok && health.message.contains(providers::gcp::TOKEN_VAR), "{health:?}");
    // The store gone: unavailable.
    drongo._process = None;
    assert!(failure(&*p, &api, None).is_unavailable());
    assert!(!block_on(p.health()).ok);
}

/// One recorded request: the request line, the headers (lower-case names) and the body.
#[derive(Debug, Clone)]
struct Recorded {
    line: String,
    headers: Vec<(String, String)>,
    body: String,
}

impl Recorded {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }
}

/// A raw HTTP/1.1 listener on 127.0.0.1 that answers each request with `reply(request)` as
/// `(status line, JSON body)` and records it.
struct Replay {
    port: u16,
    requests: Arc<Mutex<Vec<Recorded>>>,
}

impl Replay {
    fn start(reply: impl Fn(&Recorded) -> (&'static str, String) + Send + Sync + 'static) -> Replay {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let seen = requests.clone();
        let reply = Arc::new(reply);
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let (reply, seen) = (reply.clone(), seen.clone());
                std::thread::spawn(move || {
                    let mut reader = BufReader::new(stream.try_clone().unwrap());
                    loop {
                        let mut line = String::new();
                        if reader.read_line(&mut line).unwrap_or(0) == 0 {
                            break;
                        }
                        let mut headers = Vec::new();
                        loop {
                            let mut h = String::new();
                            if reader.read_line(&mut h).unwrap_or(0) == 0 {
                                return;
                            }
                            let h = h.trim_end();
                            if h.is_empty() {
                                break;
                            }
                            let (name, value) = h.split_once(':').unwrap();
                            headers.push((name.to_ascii_lowercase(), value.trim().to_owned()));
                        }
                        let len =
                            headers.iter().find(|(n, _)| n == "content-length").map_or(0, |(_, v)| v.parse().unwrap());
                        let mut body = vec![0; len];
                        if reader.read_exact(&mut body).is_err() {
                            return;
                        }
                        let request = Recorded {
                            line: line.trim_end().to_owned(),
                            headers,
                            body: String::from_utf8(body).unwrap(),
                        };
                        let (status, body) = reply(&request);
                        seen.lock().unwrap().push(request);
                        let answer = format!(
                            "HTTP/1.1 {status}\r\nContent-Type: application/json; charset=UTF-8\r\nContent-Length: {}\r\n\r\n{body}",
                            body.len()
                        );
                        if stream.write_all(answer.as_bytes()).is_err() {
                            break;
                        }
                    }
                });
            }
        });
        Replay { port, requests }
    }

    fn requests(&self) -> Vec<Recorded> {
        self.requests.lock().unwrap().clone()
    }
}

/// A fresh RSA key: (PKCS #8 PEM, the public key as PKCS #1 DER), by the openssl tool.
fn rsa_key(dir: &Path) -> (String, Vec<u8>) {
    let key = dir.join("key.pem");
    let public = dir.join("public.der");
    let ok = Command::new("openssl")
        .args(["genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out"])
        .arg(&key)
        .stderr(Stdio::null())
        .status()
        .unwrap()
        .success();
    assert!(ok, "openssl genpkey failed");
    let ok = Command::new("openssl")
        .args(["rsa", "-RSAPublicKey_out", "-outform", "DER", "-in"])
        .arg(&key)
        .arg("-out")
        .arg(&public)
        .stderr(Stdio::null())
        .status()
        .unwrap()
        .success();
    assert!(ok, "openssl rsa failed");
    (std::fs::read_to_string(&key).unwrap(), std::fs::read(&public).unwrap())
}

/// The service-account flow, replayed: Google's documented token request (a form POST with
/// the JWT bearer grant type and an RS256 assertion for the key's account and
/// `cloud-platform` scope, audience the token URI) and access request (`GET
/// /v1/projects/P/secrets/S/versions/V:access` with the token as bearer), answered in the
/// documented shapes (`{access_token, expires_in, token_type}`, `{name, payload: {data}}`).
#[test]
fn a_service_account_key_is_exchanged_for_a_token_once_and_the_token_is_the_bearer() {
    let dir = tempfile::tempdir().unwrap();
    let (pem, public_der) = rsa_key(dir.path());
    let value = secret_value("gcp-sa");
    let data = STANDARD.encode(&value);
    let replay = Replay::start(move |r| {
        if r.line.starts_with("POST /token ") {
            (
                "200 OK",
                json!({ "access_token": "ya29.c.recorded-token", "expires_in": 3599, "token_type": "Bearer" })
                    .to_string(),
            )
        } else if r.line.contains(":access ") {
            let body = json!({ "name": "projects/123456789/secrets/api/versions/7", "payload": { "data": data, "dataCrc32c": "3040587612" } });
            ("200 OK", body.to_string())
        } else {
            (
                "404 Not Found",
                json!({ "error": { "code": 404, "message": "not found", "status": "NOT_FOUND" } }).to_string(),
            )
        }
    });
    let origin = format!("http://127.0.0.1:{}", replay.port);
    let token_uri = format!("{origin}/token");
    let creds = dir.path().join("creds");
    std::fs::create_dir(&creds).unwrap();
    let key = json!({
        "type": "service_account", "project_id": PROJECT, "private_key_id": "0123abcd", "private_key": pem,
        "client_email": "airlock@airlock-test.iam.gserviceaccount.com", "client_id": "1234567890",
        "token_uri": token_uri,
    });
    std::fs::write(creds.join("sa.json"), key.to_string()).unwrap();
    let env = Environment::from_pairs([]).with_files(FileRule::Under(creds.clone()));
    let config = json!({ "service_account_file": "sa.json", "endpoint": origin });
    let p = providers::build(ProviderKind::GcpSecretManager, &config, &env).unwrap();

    let r = "gcp-sm://projects/123456789/secrets/api";
    assert_eq!(read(&*p, r, Some("7")).unwrap(), (value.clone(), Some("7".into())));
    assert_eq!(read(&*p, r, Some("7")).unwrap().0, value, "a second read reuses the token");
    let requests = replay.requests();
    assert_eq!(requests.len(), 3, "one token exchange, two reads: {requests:?}");

    let token = &requests[0];
    assert_eq!(token.line, "POST /token HTTP/1.1");
    assert_eq!(token.header("content-type"), Some("application/x-www-form-urlencoded"));
    let form: Vec<(String, String)> = serde_urlencoded::from_str(&token.body).unwrap();
    assert_eq!(form[0], ("grant_type".into(), "urn:ietf:params:oauth:grant-type:jwt-bearer".into()));
    assert_eq!(form[1].0, "assertion");
    let jwt: Vec<&str> = form[1].1.split('.').collect();
    assert_eq!(jwt.len(), 3);
    let part = |s: &str| serde_json::from_slice::<Value>(&URL_SAFE_NO_PAD.decode(s).unwrap()).unwrap();
    assert_eq!(part(jwt[0]), json!({ "alg": "RS256", "typ": "JWT", "kid": "0123abcd" }));
    let claims = part(jwt[1]);
    assert_eq!(claims["iss"], "airlock@airlock-test.iam.gserviceaccount.com");
    assert_eq!(claims["scope"], "https://www.googleapis.com/auth/cloud-platform");
    assert_eq!(claims["aud"], token_uri.as_str());
    assert_eq!(claims["exp"].as_u64().unwrap() - claims["iat"].as_u64().unwrap(), 3600);
    let signature = URL_SAFE_NO_PAD.decode(jwt[2]).unwrap();
    ring::signature::UnparsedPublicKey::new(&ring::signature::RSA_PKCS1_2048_8192_SHA256, &public_der)
        .verify(format!("{}.{}", jwt[0], jwt[1]).as_bytes(), &signature)
        .expect("the assertion is signed with the service account's key");

    for access in &requests[1..] {
        assert_eq!(access.line, "GET /v1/projects/123456789/secrets/api/versions/7:access HTTP/1.1");
        assert_eq!(access.header("authorization"), Some("Bearer ya29.c.recorded-token"));
        assert_eq!(access.header("host"), Some(format!("127.0.0.1:{}", replay.port).as_str()));
    }

    // A token URI the operator did not list is refused before the key is sent anywhere.
    let listed_endpoint_only = Environment::from_pairs([])
        .with_files(FileRule::Under(creds.clone()))
        .with_addresses(AddressRule::Only(vec![format!("http://localhost:{}", replay.port)]));
    let config = json!({ "service_account_file": "sa.json", "endpoint": format!("http://localhost:{}", replay.port) });
    let p = providers::build(ProviderKind::GcpSecretManager, &config, &listed_endpoint_only).unwrap();
    let e = failure(&*p, r, None);
    assert!(e.to_string().contains("token_uri") && e.to_string().contains("AIRLOCK_PROVIDER_ADDRESSES"), "{e}");
    // A key file outside the credentials directory is not read.
    let outside = json!({ "service_account_file": dir.path().join("key.pem"), "endpoint": origin });
    let p = providers::build(ProviderKind::GcpSecretManager, &outside, &env).unwrap();
    assert!(failure(&*p, r, None).to_string().contains("not inside"));
    assert_eq!(replay.requests().len(), 3, "nothing more was sent");
    assert!(!format!("{e:?}").contains("PRIVATE KEY") && !e.to_string().contains(MARKER));
}

/// The server: the type is supported, and a config is checked against the operator's list of
/// addresses and tried (discovery preview) with the server's own token.
#[test]
fn the_server_lists_gcp_and_previews_a_config_against_drongo() {
    let Some(drongo) = Drongo::start() else { return };
    drongo.add("api", secret_value("gcp-server").as_bytes());
    let mut s = Server::start(crate::support::Backend::Sqlite);
    s.env = vec![
        ("AIRLOCK_PROVIDER_ADDRESSES".into(), drongo.endpoint.clone()),
        (providers::gcp::TOKEN_VAR.into(), "ya29.server-token".into()),
    ];
    s.kill9();
    s.spawn();
    let (_, types) = s.admin("GET", "/v1/providers", None);
    let gcp =
        types["providers"].as_array().unwrap().iter().find(|p| p["type"] == "gcp_secret_manager").unwrap().clone();
    assert_eq!((&gcp["supported"], &gcp["reference_scheme"]), (&json!(true), &json!("gcp-sm://")));
    let preview = |config: Value| {
        let body = json!({ "type": "gcp_secret_manager", "config": config }).to_string();
        s.admin("POST", "/v1/provider-configs/discovery/preview", Some(&body))
    };
    let (status, tried) = preview(json!({ "endpoint": drongo.endpoint, "project": PROJECT }));
    assert_eq!((status, &tried["ok"]), (200, &json!(true)), "{tried}");
    let (status, tried) = preview(json!({ "endpoint": "http://127.0.0.1:1", "project": PROJECT }));
    assert_eq!(status, 422, "{tried}");
    assert!(tried["error"]["message"].as_str().unwrap().contains("AIRLOCK_PROVIDER_ADDRESSES"), "{tried}");
    let (status, tried) = preview(json!({ "endpoint": drongo.endpoint, "private_key": "x" }));
    assert_eq!(status, 422, "{tried}");
    let body = json!({ "type": "gcp_secret_manager", "name": "gcp", "config": { "endpoint": drongo.endpoint, "project": PROJECT } });
    let (status, created) = s.admin("POST", "/v1/provider-configs", Some(&body.to_string()));
    assert_eq!(status, 201, "{created}");
    let (status, health) =
        s.admin("POST", &format!("/v1/provider-configs/{}/health", created["id"].as_str().unwrap()), None);
    assert_eq!((status, &health["ok"]), (200, &json!(true)), "{health}");
}

/// A secret that references GCP Secret Manager (drongo) reads through the central API:
/// the latest version, a new one (TTL 0), a pinned version, a `#field`, the 404 reason for a
/// secret GCP does not hold, and 502 `provider_error` when the store is down. The value never
/// reaches the database.
#[test]
fn a_gcp_reference_reads_through_the_api() {
    let Some(mut drongo) = Drongo::start() else { return };
    drongo.add("api", secret_value("gcp-api-v1").as_bytes());
    drongo.add("db", json!({ "password": secret_value("gcp-db"), "user": "svc" }).to_string().as_bytes());
    let mut s = Server::start(crate::support::Backend::Sqlite);
    s.env = vec![
        ("AIRLOCK_PROVIDER_ADDRESSES".into(), drongo.endpoint.clone()),
        (providers::gcp::TOKEN_VAR.into(), "ya29.server-token".into()),
    ];
    s.kill9();
    s.spawn();
    let post = |path: &str, body: Value| s.admin("POST", path, Some(&body.to_string()));
    let body = json!({ "type": "gcp_secret_manager", "name": "gcp", "is_default": true, "cache_ttl_seconds": 0,
                       "config": { "endpoint": drongo.endpoint, "project": PROJECT } });
    let (status, config) = post("/v1/provider-configs", body);
    assert_eq!(status, 201, "{config}");
    let external = |path: &str, reference: &str| {
        post("/v1/secrets", json!({ "path": path, "managed_mode": "external_reference", "external_ref": reference }))
    };
    assert_eq!(external("gcp/api", &reference("api")).0, 201);
    let value = |path: &str| s.admin("GET", &format!("/v1/secrets/{}", path.replace('/', "%2F")), None);
    let (status, got) = value("gcp/api");
    assert_eq!((status, &got["value"]), (200, &json!(secret_value("gcp-api-v1"))), "{got}");
    assert_eq!((&got["managed_mode"], &got["provider"]), (&json!("external_reference"), &json!("gcp_secret_manager")));

    drongo.add("api", secret_value("gcp-api-v2").as_bytes());
    assert_eq!(value("gcp/api").1["value"], json!(secret_value("gcp-api-v2")), "a TTL of 0 reads the latest");
    let pin = json!({ "provider_version_ref": "1" }).to_string();
    assert_eq!(s.admin("PUT", "/v1/secrets/gcp%2Fapi", Some(&pin)).0, 200);
    assert_eq!(value("gcp/api").1["value"], json!(secret_value("gcp-api-v1")), "pinned to version 1");

    assert_eq!(external("gcp/db-password", &format!("{}#password", reference("db"))).0, 201);
    assert_eq!(value("gcp/db-password").1["value"], json!(secret_value("gcp-db")));
    assert_eq!(external("gcp/missing", &reference("nope")).0, 201, "nothing is read at create");
    let (status, missing) = value("gcp/missing");
    assert_eq!((status, &missing["error"]["reason"]), (404, &json!("provider_not_found")), "{missing}");

    drongo._process = None; // stopped
    let (status, down) = value("gcp/api");
    assert_eq!((status, &down["error"]["code"]), (502, &json!("provider_error")), "{down}");
    let dump = s.database_dump();
    assert!(!dump.windows(MARKER.len()).any(|w| w == MARKER.as_bytes()), "no value in the database");
}
