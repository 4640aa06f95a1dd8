//! User session tokens: HS256 JWTs signed with `SECRET_KEY`.

use std::time::Duration;

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Claims {
    /// The user id.
    pub sub: String,
    /// The user's token version when the token was issued.
    pub tv: i64,
    /// A random id, revoked by logout.
    pub jti: String,
    /// Issued at, seconds since the epoch.
    pub iat: i64,
    /// Expiry, seconds since the epoch.
    pub exp: i64,
}

impl Claims {
    /// Whether more than half of the token's life has passed (the cookie is then renewed).
    pub fn past_half_life(&self, now_secs: i64) -> bool {
        now_secs - self.iat > (self.exp - self.iat) / 2
    }
}

pub struct JwtKeys {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    ttl: Duration,
}

impl JwtKeys {
    pub fn new(secret: &[u8], ttl: Duration) -> JwtKeys {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = 0;
        validation.set_required_spec_claims(&["exp", "sub"]);
        JwtKeys {
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
            validation,
            ttl,
        }
    }

    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// A fresh token for the user at their current token version.
    pub fn issue(&self, user_id: &str, token_version: i64) -> (String, Claims) {
        let now = chrono::Utc::now().timestamp();
        let mut jti = [0u8; 16];
        rand::fill(&mut jti);
        let claims = Claims {
            sub: user_id.to_string(),
            tv: token_version,
            jti: hex::encode(jti),
            iat: now,
            exp: now + i64::try_from(self.ttl.as_secs()).unwrap_or(i64::MAX / 4),
        };
        let token = self.sign(&claims);
        (token, claims)
    }

    pub fn sign(&self, claims: &Claims) -> String {
        // Signing HS256 with an in-memory key cannot fail for a serialisable struct.
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), claims, &self.encoding).unwrap_or_default()
    }

    /// The claims of a well-signed, unexpired token; `None` for anything else.
    pub fn verify(&self, token: &str) -> Option<Claims> {
        jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation)
            .ok()
            .map(|data| data.claims)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_verifies_with_its_key_and_not_with_another() {
        let keys = JwtKeys::new(b"one", Duration::from_secs(60));
        let (token, claims) = keys.issue("u1", 3);
        let back = keys.verify(&token).unwrap();
        assert_eq!(
            (back.sub.as_str(), back.tv, back.jti.as_str()),
            ("u1", 3, claims.jti.as_str())
        );
        assert!(
            JwtKeys::new(b"two", Duration::from_secs(60))
                .verify(&token)
                .is_none()
        );
    }

    #[test]
    fn an_expired_token_or_a_node_token_does_not_verify() {
        let keys = JwtKeys::new(b"k", Duration::from_secs(60));
        let now = chrono::Utc::now().timestamp();
        let expired = keys.sign(&Claims {
            sub: "u".into(),
            tv: 0,
            jti: "j".into(),
            iat: now - 120,
            exp: now - 60,
        });
        assert!(keys.verify(&expired).is_none());
        assert!(
            keys.verify("hbnt_abcdefgh0123456789012345678901234567890")
                .is_none()
        );
    }

    #[test]
    fn half_life_is_measured_from_issue_time() {
        let claims = Claims {
            sub: String::new(),
            tv: 0,
            jti: String::new(),
            iat: 1000,
            exp: 2800,
        };
        assert!(!claims.past_half_life(1900));
        assert!(claims.past_half_life(1901));
    }
}
