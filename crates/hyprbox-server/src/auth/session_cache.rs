//! In-memory answers to "does this user still exist, at which token version?" and "was this
//! token id revoked?", so an authenticated request costs no query.
//!
//! Writers update the cache after their transaction commits and before they answer, so no change
//! is ever followed by a stale accept. A reader that missed the cache inserts what it loaded only
//! when no entry exists, so it can never overwrite a newer entry a writer put there meanwhile.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use hyprbox_store::users::User;

/// Past this many cached users the cache starts over (a guard, not an expected size).
const MAX_USERS: usize = 100_000;

#[derive(Default)]
pub struct SessionCache {
    /// `None` is a tombstone: the user was deleted.
    users: RwLock<HashMap<String, Option<Arc<User>>>>,
    /// Revoked `jti` → expiry of its token (unix seconds).
    revoked: RwLock<HashMap<String, i64>>,
}

/// What the cache knows about a user id.
pub enum Cached {
    Present(Arc<User>),
    Deleted,
    Unknown,
}

impl SessionCache {
    pub fn user(&self, id: &str) -> Cached {
        match self.users.read().unwrap_or_else(|e| e.into_inner()).get(id) {
            Some(Some(user)) => Cached::Present(user.clone()),
            Some(None) => Cached::Deleted,
            None => Cached::Unknown,
        }
    }

    /// Inserts a user loaded by a reader, unless a writer already put a newer entry there.
    pub fn fill(&self, user: User) -> Option<Arc<User>> {
        let mut users = self.users.write().unwrap_or_else(|e| e.into_inner());
        if users.len() >= MAX_USERS {
            users.clear();
        }
        users
            .entry(user.id.clone())
            .or_insert_with(|| Some(Arc::new(user)))
            .clone()
    }

    /// Records a user as changed by a committed write. A deleted user stays deleted, and an entry
    /// never goes back to an older token version (a slow writer cannot undo a revocation).
    pub fn put(&self, user: &User) {
        let mut users = self.users.write().unwrap_or_else(|e| e.into_inner());
        match users.get(&user.id) {
            Some(None) => {}
            Some(Some(current)) if current.token_version > user.token_version => {}
            _ => {
                users.insert(user.id.clone(), Some(Arc::new(user.clone())));
            }
        }
    }

    /// Records a user as deleted by a committed write.
    pub fn remove(&self, id: &str) {
        let mut users = self.users.write().unwrap_or_else(|e| e.into_inner());
        users.insert(id.to_string(), None);
    }

    pub fn is_revoked(&self, jti: &str) -> bool {
        self.revoked
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .contains_key(jti)
    }

    pub fn revoke(&self, jti: &str, expires_at_secs: i64) {
        let mut revoked = self.revoked.write().unwrap_or_else(|e| e.into_inner());
        revoked.insert(jti.to_string(), expires_at_secs);
    }

    /// Forgets revoked ids whose tokens have expired anyway.
    pub fn prune_revoked(&self, now_secs: i64) {
        let mut revoked = self.revoked.write().unwrap_or_else(|e| e.into_inner());
        revoked.retain(|_, exp| *exp > now_secs);
    }
}

#[cfg(test)]
mod tests {
    use hyprbox_store::users::Role;

    use super::*;

    fn user(tv: i64, role: Role) -> User {
        User {
            id: "u1".into(),
            email: "u@example.com".into(),
            name: String::new(),
            language: "en".into(),
            role,
            password_hash: String::new(),
            token_version: tv,
            created_at: 0,
        }
    }

    #[test]
    fn a_stale_write_never_undoes_a_revocation_or_a_delete() {
        let cache = SessionCache::default();
        cache.put(&user(2, Role::Viewer));
        cache.put(&user(1, Role::Admin));
        let Cached::Present(now) = cache.user("u1") else {
            panic!("cached")
        };
        assert_eq!((now.token_version, now.role), (2, Role::Viewer));
        cache.remove("u1");
        cache.put(&user(3, Role::Admin));
        assert!(matches!(cache.user("u1"), Cached::Deleted));
        assert!(cache.fill(user(4, Role::Admin)).is_none());
    }
}
