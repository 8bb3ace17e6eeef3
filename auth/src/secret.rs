//! Secrets that never print, and random identifiers.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// A secret value (password, key material, cookie). `Debug` and `Display` print
/// `<redacted>`, so a secret that ends up in a log line or error by mistake shows nothing.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret itself, for the one place that needs it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

impl std::fmt::Display for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

/// `n` bytes from the operating system's CSPRNG.
pub fn random_bytes(n: usize) -> Vec<u8> {
    use aws_lc_rs::rand::SecureRandom as _;
    let mut out = vec![0u8; n];
    aws_lc_rs::rand::SystemRandom::new()
        .fill(&mut out)
        .expect("the system random source is available on every supported OS");
    out
}

/// A random identifier: 16 bytes (128 bits), base64url without padding (22 characters).
pub fn random_id() -> String {
    URL_SAFE_NO_PAD.encode(random_bytes(16))
}

/// A random secret of 32 bytes (256 bits), base64url without padding.
pub fn random_secret() -> String {
    URL_SAFE_NO_PAD.encode(random_bytes(32))
}

/// A random password for the bootstrap admin: 24 characters of base64url (144 bits).
pub fn random_password() -> Secret {
    Secret(URL_SAFE_NO_PAD.encode(random_bytes(18)))
}

/// SHA-256 of `data`, base64url (for storing refresh-token secrets: they are random, so a
/// fast hash suffices, and the store never holds a usable token).
pub fn sha256_b64(data: &[u8]) -> String {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, data);
    URL_SAFE_NO_PAD.encode(digest.as_ref())
}

/// Compares two byte strings in time independent of where they differ.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_do_not_print() {
        let s = Secret::new("hunter2-hunter2");
        assert!(!format!("{s:?} {s}").contains("hunter2"));
    }

    #[test]
    fn ids_are_random_and_url_safe() {
        let (a, b) = (random_id(), random_id());
        assert_ne!(a, b);
        assert_eq!(a.len(), 22);
        assert!(
            a.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        );
    }

    #[test]
    fn constant_time_eq_compares() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
    }
}
