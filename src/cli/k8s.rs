//! `airlock k8s inject`: reads Kubernetes YAML (one or more documents) on stdin and writes it
//! back with every workload's pod set up as `examples/kubernetes/20-research-agent.yaml` is:
//! the Airlock proxy as a native sidecar (an init container with `restartPolicy: Always`,
//! startup, readiness and liveness probes), `publish-ca` copying the proxy's CA into a shared
//! volume, and the app containers' proxy and CA environment. Injecting twice gives what
//! injecting once gives: everything added is found again by name and replaced.
//!
//! Documents that hold no pod template (Services, ConfigMaps, …) pass through unchanged.
//! Comments are not kept (the YAML is parsed and written again).

use std::io::Read;

use anyhow::{Context, anyhow, bail};
use clap::{Args, Subcommand};
use serde::Deserialize;
use serde_json::json;
use serde_yaml::{Mapping, Value};

const PROXY: &str = "airlock-proxy";
const PUBLISH_CA: &str = "publish-ca";
const LISTEN: &str = "127.0.0.1:7879";
const PROXY_UID: i64 = 10001;
const VOL_AGENT_KEY: &str = "airlock-agent-key";
const VOL_SESSION_KEY: &str = "airlock-session-key";
const VOL_PROXY_DATA: &str = "airlock-proxy-data";
const VOL_SERVER_CA: &str = "airlock-server-ca";
const VOL_CA: &str = "airlock-ca";
/// Where the app containers find the proxy's CA (`ca.pem`) and the system roots with it
/// (`bundle.pem`).
const CA_DIR: &str = "/etc/airlock-ca";
const NO_PROXY_HOSTS: [&str; 3] = ["localhost", "127.0.0.1", "::1"];

#[derive(Subcommand, Debug)]
pub enum K8sCommand {
    /// Read Deployment/Pod/… YAML on stdin, write it with the Airlock proxy as a native
    /// sidecar (Kubernetes 1.29+) and the app containers' proxy and CA settings
    Inject(InjectArgs),
}

#[derive(Args, Debug, Clone)]
pub struct InjectArgs {
    /// The Airlock image the proxy runs from
    #[arg(long, default_value = concat!("airlock:", env!("CARGO_PKG_VERSION")))]
    pub image: String,
    /// The central API as the proxy reaches it from the pod
    #[arg(long, default_value = "https://airlock-server.airlock.svc:7878")]
    pub server: String,
    /// Secret holding the agent key (key `agent-key`) [default: <workload name>-airlock-key]
    #[arg(long, value_name = "NAME")]
    pub agent_key_secret: Option<String>,
    /// Secret holding the session key the app presents to the proxy (key `session-key`)
    /// [default: <workload name>-session-key]
    #[arg(long, value_name = "NAME")]
    pub session_key_secret: Option<String>,
    /// ConfigMap holding the CA of the central API's certificate (key `ca.pem`); used with an
    /// https:// --server; give an empty name for none (a server certificate from a public CA)
    #[arg(long, value_name = "NAME", default_value = "airlock-server-ca")]
    pub server_ca_configmap: String,
}

pub fn run(cmd: K8sCommand) -> anyhow::Result<()> {
    match cmd {
        K8sCommand::Inject(args) => {
            let mut input = String::new();
            std::io::stdin().read_to_string(&mut input).context("cannot read YAML from stdin")?;
            print!("{}", inject(&input, &args)?);
            Ok(())
        }
    }
}

/// `input` with every pod template injected, as YAML documents separated by `---`.
pub fn inject(input: &str, args: &InjectArgs) -> anyhow::Result<String> {
    let mut out = Vec::new();
    for (n, doc) in serde_yaml::Deserializer::from_str(input).enumerate() {
        let mut value = Value::deserialize(doc).with_context(|| format!("document {}: not YAML", n + 1))?;
        if value.is_null() {
            continue;
        }
        inject_document(&mut value, args).with_context(|| format!("document {}", n + 1))?;
        out.push(serde_yaml::to_string(&value)?);
    }
    Ok(out.join("---\n"))
}

fn inject_document(doc: &mut Value, args: &InjectArgs) -> anyhow::Result<()> {
    let kind = doc.get("kind").and_then(Value::as_str).unwrap_or("").to_owned();
    if kind == "List" {
        if let Some(items) = doc.get_mut("items").and_then(Value::as_sequence_mut) {
            for item in items {
                inject_document(item, args)?;
            }
        }
        return Ok(());
    }
    let path: &[&str] = match kind.as_str() {
        "Pod" => &["spec"],
        "Deployment" | "StatefulSet" | "DaemonSet" | "ReplicaSet" | "ReplicationController" | "Job" => {
            &["spec", "template", "spec"]
        }
        "CronJob" => &["spec", "jobTemplate", "spec", "template", "spec"],
        _ => return Ok(()),
    };
    let name = doc
        .get("metadata")
        .and_then(|m| m.get("name"))
        .and_then(Value::as_str)
        .filter(|n| !n.is_empty())
        .map(str::to_owned)
        .ok_or_else(|| anyhow!("{kind} without metadata.name"))?;
    let mut spec = &mut *doc;
    for key in path {
        spec = spec.get_mut(*key).ok_or_else(|| anyhow!("{kind} {name}: no {}", path.join(".")))?;
    }
    let spec = spec.as_mapping_mut().ok_or_else(|| anyhow!("{kind} {name}: {} is not a mapping", path.join(".")))?;
    inject_pod(spec, &name, args).with_context(|| format!("{kind} {name}"))
}

/// `v` as YAML, with `name` first in every mapping, as people write manifests.
fn yaml(v: serde_json::Value) -> Value {
    fn name_first(v: &mut Value) {
        match v {
            Value::Mapping(m) => {
                if let Some(name) = m.remove("name") {
                    let rest = std::mem::take(m);
                    m.insert(key("name"), name);
                    m.extend(rest);
                }
                m.values_mut().for_each(name_first);
            }
            Value::Sequence(items) => items.iter_mut().for_each(name_first),
            _ => {}
        }
    }
    let mut v = serde_yaml::to_value(v).expect("JSON is YAML");
    name_first(&mut v);
    v
}

fn key(k: &str) -> Value {
    Value::String(k.to_owned())
}

/// The sequence at `spec[field]`, made if absent.
fn seq_mut<'a>(spec: &'a mut Mapping, field: &str) -> anyhow::Result<&'a mut Vec<Value>> {
    let entry = spec.entry(key(field)).or_insert_with(|| Value::Sequence(Vec::new()));
    if entry.is_null() {
        *entry = Value::Sequence(Vec::new());
    }
    entry.as_sequence_mut().ok_or_else(|| anyhow!("{field} is not a list"))
}

fn named(v: &Value, name: &str) -> bool {
    v.get("name").and_then(Value::as_str) == Some(name)
}

/// Replaces the entry named like `item` in place, or inserts it at `at` (the end if past it).
fn upsert(list: &mut Vec<Value>, item: Value, at: usize) -> usize {
    let name = item.get("name").and_then(Value::as_str).unwrap_or("").to_owned();
    match list.iter().position(|v| named(v, &name)) {
        Some(i) => {
            list[i] = item;
            i
        }
        None => {
            let at = at.min(list.len());
            list.insert(at, item);
            at
        }
    }
}

fn inject_pod(spec: &mut Mapping, name: &str, args: &InjectArgs) -> anyhow::Result<()> {
    let agent_key_secret = args.agent_key_secret.clone().unwrap_or_else(|| format!("{name}-airlock-key"));
    let session_key_secret = args.session_key_secret.clone().unwrap_or_else(|| format!("{name}-session-key"));
    let server_ca = (args.server.starts_with("https://") && !args.server_ca_configmap.is_empty())
        .then_some(args.server_ca_configmap.as_str());
    if !args.server.starts_with("http://") && !args.server.starts_with("https://") {
        bail!("--server must be an http:// or https:// URL");
    }

    // The Secrets' files are mode 0440 and group fsGroup, which the kubelet adds to every
    // container's groups: the proxy (uid 10001) can read them under any fsGroup.
    let security = spec.entry(key("securityContext")).or_insert_with(|| Value::Mapping(Mapping::new()));
    if security.is_null() {
        *security = Value::Mapping(Mapping::new());
    }
    let security = security.as_mapping_mut().ok_or_else(|| anyhow!("securityContext is not a mapping"))?;
    if !security.contains_key("fsGroup") {
        security.insert(key("fsGroup"), yaml(json!(PROXY_UID)));
    }

    let init = seq_mut(spec, "initContainers")?;
    let at = upsert(init, proxy_container(args, server_ca), 0);
    upsert(init, publish_ca_container(&args.image), at + 1);

    let containers = seq_mut(spec, "containers")?;
    if containers.is_empty() {
        bail!("the pod has no containers");
    }
    for container in containers.iter_mut() {
        let container = container.as_mapping_mut().ok_or_else(|| anyhow!("a container is not a mapping"))?;
        app_env(container, &session_key_secret)?;
        let mounts = seq_mut(container, "volumeMounts")?;
        upsert(mounts, yaml(json!({ "name": VOL_CA, "mountPath": CA_DIR, "readOnly": true })), usize::MAX);
    }

    let volumes = seq_mut(spec, "volumes")?;
    let secret_volume = |volume: &str, secret: &str, item: &str| {
        yaml(json!({ "name": volume, "secret": {
            "secretName": secret, "defaultMode": 0o440, "items": [{ "key": item, "path": item }] } }))
    };
    upsert(volumes, secret_volume(VOL_AGENT_KEY, &agent_key_secret, "agent-key"), usize::MAX);
    upsert(volumes, secret_volume(VOL_SESSION_KEY, &session_key_secret, "session-key"), usize::MAX);
    upsert(volumes, yaml(json!({ "name": VOL_PROXY_DATA, "emptyDir": { "sizeLimit": "64Mi" } })), usize::MAX);
    match server_ca {
        Some(cm) => {
            upsert(volumes, yaml(json!({ "name": VOL_SERVER_CA, "configMap": { "name": cm } })), usize::MAX);
        }
        None => volumes.retain(|v| !named(v, VOL_SERVER_CA)),
    }
    upsert(volumes, yaml(json!({ "name": VOL_CA, "emptyDir": { "sizeLimit": "1Mi" } })), usize::MAX);
    Ok(())
}

/// What every container of ours runs with: Pod Security "restricted", a read-only root.
fn hardened() -> serde_json::Value {
    json!({
        "runAsNonRoot": true,
        "runAsUser": PROXY_UID,
        "runAsGroup": PROXY_UID,
        "allowPrivilegeEscalation": false,
        "readOnlyRootFilesystem": true,
        "capabilities": { "drop": ["ALL"] },
        "seccompProfile": { "type": "RuntimeDefault" },
    })
}

/// The probes run curl inside the container: the listener is on loopback, and the kubelet
/// probes the pod IP.
fn probe(path: &str, period: u32, failures: u32) -> serde_json::Value {
    let url = format!("http://{LISTEN}{path}");
    json!({
        "exec": { "command": ["curl", "-fsS", "--max-time", "2", "-o", "/dev/null", url] },
        "periodSeconds": period,
        "timeoutSeconds": 3,
        "failureThreshold": failures,
    })
}

fn proxy_container(args: &InjectArgs, server_ca: Option<&str>) -> Value {
    let mut argv = vec!["proxy".to_owned(), format!("--server={}", args.server)];
    if server_ca.is_some() {
        argv.push("--server-ca=/etc/airlock/server-ca/ca.pem".into());
    }
    argv.extend(
        [
            "--agent-key-file=/var/run/secrets/airlock/agent-key",
            "--session-key-file=/var/run/secrets/airlock-session/session-key",
            &format!("--listen={LISTEN}"),
            "--data-dir=/var/lib/airlock/proxy",
            "--log-format=json",
        ]
        .map(str::to_owned),
    );
    let mut mounts = vec![
        json!({ "name": VOL_AGENT_KEY, "mountPath": "/var/run/secrets/airlock", "readOnly": true }),
        json!({ "name": VOL_SESSION_KEY, "mountPath": "/var/run/secrets/airlock-session", "readOnly": true }),
        json!({ "name": VOL_PROXY_DATA, "mountPath": "/var/lib/airlock" }),
    ];
    if server_ca.is_some() {
        mounts.push(json!({ "name": VOL_SERVER_CA, "mountPath": "/etc/airlock/server-ca", "readOnly": true }));
    }
    yaml(json!({
        "name": PROXY,
        "image": args.image,
        "imagePullPolicy": "IfNotPresent",
        "restartPolicy": "Always",
        "args": argv,
        "startupProbe": probe("/_airlock/healthz", 2, 30),
        // Ready once it holds the token for the grants that need no approval.
        "readinessProbe": probe("/_airlock/readyz", 5, 3),
        "livenessProbe": probe("/_airlock/healthz", 15, 3),
        "resources": {
            "requests": { "cpu": "50m", "memory": "64Mi" },
            "limits": { "cpu": "500m", "memory": "256Mi" },
        },
        "securityContext": hardened(),
        "volumeMounts": mounts,
    }))
}

/// Runs once the proxy's startup probe passed: fetches its CA certificate and writes it, and
/// a bundle of the system roots and it, into the shared volume.
fn publish_ca_container(image: &str) -> Value {
    let script = format!(
        "set -eu\n\
         out=/var/run/airlock-ca\n\
         curl -fsS --max-time 5 --retry 5 --retry-connrefused -o \"${{out}}/ca.pem.new\" http://{LISTEN}/_airlock/ca.pem\n\
         cat /etc/ssl/certs/ca-certificates.crt \"${{out}}/ca.pem.new\" > \"${{out}}/bundle.pem.new\"\n\
         chmod 0644 \"${{out}}/ca.pem.new\" \"${{out}}/bundle.pem.new\"\n\
         mv \"${{out}}/ca.pem.new\" \"${{out}}/ca.pem\"\n\
         mv \"${{out}}/bundle.pem.new\" \"${{out}}/bundle.pem\"\n\
         echo \"airlock: published the proxy CA to ${{out}}\"\n"
    );
    yaml(json!({
        "name": PUBLISH_CA,
        "image": image,
        "imagePullPolicy": "IfNotPresent",
        "command": ["/bin/sh", "-c"],
        "args": [script],
        "resources": {
            "requests": { "cpu": "10m", "memory": "16Mi" },
            "limits": { "cpu": "100m", "memory": "64Mi" },
        },
        "securityContext": hardened(),
        "volumeMounts": [{ "name": VOL_CA, "mountPath": "/var/run/airlock-ca" }],
    }))
}

/// Puts the proxy and CA variables first in the container's `env` (replacing earlier ones of
/// those names), so the container's own variables may refer to them. `NO_PROXY` keeps the
/// hosts it had, plus loopback.
fn app_env(container: &mut Mapping, session_key_secret: &str) -> anyhow::Result<()> {
    let env = seq_mut(container, "env")?;
    let mut no_proxy: Vec<String> = Vec::new();
    let ours = [
        "AIRLOCK_SESSION_KEY",
        "HTTPS_PROXY",
        "HTTP_PROXY",
        "https_proxy",
        "http_proxy",
        "NO_PROXY",
        "no_proxy",
        "SSL_CERT_FILE",
        "REQUESTS_CA_BUNDLE",
        "CURL_CA_BUNDLE",
        "GIT_SSL_CAINFO",
        "NODE_EXTRA_CA_CERTS",
    ];
    env.retain(|var| {
        let name = var.get("name").and_then(Value::as_str).unwrap_or("");
        if matches!(name, "NO_PROXY" | "no_proxy")
            && let Some(value) = var.get("value").and_then(Value::as_str)
        {
            for host in value.split(',').map(str::trim).filter(|h| !h.is_empty()) {
                if !no_proxy.iter().any(|h| h == host) {
                    no_proxy.push(host.to_owned());
                }
            }
        }
        !ours.contains(&name)
    });
    for host in NO_PROXY_HOSTS {
        if !no_proxy.iter().any(|h| h == host) {
            no_proxy.push(host.to_owned());
        }
    }
    let no_proxy = no_proxy.join(",");
    let proxy_url = format!("http://airlock:$(AIRLOCK_SESSION_KEY)@{LISTEN}");
    let bundle = format!("{CA_DIR}/bundle.pem");
    let mut vars = vec![json!({ "name": "AIRLOCK_SESSION_KEY", "valueFrom": {
        "secretKeyRef": { "name": session_key_secret, "key": "session-key" } } })];
    for name in ["HTTPS_PROXY", "HTTP_PROXY", "https_proxy", "http_proxy"] {
        vars.push(json!({ "name": name, "value": proxy_url }));
    }
    for name in ["NO_PROXY", "no_proxy"] {
        vars.push(json!({ "name": name, "value": no_proxy }));
    }
    // These replace the trust store, so they get the system roots with the CA.
    for name in ["SSL_CERT_FILE", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "GIT_SSL_CAINFO"] {
        vars.push(json!({ "name": name, "value": bundle }));
    }
    // Node adds this file to its own roots: the CA alone.
    vars.push(json!({ "name": "NODE_EXTRA_CA_CERTS", "value": format!("{CA_DIR}/ca.pem") }));
    env.splice(0..0, vars.into_iter().map(yaml));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args() -> InjectArgs {
        InjectArgs {
            image: "airlock:test".into(),
            server: "https://airlock-server.airlock.svc:7878".into(),
            agent_key_secret: None,
            session_key_secret: None,
            server_ca_configmap: "airlock-server-ca".into(),
        }
    }

    const APP: &str = "\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: app
spec:
  selector:
    matchLabels: {app: app}
  template:
    metadata:
      labels: {app: app}
    spec:
      containers:
        - name: main
          image: python:3.12-slim
          env:
            - name: NO_PROXY
              value: db.internal
            - name: HTTPS_PROXY
              value: http://elsewhere:3128
            - name: MODE
              value: prod
---
apiVersion: v1
kind: Service
metadata:
  name: app
spec:
  ports: [{port: 80}]
";

    fn docs(text: &str) -> Vec<Value> {
        serde_yaml::Deserializer::from_str(text).map(|d| Value::deserialize(d).unwrap()).collect()
    }

    #[test]
    fn injecting_twice_is_injecting_once() {
        let once = inject(APP, &args()).unwrap();
        let twice = inject(&once, &args()).unwrap();
        assert_eq!(once, twice);
    }

    #[test]
    fn the_pod_gets_the_sidecar_the_volumes_and_the_env() {
        let out = docs(&inject(APP, &args()).unwrap());
        assert_eq!(out.len(), 2);
        assert_eq!(out[1], docs(APP)[1], "a Service passes through");
        let pod = &out[0]["spec"]["template"]["spec"];
        let init = pod["initContainers"].as_sequence().unwrap();
        assert_eq!(init.len(), 2);
        assert_eq!(init[0]["name"], key("airlock-proxy"));
        assert_eq!(init[0]["restartPolicy"], key("Always"));
        assert_eq!(init[0]["image"], key("airlock:test"));
        for probe in ["startupProbe", "readinessProbe", "livenessProbe"] {
            assert!(init[0][probe]["exec"].is_mapping(), "{probe}");
        }
        let argv: Vec<&str> = init[0]["args"].as_sequence().unwrap().iter().filter_map(Value::as_str).collect();
        assert!(argv.contains(&"--server=https://airlock-server.airlock.svc:7878"));
        assert!(argv.contains(&"--server-ca=/etc/airlock/server-ca/ca.pem"));
        assert_eq!(init[1]["name"], key("publish-ca"));
        let volumes: Vec<&str> =
            pod["volumes"].as_sequence().unwrap().iter().filter_map(|v| v["name"].as_str()).collect();
        assert_eq!(volumes, [VOL_AGENT_KEY, VOL_SESSION_KEY, VOL_PROXY_DATA, VOL_SERVER_CA, VOL_CA]);
        let secret = &pod["volumes"][0]["secret"]["secretName"];
        assert_eq!(secret, &key("app-airlock-key"));
        assert_eq!(pod["securityContext"]["fsGroup"], yaml(json!(10001)));

        let main = &pod["containers"][0];
        let env: Vec<(String, String)> = main["env"]
            .as_sequence()
            .unwrap()
            .iter()
            .map(|v| (v["name"].as_str().unwrap().to_owned(), v["value"].as_str().unwrap_or("<ref>").to_owned()))
            .collect();
        let get = |n: &str| env.iter().filter(|(k, _)| k == n).map(|(_, v)| v.as_str()).collect::<Vec<_>>();
        assert_eq!(env[0].0, "AIRLOCK_SESSION_KEY", "defined before the variables that refer to it");
        assert_eq!(get("HTTPS_PROXY"), ["http://airlock:$(AIRLOCK_SESSION_KEY)@127.0.0.1:7879"]);
        assert_eq!(get("NO_PROXY"), ["db.internal,localhost,127.0.0.1,::1"], "the app's hosts are kept");
        assert_eq!(get("SSL_CERT_FILE"), ["/etc/airlock-ca/bundle.pem"]);
        assert_eq!(get("NODE_EXTRA_CA_CERTS"), ["/etc/airlock-ca/ca.pem"]);
        assert_eq!(get("MODE"), ["prod"]);
        assert_eq!(main["volumeMounts"][0]["mountPath"], key("/etc/airlock-ca"));
    }

    #[test]
    fn a_plain_http_server_needs_no_server_ca_and_bad_input_is_an_error() {
        let plain = InjectArgs { server: "http://airlock:7878".into(), ..args() };
        let out =
            inject("kind: Pod\nmetadata: {name: p}\nspec:\n  containers: [{name: c, image: i}]\n", &plain).unwrap();
        assert!(!out.contains("server-ca"), "{out}");
        assert!(inject("kind: Pod\nspec: {containers: []}\n", &args()).is_err(), "no name");
        assert!(inject("kind: Pod\nmetadata: {name: p}\nspec: {containers: []}\n", &args()).is_err());
        assert!(inject("{ not yaml", &args()).is_err());
    }
}
