//! Node tokens: `hbnt_` + an 8-character public prefix + a secret of 40 characters of `[A-Za-z0-9]`.
//!
//! Verification is served from memory: a map from prefix to (hash, pin, revoked), filled on first
//! use and updated on create and revoke, so a heartbeat costs no token query and a revoked token is
//! refused on its very next call. The stored form is the prefix and a SHA-256 of the whole token;
//! hashes are compared in constant time.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, RwLock};

use hyprbox_store::tokens::{self, NodeToken};
use hyprbox_store::{Store, StoreError};
use rand::RngExt;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::NODE_TOKEN_PREFIX;

pub const PREFIX_LEN: usize = 8;
pub const SECRET_LEN: usize = 40;
/// `lastUsedAt` is written at most this often per token.
pub const TOUCH_EVERY_MS: i64 = 60_000;

/// What the cache knows of one token.
pub struct CachedToken {
    pub id: String,
    hash: [u8; 32],
    pub node_id: Option<String>,
    revoked: AtomicBool,
    last_touch: AtomicI64,
}

/// A verified node token, as the request sees it.
#[derive(Clone, Debug)]
pub struct NodeIdentity {
    pub token_id: String,
    pub prefix: String,
    /// The node the token is pinned to; `None` for a fleet-wide token.
    pub pinned: Option<String>,
}

impl NodeIdentity {
    /// Whether this token may act for `node_id`.
    pub fn may_act_for(&self, node_id: &str) -> bool {
        self.pinned.as_deref().is_none_or(|pin| pin == node_id)
    }
}

/// How long a prefix the database does not know is answered "unknown" without asking again.
const UNKNOWN_FOR: std::time::Duration = std::time::Duration::from_secs(10);
/// Unknown prefixes remembered at most; past it the memory starts over (a flood of made-up
/// prefixes then costs one query each again, and the per-address charge for rejections limits it).
const UNKNOWN_KEPT: usize = 10_000;

#[derive(Default)]
pub struct NodeTokens {
    by_prefix: RwLock<HashMap<String, Arc<CachedToken>>>,
    /// Prefixes recently looked up and not found, with when.
    unknown: std::sync::Mutex<HashMap<String, std::time::Instant>>,
}

fn sha256(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// A fresh token: its plaintext (shown once) and its prefix.
pub fn generate() -> (String, String) {
    let mut rng = rand::rng();
    let mut draw = |n: usize| -> String {
        (0..n)
            .map(|_| char::from(rng.sample(rand::distr::Alphanumeric)))
            .collect()
    };
    let prefix = draw(PREFIX_LEN);
    let secret = draw(SECRET_LEN);
    (format!("{NODE_TOKEN_PREFIX}{prefix}{secret}"), prefix)
}

/// The hex SHA-256 stored for a token.
pub fn stored_hash(token: &str) -> String {
    hex::encode(sha256(token))
}

/// Splits `hbnt_<prefix><secret>` into its prefix, when the shape is right.
fn prefix_of(token: &str) -> Option<&str> {
    let rest = token.strip_prefix(NODE_TOKEN_PREFIX)?;
    let well_formed =
        rest.len() >= PREFIX_LEN + 32 && rest.len() <= 128 && rest.bytes().all(|b| b.is_ascii_alphanumeric());
    well_formed.then(|| &rest[..PREFIX_LEN])
}

impl NodeTokens {
    fn entry(token: &NodeToken) -> Option<Arc<CachedToken>> {
        let mut hash = [0u8; 32];
        hex::decode_to_slice(&token.token_hash, &mut hash).ok()?;
        Some(Arc::new(CachedToken {
            id: token.id.clone(),
            hash,
            node_id: token.node_id.clone(),
            revoked: AtomicBool::new(token.revoked_at.is_some()),
            last_touch: AtomicI64::new(token.last_used_at.unwrap_or(0)),
        }))
    }

    /// Records a token just created or read.
    pub fn put(&self, token: &NodeToken) {
        self.unknown
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&token.prefix);
        if let Some(entry) = Self::entry(token) {
            self.by_prefix
                .write()
                .unwrap_or_else(|e| e.into_inner())
                .insert(token.prefix.clone(), entry);
        }
    }

    /// Marks a token revoked: its next call is refused.
    pub fn revoke(&self, token: &NodeToken) {
        self.put(token);
        if let Some(entry) = self
            .by_prefix
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&token.prefix)
        {
            entry.revoked.store(true, Ordering::Release);
        }
    }

    /// Whether the token with this prefix has been revoked (as far as this process knows).
    pub fn is_revoked(&self, prefix: &str) -> bool {
        self.by_prefix
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(prefix)
            .is_some_and(|entry| entry.revoked.load(Ordering::Acquire))
    }

    /// Verifies a presented `hbnt_` token. `Ok(None)` for anything not a live token.
    pub async fn verify(
        &self,
        store: &Store,
        token: &str,
    ) -> Result<Option<(NodeIdentity, Arc<CachedToken>)>, StoreError> {
        let Some(prefix) = prefix_of(token) else {
            return Ok(None);
        };
        let cached = self
            .by_prefix
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(prefix)
            .cloned();
        let entry = match cached {
            Some(entry) => entry,
            None => {
                if self.recently_unknown(prefix) {
                    return Ok(None);
                }
                let mut conn = store.conn().await?;
                let Some(row) = tokens::by_prefix(&mut conn, prefix).await? else {
                    let mut unknown = self.unknown.lock().unwrap_or_else(|e| e.into_inner());
                    if unknown.len() >= UNKNOWN_KEPT {
                        unknown.clear();
                    }
                    unknown.insert(prefix.to_string(), std::time::Instant::now());
                    return Ok(None);
                };
                let Some(entry) = Self::entry(&row) else {
                    return Ok(None);
                };
                let mut map = self.by_prefix.write().unwrap_or_else(|e| e.into_inner());
                // A revoke that happened while we read wins over what we read.
                map.entry(prefix.to_string()).or_insert(entry).clone()
            }
        };
        let matches: bool = sha256(token).ct_eq(&entry.hash).into();
        if !matches || entry.revoked.load(Ordering::Acquire) {
            return Ok(None);
        }
        let identity = NodeIdentity {
            token_id: entry.id.clone(),
            prefix: prefix.to_string(),
            pinned: entry.node_id.clone(),
        };
        Ok(Some((identity, entry)))
    }
}

impl NodeTokens {
    fn recently_unknown(&self, prefix: &str) -> bool {
        self.unknown
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(prefix)
            .is_some_and(|at| at.elapsed() < UNKNOWN_FOR)
    }
}

impl CachedToken {
    /// Whether `lastUsedAt` is due a write at `now` (at most once a minute); claims it if so.
    pub fn touch_due(&self, now: i64) -> bool {
        let last = self.last_touch.load(Ordering::Relaxed);
        now - last >= TOUCH_EVERY_MS
            && self
                .last_touch
                .compare_exchange(last, now, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_tokens_have_the_documented_shape() {
        let (token, prefix) = generate();
        assert!(token.starts_with("hbnt_"));
        assert_eq!(token.len(), 5 + PREFIX_LEN + SECRET_LEN);
        assert_eq!(prefix_of(&token), Some(prefix.as_str()));
        assert!(token[5..].bytes().all(|b| b.is_ascii_alphanumeric()));
        assert_ne!(generate().0, token);
    }

    #[test]
    fn malformed_tokens_have_no_prefix() {
        for bad in [
            "hbnt_short",
            "hbnt_abcdefgh0123456789012345678901234567890!",
            "xyz_abcdefgh01234567890123456789012345678901",
        ] {
            assert_eq!(prefix_of(bad), None, "{bad}");
        }
    }

    #[tokio::test]
    async fn an_unknown_prefix_is_answered_from_memory_for_a_while_and_a_new_token_is_known_at_once() {
        let db = hyprbox_store::testing::TestDatabase::new().await;
        let store = Store::connect(&db.url, &Default::default()).await.unwrap();
        store.migrate().await.unwrap();
        let tokens = NodeTokens::default();
        let (made_up, prefix) = generate();
        assert!(tokens.verify(&store, &made_up).await.unwrap().is_none());
        assert!(tokens.recently_unknown(&prefix));
        // Asked again with the database gone: answered without a query.
        store.close().await;
        assert!(tokens.verify(&store, &made_up).await.unwrap().is_none());

        let (other, other_prefix) = generate();
        assert!(
            tokens.verify(&store, &other).await.is_err(),
            "a new prefix does ask"
        );
        let row = NodeToken {
            id: "t1".into(),
            prefix: other_prefix.clone(),
            token_hash: stored_hash(&other),
            name: "n".into(),
            node_id: None,
            created_by: "u".into(),
            created_at: 0,
            last_used_at: None,
            revoked_at: None,
        };
        tokens
            .unknown
            .lock()
            .unwrap()
            .insert(other_prefix.clone(), std::time::Instant::now());
        tokens.put(&row);
        assert!(
            !tokens.recently_unknown(&other_prefix),
            "a token created here is known at once"
        );
        assert!(tokens.verify(&store, &other).await.unwrap().is_some());
    }

    #[test]
    fn last_used_is_due_at_most_once_a_minute() {
        let entry = CachedToken {
            id: "t".into(),
            hash: [0; 32],
            node_id: None,
            revoked: AtomicBool::new(false),
            last_touch: AtomicI64::new(0),
        };
        assert!(entry.touch_due(100_000));
        assert!(!entry.touch_due(100_001));
        assert!(!entry.touch_due(159_999));
        assert!(entry.touch_due(160_000));
    }
}
