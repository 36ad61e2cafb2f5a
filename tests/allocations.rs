//! The allocation budget: heap allocations per request of each layer and of
//! the whole stack over the no-op upstream, counted the way the stack bench
//! counts them (`benches/support`), against the counts measured when the
//! budget was last set. An allocation added on the hot path fails here, in
//! CI, instead of showing up weeks later as a slower gateway; one removed
//! shows up as a budget to lower.
//!
//! The counts do not depend on the build's optimisation (the same in debug
//! and release: they come from what the code does, not how it is compiled),
//! nor on time: a current-thread runtime runs each request to its end.

#[path = "../benches/support/mod.rs"]
mod support;

/// Allocations per request of each configuration, JSON and streamed, as
/// measured on 2026-12-07 (stack bench, 10,000 requests). The fractional
/// ones (the cache's) vary by about a tenth with when moka's housekeeping
/// falls due; the test allows half an allocation over these, so one more
/// allocation a request fails in every configuration.
const BUDGET: &[(&str, f64, f64)] = &[
    ("noop", 9.0, 9.0),
    ("retry", 13.0, 13.0),
    ("breaker", 11.0, 11.0),
    ("limiter", 29.0, 31.0),
    ("accounting", 24.0, 45.0),
    ("cache_miss", 29.4, 31.4),
    ("all_cache_miss", 51.4, 73.4),
    ("all_cache_hit", 27.0, 48.0),
    ("count", 17.0, 17.0),
    ("failover", 21.0, 21.0),
    ("stack_cache_miss", 56.4, 78.4),
];

#[test]
fn each_layer_and_the_whole_stack_stay_within_their_allocation_budget() {
    let rt = tokio::runtime::Builder::new_current_thread().enable_time().build().expect("runtime");
    let mut over = Vec::new();
    let mut seen = 0;
    // Fresh stacks for each kind, as the bench builds them: a cache that
    // served the JSON requests would answer the same prompts streamed from
    // its JSON entries (a hit converted to events), not miss.
    for stream in [false, true] {
        for (name, svc) in support::stacks() {
            let &(_, json, sse) = BUDGET.iter().find(|(n, ..)| *n == name).unwrap_or_else(|| {
                panic!("{name}: a configuration of the stack bench without a budget here")
            });
            seen += 1;
            let budget = if stream { sse } else { json };
            let unique = name != "all_cache_hit";
            let (per, _) = support::allocations(&rt, &svc, stream, unique, 300, 2_000);
            let kind = if stream { "sse" } else { "json" };
            println!("{kind}/{name}: {per:.2} allocations a request (budget {budget})");
            // Half an allocation covers the cache's housekeeping; a whole
            // allocation more a request is a change in the code.
            if per > budget + 0.5 {
                over.push(format!("{kind}/{name}: {per:.2} allocations a request, budget {budget}"));
            }
        }
    }
    assert_eq!(seen, 2 * BUDGET.len(), "a budgeted configuration the bench no longer has");
    assert!(
        over.is_empty(),
        "over budget (if the new allocation is worth it, raise the budget and say why in \
         docs/ARCHITECTURE.md):\n{}",
        over.join("\n")
    );
}
