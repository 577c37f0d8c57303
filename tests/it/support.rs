//! The shared fixture: a real `airlock` server process on an ephemeral port, on SQLite in a
//! temp dir or on its own PostgreSQL schema, logging at trace level to a file that is
//! checked for planted secret values when the fixture is dropped.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// Every secret value a test plants contains this marker, so any leak is easy to find.
pub const MARKER: &str = "SeCrEt";

pub fn secret_value(n: impl std::fmt::Display) -> String {
    format!("sk-{MARKER}-{n}-9f8e7d")
}

pub const BIN: &str = env!("CARGO_BIN_EXE_airlock");

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// Runs `body` once per backend; PostgreSQL is skipped, with a notice, when
/// `AIRLOCK_TEST_DATABASE_URL` is unset.
#[macro_export]
macro_rules! both_backends {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $( #[test] fn $name() { super::$name($crate::support::Backend::Sqlite) } )*
        }
        mod postgres {
            $( #[test] fn $name() {
                if $crate::support::postgres_url().is_some() {
                    super::$name($crate::support::Backend::Postgres)
                }
            } )*
        }
    };
}

pub fn postgres_url() -> Option<String> {
    match std::env::var("AIRLOCK_TEST_DATABASE_URL") {
        Ok(url) if !url.is_empty() => Some(url),
        _ => {
            eprintln!("notice: AIRLOCK_TEST_DATABASE_URL is unset; skipping the PostgreSQL run of this test");
            None
        }
    }
}

pub struct Server {
    pub dir: tempfile::TempDir,
    pub addr: String,
    pub admin_key: String,
    pub database_url: Option<String>,
    pub extra_args: Vec<String>,
    /// The address the server binds (`127.0.0.1`, or `[::]` for a dual-stack listener);
    /// clients always connect to 127.0.0.1.
    bind: &'static str,
    /// Serving HTTPS: the CA its certificate is checked against.
    https_ca: Option<PathBuf>,
    /// Variables set for the server process besides the test's own environment.
    pub env: Vec<(String, String)>,
    child: Option<Child>,
    http: reqwest::blocking::Client,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn random_suffix() -> String {
    let mut b = [0u8; 6];
    getrandom::getrandom(&mut b).unwrap();
    hex::encode(b)
}

impl Server {
    pub fn start(backend: Backend) -> Server {
        Server::start_with(backend, &[])
    }

    pub fn start_with(backend: Backend, extra_args: &[&str]) -> Server {
        let database_url = match backend {
            Backend::Sqlite => None,
            Backend::Postgres => Some(fresh_schema(&postgres_url().expect("checked by the caller"))),
        };
        Server::start_on(database_url, extra_args)
    }

    /// A server listening on `[::]` (dual stack): its IPv4 clients arrive as `::ffff:a.b.c.d`.
    pub fn start_dual_stack(backend: Backend) -> Server {
        let database_url = (backend == Backend::Postgres).then(|| fresh_schema(&postgres_url().expect("checked")));
        Server::start_bound(database_url, &[], "[::]", None)
    }

    /// A server on HTTPS (`extra_args` name its certificate and key), whose clients here
    /// check it against `ca`.
    pub fn start_https(backend: Backend, extra_args: &[&str], ca: &std::path::Path) -> Server {
        let database_url = (backend == Backend::Postgres).then(|| fresh_schema(&postgres_url().expect("checked")));
        Server::start_bound(database_url, extra_args, "127.0.0.1", Some(ca.to_owned()))
    }

    /// A server on PostgreSQL at `url` (made by `fresh_schema`), or on SQLite.
    pub fn start_on(database_url: Option<String>, extra_args: &[&str]) -> Server {
        Server::start_bound(database_url, extra_args, "127.0.0.1", None)
    }

    fn start_bound(
        database_url: Option<String>,
        extra_args: &[&str],
        bind: &'static str,
        https_ca: Option<PathBuf>,
    ) -> Server {
        // reqwest is built without a rustls provider of its own; the suite uses ring.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let dir = tempfile::tempdir().unwrap();
        let mut init = Command::new(BIN);
        init.args(["server", "init", "--json", "--data-dir"]).arg(dir.path().join("data"));
        if let Some(url) = &database_url {
            init.args(["--database-url", url]);
        }
        let out = init.output().unwrap();
        assert!(out.status.success(), "init failed: {}", String::from_utf8_lossy(&out.stderr));
        let init: Value = serde_json::from_slice(&out.stdout).unwrap();
        let mut server = Server {
            dir,
            addr: String::new(),
            admin_key: init["admin_key"].as_str().unwrap().to_owned(),
            database_url,

            extra_args: extra_args.iter().map(|s| s.to_string()).collect(),
            bind,
            env: Vec::new(),
            child: None,
            http: https_client(https_ca.as_deref()),
            https_ca,
        };
        server.spawn();
        server
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("server.log")
    }

    /// Starts (or restarts) the server process on a fresh port and waits until it answers.
    /// A port taken by another test between `free_port` and the server's bind costs a retry
    /// on another one.
    pub fn spawn(&mut self) {
        for _ in 0..3 {
            if self.try_spawn_on(free_port()) {
                return;
            }
        }
        panic!("server did not come up on three ports; log:\n{}", self.log());
    }

    /// Restarts on the port it had, so clients configured with its address find it again.
    pub fn restart_same_port(&mut self) {
        let port: u16 = self.addr.rsplit(':').next().unwrap().parse().unwrap();
        self.spawn_on(port);
    }

    pub fn spawn_on(&mut self, port: u16) {
        if !self.try_spawn_on(port) {
            panic!("server did not come up; log:\n{}", self.log());
        }
    }

    /// Whether the server came up on `port` (a process that did not is gone).
    fn try_spawn_on(&mut self, port: u16) -> bool {
        let scheme = if self.https_ca.is_some() { "https" } else { "http" };
        self.addr = format!("{scheme}://127.0.0.1:{port}");
        let log = std::fs::OpenOptions::new().create(true).append(true).open(self.log_path()).unwrap();
        let mut cmd = Command::new(BIN);
        cmd.args(["--log-level", "trace", "server", "--listen", &format!("{}:{port}", self.bind), "--data-dir"])
            .arg(self.data_dir())
            .args(&self.extra_args)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::null())
            .stderr(log);
        if let Some(url) = &self.database_url {
            cmd.args(["--database-url", url]);
        }
        self.child = until_ready(cmd.spawn().unwrap(), &self.http, &format!("{}/healthz", self.addr));
        self.child.is_some()
    }

    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().unwrap(); // SIGKILL
            child.wait().unwrap();
        }
    }

    /// Sends `signal` (like "TERM") and waits up to `within` for the server to exit: its
    /// exit status, or `None` if it was still running (then it is killed).
    pub fn signal_and_wait(&mut self, signal: &str, within: std::time::Duration) -> Option<std::process::ExitStatus> {
        let mut child = self.child.take().expect("the server is running");
        assert!(Command::new("kill").arg(format!("-{signal}")).arg(child.id().to_string()).status().unwrap().success());
        let deadline = std::time::Instant::now() + within;
        while std::time::Instant::now() < deadline {
            if let Some(status) = child.try_wait().unwrap() {
                return Some(status);
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        let _ = child.kill();
        let _ = child.wait();
        None
    }

    /// A second server process on the same database (PostgreSQL) and keyring.
    pub fn replica(&self) -> Replica {
        let port = free_port();
        let addr = format!("http://127.0.0.1:{port}");
        let log = self.dir.path().join("replica.log");
        let mut cmd = Command::new(BIN);
        cmd.args(["--log-level", "trace", "server", "--listen", &format!("127.0.0.1:{port}"), "--data-dir"])
            .arg(self.data_dir())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap());
        if let Some(url) = &self.database_url {
            cmd.args(["--database-url", url]);
        }
        // The same settings as this server (its policies directory, say).
        cmd.args(&self.extra_args);
        let child = cmd.spawn().unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.http.get(format!("{addr}/healthz")).send().map_or(true, |r| r.status() != 200) {
            assert!(Instant::now() < deadline, "replica did not come up");
            std::thread::sleep(Duration::from_millis(50));
        }
        Replica { child, addr, log }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("server is running").id()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.addr, path)
    }

    /// A request with a bearer credential; returns (status, JSON body or Null).
    pub fn call(&self, method: &str, path: &str, key: &str, body: Option<&str>) -> (u16, Value) {
        let resp = self.raw(method, path, key, body);
        let status = resp.status().as_u16();
        let text = resp.text().unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    pub fn raw(&self, method: &str, path: &str, key: &str, body: Option<&str>) -> reqwest::blocking::Response {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut req = self.http.request(method, self.url(path)).bearer_auth(key);
        if let Some(b) = body {
            req = req.header("content-type", "application/json").body(b.to_owned());
        }
        req.send().unwrap()
    }

    pub fn admin(&self, method: &str, path: &str, body: Option<&str>) -> (u16, Value) {
        self.call(method, path, &self.admin_key, body)
    }

    pub fn create(&self, path: &str, value: &str) {
        let body = serde_json::json!({ "path": path, "value": value }).to_string();
        let (status, resp) = self.admin("POST", "/v1/secrets", Some(&body));
        assert_eq!(status, 201, "{resp}");
    }

    /// Runs the `airlock` CLI against this server with `key`.
    pub fn cli(&self, key: &str, args: &[&str]) -> Output {
        let mut cmd = Command::new(BIN);
        cmd.args(args).env("AIRLOCK_ADDR", &self.addr).env("AIRLOCK_TOKEN", key);
        if let Some(ca) = &self.https_ca {
            cmd.env("AIRLOCK_SERVER_CA", ca);
        }
        cmd.output().unwrap()
    }

    /// Runs raw SQL against this server's database.
    pub fn sql(&self, statements: &[&str]) {
        let url = self
            .database_url
            .clone()
            .unwrap_or_else(|| format!("sqlite://{}", self.data_dir().join("airlock.db").display()));
        block_on(async move {
            sqlx::any::install_default_drivers();
            let pool = sqlx::AnyPool::connect(&url).await.unwrap();
            for s in statements {
                sqlx::query(s).execute(&pool).await.unwrap_or_else(|e| panic!("{s}: {e}"));
            }
            pool.close().await;
        });
    }

    /// Every byte the database holds, as text (SQLite: the files; PostgreSQL: the rows).
    pub fn database_dump(&self) -> Vec<u8> {
        match &self.database_url {
            None => std::fs::read_dir(self.data_dir())
                .unwrap()
                .flat_map(|e| std::fs::read(e.unwrap().path()).unwrap())
                .collect(),
            Some(url) => {
                let url = url.clone();
                block_on(async move {
                    sqlx::any::install_default_drivers();
                    let pool = sqlx::AnyPool::connect(&url).await.unwrap();
                    let mut out = Vec::new();
                    for table in
                        ["secrets", "secret_versions", "secret_tags", "audit_events", "credentials", "provider_configs"]
                    {
                        let rows: Vec<String> = sqlx::query_scalar(&format!("SELECT CAST(t AS TEXT) FROM {table} t"))
                            .fetch_all(&pool)
                            .await
                            .unwrap();
                        out.extend(rows.join("\n").into_bytes());
                    }
                    pool.close().await;
                    out
                })
            }
        }
    }
}

/// A client that also trusts the CA in `ca` (if any).
fn https_client(ca: Option<&std::path::Path>) -> reqwest::blocking::Client {
    let mut builder = reqwest::blocking::Client::builder().timeout(Duration::from_secs(30));
    if let Some(ca) = ca {
        let pem = std::fs::read(ca).unwrap();
        builder = builder.add_root_certificate(reqwest::Certificate::from_pem(&pem).unwrap());
    }
    builder.build().unwrap()
}

/// `child` once it answers 200 at `url`; `None` if it exited first (its port was taken, say)
/// or did not answer within 30 s (it is killed then).
pub fn until_ready(mut child: Child, http: &reqwest::blocking::Client, url: &str) -> Option<Child> {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if http.get(url).send().is_ok_and(|r| r.status() == 200) {
            return Some(child);
        }
        if child.try_wait().is_ok_and(|exited| exited.is_some()) {
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
    None
}

pub fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(f)
}

/// A schema of its own for one test, named in the URL's search_path.
pub fn fresh_schema(base: &str) -> String {
    let schema = format!("it_{}", random_suffix());
    let admin_url = base.to_owned();
    let create = schema.clone();
    block_on(async move {
        sqlx::any::install_default_drivers();
        let pool = sqlx::AnyPool::connect(&admin_url).await.expect("cannot reach AIRLOCK_TEST_DATABASE_URL");
        sqlx::query(&format!("CREATE SCHEMA {create}")).execute(&pool).await.unwrap();
        pool.close().await;
    });
    let sep = if base.contains('?') { '&' } else { '?' };
    format!("{base}{sep}options[search_path]={schema}")
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline && child.try_wait().ok().flatten().is_none() {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        if !std::thread::panicking() {
            let log = self.log();
            assert!(!log.is_empty(), "the server wrote no log at trace level");
            if let Some(line) = log.lines().find(|l| l.contains(MARKER)) {
                panic!("a secret value reached the server log: {line}");
            }
        }
    }
}

pub struct Replica {
    child: Child,
    pub addr: String,
    log: PathBuf,
}

impl Drop for Replica {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if !std::thread::panicking() {
            let log = std::fs::read_to_string(&self.log).unwrap_or_default();
            assert!(!log.contains(MARKER), "a secret value reached the replica's log");
        }
    }
}

pub fn enc(path: &str) -> String {
    path.replace('/', "%2F")
}

pub fn assert_error(resp: &(u16, Value), status: u16, code: &str) {
    assert_eq!(resp.0, status, "{}", resp.1);
    assert_eq!(resp.1["error"]["code"], code, "{}", resp.1);
    assert!(resp.1["error"]["message"].as_str().is_some_and(|m| !m.is_empty()), "{}", resp.1);
}

/// Whether `ok` holds within `deadline`, asking every 50 ms.
pub fn until(deadline: Duration, mut ok: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + deadline;
    while Instant::now() < end {
        if ok() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}
