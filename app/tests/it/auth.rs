//! Push authentication against a local JWKS endpoint serving test keys:
//! every way a token can be wrong is a 401.
//!
//! The keys are committed (`keys/*.pem`, made with `openssl genrsa 2048`,
//! and their public halves as JWKs): generating RSA keys in the tests would
//! need an RSA crate whose dependencies change features of crates the
//! release build shares, so `cargo test` would rebuild half the world.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use base64::Engine as _;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use tokio::sync::RwLock;

use crate::harness::Server;

const AUDIENCE: &str = "scorer-push";
const ACCOUNT: &str = "push@project.iam.gserviceaccount.com";

pub struct Key {
    pem: Vec<u8>,
    pub jwk: Value,
}

/// Test key `name` (good, rotated, rogue), its JWK published as key id
/// `name`.
pub fn key(name: &str) -> Key {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/it/keys");
    let read = |file: String| std::fs::read(dir.join(&file)).unwrap_or_else(|e| panic!("test key {file}: {e}"));
    let mut jwk: Value = serde_json::from_slice(&read(format!("{name}.jwk.json"))).expect("JWK");
    jwk["kid"] = name.into();
    Key {
        pem: read(format!("{name}.pem")),
        jwk,
    }
}

pub fn sign(key: &Key, kid: &str, claims: &Value) -> String {
    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some(kid.to_owned());
    // PKCS#1 PEM is base64 of the DER between its armour lines.
    let text = String::from_utf8_lossy(&key.pem);
    let body: String = text.lines().filter(|l| !l.starts_with("-----")).collect();
    let der = base64::engine::general_purpose::STANDARD
        .decode(body)
        .expect("test key PEM");
    let encoding = EncodingKey::from_rsa_der(&der);
    jsonwebtoken::encode(&header, claims, &encoding).expect("sign")
}

fn claims() -> Value {
    let now = jsonwebtoken::get_current_timestamp();
    json!({"iss": "https://accounts.google.com", "aud": AUDIENCE, "iat": now, "exp": now + 600,
           "email": ACCOUNT, "email_verified": true, "sub": "1234"})
}

/// A JWKS endpoint on a free port whose key set the test can change; counts
/// fetches.
struct Jwks {
    url: String,
    keys: Arc<RwLock<Vec<Value>>>,
    fetches: Arc<AtomicUsize>,
    /// When set, the endpoint answers 503.
    down: Arc<AtomicBool>,
}

async fn jwks(keys: Vec<Value>) -> Jwks {
    let keys = Arc::new(RwLock::new(keys));
    let fetches = Arc::new(AtomicUsize::new(0));
    let down = Arc::new(AtomicBool::new(false));
    let app = {
        let keys = keys.clone();
        let fetches = fetches.clone();
        let down = down.clone();
        axum::Router::new().route(
            "/certs",
            axum::routing::get(move || {
                let keys = keys.clone();
                let fetches = fetches.clone();
                let down = down.clone();
                async move {
                    use axum::response::IntoResponse;
                    fetches.fetch_add(1, Ordering::SeqCst);
                    if down.load(Ordering::SeqCst) {
                        return axum::http::StatusCode::SERVICE_UNAVAILABLE.into_response();
                    }
                    axum::Json(json!({"keys": *keys.read().await})).into_response()
                }
            }),
        )
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/certs", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    Jwks {
        url,
        keys,
        fetches,
        down,
    }
}

fn server(jwks: &Jwks, dir: &std::path::Path, floor: &str) -> Server {
    server_with(jwks, dir, &[("PUSH_JWKS_REFRESH_FLOOR_SECONDS", floor)])
}

fn server_with(jwks: &Jwks, dir: &std::path::Path, extra: &[(&str, &str)]) -> Server {
    let mut env = vec![
        ("SETTLE_SECONDS", "3600"),
        ("PUSH_AUDIENCE", AUDIENCE),
        ("PUSH_SERVICE_ACCOUNT", ACCOUNT),
        ("PUSH_JWKS_URL", jwks.url.as_str()),
    ];
    env.extend_from_slice(extra);
    Server::start(&["--local", dir.to_str().unwrap()], &env)
}

/// A push for an object that is not work: a 200 proves authentication passed.
async fn push(server: &Server, headers: &[(&str, String)]) -> u16 {
    let envelope = scorer::event::notification::Notification::finalize("input", "notes.txt", 1)
        .size(1)
        .time("2026-01-01T00:00:00Z")
        .push_envelope("1", "projects/p/subscriptions/s");
    let mut request = reqwest::Client::new().post(server.url("/")).json(&envelope);
    for (name, value) in headers {
        request = request.header(*name, value);
    }
    request.send().await.unwrap().status().as_u16()
}

/// The same, as the CloudEvent an Eventarc trigger posts: the token check
/// is the same.
async fn push_cloudevent(server: &Server, headers: &[(&str, String)]) -> u16 {
    let (ce_headers, body) = scorer::event::notification::Notification::finalize("input", "notes.txt", 1)
        .size(1)
        .time("2026-01-01T00:00:00Z")
        .cloudevent("1");
    let mut request = reqwest::Client::new().post(server.url("/")).body(body);
    for (name, value) in ce_headers
        .iter()
        .map(|(n, v)| (n.as_str(), v.clone()))
        .chain(headers.iter().cloned())
    {
        request = request.header(name, value);
    }
    request.send().await.unwrap().status().as_u16()
}

fn bearer(token: &str) -> Vec<(&'static str, String)> {
    vec![("authorization", format!("Bearer {token}"))]
}

#[tokio::test]
async fn only_a_valid_google_token_for_our_audience_and_account_gets_in() {
    let good = key("good");
    let rogue = key("rogue");
    let jwks = jwks(vec![good.jwk.clone()]).await;
    let dir = tempfile::tempdir().unwrap();
    let server = server(&jwks, dir.path(), "0");
    server.ready().await;

    assert_eq!(push(&server, &bearer(&sign(&good, "good", &claims()))).await, 200);
    assert_eq!(
        push_cloudevent(&server, &bearer(&sign(&good, "good", &claims()))).await,
        200
    );
    assert_eq!(push_cloudevent(&server, &[]).await, 401, "a CloudEvent without a token");
    assert_eq!(
        push_cloudevent(&server, &bearer(&sign(&rogue, "good", &claims()))).await,
        401,
        "a CloudEvent with a forged token"
    );

    let with = |field: &str, value: Value| {
        let mut c = claims();
        c[field] = value;
        c
    };
    let without = |field: &str| {
        let mut c = claims();
        c.as_object_mut().unwrap().remove(field);
        c
    };
    let none_alg = {
        let b64 = |v: Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
        format!(
            "{}.{}.",
            b64(json!({"alg": "none", "typ": "JWT", "kid": "good"})),
            b64(claims())
        )
    };
    let hs256 = {
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some("good".into());
        jsonwebtoken::encode(&header, &claims(), &EncodingKey::from_secret(b"guessable")).unwrap()
    };
    let cases: Vec<(&str, Vec<(&str, String)>)> = vec![
        ("no token", vec![]),
        ("not bearer", vec![("authorization", "Basic Zm9vOmJhcg==".into())]),
        ("garbage", bearer("not.a.token")),
        ("wrong signature", bearer(&sign(&rogue, "good", &claims()))),
        (
            "wrong audience",
            bearer(&sign(
                &good,
                "good",
                &with("aud", json!("https://scorer.example.run.app")),
            )),
        ),
        (
            "wrong issuer",
            bearer(&sign(&good, "good", &with("iss", json!("https://evil.example.com")))),
        ),
        (
            "expired",
            bearer(&sign(
                &good,
                "good",
                &with("exp", json!(jsonwebtoken::get_current_timestamp() - 3600)),
            )),
        ),
        ("no expiry", bearer(&sign(&good, "good", &without("exp")))),
        (
            "wrong account",
            bearer(&sign(
                &good,
                "good",
                &with("email", json!("intruder@project.iam.gserviceaccount.com")),
            )),
        ),
        (
            "unverified email",
            bearer(&sign(&good, "good", &with("email_verified", json!(false)))),
        ),
        ("alg none", bearer(&none_alg)),
        ("alg HS256", bearer(&hs256)),
        ("unknown kid", bearer(&sign(&rogue, "rogue", &claims()))),
        (
            "stripped signature off Cloud Run",
            bearer(&format!(
                "{}.SIGNATURE_REMOVED_BY_GOOGLE",
                sign(&good, "good", &claims()).rsplit_once('.').unwrap().0
            )),
        ),
    ];
    for (name, headers) in cases {
        assert_eq!(push(&server, &headers).await, 401, "{name}");
    }
    // X-Serverless-Authorization wins over Authorization: a bad one there is
    // not rescued by a good one in Authorization.
    let mut mixed = bearer(&sign(&good, "good", &claims()));
    mixed.push((
        "x-serverless-authorization",
        format!("Bearer {}", sign(&rogue, "good", &claims())),
    ));
    assert_eq!(push(&server, &mixed).await, 401);

    // Key rotation: a new key id is fetched on first sight.
    let rotated = key("rotated");
    jwks.keys.write().await.push(rotated.jwk.clone());
    assert_eq!(push(&server, &bearer(&sign(&rotated, "rotated", &claims()))).await, 200);

    server
        .logs_matching(17, |l| l["message"] == "push refused: unauthenticated")
        .await;
    let health = reqwest::get(server.url("/health")).await.unwrap();
    assert_eq!(health.status(), 200);
}

#[tokio::test]
async fn unknown_key_ids_cannot_make_it_hammer_the_key_endpoint() {
    let good = key("good");
    let jwks = jwks(vec![good.jwk.clone()]).await;
    let dir = tempfile::tempdir().unwrap();
    let server = server(&jwks, dir.path(), "30");
    server.ready().await;
    assert_eq!(push(&server, &bearer(&sign(&good, "good", &claims()))).await, 200);
    let after_first = jwks.fetches.load(Ordering::SeqCst);
    for i in 0..20 {
        let token = sign(&good, &format!("made-up-{i}"), &claims());
        assert_eq!(push(&server, &bearer(&token)).await, 401);
    }
    assert_eq!(
        jwks.fetches.load(Ordering::SeqCst),
        after_first,
        "no refetch within the refresh floor"
    );

    // Keys unreachable: not the caller's fault, retry later.
    let other = tempfile::tempdir().unwrap();
    let unreachable = Server::start(
        &["--local", other.path().to_str().unwrap()],
        &[
            ("SETTLE_SECONDS", "3600"),
            ("PUSH_AUDIENCE", AUDIENCE),
            ("PUSH_JWKS_URL", "http://127.0.0.1:9/certs"),
        ],
    );
    unreachable.ready().await;
    assert_eq!(push(&unreachable, &bearer(&sign(&good, "good", &claims()))).await, 503);
}

#[tokio::test]
async fn cached_keys_keep_serving_while_a_refresh_fails_until_they_are_too_old() {
    let good = key("good");
    let jwks = jwks(vec![good.jwk.clone()]).await;
    let token = sign(&good, "good", &claims());
    // Keys are due for a refresh after 1 s; cached ones may serve for an
    // hour while refreshes fail (first server) or not at all (second).
    let tolerant_dir = tempfile::tempdir().unwrap();
    let tolerant = server_with(
        &jwks,
        tolerant_dir.path(),
        &[
            ("PUSH_JWKS_TTL_SECONDS", "1"),
            ("PUSH_JWKS_REFRESH_FLOOR_SECONDS", "0"),
            ("PUSH_JWKS_MAX_STALE_SECONDS", "3600"),
        ],
    );
    let strict_dir = tempfile::tempdir().unwrap();
    let strict = server_with(
        &jwks,
        strict_dir.path(),
        &[
            ("PUSH_JWKS_TTL_SECONDS", "1"),
            ("PUSH_JWKS_REFRESH_FLOOR_SECONDS", "0"),
            ("PUSH_JWKS_MAX_STALE_SECONDS", "1"),
        ],
    );
    tolerant.ready().await;
    strict.ready().await;
    assert_eq!(push(&tolerant, &bearer(&token)).await, 200);
    assert_eq!(push(&strict, &bearer(&token)).await, 200);

    jwks.down.store(true, Ordering::SeqCst);
    // Waiting out the keys' TTL is the point of this test.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let fetches = jwks.fetches.load(Ordering::SeqCst);
    assert_eq!(
        push(&tolerant, &bearer(&token)).await,
        200,
        "a failed refresh refused a cached key"
    );
    assert_eq!(
        push(&strict, &bearer(&token)).await,
        503,
        "keys past their staleness were used"
    );
    assert!(
        jwks.fetches.load(Ordering::SeqCst) >= fetches + 2,
        "both tried to refresh"
    );
    tolerant
        .logs_matching(1, |l| {
            l["message"] == "cannot refresh the push token keys; using the cached ones"
        })
        .await;
}
