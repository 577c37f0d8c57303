//! The agent's policy: read again whenever the change stream says it changed (or may have),
//! put in place with the token slots it needs, and told to connections that outlive one
//! request. When the central API refuses the agent its policy, the proxy fails closed.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::Central;
use super::api::{CentralError, fetch_policy, refuses_the_agent};
use crate::domain::policy::Policy;

impl Central {
    pub fn policy(&self) -> Arc<Policy> {
        self.policy.read().expect("policy lock poisoned").clone()
    }

    /// A watch on policy updates, taken before reading the policy a connection is let
    /// through under, so no update in between is missed (`PolicyWatch::until_disallowed`).
    pub fn watch_policy(self: &Arc<Self>) -> PolicyWatch {
        PolicyWatch { changed: self.policy_changed.subscribe(), central: self.clone() }
    }

    /// Reads the agent's policy and puts it in place if it changed. When the central API
    /// refuses (the agent, its key or its policy is gone), a policy that allows no egress
    /// takes its place: the proxy fails closed. When it cannot answer, the current policy
    /// stays and the error goes to the caller, which asks again.
    pub(super) async fn refresh_policy(self: &Arc<Self>) -> Result<(), CentralError> {
        let (policy, closed) = match self
            .on_any(|base| async move { fetch_policy(&self.http, &base, &self.agent_key).await })
            .await
        {
            Ok(policy) => (policy, false),
            Err(CentralError::Refused { status, code, message }) if refuses_the_agent(status) => {
                tracing::error!(status, %code, %message, "the central API refused this agent its policy; allowing no egress");
                (self.policy().closed(&code), true)
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot fetch the agent's policy; keeping the current one until it can");
                return Err(e);
            }
        };
        let current = self.policy();
        if current.source() == policy.source() && current.text() == policy.text() {
            return Ok(());
        }
        self.replace_slots(&policy).await;
        // A new policy ends every denial's cool-down (the keepers, woken by the generation
        // below, ask again).
        for slot in self.slots().iter() {
            slot.set_denial(None);
        }
        *self.policy.write().expect("policy lock poisoned") = Arc::new(policy);
        let generation = self.policy_generation.fetch_add(1, Ordering::Relaxed) + 1;
        self.policy_changed.send_replace(generation);
        self.forget_all().await;
        // Ready again once the token for the grants that need no approval is in hand (its
        // keeper says so when it mints); a closed proxy is not ready.
        let minted = self.slots().iter().all(|s| s.needs_approval || s.token.try_read().is_ok_and(|t| t.is_some()));
        self.ready.store(!closed && minted, Ordering::Relaxed);
        tracing::info!("policy updated from the central API");
        Ok(())
    }
}

/// See `Central::watch_policy`.
pub struct PolicyWatch {
    changed: tokio::sync::watch::Receiver<u64>,
    central: Arc<Central>,
}

impl PolicyWatch {
    /// Resolves once a policy update no longer passes `allowed` (never, if none does): for
    /// connections that outlive one request (tunnels, WebSockets).
    pub async fn until_disallowed(mut self, allowed: impl Fn(&Policy) -> bool) {
        while self.changed.changed().await.is_ok() {
            if !allowed(&self.central.policy()) {
                return;
            }
        }
        std::future::pending().await
    }
}
