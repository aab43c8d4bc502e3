//! Push authentication against a local JWKS endpoint serving keys the test
//! generates: every way a token can be wrong is a 401.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use base64::Engine as _;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use rsa::pkcs1::EncodeRsaPrivateKey;
use rsa::traits::PublicKeyParts;
use serde_json::{Value, json};
use tokio::sync::RwLock;

use crate::harness::Server;

const AUDIENCE: &str = "scorer-push";
const ACCOUNT: &str = "push@project.iam.gserviceaccount.com";

struct Key {
    der: Vec<u8>,
    jwk: Value,
}

fn key(kid: &str) -> Key {
    let private = rsa::RsaPrivateKey::new(&mut rsa::rand_core::OsRng, 2048).expect("RSA key");
    let b64 = |b: Vec<u8>| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
    Key {
        der: private.to_pkcs1_der().expect("DER").as_bytes().to_vec(),
        jwk: json!({"kty": "RSA", "alg": "RS256", "use": "sig", "kid": kid,
                    "n": b64(private.n().to_bytes_be()), "e": b64(private.e().to_bytes_be())}),
    }
}

fn sign(key: &Key, kid: &str, claims: &Value) -> String {
    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some(kid.to_owned());
    jsonwebtoken::encode(&header, claims, &EncodingKey::from_rsa_der(&key.der)).expect("sign")
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
}

async fn jwks(keys: Vec<Value>) -> Jwks {
    let keys = Arc::new(RwLock::new(keys));
    let fetches = Arc::new(AtomicUsize::new(0));
    let app = {
        let keys = keys.clone();
        let fetches = fetches.clone();
        axum::Router::new().route(
            "/certs",
            axum::routing::get(move || {
                let keys = keys.clone();
                let fetches = fetches.clone();
                async move {
                    fetches.fetch_add(1, Ordering::SeqCst);
                    axum::Json(json!({"keys": *keys.read().await}))
                }
            }),
        )
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/certs", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    Jwks { url, keys, fetches }
}

fn server(jwks: &Jwks, dir: &std::path::Path, floor: &str) -> Server {
    Server::start(
        &["--local", dir.to_str().unwrap()],
        &[
            ("SETTLE_SECONDS", "3600"),
            ("PUSH_AUDIENCE", AUDIENCE),
            ("PUSH_SERVICE_ACCOUNT", ACCOUNT),
            ("PUSH_JWKS_URL", &jwks.url),
            ("PUSH_JWKS_REFRESH_FLOOR_SECONDS", floor),
        ],
    )
}

/// A push for an object that is not work: a 200 proves authentication passed.
async fn push(server: &Server, headers: &[(&str, String)]) -> u16 {
    let envelope = scorer::event::finalize_envelope(
        "input",
        "notes.txt",
        1,
        1,
        "1",
        "projects/p/subscriptions/s",
        "2026-01-01T00:00:00Z",
    );
    let mut request = reqwest::Client::new().post(server.url("/")).json(&envelope);
    for (name, value) in headers {
        request = request.header(*name, value);
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
        .logs_matching(15, |l| l["message"] == "push refused: unauthenticated")
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
