//! Property tests of canonical keys: what does not change the answer never
//! changes the key, and what does always does.

use llm_tower_cache::key::canonical_hash;
use proptest::prelude::*;
use serde_json::{Map, Value};

fn json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i32>().prop_map(Value::from),
        (-1e6f64..1e6).prop_map(Value::from),
        "[a-z \\n\"\\\\é]{0,8}".prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map("[a-z]{1,4}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Writes `v` with object members in an order picked by `seed`, and with
/// whitespace and integral floats written differently.
fn write(v: &Value, seed: &mut u64, out: &mut String) {
    let mut next = || {
        *seed ^= *seed << 13;
        *seed ^= *seed >> 7;
        *seed ^= *seed << 17;
        *seed
    };
    let ws = if next() % 2 == 0 { " " } else { "\n  " };
    match v {
        Value::Object(m) => {
            let mut members: Vec<(&String, &Value)> = m.iter().collect();
            let n = members.len();
            for i in (1..n).rev() {
                members.swap(i, (next() as usize) % (i + 1));
            }
            out.push('{');
            for (i, (k, v)) in members.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(ws);
                out.push_str(&serde_json::to_string(k).unwrap());
                out.push_str(" :");
                write(v, seed, out);
            }
            out.push('}');
        }
        Value::Array(a) => {
            out.push('[');
            for (i, v) in a.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                write(v, seed, out);
            }
            out.push_str(ws);
            out.push(']');
        }
        Value::Number(n) if n.is_i64() && next() % 2 == 0 => out.push_str(&format!("{}.0", n)),
        other => out.push_str(&other.to_string()),
    }
}

fn top(members: Map<String, Value>) -> Value {
    Value::Object(members)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn member_order_whitespace_and_number_forms_never_change_the_key(
        members in prop::collection::btree_map("[a-z]{1,5}", json(), 0..6),
        seed in 1u64..,
    ) {
        let v = top(members.into_iter().collect());
        let plain = serde_json::to_vec(&v).unwrap();
        let mut other = String::new();
        let mut s = seed;
        write(&v, &mut s, &mut other);
        let a = canonical_hash(&plain, &[], false).unwrap();
        let b = canonical_hash(other.as_bytes(), &[], false).unwrap();
        prop_assert_eq!(a, b, "{} vs {}", String::from_utf8_lossy(&plain), other);
    }

    #[test]
    fn changing_a_value_changes_the_key(
        members in prop::collection::btree_map("[a-z]{1,5}", json(), 1..6),
        replacement in json(),
    ) {
        let mut m: Map<String, Value> = members.into_iter().collect();
        let key = m.keys().next().unwrap().clone();
        let before = canonical_hash(&serde_json::to_vec(&top(m.clone())).unwrap(), &[], false).unwrap();
        let old = m.insert(key, replacement.clone()).unwrap();
        // Equal values, or null (a null member counts as absent), may keep the key.
        prop_assume!(old != replacement && !old.is_null() && !replacement.is_null());
        prop_assume!(!(old.is_number() && replacement.is_number() && old.as_f64() == replacement.as_f64()));
        let after = canonical_hash(&serde_json::to_vec(&top(m)).unwrap(), &[], false).unwrap();
        prop_assert_ne!(before, after);
    }
}
