//! Virtual keys' grants applied to the stack's layers.

use llm_tower_auth::{BudgetPeriod, Grant};
use llm_tower_ratelimit::{Limits, Mode};
use llm_tower_tokens::{Budget, Period};

use crate::Llm;

/// The tenant limits of a grant (`None`: it sets none). Over-limit requests
/// are refused at once (429 with `retry-after`), never queued; the quota
/// headers are written or not as the tenant's limits without the grant say
/// (`base`: the grant sets numbers, not what the answers show).
fn limits_of(grant: &Grant, base: &Limits) -> Option<Limits> {
    if grant.requests_per_minute.is_none() && grant.tokens_per_minute.is_none() {
        return None;
    }
    let mut l = Limits::default().mode(Mode::Reject).adaptive(false).emit_headers(base.emit_headers);
    if let Some(v) = grant.requests_per_minute {
        l = l.requests_per_minute(v);
    }
    if let Some(v) = grant.tokens_per_minute {
        l = l.tokens_per_minute(v);
    }
    Some(l)
}

fn budget_of(grant: &Grant) -> Option<Budget> {
    grant.budget.map(|b| Budget {
        limit_micros: b.micros(),
        period: match b.period {
            BudgetPeriod::Day => Period::Day,
            BudgetPeriod::Month => Period::Month,
            BudgetPeriod::Total => Period::Total,
        },
    })
}

impl Llm {
    /// Applies a virtual key's limits and budget to the tenant `name` (the
    /// key's name): its own requests- and tokens-per-minute in the tenant
    /// limiter, its own budget in accounting; what the grant leaves out falls
    /// back to what the stack was built with for that tenant (its own limits
    /// and budget, else the tenant defaults). Takes effect at the next request;
    /// call it again when the grant changes. (The grant's `models` is the
    /// auth layer's to enforce.)
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use llm_tower::auth::Grant;
    /// use llm_tower::{LlmStack, ProviderSpec, TenantLimits};
    /// let mock = llm_tower::mock::MockServer::start(Default::default()).await?;
    /// let provider = llm_tower::Provider::openai_compatible("mock", &format!("{}/v1", mock.url()))?;
    /// let llm = LlmStack::new()
    ///     .provider(ProviderSpec::new(provider).models(["gpt-4o-mini"]))
    ///     .accounting(Default::default())
    ///     .tenant_limits(TenantLimits::new(None))
    ///     .build()?;
    /// let grant: Grant = serde_json::from_str(r#"{"requests_per_minute": 60, "budget": {"usd": 5, "period": "day"}}"#)?;
    /// llm.grant("team-a", &grant);
    /// assert_eq!(llm.accounting().unwrap().budget_for("team-a").unwrap().limit_micros, 5_000_000);
    /// assert_eq!(llm.tenant_limits().unwrap().limited_keys(), ["team-a"]);
    /// llm.ungrant("team-a");
    /// assert!(llm.tenant_limits().unwrap().limited_keys().is_empty());
    /// # Ok(()) }
    /// ```
    pub fn grant(&self, name: &str, grant: &Grant) {
        if let Some(t) = self.tenant_limits() {
            let base = self.tenant_overrides.get(name).copied().unwrap_or_else(|| t.limits());
            match limits_of(grant, &base) {
                Some(l) => t.set_key_limits(name, l),
                None => match self.tenant_overrides.get(name) {
                    Some(l) => t.set_key_limits(name, *l),
                    None => {
                        t.remove_key_limits(name);
                    }
                },
            }
        }
        if let Some(a) = self.accounting() {
            a.set_budget(name, budget_of(grant));
        }
    }

    /// Removes the limits and budget [`grant`](Self::grant) gave `name` (a
    /// revoked key). Its spend stays in the budget store and the ledger.
    pub fn ungrant(&self, name: &str) {
        self.grant(name, &Grant::default());
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use llm_tower_auth::Grant;
    use llm_tower_ratelimit::Limits;

    use crate::{LlmStack, Provider, ProviderSpec, RequestInfo, TenantLimits};

    fn as_tenant(name: &str) -> http::Request<()> {
        let mut info =
            RequestInfo::parse(llm_tower_core::Api::ChatCompletions, br#"{"model":"m","messages":[]}"#)
                .unwrap();
        info.tenant = Some(name.into());
        let mut req = http::Request::new(());
        req.extensions_mut().insert(Arc::new(info));
        req
    }

    /// A grant sets a key's numbers; whether its answers carry the quota
    /// headers stays what the tenant's limits without it say.
    #[tokio::test]
    async fn a_grant_keeps_the_tenants_choice_of_quota_headers() {
        let provider = Provider::openai_compatible("up", "http://127.0.0.1:9/v1").unwrap();
        let quiet = Limits::default().requests_per_minute(60).emit_headers(false);
        let llm = LlmStack::new()
            .provider(ProviderSpec::new(provider).models(["m"]))
            .tenant_limits(
                TenantLimits::new(Some(quiet)).tenant("loud", Limits::default().requests_per_minute(6)),
            )
            .build()
            .unwrap();
        let grant: Grant = serde_json::from_str(r#"{"requests_per_minute": 10}"#).unwrap();
        llm.grant("team-a", &grant);
        llm.grant("loud", &grant);
        let t = llm.tenant_limits().unwrap();
        let a = t.limits_for(&as_tenant("team-a"));
        assert_eq!((a.requests_per_minute, a.emit_headers), (Some(10), false), "the default's choice");
        let loud = t.limits_for(&as_tenant("loud"));
        assert_eq!((loud.requests_per_minute, loud.emit_headers), (Some(10), true), "its own section's");
    }
}
