//! JWTs: the key ring, issuing, and strict validation.
//!
//! **Keys** come from a key file (or an environment variable holding the same text), one key
//! per line, `<kid> <alg> <key>`:
//!
//! ```text
//! # the first key signs new tokens; every key listed verifies
//! 2026-07 HS256 base64url-of-32-or-more-random-bytes
//! 2026-01 HS256 base64url-of-the-previous-key
//! ```
//!
//! `HS256` takes a shared secret (at least 32 bytes); `EdDSA` takes an Ed25519 private key as
//! base64 of its PKCS#8 DER, and then third parties can verify with the public key alone
//! (`gridmesh auth public-key` prints it as PEM). Rotation: put a new key first and keep the
//! old one listed for as long as tokens signed with it live (an API token's lifetime at
//! most); nobody is logged out. `gridmesh auth keygen` prints a fresh line.
//!
//! **Validation** is strict: the header's `alg` must be the algorithm of the key its `kid`
//! names (so `none`, or an HMAC token made with an Ed25519 public key, never verifies); `kid`,
//! `iss`, `aud`, `sub`, `exp`, `nbf`, `iat` and `jti` are required; `iss` and `aud` must match
//! the configuration; `exp` and `nbf` are checked with a bounded clock skew, `iat` may not be
//! in the future beyond it, and a `crit` header (extensions we do not implement) is refused.
//! Keys are never taken from the token (`jku`, `jwk`, `x5u` are ignored).

use std::collections::HashMap;

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use crate::secret::random_id;

/// Token kinds (`typ` claim).
pub const TYP_ACCESS: &str = "access";
/// A long-lived API token of a service account.
pub const TYP_API: &str = "api";

/// Claims of every GridMesh token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// Issuer (`auth.issuer`).
    pub iss: String,
    /// Audience (`auth.audience`).
    pub aud: String,
    /// User name.
    pub sub: String,
    /// Expiry, seconds since the epoch.
    pub exp: u64,
    /// Not before, seconds since the epoch.
    pub nbf: u64,
    /// Issued at, seconds since the epoch.
    pub iat: u64,
    /// Token id: API tokens are revoked by it.
    pub jti: String,
    /// `access` or `api`.
    pub typ: String,
    /// Login session id (access tokens); empty for API tokens.
    #[serde(default)]
    pub sid: String,
    /// Roles at issue time, for other verifiers' information. GridMesh itself uses the user's
    /// current roles, so a role change applies to live tokens at once.
    #[serde(default)]
    pub roles: Vec<String>,
    /// Issued at, milliseconds (revoking "everything before t" needs finer time than `iat`).
    #[serde(default)]
    pub ims: u64,
}

/// Why a token was refused. Only logged and counted: callers are told nothing more than
/// "invalid or expired token".
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Not a JWT, bad base64 or JSON.
    #[error("malformed token")]
    Malformed,
    /// No `kid` in the header.
    #[error("token has no kid")]
    MissingKid,
    /// `kid` names no key of the ring.
    #[error("unknown kid")]
    UnknownKid,
    /// `alg` is not the algorithm of the key `kid` names.
    #[error("wrong algorithm")]
    WrongAlgorithm,
    /// The header lists critical extensions.
    #[error("unsupported critical header")]
    Critical,
    /// The signature does not verify.
    #[error("bad signature")]
    BadSignature,
    /// `exp` is past (beyond the skew).
    #[error("expired")]
    Expired,
    /// `nbf` is in the future, or `iat` is (beyond the skew).
    #[error("not yet valid")]
    NotYetValid,
    /// `iss` or `aud` is not ours.
    #[error("wrong issuer or audience")]
    WrongAudience,
    /// A required claim is missing or empty.
    #[error("missing claim {0}")]
    MissingClaim(&'static str),
    /// `typ` is unknown, or the token lives longer than its kind may.
    #[error("invalid token kind or lifetime")]
    BadKind,
}

impl TokenError {
    /// A short label for metrics and the audit log.
    pub fn label(&self) -> &'static str {
        match self {
            TokenError::Malformed => "malformed",
            TokenError::MissingKid => "missing_kid",
            TokenError::UnknownKid => "unknown_kid",
            TokenError::WrongAlgorithm => "wrong_alg",
            TokenError::Critical => "crit",
            TokenError::BadSignature => "bad_signature",
            TokenError::Expired => "expired",
            TokenError::NotYetValid => "not_yet_valid",
            TokenError::WrongAudience => "wrong_audience",
            TokenError::MissingClaim(_) => "missing_claim",
            TokenError::BadKind => "bad_kind",
        }
    }
}

/// A key file that cannot be used.
#[derive(Debug, Clone, thiserror::Error)]
pub enum KeyError {
    /// A line is not `<kid> <alg> <key>`, or the key does not decode.
    #[error("JWT key file line {line}: {message}")]
    Line {
        /// 1-based line number.
        line: usize,
        /// What is wrong (never the key itself).
        message: String,
    },
    /// No key at all.
    #[error("the JWT key file lists no key")]
    Empty,
}

struct SigningKey {
    kid: String,
    alg: Algorithm,
    key: EncodingKey,
}

struct VerifyingKey {
    alg: Algorithm,
    key: DecodingKey,
}

/// The keys of a node: the first signs, all verify.
pub struct KeyRing {
    signing: SigningKey,
    verifying: HashMap<String, VerifyingKey>,
    public_pems: Vec<(String, String)>,
}

impl std::fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyRing")
            .field("signing_kid", &self.signing.kid)
            .field("kids", &self.verifying.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

fn decode_b64(text: &str) -> Option<Vec<u8>> {
    URL_SAFE_NO_PAD
        .decode(text.trim_end_matches('='))
        .ok()
        .or_else(|| STANDARD.decode(text).ok())
}

/// The SubjectPublicKeyInfo PEM of a raw Ed25519 public key.
fn ed25519_public_pem(raw: &[u8]) -> String {
    const SPKI_PREFIX: [u8; 12] = [
        0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
    ];
    let mut der = SPKI_PREFIX.to_vec();
    der.extend_from_slice(raw);
    format!(
        "-----BEGIN PUBLIC KEY-----\n{}\n-----END PUBLIC KEY-----\n",
        STANDARD.encode(der)
    )
}

fn parse_line(
    line_no: usize,
    line: &str,
) -> Result<(SigningKey, VerifyingKey, Option<String>), KeyError> {
    let err = |message: &str| KeyError::Line {
        line: line_no,
        message: message.to_owned(),
    };
    let parts: Vec<&str> = line.split_whitespace().collect();
    let [kid, alg, key] = parts.as_slice() else {
        return Err(err("expected `<kid> <alg> <key>`"));
    };
    if kid.len() > 64 || !kid.chars().all(|c| c.is_ascii_graphic()) {
        return Err(err("kid must be 1 to 64 printable ASCII characters"));
    }
    let bytes = decode_b64(key).ok_or_else(|| err("key is not base64"))?;
    match *alg {
        "HS256" => {
            if bytes.len() < 32 {
                return Err(err("an HS256 key needs at least 32 bytes"));
            }
            let signing = EncodingKey::from_secret(&bytes);
            let verifying = DecodingKey::from_secret(&bytes);
            match (signing, verifying) {
                (Ok(s), Ok(v)) => Ok((
                    SigningKey {
                        kid: (*kid).to_owned(),
                        alg: Algorithm::HS256,
                        key: s,
                    },
                    VerifyingKey {
                        alg: Algorithm::HS256,
                        key: v,
                    },
                    None,
                )),
                _ => Err(err("HS256 key rejected")),
            }
        }
        "EdDSA" => {
            use aws_lc_rs::signature::KeyPair as _;
            let pair = aws_lc_rs::signature::Ed25519KeyPair::from_pkcs8(&bytes)
                .map_err(|_| err("EdDSA key must be an Ed25519 private key in PKCS#8 DER"))?;
            let public = pair.public_key().as_ref().to_vec();
            Ok((
                SigningKey {
                    kid: (*kid).to_owned(),
                    alg: Algorithm::EdDSA,
                    key: EncodingKey::from_ed_der(&bytes),
                },
                VerifyingKey {
                    alg: Algorithm::EdDSA,
                    key: DecodingKey::from_ed_der(&public),
                },
                Some(ed25519_public_pem(&public)),
            ))
        }
        _ => Err(err("alg must be HS256 or EdDSA")),
    }
}

impl KeyRing {
    /// Parses a key file's text (see the module docs).
    pub fn parse(text: &str) -> Result<Self, KeyError> {
        let mut signing = None;
        let mut verifying = HashMap::new();
        let mut public_pems = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (sign, verify, pem) = parse_line(i + 1, line)?;
            if verifying.contains_key(&sign.kid) {
                return Err(KeyError::Line {
                    line: i + 1,
                    message: format!("kid {:?} is listed twice", sign.kid),
                });
            }
            if let Some(pem) = pem {
                public_pems.push((sign.kid.clone(), pem));
            }
            verifying.insert(sign.kid.clone(), verify);
            signing.get_or_insert(sign);
        }
        let signing = signing.ok_or(KeyError::Empty)?;
        Ok(Self {
            signing,
            verifying,
            public_pems,
        })
    }

    /// A ring of one HS256 key derived from `seed` (development mode only: a node without a
    /// key file derives its key from the cluster cookie or a random per-directory seed).
    pub fn derived_hs256(kid: &str, seed: &[u8]) -> Self {
        let digest = aws_lc_rs::digest::digest(
            &aws_lc_rs::digest::SHA256,
            &[b"gridmesh-jwt-v1:".as_slice(), seed].concat(),
        );
        let line = format!("{kid} HS256 {}", URL_SAFE_NO_PAD.encode(digest.as_ref()));
        Self::parse(&line).expect("a derived 32-byte HS256 key always parses")
    }

    /// The kid that signs new tokens.
    pub fn signing_kid(&self) -> &str {
        &self.signing.kid
    }

    /// Public keys (kid, PEM) of the EdDSA keys, for third-party verifiers.
    pub fn public_pems(&self) -> &[(String, String)] {
        &self.public_pems
    }

    /// Signs `claims` with the signing key, `kid` in the header.
    pub fn sign(&self, claims: &Claims) -> String {
        let mut header = Header::new(self.signing.alg);
        header.kid = Some(self.signing.kid.clone());
        header.typ = Some("JWT".to_owned());
        jsonwebtoken::encode(&header, claims, &self.signing.key)
            .expect("signing serialisable claims with a parsed key cannot fail")
    }
}

/// A fresh key file line: `kid alg key`.
pub fn generate_key_line(kid: &str, eddsa: bool) -> String {
    if eddsa {
        let rng = aws_lc_rs::rand::SystemRandom::new();
        let pkcs8 = aws_lc_rs::signature::Ed25519KeyPair::generate_pkcs8(&rng)
            .expect("the system random source is available");
        format!("{kid} EdDSA {}", STANDARD.encode(pkcs8.as_ref()))
    } else {
        format!("{kid} HS256 {}", crate::secret::random_secret())
    }
}

/// What tokens this node issues and accepts.
#[derive(Debug, Clone)]
pub struct TokenPolicy {
    /// `iss` of issued tokens, the only one accepted.
    pub issuer: String,
    /// `aud` of issued tokens, the only one accepted.
    pub audience: String,
    /// Clock skew tolerated on `exp`, `nbf` and `iat`, seconds.
    pub skew_s: u64,
    /// Lifetime of access tokens, seconds.
    pub access_ttl_s: u64,
    /// Longest lifetime of an API token, seconds.
    pub max_api_ttl_s: u64,
}

/// Seconds since the epoch.
pub fn now_s() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl TokenPolicy {
    /// Claims of a new access token for `user` in session `sid`.
    pub fn access_claims(&self, user: &str, sid: &str, roles: Vec<String>) -> Claims {
        self.claims(user, TYP_ACCESS, sid, roles, self.access_ttl_s)
    }

    /// Claims of a new API token valid for `ttl_s` (capped at `max_api_ttl_s`).
    pub fn api_claims(&self, user: &str, roles: Vec<String>, ttl_s: u64) -> Claims {
        self.claims(user, TYP_API, "", roles, ttl_s.min(self.max_api_ttl_s))
    }

    fn claims(&self, user: &str, typ: &str, sid: &str, roles: Vec<String>, ttl: u64) -> Claims {
        let now = now_s();
        Claims {
            iss: self.issuer.clone(),
            aud: self.audience.clone(),
            sub: user.to_owned(),
            exp: now + ttl,
            nbf: now,
            iat: now,
            jti: random_id(),
            typ: typ.to_owned(),
            sid: sid.to_owned(),
            roles,
            ims: now_ms(),
        }
    }

    /// Validates `token` against `ring` (see the module docs for every check).
    pub fn verify(&self, ring: &KeyRing, token: &str) -> Result<Claims, TokenError> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| TokenError::Malformed)?;
        if header.crit.is_some() {
            return Err(TokenError::Critical);
        }
        let kid = header.kid.as_deref().ok_or(TokenError::MissingKid)?;
        let key = ring.verifying.get(kid).ok_or(TokenError::UnknownKid)?;
        if header.alg != key.alg {
            return Err(TokenError::WrongAlgorithm);
        }
        let mut validation = Validation::new(key.alg);
        validation.leeway = self.skew_s;
        validation.validate_nbf = true;
        validation.set_required_spec_claims(&["exp", "nbf", "iss", "aud", "sub"]);
        validation.set_issuer(&[&self.issuer]);
        validation.set_audience(&[&self.audience]);
        let data = jsonwebtoken::decode::<Claims>(token, &key.key, &validation)
            .map_err(|e| map_error(e.kind()))?;
        self.check_claims(data.claims)
    }

    fn check_claims(&self, claims: Claims) -> Result<Claims, TokenError> {
        if claims.iat > now_s() + self.skew_s {
            return Err(TokenError::NotYetValid);
        }
        if claims.sub.is_empty() {
            return Err(TokenError::MissingClaim("sub"));
        }
        if claims.jti.is_empty() {
            return Err(TokenError::MissingClaim("jti"));
        }
        let lifetime = claims.exp.saturating_sub(claims.iat);
        let ok = match claims.typ.as_str() {
            TYP_ACCESS => !claims.sid.is_empty() && lifetime <= self.access_ttl_s + self.skew_s,
            TYP_API => claims.sid.is_empty() && lifetime <= self.max_api_ttl_s + self.skew_s,
            _ => false,
        };
        if !ok {
            return Err(TokenError::BadKind);
        }
        Ok(claims)
    }
}

fn map_error(kind: &jsonwebtoken::errors::ErrorKind) -> TokenError {
    use jsonwebtoken::errors::ErrorKind as K;
    match kind {
        K::InvalidSignature => TokenError::BadSignature,
        K::ExpiredSignature => TokenError::Expired,
        K::ImmatureSignature => TokenError::NotYetValid,
        K::InvalidIssuer | K::InvalidAudience => TokenError::WrongAudience,
        K::InvalidAlgorithm | K::InvalidAlgorithmName | K::MissingAlgorithm => {
            TokenError::WrongAlgorithm
        }
        K::MissingRequiredClaim(c) => TokenError::MissingClaim(match c.as_str() {
            "exp" => "exp",
            "nbf" => "nbf",
            "iss" => "iss",
            "aud" => "aud",
            _ => "sub",
        }),
        _ => TokenError::Malformed,
    }
}

#[cfg(test)]
mod tests;
