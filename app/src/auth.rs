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
//!
//! Behind Cloud Run's own IAM check (the service does not allow
//! unauthenticated calls), Cloud Run verifies the token and forwards it with
//! its signature replaced by `SIGNATURE_REMOVED_BY_GOOGLE`. Such a token is
//! accepted only when the service runs on Cloud Run (`trust_stripped`), and
//! then its claims (issuer, audience, expiry, email) are checked all the same;
//! elsewhere it is refused. The token is read from `X-Serverless-Authorization`
//! when present (Cloud Run checks that header and then passes
//! `Authorization` through unchecked), else from `Authorization`.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use tokio::sync::{Mutex, RwLock};

/// Google's keys for ID tokens.
pub const GOOGLE_JWKS_URL: &str = "https://www.googleapis.com/oauth2/v3/certs";
const ISSUERS: [&str; 2] = ["https://accounts.google.com", "accounts.google.com"];
/// Default least time between two key refreshes triggered by unknown key ids.
pub const REFRESH_FLOOR: Duration = Duration::from_secs(30);
/// Default time fetched keys are used before a refresh is due.
pub const KEYS_TTL: Duration = Duration::from_secs(3600);
/// Default time cached keys keep serving while refreshes fail. Google
/// publishes a key well before it signs with it and keeps it published for
/// days after, so a key fetched hours ago still verifies today's tokens.
pub const KEYS_MAX_STALE: Duration = Duration::from_secs(12 * 3600);

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
    /// Accept tokens whose signature Cloud Run removed after checking it.
    pub trust_stripped: bool,
    /// Least time between two key fetches caused by unknown key ids (or
    /// after a failed fetch).
    pub refresh_floor: Duration,
    /// How long fetched keys are used before a refresh is due.
    pub keys_ttl: Duration,
    /// How long cached keys keep serving while refreshes fail.
    pub keys_max_stale: Duration,
}

/// The marker Cloud Run puts in place of a signature it verified.
pub const SIGNATURE_REMOVED: &str = "SIGNATURE_REMOVED_BY_GOOGLE";

struct Keys {
    by_kid: HashMap<String, DecodingKey>,
    /// When `by_kid` was fetched.
    fetched: Option<Instant>,
    /// The last fetch attempt, and its error if it failed.
    attempted: Option<Instant>,
    last_error: Option<String>,
}

impl Keys {
    /// `kid`'s key, if the cache holds it and is younger than `age`.
    fn get(&self, kid: &str, age: Duration) -> Option<DecodingKey> {
        self.fetched
            .filter(|t| t.elapsed() < age)
            .and_then(|_| self.by_kid.get(kid).cloned())
    }
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

/// The claims checked by hand on a token whose signature Cloud Run removed.
#[derive(Deserialize)]
struct StrippedClaims {
    iss: Option<String>,
    aud: Option<serde_json::Value>,
    exp: Option<u64>,
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
                attempted: None,
                last_error: None,
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

    /// Checks a request's push token. Returns the token's email.
    pub async fn verify_headers(&self, headers: &axum::http::HeaderMap) -> Result<Option<String>, AuthError> {
        let value = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
        self.verify(value("x-serverless-authorization").or_else(|| value("authorization")))
            .await
    }

    /// Checks an `Authorization`-style header value (`Bearer <JWT>`).
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
        if token.rsplit('.').next() == Some(SIGNATURE_REMOVED) {
            return self.verify_stripped(token);
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

    /// A token Cloud Run verified and stripped: trusted only on Cloud Run,
    /// and its claims are still checked.
    fn verify_stripped(&self, token: &str) -> Result<Option<String>, AuthError> {
        use base64::Engine as _;
        if !self.config.trust_stripped {
            return Err(AuthError::Invalid(
                "signature removed by Google, but this service is not behind Cloud Run's IAM check".into(),
            ));
        }
        let payload = token
            .split('.')
            .nth(1)
            .ok_or_else(|| AuthError::Invalid("not a JWT".into()))?;
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload.trim_end_matches('='))
            .map_err(|e| AuthError::Invalid(format!("payload: {e}")))?;
        let claims: StrippedClaims =
            serde_json::from_slice(&bytes).map_err(|e| AuthError::Invalid(format!("claims: {e}")))?;
        if !claims.iss.as_deref().is_some_and(|iss| ISSUERS.contains(&iss)) {
            return Err(AuthError::Invalid(format!("issuer {:?} is not Google", claims.iss)));
        }
        let audience_ok = match &claims.aud {
            Some(serde_json::Value::String(a)) => *a == self.config.audience,
            Some(serde_json::Value::Array(list)) => list.iter().any(|a| a.as_str() == Some(&self.config.audience)),
            _ => false,
        };
        if !audience_ok {
            return Err(AuthError::Invalid("wrong audience".into()));
        }
        let now = jsonwebtoken::get_current_timestamp();
        if claims.exp.is_none_or(|exp| exp + 30 < now) {
            return Err(AuthError::Invalid("token expired".into()));
        }
        if let Some(expected) = &self.config.service_account {
            if claims.email.as_deref() != Some(expected.as_str()) {
                return Err(AuthError::Invalid(format!(
                    "token is for {:?}, not {expected:?}",
                    claims.email
                )));
            }
            if claims.email_verified != Some(true) {
                return Err(AuthError::Invalid("email is not verified".into()));
            }
        }
        Ok(claims.email)
    }

    /// The signing key `kid`. Fresh keys are used as they are; past their
    /// TTL (or for an unknown key id) the set is fetched again, at most once
    /// per refresh floor. While fetches fail, cached keys keep serving up to
    /// their maximum staleness (stale-while-error): only when no usable key
    /// is left is the answer "keys unavailable" (503, Pub/Sub retries).
    async fn key(&self, kid: &str) -> Result<DecodingKey, AuthError> {
        let config = &self.config;
        if let Some(key) = self.keys.read().await.get(kid, config.keys_ttl) {
            return Ok(key);
        }
        // One refresh at a time; whoever waited re-checks first.
        let _guard = self.refresh.lock().await;
        {
            let keys = self.keys.read().await;
            if let Some(key) = keys.get(kid, config.keys_ttl) {
                return Ok(key);
            }
            if keys.attempted.is_some_and(|t| t.elapsed() < config.refresh_floor) {
                // Fetched (or tried) moments ago: do not ask Google again.
                return match (keys.get(kid, config.keys_max_stale), &keys.last_error) {
                    (Some(key), _) => Ok(key),
                    (None, Some(e)) => Err(AuthError::KeysUnavailable(e.clone())),
                    (None, None) => Err(AuthError::Invalid(format!("unknown key id {kid:?}"))),
                };
            }
        }
        let fetched = self.fetch().await;
        let mut keys = self.keys.write().await;
        keys.attempted = Some(Instant::now());
        match fetched {
            Ok(fetched) => {
                keys.by_kid = fetched;
                keys.fetched = Some(Instant::now());
                keys.last_error = None;
                keys.by_kid
                    .get(kid)
                    .cloned()
                    .ok_or_else(|| AuthError::Invalid(format!("unknown key id {kid:?}")))
            }
            Err(e) => {
                let message = e.to_string();
                keys.last_error = Some(message.clone());
                match keys.get(kid, config.keys_max_stale) {
                    Some(key) => {
                        tracing::warn!(error = %message, "cannot refresh the push token keys; using the cached ones");
                        Ok(key)
                    }
                    None => Err(e),
                }
            }
        }
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
            trust_stripped: false,
            refresh_floor: REFRESH_FLOOR,
            keys_ttl: KEYS_TTL,
            keys_max_stale: KEYS_MAX_STALE,
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
