//! Generic JSON webhooks: a body signed with HMAC-SHA256 (GitHub's `X-Hub-Signature-256:
//! sha256=HEX`), its fields flattened into labels (`repository.name`) that a trigger's
//! matchers and templates use as they use an alert's.

use std::collections::BTreeMap;

use sha2::{Digest, Sha256};

/// The header that carries the signature.
pub const SIGNATURE_HEADER: &str = "x-hub-signature-256";

/// HMAC-SHA256 (RFC 2104) of `body` under `key`.
pub fn hmac_sha256(key: &[u8], body: &[u8]) -> [u8; 32] {
    const BLOCK: usize = 64;
    let mut k = [0u8; BLOCK];
    if key.len() > BLOCK {
        k[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        k[..key.len()].copy_from_slice(key);
    }
    let pad = |byte: u8| k.map(|b| b ^ byte);
    let inner = Sha256::new()
        .chain_update(pad(0x36))
        .chain_update(body)
        .finalize();
    Sha256::new()
        .chain_update(pad(0x5c))
        .chain_update(inner)
        .finalize()
        .into()
}

/// Whether `header` (`sha256=HEX`) signs `body` under `key`; compared in constant time.
pub fn verify(key: &[u8], body: &[u8], header: &str) -> bool {
    let Some(hex_sig) = header.trim().strip_prefix("sha256=") else {
        return false;
    };
    let Ok(given) = hex::decode(hex_sig) else {
        return false;
    };
    let expected = hmac_sha256(key, body);
    given.len() == expected.len()
        && given
            .iter()
            .zip(expected.iter())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
}

/// Fields as labels: nested objects joined with `.`, array items by index, scalars as
/// text (strings without quotes). Bounded: at most `MAX_FIELDS` labels.
pub fn flatten(v: &serde_json::Value) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    walk(v, String::new(), &mut out);
    out
}

/// Labels taken from one body, at most.
pub const MAX_FIELDS: usize = 1000;

fn walk(v: &serde_json::Value, path: String, out: &mut BTreeMap<String, String>) {
    if out.len() >= MAX_FIELDS {
        return;
    }
    let join = |k: &str| {
        if path.is_empty() {
            k.to_owned()
        } else {
            format!("{path}.{k}")
        }
    };
    match v {
        serde_json::Value::Object(m) => {
            for (k, v) in m {
                walk(v, join(k), out);
            }
        }
        serde_json::Value::Array(items) => {
            for (i, v) in items.iter().enumerate() {
                walk(v, join(&i.to_string()), out);
            }
        }
        serde_json::Value::String(s) => {
            out.insert(path, s.clone());
        }
        serde_json::Value::Null => {
            out.insert(path, String::new());
        }
        other => {
            out.insert(path, other.to_string());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hmac_matches_rfc_4231_and_github() {
        // RFC 4231, test case 2.
        assert_eq!(
            hex::encode(hmac_sha256(b"Jefe", b"what do ya want for nothing?")),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        // Test case 6: a key longer than the block.
        assert_eq!(
            hex::encode(hmac_sha256(
                &[0xaa; 131],
                b"Test Using Larger Than Block-Size Key - Hash Key First"
            )),
            "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"
        );
        // GitHub's documented example.
        let sig = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";
        assert!(verify(b"It's a Secret to Everybody", b"Hello, World!", sig));
        assert!(!verify(
            b"It's a Secret to Everybody",
            b"Hello, World?",
            sig
        ));
        assert!(!verify(b"other", b"Hello, World!", sig));
        assert!(!verify(b"k", b"b", "sha1=00"));
        assert!(!verify(b"k", b"b", "sha256=zz"));
    }

    #[test]
    fn fields_become_labels() {
        let v = serde_json::json!({ "action": "failed", "deploy": { "service": "web", "id": 7, "ok": false },
            "tags": ["a", "b"], "note": null });
        let l = flatten(&v);
        assert_eq!(l["action"], "failed");
        assert_eq!(l["deploy.service"], "web");
        assert_eq!(l["deploy.id"], "7");
        assert_eq!(l["deploy.ok"], "false");
        assert_eq!(l["tags.1"], "b");
        assert_eq!(l["note"], "");
    }
}
