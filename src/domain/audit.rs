//! The audit trail as data: what one audit record holds and how records are chained.
//! Each record's hash covers its own fields and the previous record's hash, so editing,
//! removing or reordering a stored record breaks the chain at that record.
//!
//! The chain alone cannot show records removed from its end when the stored head is moved
//! back with them: what is left is a shorter chain that verifies. A `Checkpoint`, signed
//! with a key the database does not hold and kept outside it, records how far the chain had
//! come; a chain that no longer reaches it, or holds another record at its `seq`, was cut.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// `prev_hash` of the first record of every tenant's chain.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// The event types the server records.
pub mod kind {
    pub const SECRET_CREATE: &str = "secret.create";
    pub const SECRET_READ: &str = "secret.read";
    pub const SECRET_LIST: &str = "secret.list";
    pub const SECRET_UPDATE: &str = "secret.update";
    pub const SECRET_ROTATE: &str = "secret.rotate";
    pub const SECRET_DELETE: &str = "secret.delete";
    pub const SECRET_UNDELETE: &str = "secret.undelete";
    pub const SECRET_DESTROY: &str = "secret.destroy";
    pub const SECRET_COPY: &str = "secret.copy";
    pub const SECRET_MOVE: &str = "secret.move";
    pub const SECRET_SEARCH: &str = "secret.search";
    pub const KEY_CREATE: &str = "key.create";
    pub const KEY_REVOKE: &str = "key.revoke";
    pub const TENANT_CREATE: &str = "tenant.create";
    pub const AUTH_FAILURE: &str = "auth.failure";
    pub const TOKEN_CREATE: &str = "token.create";
    pub const TOKEN_REVOKE: &str = "token.revoke";
    pub const TOKEN_DENIED: &str = "token.denied";
    pub const AGENT_CREATE: &str = "agent.create";
    pub const AGENT_DELETE: &str = "agent.delete";
    pub const APPROVAL_REQUEST: &str = "approval.request";
    pub const APPROVAL_APPROVE: &str = "approval.approve";
    pub const APPROVAL_DENY: &str = "approval.deny";
    /// A request whose grant the policy no longer has, cancelled before its token was handed out.
    pub const APPROVAL_CANCEL: &str = "approval.cancel";
    /// An approval webhook that still failed after its last try (`server::notify`).
    pub const APPROVAL_NOTIFY_FAILED: &str = "approval.notify_failed";
    pub const POLICY_RELOAD: &str = "policy.reload";
    pub const PROVIDER_CONFIG_CREATE: &str = "provider_config.create";
    pub const PROVIDER_CONFIG_UPDATE: &str = "provider_config.update";
    pub const PROVIDER_CONFIG_DELETE: &str = "provider_config.delete";
    pub const PROVIDER_CONFIG_DEFAULT: &str = "provider_config.default";
    pub const ACCESS: &str = "access";
    /// An access event a proxy reported for a secret its agent's policy does not grant:
    /// kept as a refused report, never counted as a use.
    pub const ACCESS_REFUSED: &str = "access.refused";
    /// Refusals one report carried beyond the caps (per path per report, per agent per
    /// period): one record with no path, so a flood lands on no secret's trail.
    pub const ACCESS_OVER_LIMIT: &str = "access.over_limit";
}

/// What a caller hands to the store; the store assigns the position in the chain.
#[derive(Debug, Clone)]
pub struct AuditDraft {
    pub id: String,
    pub kind: &'static str,
    pub path: Option<String>,
    pub actor: String,
    pub actor_description: Option<String>,
    pub ip: Option<String>,
    pub user_agent: Option<String>,
    pub timestamp_ms: i64,
    pub success: bool,
    /// Free-form JSON detail (version numbers, error codes). Never a secret value.
    pub detail: serde_json::Value,
}

/// One stored record of a tenant's chain.
#[derive(Debug, Clone, Serialize)]
pub struct AuditRecord {
    pub id: String,
    #[serde(skip)]
    pub tenant_id: String,
    pub seq: i64,
    #[serde(rename = "type")]
    pub kind: String,
    pub path: Option<String>,
    pub actor: String,
    pub actor_description: Option<String>,
    pub ip: Option<String>,
    pub user_agent: Option<String>,
    #[serde(rename = "timestamp", serialize_with = "crate::domain::time::serialize_ms")]
    pub timestamp_ms: i64,
    pub success: bool,
    pub detail: serde_json::Value,
    pub prev_hash: String,
    pub hash: String,
}

impl AuditRecord {
    /// Places a draft at `seq` after `prev_hash` and computes its hash.
    pub fn chain(tenant_id: &str, seq: i64, prev_hash: &str, d: AuditDraft) -> AuditRecord {
        let mut r = AuditRecord {
            id: d.id,
            tenant_id: tenant_id.to_owned(),
            seq,
            kind: d.kind.to_owned(),
            path: d.path,
            actor: d.actor,
            actor_description: d.actor_description,
            ip: d.ip,
            user_agent: d.user_agent,
            timestamp_ms: d.timestamp_ms,
            success: d.success,
            detail: d.detail,
            prev_hash: prev_hash.to_owned(),
            hash: String::new(),
        };
        r.hash = r.compute_hash();
        r
    }

    /// The hash this record should carry given its fields and `prev_hash`.
    /// The fields are encoded as one JSON array, which is unambiguous; it is serialized
    /// straight into the hash.
    pub fn compute_hash(&self) -> String {
        let canonical = (
            &self.prev_hash,
            &self.id,
            &self.tenant_id,
            self.seq,
            &self.kind,
            &self.path,
            &self.actor,
            &self.actor_description,
            &self.ip,
            &self.user_agent,
            self.timestamp_ms,
            self.success,
            self.detail.to_string(),
        );
        let mut hasher = HashWriter(Sha256::new());
        serde_json::to_writer(&mut hasher, &canonical).expect("serializing into a hash cannot fail");
        hex::encode(hasher.0.finalize())
    }
}

/// Where a chain stops verifying.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct BrokenLink {
    pub id: String,
    pub seq: i64,
    pub reason: String,
}

/// Walks records in `seq` order and reports the first one that does not verify.
pub struct ChainVerifier {
    expected_prev: String,
    expected_seq: i64,
    pub checked: u64,
}

impl Default for ChainVerifier {
    fn default() -> Self {
        ChainVerifier { expected_prev: GENESIS_HASH.to_owned(), expected_seq: 1, checked: 0 }
    }
}

impl ChainVerifier {
    pub fn check(&mut self, r: &AuditRecord) -> Result<(), BrokenLink> {
        let broken = |reason: &str| BrokenLink { id: r.id.clone(), seq: r.seq, reason: reason.to_owned() };
        if r.seq != self.expected_seq {
            return Err(broken(&format!("sequence gap: expected {}, found {}", self.expected_seq, r.seq)));
        }
        if r.prev_hash != self.expected_prev {
            return Err(broken("prev_hash does not match the hash of the record before it"));
        }
        if r.compute_hash() != r.hash {
            return Err(broken("record contents do not match its hash (the record was altered)"));
        }
        self.expected_prev = r.hash.clone();
        self.expected_seq += 1;
        self.checked += 1;
        Ok(())
    }

    /// After the last record: the chain head the store keeps must match.
    pub fn finish(&self, head_seq: i64, head_hash: &str) -> Result<(), BrokenLink> {
        if head_seq != self.expected_seq - 1 || head_hash != self.expected_prev {
            return Err(BrokenLink {
                id: String::new(),
                seq: head_seq,
                reason: "chain head does not match the last record (records were removed)".into(),
            });
        }
        Ok(())
    }
}

/// A signed statement, kept outside the database, that a tenant's chain had reached `seq`
/// with the record whose hash is `hash` at `time`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Checkpoint {
    pub seq: i64,
    pub hash: String,
    /// When it was taken, RFC 3339.
    pub time: String,
    /// The master key the MAC is made under (with a key derived from it).
    pub kid: String,
    /// Hex HMAC-SHA256 over `signed_bytes`.
    pub mac: String,
}

/// How a chain stands against a genuine checkpoint.
#[derive(Debug, Clone, PartialEq)]
pub enum Standing {
    /// The chain still holds the checkpointed record (and, through the hashes, all before it).
    Holds,
    /// The chain ends at `head_seq`, before the checkpoint's `seq`: records were removed from
    /// its end and the stored head moved back with them.
    Truncated { head_seq: i64 },
    /// At the checkpoint's `seq` there is another record (`Some(id)`) or none: the trail was
    /// rewritten (or cut and made up again) from there on.
    Differs { id: Option<String> },
}

impl Checkpoint {
    /// What the MAC covers: a fixed label, the tenant (so one tenant's checkpoint cannot
    /// stand for another's), `seq`, `hash` and `time`, as one JSON array.
    pub fn signed_bytes(tenant: &str, seq: i64, hash: &str, time: &str) -> Vec<u8> {
        serde_json::to_vec(&("airlock/v1/audit-checkpoint", tenant, seq, hash, time))
            .expect("serializing to memory cannot fail")
    }

    pub fn message(&self, tenant: &str) -> Vec<u8> {
        Self::signed_bytes(tenant, self.seq, &self.hash, &self.time)
    }

    /// Where a chain whose head is at `head_seq` stands, given `at_seq`: its record with the
    /// highest `seq` not above the checkpoint's (None if it has none).
    pub fn standing(&self, head_seq: i64, at_seq: Option<&AuditRecord>) -> Standing {
        if head_seq < self.seq {
            return Standing::Truncated { head_seq };
        }
        match at_seq {
            Some(r) if r.seq == self.seq && r.hash == self.hash => Standing::Holds,
            Some(r) if r.seq == self.seq => Standing::Differs { id: Some(r.id.clone()) },
            _ => Standing::Differs { id: None },
        }
    }

    /// Why a chain in `standing` fails this checkpoint, in words; None when it holds.
    pub fn failure(&self, standing: &Standing) -> Option<String> {
        let (seq, time) = (self.seq, &self.time);
        match standing {
            Standing::Holds => None,
            Standing::Truncated { head_seq } => Some(format!(
                "the chain ends at seq {head_seq} but a signed checkpoint from {time} records seq {seq}: \
                 records were removed from its end"
            )),
            Standing::Differs { id: Some(id) } => Some(format!(
                "record {id} at seq {seq} is not the record a signed checkpoint from {time} records there: \
                 the trail was rewritten from that record on"
            )),
            Standing::Differs { id: None } => Some(format!(
                "the chain has no record at seq {seq}, which a signed checkpoint from {time} records: \
                 records were removed"
            )),
        }
    }
}

/// Feeds what is written into a SHA-256.
struct HashWriter(Sha256);

impl std::io::Write for HashWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.update(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hash_covers_the_fields_as_one_json_array() {
        // Chains written by earlier versions hashed exactly this text; they must still verify.
        let r = AuditRecord::chain("t1", 7, "00ff", draft(7));
        let text = serde_json::json!([
            r.prev_hash,
            r.id,
            r.tenant_id,
            r.seq,
            r.kind,
            r.path,
            r.actor,
            r.actor_description,
            r.ip,
            r.user_agent,
            r.timestamp_ms,
            r.success,
            r.detail.to_string(),
        ])
        .to_string();
        assert_eq!(r.hash, hex::encode(Sha256::digest(text.as_bytes())));
    }

    fn draft(n: i64) -> AuditDraft {
        AuditDraft {
            id: format!("evt_{n}"),
            kind: kind::SECRET_READ,
            path: Some("a/b".into()),
            actor: "key_1".into(),
            actor_description: None,
            ip: Some("127.0.0.1".into()),
            user_agent: None,
            timestamp_ms: 1_000 + n,
            success: true,
            detail: serde_json::json!({"version": 1}),
        }
    }

    fn chain(n: i64) -> Vec<AuditRecord> {
        let mut prev = GENESIS_HASH.to_owned();
        (1..=n)
            .map(|i| {
                let r = AuditRecord::chain("t1", i, &prev, draft(i));
                prev = r.hash.clone();
                r
            })
            .collect()
    }

    fn verify(records: &[AuditRecord]) -> Result<(), BrokenLink> {
        let mut v = ChainVerifier::default();
        records.iter().try_for_each(|r| v.check(r))
    }

    #[test]
    fn intact_chain_verifies() {
        assert_eq!(verify(&chain(5)), Ok(()));
    }

    #[test]
    fn edited_record_is_named() {
        let mut c = chain(5);
        c[2].actor = "someone_else".into();
        assert_eq!(verify(&c).unwrap_err().id, "evt_3");
    }

    fn checkpoint_of(r: &AuditRecord) -> Checkpoint {
        Checkpoint {
            seq: r.seq,
            hash: r.hash.clone(),
            time: "2025-01-31T12:00:00Z".into(),
            kid: "mk_00000000".into(),
            mac: String::new(),
        }
    }

    #[test]
    fn a_chain_that_still_holds_its_checkpoint_stands() {
        let c = chain(5);
        let cp = checkpoint_of(&c[2]);
        assert_eq!(cp.standing(5, Some(&c[2])), Standing::Holds);
        assert_eq!(cp.standing(3, Some(&c[2])), Standing::Holds, "the checkpoint may be the head");
        assert_eq!(cp.failure(&Standing::Holds), None);
    }

    #[test]
    fn a_chain_cut_back_before_its_checkpoint_is_truncated() {
        let c = chain(5);
        let cp = checkpoint_of(&c[4]);
        // Records 4 and 5 removed and the head moved back to record 3: the chain verifies.
        assert_eq!(verify(&c[..3]), Ok(()));
        let standing = cp.standing(3, Some(&c[2]));
        assert_eq!(standing, Standing::Truncated { head_seq: 3 });
        let said = cp.failure(&standing).unwrap();
        assert!(said.contains("ends at seq 3") && said.contains("records seq 5") && said.contains("removed"), "{said}");
    }

    #[test]
    fn a_chain_made_up_again_past_its_checkpoint_differs() {
        let c = chain(5);
        let cp = checkpoint_of(&c[3]);
        let mut other = draft(4);
        other.actor = "forger".into();
        let forged = AuditRecord::chain("t1", 4, &c[2].hash, other);
        assert_eq!(cp.standing(6, Some(&forged)), Standing::Differs { id: Some("evt_4".into()) });
        assert_eq!(cp.standing(6, Some(&c[2])), Standing::Differs { id: None }, "no record at seq 4");
        assert!(cp.failure(&Standing::Differs { id: None }).unwrap().contains("no record at seq 4"));
    }

    #[test]
    fn the_signed_bytes_name_the_tenant() {
        let cp = checkpoint_of(&chain(1)[0]);
        assert_ne!(cp.message("t1"), cp.message("t2"));
        let text = String::from_utf8(cp.message("t1")).unwrap();
        assert_eq!(text, format!(r#"["airlock/v1/audit-checkpoint","t1",1,"{}","2025-01-31T12:00:00Z"]"#, cp.hash));
    }

    #[test]
    fn removed_record_is_named() {
        let mut c = chain(5);
        c.remove(1);
        assert_eq!(verify(&c).unwrap_err().id, "evt_3");
    }
}
