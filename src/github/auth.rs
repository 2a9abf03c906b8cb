//! GitHub App authentication: the app's RS256 JWT (docs/architecture.md, "Talking to GitHub").

use chrono::{DateTime, Utc};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde::{Deserialize, Serialize};

use super::GitHubError;

/// How far in the past `iat` is put, to absorb clock drift between us and GitHub.
pub const JWT_BACKDATE_SECS: i64 = 60;
/// `exp - iat`; GitHub refuses app JWTs living longer than 10 minutes.
pub const JWT_LIFETIME_SECS: i64 = 9 * 60;

/// The claims of the app's JWT.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppClaims {
    /// Issued at (seconds since the epoch), 60 s in the past.
    pub iat: i64,
    /// Expiry: `iat` + 9 minutes.
    pub exp: i64,
    /// The app id, as a string.
    pub iss: String,
}

impl AppClaims {
    /// The claims for a JWT made at `now`.
    pub fn new(app_id: u64, now: DateTime<Utc>) -> Self {
        let iat = now.timestamp() - JWT_BACKDATE_SECS;
        Self {
            iat,
            exp: iat + JWT_LIFETIME_SECS,
            iss: app_id.to_string(),
        }
    }
}

/// The app's signing key, parsed once.
#[derive(Clone)]
pub(crate) struct AppKey {
    app_id: u64,
    key: EncodingKey,
}

impl AppKey {
    pub(crate) fn from_pem(app_id: u64, pem: &str) -> Result<Self, GitHubError> {
        let key = EncodingKey::from_rsa_pem(pem.as_bytes()).map_err(|e| {
            GitHubError::Auth(format!("the app's private key is not an RSA PEM: {e}"))
        })?;
        Ok(Self { app_id, key })
    }

    /// The app id the JWTs name.
    pub(crate) fn app_id(&self) -> u64 {
        self.app_id
    }

    /// A JWT valid from a minute ago for nine minutes.
    pub(crate) fn jwt(&self, now: DateTime<Utc>) -> Result<String, GitHubError> {
        jsonwebtoken::encode(
            &Header::new(Algorithm::RS256),
            &AppClaims::new(self.app_id, now),
            &self.key,
        )
        .map_err(|e| GitHubError::Auth(format!("cannot sign the app JWT: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{DecodingKey, Validation};

    const PRIVATE: &str = include_str!("../../fixtures/keys/test-app-private-key.pem");
    const PUBLIC: &str = include_str!("../../fixtures/keys/test-app-public-key.pem");

    #[test]
    fn claims_follow_the_design() {
        let now = DateTime::from_timestamp(1_700_000_000, 0).unwrap();
        let c = AppClaims::new(4242, now);
        assert_eq!(c.iss, "4242");
        assert_eq!(c.iat, 1_700_000_000 - 60);
        assert_eq!(c.exp - c.iat, 540);
        assert!(
            c.exp - c.iat <= 600,
            "GitHub refuses JWTs living longer than 10 minutes"
        );
        assert!(c.exp > now.timestamp());
    }

    #[test]
    fn jwt_is_rs256_and_verifies_with_the_public_key() {
        let key = AppKey::from_pem(4242, PRIVATE).unwrap();
        let now = Utc::now();
        let token = key.jwt(now).unwrap();
        let header = jsonwebtoken::decode_header(&token).unwrap();
        assert_eq!(header.alg, Algorithm::RS256);
        let mut v = Validation::new(Algorithm::RS256);
        v.set_issuer(&["4242"]);
        let data = jsonwebtoken::decode::<AppClaims>(
            &token,
            &DecodingKey::from_rsa_pem(PUBLIC.as_bytes()).unwrap(),
            &v,
        )
        .unwrap();
        assert_eq!(data.claims, AppClaims::new(4242, now));
    }

    #[test]
    fn garbage_key_is_an_auth_error() {
        let Err(e) = AppKey::from_pem(1, "not a key") else {
            panic!("accepted garbage")
        };
        assert!(matches!(e, GitHubError::Auth(_)));
    }
}
