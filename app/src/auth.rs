//! Push authentication: Google-signed OIDC tokens on Pub/Sub push requests.
//!
//! When configured, every push must carry `Authorization: Bearer <JWT>`
//! signed by Google (RS256, a key from Google's published JWKS), issued by
//! `accounts.google.com`, for the operator's fixed audience, unexpired, and
//! (when configured) for the push service account's email, verified.
//!
//! google-cloud-auth has a verifier, but it takes the algorithm from the
//! token's own header and fails concurrent requests while it refreshes its
//! key cache; this one pins RS256, lets readers share the cache, and
//! refreshes at most every [`REFRESH_FLOOR`] on an unknown key id, so a flood
//! of made-up key ids cannot make it hammer Google.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use tokio::sync::{Mutex, RwLock};

/// Google's keys for ID tokens.
pub const GOOGLE_JWKS_URL: &str = "https://www.googleapis.com/oauth2/v3/certs";
const ISSUERS: [&str; 2] = ["https://accounts.google.com", "accounts.google.com"];
/// Minimum time between two key refreshes triggered by unknown key ids.
pub const REFRESH_FLOOR: Duration = Duration::from_secs(30);
/// How long fetched keys are trusted without a refresh.
const KEYS_TTL: Duration = Duration::from_secs(3600);

/// Why a push was not accepted.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("missing bearer token")]
    Missing,
    #[error("invalid token: {0}")]
    Invalid(String),
    /// Google's keys could not be fetched: not the caller's fault, retry.
    #[error("cannot fetch signing keys: {0}")]
    KeysUnavailable(String),
}

#[derive(Debug, Clone)]
pub struct PushAuthConfig {
    pub audience: String,
    pub service_account: Option<String>,
    pub jwks_url: String,
}

struct Keys {
    by_kid: HashMap<String, DecodingKey>,
    fetched: Option<Instant>,
}

pub struct PushAuth {
    config: PushAuthConfig,
    keys: RwLock<Keys>,
    refresh: Mutex<()>,
    http: reqwest::Client,
}

#[derive(Deserialize)]
struct Claims {
    email: Option<String>,
    email_verified: Option<bool>,
}

impl PushAuth {
    pub fn new(config: PushAuthConfig) -> PushAuth {
        PushAuth {
            config,
            keys: RwLock::new(Keys {
                by_kid: HashMap::new(),
                fetched: None,
            }),
            refresh: Mutex::new(()),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .unwrap_or_default(),
        }
    }

    pub fn config(&self) -> &PushAuthConfig {
        &self.config
    }

    /// Checks an `Authorization` header value. Returns the token's email.
    pub async fn verify(&self, authorization: Option<&str>) -> Result<Option<String>, AuthError> {
        let token = authorization
            .and_then(|h| h.strip_prefix("Bearer ").or_else(|| h.strip_prefix("bearer ")))
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or(AuthError::Missing)?;
        let header = jsonwebtoken::decode_header(token).map_err(|e| AuthError::Invalid(format!("header: {e}")))?;
        if header.alg != Algorithm::RS256 {
            return Err(AuthError::Invalid(format!("algorithm {:?} is not RS256", header.alg)));
        }
        let kid = header.kid.ok_or_else(|| AuthError::Invalid("no key id (kid)".into()))?;
        let key = self.key(&kid).await?;
        let mut validation = Validation::new(Algorithm::RS256);
        validation.set_audience(&[&self.config.audience]);
        validation.set_issuer(&ISSUERS);
        validation.set_required_spec_claims(&["exp", "iss", "aud"]);
        validation.leeway = 30;
        let data =
            jsonwebtoken::decode::<Claims>(token, &key, &validation).map_err(|e| AuthError::Invalid(e.to_string()))?;
        if let Some(expected) = &self.config.service_account {
            let email = data.claims.email.as_deref().unwrap_or_default();
            if email != expected {
                return Err(AuthError::Invalid(format!("token is for {email:?}, not {expected:?}")));
            }
            if data.claims.email_verified != Some(true) {
                return Err(AuthError::Invalid("email is not verified".into()));
            }
        }
        Ok(data.claims.email)
    }

    async fn key(&self, kid: &str) -> Result<DecodingKey, AuthError> {
        {
            let keys = self.keys.read().await;
            let fresh = keys.fetched.is_some_and(|t| t.elapsed() < KEYS_TTL);
            if fresh && let Some(key) = keys.by_kid.get(kid) {
                return Ok(key.clone());
            }
        }
        // One refresh at a time; whoever waited re-checks first.
        let _guard = self.refresh.lock().await;
        {
            let keys = self.keys.read().await;
            if let Some(key) = keys.by_kid.get(kid)
                && keys.fetched.is_some_and(|t| t.elapsed() < KEYS_TTL)
            {
                return Ok(key.clone());
            }
            if keys.fetched.is_some_and(|t| t.elapsed() < REFRESH_FLOOR) {
                return Err(AuthError::Invalid(format!("unknown key id {kid:?}")));
            }
        }
        let fetched = self.fetch().await?;
        let mut keys = self.keys.write().await;
        keys.by_kid = fetched;
        keys.fetched = Some(Instant::now());
        keys.by_kid
            .get(kid)
            .cloned()
            .ok_or_else(|| AuthError::Invalid(format!("unknown key id {kid:?}")))
    }

    async fn fetch(&self) -> Result<HashMap<String, DecodingKey>, AuthError> {
        let unavailable = |e: String| AuthError::KeysUnavailable(format!("{}: {e}", self.config.jwks_url));
        let response = self
            .http
            .get(&self.config.jwks_url)
            .send()
            .await
            .map_err(|e| unavailable(e.to_string()))?;
        if !response.status().is_success() {
            return Err(unavailable(format!("HTTP {}", response.status())));
        }
        let set: JwkSet = response.json().await.map_err(|e| unavailable(e.to_string()))?;
        let mut out = HashMap::new();
        for jwk in &set.keys {
            if let (Some(kid), Ok(key)) = (jwk.common.key_id.clone(), DecodingKey::from_jwk(jwk)) {
                out.insert(kid, key);
            }
        }
        Ok(out)
    }
}

/// Compares presented API keys with the configured ones in constant time
/// (both sides hashed first, so neither length nor position leaks).
pub struct ApiKeys {
    hashes: Vec<[u8; 32]>,
}

impl ApiKeys {
    /// From a comma-separated list; `None` when it holds no key.
    pub fn parse(list: &str) -> Option<ApiKeys> {
        use sha2::{Digest, Sha256};
        let hashes: Vec<[u8; 32]> = list
            .split(',')
            .map(str::trim)
            .filter(|k| !k.is_empty())
            .map(|k| Sha256::digest(k.as_bytes()).into())
            .collect();
        (!hashes.is_empty()).then_some(ApiKeys { hashes })
    }

    pub fn accepts(&self, presented: &str) -> bool {
        use sha2::{Digest, Sha256};
        use subtle::ConstantTimeEq;
        let digest: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        let mut ok = subtle::Choice::from(0);
        for h in &self.hashes {
            ok |= h.ct_eq(&digest);
        }
        ok.into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_keys_accept_only_configured_keys() {
        let keys = ApiKeys::parse(" k1, k2 ,,").unwrap();
        assert!(keys.accepts("k1"));
        assert!(keys.accepts("k2"));
        assert!(!keys.accepts("k3"));
        assert!(!keys.accepts(""));
        assert!(ApiKeys::parse(" , ").is_none());
    }

    #[tokio::test]
    async fn missing_and_garbage_tokens_are_refused_without_fetching_keys() {
        let auth = PushAuth::new(PushAuthConfig {
            audience: "aud".into(),
            service_account: None,
            jwks_url: "http://127.0.0.1:9/unreachable".into(),
        });
        assert!(matches!(auth.verify(None).await, Err(AuthError::Missing)));
        assert!(matches!(auth.verify(Some("Basic xyz")).await, Err(AuthError::Missing)));
        assert!(matches!(
            auth.verify(Some("Bearer not.a.jwt")).await,
            Err(AuthError::Invalid(_))
        ));
        // alg none: refused on the header, before any key lookup.
        let none = "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.eyJhdWQiOiJhdWQifQ.";
        assert!(matches!(
            auth.verify(Some(&format!("Bearer {none}"))).await,
            Err(AuthError::Invalid(_))
        ));
    }
}
