//! `airlock completions`, `airlock policy check PATH` (offline) and `airlock policy reload`.

use std::process::Command;

use crate::agents::policies_dir;
use crate::support::{BIN, Backend, Server};

const GOOD: &str = "[agent]\nname = \"good-agent\"\n\n[egress]\nallow = [\"api.example.com\"]\n";

fn airlock(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(BIN).args(args).env_remove("AIRLOCK_TOKEN").output().unwrap();
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into(), String::from_utf8_lossy(&out.stderr).into())
}

#[test]
fn completions_are_printed_for_bash_zsh_and_fish() {
    for (shell, mark) in [("bash", "complete -F"), ("zsh", "#compdef airlock"), ("fish", "complete -c airlock")] {
        let (ok, out, err) = airlock(&["completions", shell]);
        assert!(ok, "{shell}: {err}");
        assert!(out.contains(mark) && out.contains("approval") && out.contains("policy"), "{shell}: {out}");
    }
    let (ok, _, err) = airlock(&["completions", "tcsh"]);
    assert!(!ok && err.contains("tcsh"), "{err}");
}

#[test]
fn policy_check_validates_offline_and_names_every_error_by_file_and_line() {
    let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let (ok, out, err) = airlock(&["policy", "check", repo.join("policies").to_str().unwrap()]);
    assert!(ok, "{err}");
    assert!(out.contains("valid policies") && out.contains("default/research-agent"), "{out}");

    let bad_host = "[agent]\nname = \"a\"\n\n[egress]\nallow = [\"api.example.com\"]\n\n[[grant]]\nsecrets = \"x/*\"\nhosts = [\"other.example.com\"]\n";
    let typo = "[agent]\nname = \"b\"\n\n[egres]\nallow = []\n";
    let dir = policies_dir(&[("a.toml", bad_host), ("b.toml", typo), ("c.toml", GOOD), ("notes.txt", "ignored")]);
    let (ok, _, err) = airlock(&["policy", "check", dir.path().to_str().unwrap()]);
    assert!(!ok, "{err}");
    let a = dir.path().join("a.toml");
    let b = dir.path().join("b.toml");
    assert!(err.contains(&format!("{}:9: ", a.display())), "{err}");
    assert!(err.contains(&format!("{}:4: ", b.display())), "{err}");
    assert!(err.contains("2 error(s)"), "{err}");

    // One file; and two files for one agent, which only the directory shows.
    let (ok, out, err) = airlock(&["policy", "check", dir.path().join("c.toml").to_str().unwrap()]);
    assert!(ok && out.contains("1 valid policies (default/good-agent)"), "{out}{err}");
    let twice = policies_dir(&[("one.toml", GOOD), ("two.toml", &format!("# again\n{GOOD}"))]);
    let (ok, _, err) = airlock(&["policy", "check", twice.path().to_str().unwrap()]);
    assert!(
        !ok && err.contains(&format!("{}:3: agent 'good-agent'", twice.path().join("two.toml").display())),
        "{err}"
    );
    let (ok, _, err) = airlock(&["policy", "check", "/nonexistent/policy.toml"]);
    assert!(!ok && err.contains("/nonexistent/policy.toml:0: cannot read it"), "{err}");
}

#[test]
fn policy_reload_asks_the_server_to_reread_its_directory() {
    let dir = policies_dir(&[("good.toml", GOOD)]);
    let srv = Server::start_with(Backend::Sqlite, &["--policies", dir.path().to_str().unwrap()]);
    std::fs::write(dir.path().join("second.toml"), GOOD.replace("good-agent", "second-agent")).unwrap();
    let out = srv.cli(&srv.admin_key, &["policy", "reload"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("reloaded: 2 policies in force"), "{stdout}");

    std::fs::write(dir.path().join("third.toml"), "[agent]\nname = \"x\"\n[oops]\n").unwrap();
    let out = srv.cli(&srv.admin_key, &["policy", "reload"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && stderr.contains("third.toml:3:"), "{stderr}");
}
