//! Egress rate limits from the policy: one budget for the whole agent and one per named
//! host (GCRA via governor). A refusal says how long to wait.

use std::collections::HashMap;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};

use super::error::ProxyError;
use crate::domain::policy::Policy;
use crate::domain::rate::Rate;

pub struct Limits {
    agent: Option<DefaultDirectRateLimiter>,
    per_host: HashMap<String, DefaultDirectRateLimiter>,
}

fn limiter(rate: &Rate) -> DefaultDirectRateLimiter {
    let quota = Quota::with_period(rate.interval()).expect("rate interval is never zero").allow_burst(rate.count());
    RateLimiter::direct(quota)
}

impl Limits {
    pub fn from_policy(policy: &Policy) -> Limits {
        Limits {
            agent: policy.egress().rate.as_ref().map(limiter),
            per_host: policy.egress().per_host_rate.iter().map(|(h, r)| (h.clone(), limiter(r))).collect(),
        }
    }

    pub fn check(&self, host: &str) -> Result<(), ProxyError> {
        let wait = |e: governor::NotUntil<_>| {
            e.wait_time_from(DefaultClock::default().now()).as_secs_f64().ceil().max(1.0) as u64
        };
        if let Some(per_host) = self.per_host.get(host) {
            per_host.check().map_err(|e| ProxyError::rate_limited(&format!("'{host}'"), wait(e)))?;
        }
        if let Some(agent) = &self.agent {
            agent.check().map_err(|e| ProxyError::rate_limited("the agent's", wait(e)))?;
        }
        Ok(())
    }
}
