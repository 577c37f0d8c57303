//! Signed checkpoints of the audit chains, kept outside the database.
//!
//! The chain is an unkeyed hash over rows of the database, so whoever can write the database
//! can delete the last records and move the stored head back, and the shorter chain still
//! verifies. The server therefore writes, every `--audit-checkpoint-interval` and on a
//! graceful shutdown, each tenant's head (seq, hash, time) with an HMAC under a key derived
//! from the master key to `audit-checkpoints.json` in the data dir, beside the master key;
//! `GET /v1/audit/verify` checks the chain against it. A checkpoint is only ever replaced by
//! a later one of a chain that still holds it: one the chain no longer holds (or that does
//! not verify) is kept, so verification goes on failing until an operator removes the file.
//!
//! Replicas sharing a data dir share the file: each round reads it, advances what it can and
//! replaces it whole. Two replicas writing at once may drop each other's update; the next
//! round writes it again, and any checkpoint in the file is one of the chain all replicas
//! read, so none makes verification fail on another.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{AppState, MasterKeys};
use crate::crypto::CryptoError;
use crate::domain::audit::{BrokenLink, Checkpoint, Standing};
use crate::domain::time::{now_ms, to_rfc3339};
use crate::store::{AuditFilter, Store};

pub const FILE_NAME: &str = "audit-checkpoints.json";
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(60);
/// How long a shutdown waits for its checkpoint (a database that stopped answering).
const SHUTDOWN_LIMIT: Duration = Duration::from_secs(5);
const FORMAT: u32 = 1;

/// The file: the newest checkpoint of each tenant's chain, by tenant id.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct CheckpointFile {
    format: u32,
    tenants: BTreeMap<String, Checkpoint>,
}

pub struct Checkpoints {
    path: PathBuf,
    interval: Duration,
    /// One round at a time in this process: the schedule and the shutdown may meet.
    writing: tokio::sync::Mutex<()>,
}

/// What verification found about the tenant's newest checkpoint.
#[derive(Debug, Serialize)]
pub struct Report {
    /// `none`, `verified`, `truncated`, `rewritten` or `invalid`.
    pub status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seq: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hash: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub time: Option<String>,
    pub message: String,
    /// Where the checkpoint shows the chain broken (truncated or rewritten).
    #[serde(skip)]
    pub broken: Option<BrokenLink>,
}

impl Report {
    /// No checkpoint is not a failure: a new server has none yet.
    pub fn ok(&self) -> bool {
        matches!(self.status, "none" | "verified")
    }
}

/// A checkpoint that does not verify, or how the chain stands against a genuine one.
enum Judgement {
    Invalid(String),
    Stands(Standing),
}

impl Checkpoints {
    pub fn new(data_dir: &Path, interval: Duration) -> Checkpoints {
        Checkpoints { path: data_dir.join(FILE_NAME), interval, writing: Default::default() }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The tenant's newest checkpoint; None when there is none, Err (why) when the file
    /// cannot be read.
    pub async fn latest(&self, tenant: &str) -> Result<Option<Checkpoint>, String> {
        Ok(self.load().await?.and_then(|mut file| file.tenants.remove(tenant)))
    }

    async fn load(&self) -> Result<Option<CheckpointFile>, String> {
        let bytes = match tokio::fs::read(&self.path).await {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(format!("{FILE_NAME} cannot be read: {e}")),
        };
        let file: CheckpointFile = serde_json::from_slice(&bytes)
            .map_err(|e| format!("{FILE_NAME} is not a checkpoint file (at line {}: {e})", e.line()))?;
        if file.format != FORMAT {
            return Err(format!("{FILE_NAME} has format {}; this version reads format {FORMAT}", file.format));
        }
        Ok(Some(file))
    }

    /// The tenant's chain, whose head is at `head_seq`, against `latest`: what `latest`
    /// returned before the chain was read, so that the chain can only have grown since.
    pub async fn report(
        &self,
        store: &dyn Store,
        keys: &MasterKeys,
        tenant: &str,
        latest: Result<Option<Checkpoint>, String>,
        head_seq: i64,
    ) -> crate::store::Result<Report> {
        let report = |status, cp: Option<&Checkpoint>, message: String| Report {
            status,
            seq: cp.map(|c| c.seq),
            hash: cp.map(|c| c.hash.clone()),
            time: cp.map(|c| c.time.clone()),
            message,
            broken: None,
        };
        let cp = match latest {
            Err(why) => return Ok(report("invalid", None, format!("the audit checkpoints cannot be checked: {why}"))),
            Ok(None) => {
                let message = format!(
                    "no signed checkpoint of this chain was found (the server writes one every {} s and on \
                     shutdown), so records removed from its end with its head would go unnoticed",
                    self.interval.as_secs_f64()
                );
                return Ok(report("none", None, message));
            }
            Ok(Some(cp)) => cp,
        };
        Ok(match judge(store, keys, tenant, &cp, head_seq).await? {
            Judgement::Invalid(why) => report("invalid", Some(&cp), why),
            Judgement::Stands(Standing::Holds) => {
                let message = format!("the chain holds the signed checkpoint from {} (seq {})", cp.time, cp.seq);
                report("verified", Some(&cp), message)
            }
            Judgement::Stands(standing) => {
                let reason = cp.failure(&standing).unwrap_or_default();
                let (status, broken) = match &standing {
                    Standing::Truncated { head_seq } => ("truncated", (String::new(), head_seq + 1)),
                    Standing::Differs { id } => ("rewritten", (id.clone().unwrap_or_default(), cp.seq)),
                    Standing::Holds => unreachable!("handled above"),
                };
                let mut r = report(status, Some(&cp), reason.clone());
                r.broken = Some(BrokenLink { id: broken.0, seq: broken.1, reason });
                r
            }
        })
    }

    /// One round: signs the head of every chain that moved past its checkpoint and still
    /// holds it, and replaces the file if any did. Returns how many advanced.
    pub async fn write(&self, store: &dyn Store, keys: &MasterKeys) -> Result<usize, String> {
        let _one_at_a_time = self.writing.lock().await;
        let mut file = match self.load().await {
            Ok(file) => file.unwrap_or(CheckpointFile { format: FORMAT, tenants: BTreeMap::new() }),
            // Kept as it is: it may be the evidence. Verification reports it.
            Err(why) => return Err(format!("{why}; leaving it as it is (remove it to start over)")),
        };
        let heads = store.audit_heads().await.map_err(|e| format!("cannot read the audit chain heads: {e}"))?;
        let mut advanced = Vec::new();
        for head in heads.into_iter().filter(|h| h.seq > 0) {
            if let Some(old) = file.tenants.get(&head.tenant_id) {
                if old.seq == head.seq && old.hash == head.hash {
                    continue;
                }
                let judged = judge(store, keys, &head.tenant_id, old, head.seq).await.map_err(|e| e.to_string())?;
                let why = match judged {
                    Judgement::Stands(Standing::Holds) => None,
                    Judgement::Invalid(why) => Some(why),
                    Judgement::Stands(standing) => old.failure(&standing),
                };
                if let Some(why) = why {
                    tracing::error!(tenant = %head.tenant_id, reason = %why, "the audit chain fails its signed checkpoint; keeping the checkpoint");
                    continue;
                }
            }
            let time = to_rfc3339(now_ms());
            let (kid, mac) =
                keys.sign_checkpoint(&Checkpoint::signed_bytes(&head.tenant_id, head.seq, &head.hash, &time));
            let cp = Checkpoint { seq: head.seq, hash: head.hash, time, kid, mac };
            advanced.push((head.tenant_id.clone(), cp.clone()));
            file.tenants.insert(head.tenant_id, cp);
        }
        if advanced.is_empty() {
            return Ok(0);
        }
        let mut bytes = serde_json::to_vec_pretty(&file).expect("serializing to memory cannot fail");
        bytes.push(b'\n');
        let path = self.path.clone();
        tokio::task::spawn_blocking(move || crate::crypto::replace_file(&path, &bytes))
            .await
            .map_err(|e| format!("the checkpoint writer failed: {e}"))?
            .map_err(|e| e.to_string())?;
        for (tenant, cp) in &advanced {
            tracing::info!(%tenant, seq = cp.seq, hash = %cp.hash, time = %cp.time, "audit checkpoint written");
        }
        Ok(advanced.len())
    }
}

/// Whether `cp` is genuine and the tenant's chain, with its head at `head_seq`, holds it.
async fn judge(
    store: &dyn Store,
    keys: &MasterKeys,
    tenant: &str,
    cp: &Checkpoint,
    head_seq: i64,
) -> crate::store::Result<Judgement> {
    let about = format!("the signed checkpoint from {} (seq {})", cp.time, cp.seq);
    match keys.verify_checkpoint(&cp.kid, &cp.message(tenant), &cp.mac) {
        Ok(true) => {}
        Ok(false) => {
            return Ok(Judgement::Invalid(format!(
                "{about} does not verify: the checkpoint file was altered, or not written with this server's master key"
            )));
        }
        Err(CryptoError::UnknownKey(kid)) => {
            return Ok(Judgement::Invalid(format!(
                "{about} is signed under master key {kid}, which the keyring does not hold"
            )));
        }
        Err(e) => return Ok(Judgement::Invalid(format!("{about} cannot be checked: {e}"))),
    }
    let filter = AuditFilter { before_seq: Some(cp.seq.saturating_add(1)), limit: 1, ..Default::default() };
    let at_seq = store.list_audit(tenant, &filter).await?;
    Ok(Judgement::Stands(cp.standing(head_seq, at_seq.first())))
}

/// Writes checkpoints every interval, for as long as the server runs.
pub async fn keep(state: AppState) {
    let interval = state.checkpoints.interval;
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        round(&state).await;
    }
}

/// The checkpoint of a graceful shutdown, given a few seconds.
pub async fn on_shutdown(state: &AppState) {
    if tokio::time::timeout(SHUTDOWN_LIMIT, round(state)).await.is_err() {
        tracing::error!(file = %state.checkpoints.path.display(), "no audit checkpoint on shutdown: the database did not answer in time");
    }
}

async fn round(state: &AppState) {
    if let Err(e) = state.checkpoints.write(state.store.as_ref(), &state.keys).await {
        tracing::error!(file = %state.checkpoints.path.display(), error = %e, "cannot write the audit checkpoint");
    }
}
