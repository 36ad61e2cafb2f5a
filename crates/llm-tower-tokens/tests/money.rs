//! Property tests of the money path: any usage, any prices, any sequence of
//! reservations and settlements: no overflow, no panic, no rounding beyond
//! the documented one (up, to the micro-dollar).

use llm_tower_core::Key;
use llm_tower_core::usage::{Prices, Usage};
use llm_tower_tokens::{Budget, BudgetStore, MemoryBudgets, Period};
use proptest::prelude::*;

/// The exact cost in micro-dollars times a million, as a pair of u128 words
/// (no saturation), for an independent check.
fn exact_cost(p: &Prices, u: &Usage) -> Option<u128> {
    let cached = u.cached_input.min(u.input);
    let reasoning = u.reasoning.min(u.output);
    let parts = [
        (u.input - cached, p.input),
        (cached, p.cached_input),
        (u.output - reasoning, p.output),
        (reasoning, p.reasoning),
    ];
    parts.iter().try_fold(0u128, |acc, &(n, price)| acc.checked_add(u128::from(n) * u128::from(price)))
}

fn any_usage() -> impl Strategy<Value = Usage> {
    // Mix small realistic values with huge ones.
    let n = prop_oneof![0u64..1_000_000, any::<u64>()];
    (n.clone(), n.clone(), n.clone(), n).prop_map(|(input, output, cached_input, reasoning)| Usage {
        input,
        output,
        cached_input,
        reasoning,
    })
}

fn any_prices() -> impl Strategy<Value = Prices> {
    let p = prop_oneof![0u64..100_000_000, any::<u64>()];
    (p.clone(), p.clone(), p.clone(), p).prop_map(|(input, cached_input, output, reasoning)| Prices {
        input,
        cached_input,
        output,
        reasoning,
    })
}

proptest! {
    #[test]
    fn cost_is_the_exact_price_rounded_up_or_saturated(u in any_usage(), p in any_prices()) {
        let cost = p.cost_micros(&u);
        match exact_cost(&p, &u) {
            Some(exact) => {
                let want = exact.div_ceil(1_000_000);
                prop_assert_eq!(u128::from(cost), want.min(u128::from(u64::MAX)));
                // Rounded up by less than one micro-dollar, never down.
                if want <= u128::from(u64::MAX) {
                    prop_assert!(u128::from(cost) * 1_000_000 >= exact);
                    prop_assert!(u128::from(cost) * 1_000_000 < exact + 1_000_000);
                }
            }
            None => prop_assert_eq!(cost, u64::MAX),
        }
    }

    #[test]
    fn budgets_never_panic_and_settle_back_to_zero_reserved(
        limit in prop_oneof![0u64..1_000_000, any::<u64>()],
        calls in proptest::collection::vec((any::<u64>(), any::<u64>()), 1..40),
    ) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap();
        rt.block_on(async {
            let store = MemoryBudgets::default();
            let budget = Budget { limit_micros: limit, period: Period::Total };
            let key = Key::from_static("t");
            let mut accepted = Vec::new();
            for (estimate, actual) in calls {
                if let Ok(r) = store.reserve(&key, &budget, estimate).await {
                    prop_assert_eq!(r.estimate(), estimate);
                    accepted.push((r, actual));
                }
            }
            // Reservations alone never exceed the limit.
            let reserved: u128 = accepted.iter().map(|(r, _)| u128::from(r.estimate())).sum();
            prop_assert!(reserved <= u128::from(limit));
            let mut spent = 0u64;
            for (r, actual) in accepted {
                store.settle(&key, &budget, r, actual);
                spent = spent.saturating_add(actual);
            }
            prop_assert_eq!(store.balance(&key).unwrap_or((0, 0)), (spent, 0));
            Ok(())
        })?;
    }
}

#[tokio::test(start_paused = true)]
async fn a_flood_of_tenant_names_shares_one_overflow_budget_and_forgets_no_spend() {
    let store = MemoryBudgets::new(100);
    let budget = Budget { limit_micros: 1_000, period: Period::Day };
    // 100 tenants with spend fill the store.
    for i in 0..100 {
        let k = Key::from(format!("t{i}"));
        let r = store.reserve(&k, &budget, 600).await.unwrap();
        store.settle(&k, &budget, r, 600);
    }
    // 10,000 new names: they share one budget of $0.001, so at most one fits.
    let mut fitted = 0;
    for i in 0..10_000 {
        let k = Key::from(format!("new{i}"));
        if let Ok(r) = store.reserve(&k, &budget, 600).await {
            store.settle(&k, &budget, r, 600);
            fitted += 1;
        }
    }
    assert_eq!(fitted, 1);
    assert_eq!(store.len(), 100);
    assert_eq!(store.overflow_hits(), 10_000 + 1);
    // No tenant's spend was forgotten.
    for i in 0..100 {
        assert_eq!(store.balance(&Key::from(format!("t{i}"))), Some((600, 0)), "t{i}");
    }
    // A day later the periods have rolled: new tenants get accounts of their own.
    tokio::time::advance(std::time::Duration::from_secs(86_400)).await;
    store.reserve(&Key::from("late"), &budget, 600).await.unwrap();
    assert_eq!(store.balance(&Key::from("late")), Some((0, 600)));
}
