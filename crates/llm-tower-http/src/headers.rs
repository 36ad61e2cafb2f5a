//! Headers that must not cross a proxy.

use http::header::{self, HeaderMap, HeaderName};

/// Hop-by-hop headers (RFC 9110 §7.6.1), plus the legacy `keep-alive` and
/// `proxy-connection`.
pub const HOP_BY_HOP: [HeaderName; 9] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

/// Removes hop-by-hop headers, and every header the `Connection` header names.
///
/// ```
/// let mut h = http::HeaderMap::new();
/// h.insert("connection", "keep-alive, x-internal".parse().unwrap());
/// h.insert("x-internal", "1".parse().unwrap());
/// h.insert("keep-alive", "timeout=5".parse().unwrap());
/// h.insert("x-request-id", "abc".parse().unwrap());
/// llm_tower_http::strip_hop_by_hop(&mut h);
/// assert_eq!(h.len(), 1);
/// assert!(h.contains_key("x-request-id"));
/// ```
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // Usually there are none: one pass over the (few) headers instead of a
    // hashed removal per hop-by-hop name.
    if !headers.keys().any(|k| HOP_BY_HOP.contains(k)) {
        return;
    }
    if let Some(listed) = headers.get(header::CONNECTION).and_then(|v| v.to_str().ok()) {
        let names: Vec<HeaderName> =
            listed.split(',').filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok()).collect();
        for n in names {
            headers.remove(n);
        }
    }
    for n in &HOP_BY_HOP {
        headers.remove(n);
    }
}
