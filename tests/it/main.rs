//! Airlock's integration tests: one binary, real server processes, real HTTP clients.

mod support;

mod access;
mod agents;
mod audit_trail;
mod bad_input;
mod body_fields;
mod cli;
mod console;
mod examples;
mod exfiltration;
mod gcp;
mod identity;
mod logs;
mod notify;
mod openapi;
mod ops;
mod policy_cli;
mod provider_configs;
mod providers;
mod proxy;
mod quickstart;
mod raw;
mod replicas;
mod resilience;
mod run;
mod secrets_api;
mod sidecar;
mod storage;
mod tls;
mod tokens;
mod upstream;
mod usage;
