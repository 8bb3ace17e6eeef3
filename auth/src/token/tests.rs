use super::*;
use serde_json::json;

const KEY: &str = "k1 HS256 MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY";

fn policy() -> TokenPolicy {
    TokenPolicy {
        issuer: "gridmesh".into(),
        audience: "gridmesh-api".into(),
        skew_s: 30,
        access_ttl_s: 900,
        max_api_ttl_s: 86_400 * 365,
    }
}

fn ring() -> KeyRing {
    KeyRing::parse(KEY).unwrap()
}

/// Signs arbitrary JSON claims with the test key and a chosen header.
fn sign_raw(claims: &serde_json::Value, alg: Algorithm, kid: Option<&str>) -> String {
    let mut header = Header::new(alg);
    header.kid = kid.map(str::to_owned);
    let secret = decode_b64(KEY.split_whitespace().nth(2).unwrap()).unwrap();
    let key = EncodingKey::from_secret(&secret).unwrap();
    jsonwebtoken::encode(&header, claims, &key).unwrap()
}

fn good_claims() -> serde_json::Value {
    let now = now_s();
    json!({
        "iss": "gridmesh", "aud": "gridmesh-api", "sub": "alice", "exp": now + 600,
        "nbf": now, "iat": now, "jti": "j1", "typ": "access", "sid": "s1"
    })
}

fn with(mut claims: serde_json::Value, key: &str, value: serde_json::Value) -> serde_json::Value {
    claims[key] = value;
    claims
}

fn without(mut claims: serde_json::Value, key: &str) -> serde_json::Value {
    claims.as_object_mut().unwrap().remove(key);
    claims
}

fn verify(token: &str) -> Result<Claims, TokenError> {
    policy().verify(&ring(), token)
}

#[test]
fn issued_tokens_verify() {
    let claims = policy().access_claims("alice", "s1", vec!["admin".into()]);
    let token = ring().sign(&claims);
    assert_eq!(verify(&token).unwrap(), claims);
    let api = policy().api_claims("headend", vec!["ingest".into()], 86_400);
    assert_eq!(verify(&ring().sign(&api)).unwrap().typ, TYP_API);
}

#[test]
fn hand_made_good_token_verifies() {
    let token = sign_raw(&good_claims(), Algorithm::HS256, Some("k1"));
    assert_eq!(verify(&token).unwrap().sub, "alice");
}

#[test]
fn expired_beyond_the_skew_is_refused() {
    let now = now_s();
    let claims = with(good_claims(), "exp", json!(now - 31));
    let claims = with(
        with(claims, "iat", json!(now - 100)),
        "nbf",
        json!(now - 100),
    );
    assert_eq!(
        verify(&sign_raw(&claims, Algorithm::HS256, Some("k1"))),
        Err(TokenError::Expired)
    );
    // Within the skew it still passes.
    let claims = with(good_claims(), "exp", json!(now - 5));
    assert!(verify(&sign_raw(&claims, Algorithm::HS256, Some("k1"))).is_ok());
}

#[test]
fn not_yet_valid_is_refused() {
    let now = now_s();
    let nbf = with(good_claims(), "nbf", json!(now + 120));
    assert_eq!(
        verify(&sign_raw(&nbf, Algorithm::HS256, Some("k1"))),
        Err(TokenError::NotYetValid)
    );
    let iat = with(good_claims(), "iat", json!(now + 120));
    assert_eq!(
        verify(&sign_raw(&iat, Algorithm::HS256, Some("k1"))),
        Err(TokenError::NotYetValid)
    );
}

#[test]
fn wrong_audience_or_issuer_is_refused() {
    for (key, value) in [("aud", "someone-else"), ("iss", "evil")] {
        let claims = with(good_claims(), key, json!(value));
        assert_eq!(
            verify(&sign_raw(&claims, Algorithm::HS256, Some("k1"))),
            Err(TokenError::WrongAudience),
            "{key}"
        );
    }
}

#[test]
fn missing_claims_are_refused() {
    for key in ["exp", "nbf", "iss", "aud", "sub", "iat", "jti", "typ"] {
        let claims = without(good_claims(), key);
        assert!(
            verify(&sign_raw(&claims, Algorithm::HS256, Some("k1"))).is_err(),
            "token without {key} verified"
        );
    }
}

#[test]
fn wrong_algorithms_are_refused() {
    // Another HMAC strength with the same secret.
    let hs512 = sign_raw(&good_claims(), Algorithm::HS512, Some("k1"));
    assert_eq!(verify(&hs512), Err(TokenError::WrongAlgorithm));
    // `none`: header {"alg":"none"} and an empty signature.
    let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT","kid":"k1"}"#);
    let body = URL_SAFE_NO_PAD.encode(good_claims().to_string());
    assert!(verify(&format!("{header}.{body}.")).is_err());
    assert!(verify(&format!("{header}.{body}")).is_err());
}

#[test]
fn tampered_tokens_are_refused() {
    let token = ring().sign(&policy().access_claims("alice", "s1", vec![]));
    let parts: Vec<&str> = token.split('.').collect();
    // Change the payload: sub = admin, same signature.
    let forged_body = URL_SAFE_NO_PAD.encode(with(good_claims(), "sub", json!("root")).to_string());
    let forged = format!("{}.{}.{}", parts[0], forged_body, parts[2]);
    assert_eq!(verify(&forged), Err(TokenError::BadSignature));
    // Flip one signature character.
    let mut sig = parts[2].to_owned().into_bytes();
    sig[3] = if sig[3] == b'A' { b'B' } else { b'A' };
    let flipped = format!(
        "{}.{}.{}",
        parts[0],
        parts[1],
        String::from_utf8(sig).unwrap()
    );
    assert_eq!(verify(&flipped), Err(TokenError::BadSignature));
    assert_eq!(verify("not.a.jwt"), Err(TokenError::Malformed));
    assert_eq!(verify(""), Err(TokenError::Malformed));
}

#[test]
fn unknown_or_missing_kid_is_refused() {
    assert_eq!(
        verify(&sign_raw(&good_claims(), Algorithm::HS256, Some("k9"))),
        Err(TokenError::UnknownKid)
    );
    assert_eq!(
        verify(&sign_raw(&good_claims(), Algorithm::HS256, None)),
        Err(TokenError::MissingKid)
    );
}

#[test]
fn access_tokens_cannot_outlive_their_ttl() {
    let now = now_s();
    let long = with(good_claims(), "exp", json!(now + 10 * 86_400));
    assert_eq!(
        verify(&sign_raw(&long, Algorithm::HS256, Some("k1"))),
        Err(TokenError::BadKind)
    );
    let no_sid = with(good_claims(), "sid", json!(""));
    assert_eq!(
        verify(&sign_raw(&no_sid, Algorithm::HS256, Some("k1"))),
        Err(TokenError::BadKind)
    );
}

#[test]
fn rotation_keeps_old_tokens_valid() {
    let old = ring();
    let token = old.sign(&policy().access_claims("alice", "s1", vec![]));
    let rotated = KeyRing::parse(&format!("{}\n{KEY}", generate_key_line("k2", false))).unwrap();
    assert_eq!(rotated.signing_kid(), "k2");
    assert!(policy().verify(&rotated, &token).is_ok());
    let new_token = rotated.sign(&policy().access_claims("alice", "s1", vec![]));
    assert_eq!(
        policy().verify(&old, &new_token),
        Err(TokenError::UnknownKid)
    );
}

#[test]
fn eddsa_keys_sign_and_verify_and_export_their_public_key() {
    let ring = KeyRing::parse(&generate_key_line("ed1", true)).unwrap();
    let token = ring.sign(&policy().access_claims("alice", "s1", vec![]));
    assert!(token.starts_with(&URL_SAFE_NO_PAD.encode(br#"{"typ":"JWT","alg":"EdDSA""#)[..10]));
    assert!(policy().verify(&ring, &token).is_ok());
    assert_eq!(ring.public_pems().len(), 1);
    assert!(
        ring.public_pems()[0]
            .1
            .starts_with("-----BEGIN PUBLIC KEY-----")
    );
}

#[test]
fn bad_key_files_say_which_line() {
    assert!(matches!(
        KeyRing::parse("# nothing\n"),
        Err(KeyError::Empty)
    ));
    let short = KeyRing::parse("k1 HS256 c2hvcnQ").unwrap_err().to_string();
    assert!(
        short.contains("line 1") && short.contains("32 bytes"),
        "{short}"
    );
    let dup = KeyRing::parse(&format!("{KEY}\n{KEY}"))
        .unwrap_err()
        .to_string();
    assert!(dup.contains("line 2"), "{dup}");
    assert!(KeyRing::parse("k1 RS256 AAAA").is_err());
    // The error never repeats the key material.
    assert!(!short.contains("c2hvcnQ"));
}
