//! `airlock run -- CMD`: an in-process proxy, the trust-store variables, the agent key kept
//! from the command (its environment, airlock's environment and memory, airlock's command
//! line and descriptors), signals forwarded and the exit code passed through.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use crate::sidecar::Sidecar;
use crate::support::{BIN, secret_value};

fn run_cmd(sc: &Sidecar, script: &str) -> Command {
    let mut cmd = Command::new(BIN);
    let pin = format!("api.openai.com=127.0.0.1:{}", sc.upstream.port);
    cmd.args(["run", "--server", &sc.server.addr, "--resolve", &pin])
        .arg("--agent-key-file")
        .arg(sc.dir.path().join("agent.key"))
        .arg("--data-dir")
        .arg(sc.dir.path().join("run"))
        .arg("--upstream-ca")
        .arg(&sc.upstream.ca_pem)
        .args(["--", "python3", "-c", script])
        .env("AIRLOCK_AGENT_KEY", "ak_should_not_leak")
        .env("AIRLOCK_LOG", "warn");
    cmd
}

/// `program` as it is, or as root through `setpriv` without any capability (setpriv execs,
/// so the pid is the program's). A process with capabilities passes every ptrace check
/// (and a process without them is refused one that has them, dumpable or not), so as root
/// airlock and its command both run without them: what is tested is a command of the same
/// user without privileges, against an airlock that is no more privileged than it.
fn unprivileged(program: &str) -> Command {
    if !rustix::process::geteuid().is_root() {
        return Command::new(program);
    }
    let mut cmd = Command::new("setpriv");
    cmd.args(["--bounding-set=-all", "--inh-caps=-all", "--", program]);
    cmd
}

/// The arguments of `airlock run` with `key_args` for the agent key and `sh -c script`
/// (its stderr folded into its stdout) as the command.
fn run_args(sc: &Sidecar, key_args: &[&str], script: &str) -> Vec<std::ffi::OsString> {
    let pin = format!("api.openai.com=127.0.0.1:{}", sc.upstream.port);
    let mut args: Vec<std::ffi::OsString> =
        ["run", "--server", &sc.server.addr, "--resolve", &pin].iter().map(Into::into).collect();
    args.extend(key_args.iter().map(Into::into));
    args.extend(["--data-dir".into(), sc.dir.path().join("run").into()]);
    args.extend(["--upstream-ca".into(), sc.upstream.ca_pem.clone().into()]);
    args.extend(["--", "sh", "-c"].iter().map(Into::into));
    args.push(format!("exec 2>&1\n{script}").into());
    args
}

fn run_sh(sc: &Sidecar, key_args: &[&str], script: &str) -> Command {
    let mut cmd = unprivileged(BIN);
    cmd.args(run_args(sc, key_args, script))
        .env_remove("AIRLOCK_AGENT_KEY")
        .env("AIRLOCK_LOG", "warn")
        .stdin(Stdio::null());
    cmd
}

/// A request through the proxy with a placeholder; prints `status=CODE`.
const CURL_PLACEHOLDER: &str = "echo status=$(curl -sS -o /dev/null -w '%{http_code}' --max-time 20 \
     -H 'Authorization: Bearer {{secret:production/openai/api-key}}' https://api.openai.com/v1/echo)";

fn agent_key(sc: &Sidecar) -> String {
    std::fs::read_to_string(sc.dir.path().join("agent.key")).unwrap().trim().to_owned()
}

/// The command's output (its stderr is folded into stdout by `run_sh`) and airlock's stderr.
fn texts(out: &Output) -> (String, String) {
    (String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
}

/// Whether the command was refused `path` (cat and head word it differently).
fn denied(output: &str, path: &str) -> bool {
    output.lines().any(|l| {
        (l.contains(&format!("{path}'")) || l.contains(&format!("{path}:"))) && l.ends_with("Permission denied")
    })
}

/// The proxy injected the value into the request the command sent.
fn assert_injected(sc: &Sidecar, stdout: &str) {
    assert!(stdout.contains("status=200"), "{stdout}");
    let got = sc.requests_to("api.openai.com");
    assert_eq!(
        got.last().expect("a request reached the upstream").header("authorization"),
        Some(format!("Bearer {}", secret_value("openai")).as_str())
    );
    assert!(!stdout.contains(&secret_value("openai")), "{stdout}");
}

#[test]
fn run_injects_over_https_hides_the_agent_key_and_returns_the_exit_code() {
    let sc = Sidecar::start();
    let script = r#"
import os, sys, requests
r = requests.get("https://api.openai.com/v1/echo", headers={"Authorization": "Bearer {{secret:production/openai/api-key}}"})
print(r.status_code, r.headers.get("x-echo-authorization"))
print("agent key visible:", any(k in os.environ for k in ("AIRLOCK_AGENT_KEY", "AIRLOCK_TOKEN", "AIRLOCK_ADDR")))
print("openai base:", os.environ.get("OPENAI_BASE_URL", "")[:17])
sys.exit(7)
"#;
    let out = run_cmd(&sc, script).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(7), "stdout: {stdout}\nstderr: {}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("200 Bearer {{secret:production/openai/api-key}}"), "{stdout}");
    assert!(stdout.contains("agent key visible: False"), "{stdout}");
    assert!(stdout.contains("openai base: http://127.0.0.1:"), "{stdout}");
    assert!(!stdout.contains(&secret_value("openai")));
    let got = sc.requests_to("api.openai.com");
    assert_eq!(
        got.last().unwrap().header("authorization"),
        Some(format!("Bearer {}", secret_value("openai")).as_str())
    );
}

#[test]
fn sigterm_to_airlock_run_reaches_the_command() {
    let sc = Sidecar::start();
    let script = r#"
import signal, sys, time
def stop(*_):
    print("child got SIGTERM", flush=True)
    sys.exit(42)
signal.signal(signal.SIGTERM, stop)
print("ready", flush=True)
time.sleep(30)
"#;
    let mut child = run_cmd(&sc, script).stdout(Stdio::piped()).spawn().unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    assert_eq!(lines.next().unwrap().unwrap(), "ready");
    std::thread::sleep(Duration::from_millis(200));
    assert!(Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap().success());
    assert_eq!(lines.next().unwrap().unwrap(), "child got SIGTERM");
    assert_eq!(child.wait().unwrap().code(), Some(42));
}

#[test]
fn a_child_cannot_read_the_agent_key_from_airlocks_environment_or_its_own() {
    let sc = Sidecar::start();
    let key = agent_key(&sc);
    let script = format!(
        "{CURL_PLACEHOLDER}
echo ppid=$PPID
echo environ:; cat /proc/$PPID/environ; echo :environ
echo mem:; head -c 16 /proc/$PPID/mem; echo :mem
echo own:; env; echo :own"
    );
    let child = run_sh(&sc, &[], &script)
        .env("AIRLOCK_AGENT_KEY", &key)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let airlock_pid = child.id();
    let out = child.wait_with_output().unwrap();
    let (stdout, stderr) = texts(&out);
    assert!(out.status.success(), "stdout: {stdout}\nstderr: {stderr}");
    assert_injected(&sc, &stdout);
    assert!(stdout.contains(&format!("ppid={airlock_pid}\n")), "the shell's parent is not airlock: {stdout}");
    assert!(denied(&stdout, &format!("/proc/{airlock_pid}/environ")), "{stdout}");
    assert!(denied(&stdout, &format!("/proc/{airlock_pid}/mem")), "{stdout}");
    assert!(stdout.contains("HTTPS_PROXY="), "the child's env was not printed: {stdout}");
    assert!(!stdout.contains(&key), "the agent key reached the child: {stdout}");
    assert!(!stdout.contains("AIRLOCK_AGENT_KEY"), "{stdout}");
    assert!(!stderr.contains("agent key file"), "no key file, no warning about one: {stderr}");
}

#[test]
fn the_agent_key_on_standard_input_leaves_no_path_in_the_command_line_and_no_stdin_to_the_child() {
    let sc = Sidecar::start();
    let key = agent_key(&sc);
    let script = format!(
        "{CURL_PLACEHOLDER}
echo cmdline:; tr '\\0' ' ' < /proc/$PPID/cmdline; echo :cmdline
echo stdin:; cat; echo :stdin"
    );
    let mut child = run_sh(&sc, &["--agent-key-file", "-"], &script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    writeln!(child.stdin.take().unwrap(), "{key}").unwrap();
    let out = child.wait_with_output().unwrap();
    let (stdout, stderr) = texts(&out);
    assert!(out.status.success(), "stdout: {stdout}\nstderr: {stderr}");
    assert_injected(&sc, &stdout);
    assert!(stdout.contains("--agent-key-file - --data-dir"), "the parent's command line was not read: {stdout}");
    assert!(!stdout.contains("agent.key"), "{stdout}");
    assert!(stdout.contains("stdin:\n:stdin"), "the child got standard input: {stdout}");
    assert!(!stdout.contains(&key), "the agent key reached the child: {stdout}");
    assert!(!stderr.contains("agent key file"), "{stderr}");
}

#[test]
fn a_key_file_given_as_standard_input_cannot_be_rewound_by_the_child() {
    let sc = Sidecar::start();
    let key = agent_key(&sc);
    let script = format!(
        "{CURL_PLACEHOLDER}
python3 -c 'import os; os.lseek(0, 0, os.SEEK_SET); print(\"rewound:\", os.read(0, 4096))'"
    );
    let stdin = std::fs::File::open(sc.dir.path().join("agent.key")).unwrap();
    let out = run_sh(&sc, &["--agent-key-file", "-"], &script).stdin(stdin).output().unwrap();
    let (stdout, stderr) = texts(&out);
    assert!(out.status.success(), "stdout: {stdout}\nstderr: {stderr}");
    assert_injected(&sc, &stdout);
    assert!(stdout.contains("rewound: b''"), "{stdout}");
    assert!(!stdout.contains(&key), "the agent key reached the child: {stdout}");
}

#[test]
fn the_agent_key_on_an_inherited_pipe_is_drained_and_unreachable_to_the_child() {
    let sc = Sidecar::start();
    let key = agent_key(&sc);
    let script = format!(
        "{CURL_PLACEHOLDER}
echo fd3:; cat <&3; echo :fd3
echo parent-fd3:; cat /proc/$PPID/fd/3; echo :parent-fd3"
    );
    // The shell moves the test's pipe from descriptor 0 to 3 and execs airlock.
    let mut child = unprivileged("sh")
        .args(["-c", "exec 3<&0 </dev/null; exec \"$@\"", "sh", BIN])
        .args(run_args(&sc, &["--agent-key-fd", "3"], &script))
        .env_remove("AIRLOCK_AGENT_KEY")
        .env("AIRLOCK_LOG", "warn")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // No newline: a key is the text up to the end of the pipe.
    write!(child.stdin.take().unwrap(), "{key}").unwrap();
    let airlock_pid = child.id();
    let out = child.wait_with_output().unwrap();
    let (stdout, stderr) = texts(&out);
    assert!(out.status.success(), "stdout: {stdout}\nstderr: {stderr}");
    assert_injected(&sc, &stdout);
    // Descriptor 3 is inherited (closing it would take unsafe code) but holds nothing.
    assert!(stdout.contains("fd3:\n:fd3"), "{stdout}");
    assert!(denied(&stdout, &format!("/proc/{airlock_pid}/fd/3")), "{stdout}");
    assert!(!stdout.contains(&key), "the agent key reached the child: {stdout}");
}

#[test]
fn a_key_file_the_child_can_read_and_a_root_run_are_warned_about() {
    use std::os::unix::fs::PermissionsExt;
    let sc = Sidecar::start();
    let path = sc.dir.path().join("agent.key");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    let out = run_sh(&sc, &["--agent-key-file", path.to_str().unwrap()], CURL_PLACEHOLDER).output().unwrap();
    let (stdout, stderr) = texts(&out);
    assert!(out.status.success(), "stdout: {stdout}\nstderr: {stderr}");
    assert_injected(&sc, &stdout);
    let warning = stderr
        .lines()
        .find(|l| l.starts_with(&format!("warning: the agent key file {} can be read by the command", path.display())))
        .unwrap_or_else(|| panic!("no warning about the key file: {stderr}"));
    assert!(warning.contains("--agent-key-fd N") && warning.contains("sidecar deployment"), "{warning}");
    let root = stderr.lines().any(|l| l.starts_with("warning: airlock run is running as root"));
    assert_eq!(root, rustix::process::geteuid().is_root(), "{stderr}");
}

/// `airlock run` with these key flags and `true` as the command, and `stdin` as its
/// standard input; the key is read before any server is contacted.
fn run_key_error(key_args: &[&str], stdin: &str) -> (Option<i32>, String) {
    let mut child = Command::new(BIN)
        .args(["run", "--server", "http://127.0.0.1:9"])
        .args(key_args)
        .args(["--", "true"])
        .env_remove("AIRLOCK_AGENT_KEY")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // airlock may have exited before reading (a flag error, say): a broken pipe is no failure.
    let _ = child.stdin.take().unwrap().write_all(stdin.as_bytes());
    let out = child.wait_with_output().unwrap();
    (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn a_missing_or_empty_key_source_is_a_clear_error() {
    let (code, err) = run_key_error(&["--agent-key-file", "-"], "  \n");
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("error: the agent key on standard input (--agent-key-file -) is empty"), "{err}");

    let (code, err) = run_key_error(&["--agent-key-file", "-"], "ak_one\nak_two\n");
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("holds more than one line"), "{err}");

    let (code, err) = run_key_error(&["--agent-key-fd", "999"], "");
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("error: --agent-key-fd 999: file descriptor 999 is not open"), "{err}");

    // Descriptor 0 here is the test's pipe, but an empty one.
    let (code, err) = run_key_error(&["--agent-key-fd", "0"], "");
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("error: the agent key on file descriptor 0 (--agent-key-fd 0) is empty"), "{err}");

    let (code, err) = run_key_error(&["--agent-key-fd", "-3"], "");
    assert_ne!(code, Some(0), "{err}");

    let (code, err) = run_key_error(&["--agent-key-file", "-", "--agent-key-fd", "0"], "ak_x\n");
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("cannot be used with"), "{err}");
}

#[test]
fn a_key_descriptor_that_is_a_regular_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("agent.key");
    std::fs::write(&file, "ak_in_a_file\n").unwrap();
    let out = Command::new("sh")
        .args(["-c", "exec \"$@\" 3<\"$KEYFILE\"", "sh", BIN, "run", "--server", "http://127.0.0.1:9"])
        .args(["--agent-key-fd", "3", "--", "true"])
        .env("KEYFILE", &file)
        .env_remove("AIRLOCK_AGENT_KEY")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("error: --agent-key-fd 3: file descriptor 3 is a regular file, not a pipe"), "{err}");
}

#[test]
fn airlock_proxy_is_not_dumpable_either() {
    let sc = Sidecar::start();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let proxy = unprivileged(BIN)
        .args(["proxy", "--allow-any-local-caller", "--server", &sc.server.addr])
        .args(["--listen", &format!("127.0.0.1:{port}"), "--data-dir"])
        .arg(sc.dir.path().join("proxy2"))
        .arg("--agent-key-file")
        .arg(sc.dir.path().join("agent.key"))
        .env("AIRLOCK_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let ready = format!("http://127.0.0.1:{port}/_airlock/readyz");
    let mut proxy = crate::support::until_ready(proxy, &reqwest::blocking::Client::new(), &ready)
        .expect("the second proxy did not come up");
    let environ = format!("/proc/{}/environ", proxy.id());
    let out = unprivileged("cat").arg(&environ).output().unwrap();
    proxy.kill().unwrap();
    proxy.wait().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && denied(&err, &environ), "{err}");
}

#[test]
fn every_use_of_a_short_command_is_recorded_by_the_time_airlock_run_exits() {
    let sc = Sidecar::start();
    for _ in 0..3 {
        let out =
            run_sh(&sc, &["--agent-key-file", sc.dir.path().join("agent.key").to_str().unwrap()], CURL_PLACEHOLDER)
                .output()
                .unwrap();
        let (stdout, stderr) = texts(&out);
        assert!(stdout.contains("status=200"), "{stdout}\n{stderr}");
    }
    assert_eq!(sc.requests_to("api.openai.com").len(), 3);
    // Asked right after the last exit: nothing is left to a background sender.
    let (_, page) = sc.server.admin("GET", "/v1/secrets/production%2Fopenai%2Fapi-key/access-events?limit=100", None);
    let events = page["events"].as_array().cloned().unwrap_or_default();
    let uses: u64 = events.iter().map(|e| e["detail"]["count"].as_u64().unwrap_or(0)).sum();
    assert_eq!(uses, 3, "every injection is in the audit trail: {page}");
    let spool = sc.dir.path().join("run").join("spool").join("access-events.jsonl");
    assert_eq!(std::fs::metadata(&spool).map(|m| m.len()).unwrap_or(0), 0, "the spool was delivered and emptied");
}

/// Quickstart trial item 2: with a relative `--data-dir`, the CA paths exported were
/// relative, and a command that changed directory failed TLS (`curl: (77)`).
#[test]
fn run_exports_absolute_ca_paths_that_hold_after_a_cd() {
    let sc = Sidecar::start();
    let pin = format!("api.openai.com=127.0.0.1:{}", sc.upstream.port);
    let script = format!(
        "cd / && echo \"ssl=$SSL_CERT_FILE node=$NODE_EXTRA_CA_CERTS lower=${{https_proxy:+set}}\" && {CURL_PLACEHOLDER}"
    );
    let out = Command::new(BIN)
        .args(["run", "--server", &sc.server.addr, "--resolve", &pin, "--data-dir", "relative-run"])
        .arg("--agent-key-file")
        .arg(sc.dir.path().join("agent.key"))
        .arg("--upstream-ca")
        .arg(&sc.upstream.ca_pem)
        .args(["--", "sh", "-c", &script])
        .current_dir(sc.dir.path())
        .env("AIRLOCK_LOG", "warn")
        .output()
        .unwrap();
    let (stdout, stderr) = texts(&out);
    assert!(out.status.success(), "{stdout}{stderr}");
    let dir = std::fs::canonicalize(sc.dir.path().join("relative-run")).unwrap();
    assert!(stdout.contains(&format!("ssl={}", dir.join("ca-bundle.pem").display())), "{stdout}");
    assert!(stdout.contains(&format!("node={}", dir.join("ca.pem").display())), "{stdout}");
    assert!(stdout.contains("lower=set"), "{stdout}");
    assert_injected(&sc, &stdout);
}
