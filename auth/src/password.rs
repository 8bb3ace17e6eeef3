//! Password hashing (argon2id) and the password policy.
//!
//! Parameters: argon2id v1.3 with 19 MiB of memory, 2 passes and 1 lane by default, the
//! OWASP Password Storage Cheat Sheet's first recommendation; on this project's 2-core test
//! machine one hash or verify takes the time given in `docs/benchmarks.md`. They are
//! configurable (`auth.argon2_*`) and stored in every hash (PHC string), so raising them later
//! only affects new hashes, and old ones keep verifying.
//!
//! Policy (NIST SP 800-63B style: length over composition rules): 12 to 256 characters, not
//! containing the user name, not one of a short list of notorious passwords, and not a single
//! repeated character.

use argon2::password_hash::{PasswordHasher as _, PasswordVerifier as _};
use argon2::{Algorithm, Argon2, Params, Version};

/// Shortest accepted password, characters.
pub const MIN_LEN: usize = 12;
/// Longest accepted password, characters (bounds the hashing work a request can cause).
pub const MAX_LEN: usize = 256;

const NOTORIOUS: &[&str] = &[
    "123456789012",
    "password1234",
    "passwordpassword",
    "qwertyuiopas",
    "changemechangeme",
    "administrator",
    "letmeinletmein",
    "gridmeshgridmesh",
];

/// Argon2id cost parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cost {
    /// Memory, KiB.
    pub memory_kib: u32,
    /// Passes over the memory.
    pub iterations: u32,
    /// Lanes.
    pub parallelism: u32,
}

impl Default for Cost {
    fn default() -> Self {
        Self {
            memory_kib: 19 * 1024,
            iterations: 2,
            parallelism: 1,
        }
    }
}

/// Errors of hashing and policy.
#[derive(Debug, Clone, thiserror::Error)]
pub enum PasswordError {
    /// The password breaks the policy; the message says how.
    #[error("password rejected: {0}")]
    Policy(String),
    /// The cost parameters are out of argon2's ranges.
    #[error("invalid argon2 parameters: {0}")]
    Params(String),
    /// Hashing failed (should not happen with valid parameters).
    #[error("password hashing failed: {0}")]
    Hash(String),
}

/// Hashes and verifies passwords with one set of parameters.
#[derive(Debug, Clone)]
pub struct PasswordHasher {
    argon2: Argon2<'static>,
    dummy_hash: String,
}

impl PasswordHasher {
    /// A hasher with `cost`. Computes one hash up front: the dummy that unknown user names are
    /// verified against, so that a login for a missing user costs as much as for a real one.
    pub fn new(cost: Cost) -> Result<Self, PasswordError> {
        let params = Params::new(cost.memory_kib, cost.iterations, cost.parallelism, None)
            .map_err(|e| PasswordError::Params(e.to_string()))?;
        let argon2 = Argon2::new(Algorithm::Argon2id, Version::V0x13, params);
        let mut hasher = Self {
            argon2,
            dummy_hash: String::new(),
        };
        hasher.dummy_hash = hasher.hash("not a password: only its cost matters")?;
        Ok(hasher)
    }

    /// A PHC string (`$argon2id$v=19$m=...,t=...,p=...$salt$hash`) with a fresh random salt.
    pub fn hash(&self, password: &str) -> Result<String, PasswordError> {
        self.argon2
            .hash_password(password.as_bytes())
            .map(|h| h.to_string())
            .map_err(|e| PasswordError::Hash(e.to_string()))
    }

    /// Whether `password` matches `phc` (parameters are taken from `phc`). A malformed hash
    /// never matches.
    pub fn verify(&self, password: &str, phc: &str) -> bool {
        if password.chars().count() > MAX_LEN {
            return false;
        }
        self.argon2
            .verify_password(password.as_bytes(), phc)
            .is_ok()
    }

    /// Spends the time of one verification and fails: for unknown or disabled users.
    pub fn verify_nobody(&self, password: &str) -> bool {
        let _ = self.verify(password, &self.dummy_hash);
        false
    }
}

/// Checks `password` for `user` against the policy.
pub fn check_policy(user: &str, password: &str) -> Result<(), PasswordError> {
    let chars = password.chars().count();
    let fail = |why: &str| Err(PasswordError::Policy(why.to_owned()));
    if chars < MIN_LEN {
        return fail(&format!(
            "use at least {MIN_LEN} characters (a passphrase works well)"
        ));
    }
    if chars > MAX_LEN {
        return fail(&format!("use at most {MAX_LEN} characters"));
    }
    let lower = password.to_lowercase();
    if !user.is_empty() && lower.contains(&user.to_lowercase()) {
        return fail("it must not contain the user name");
    }
    if NOTORIOUS.contains(&lower.as_str()) {
        return fail("it is on the list of commonly used passwords");
    }
    let mut distinct = password.chars().collect::<Vec<_>>();
    distinct.sort_unstable();
    distinct.dedup();
    if distinct.len() < 4 {
        return fail("use at least 4 different characters");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cheap() -> PasswordHasher {
        PasswordHasher::new(Cost {
            memory_kib: 256,
            iterations: 1,
            parallelism: 1,
        })
        .unwrap()
    }

    #[test]
    fn hash_verifies_only_the_same_password() {
        let hasher = cheap();
        let hash = hasher.hash("correct horse battery").unwrap();
        assert!(hash.starts_with("$argon2id$v=19$m=256,t=1,p=1$"));
        assert!(hasher.verify("correct horse battery", &hash));
        assert!(!hasher.verify("correct horse batterY", &hash));
        assert!(!hasher.verify("correct horse battery", "not a hash"));
        assert!(!hasher.verify_nobody("correct horse battery"));
    }

    #[test]
    fn salts_differ() {
        let hasher = cheap();
        assert_ne!(
            hasher.hash("same password!").unwrap(),
            hasher.hash("same password!").unwrap()
        );
    }

    #[test]
    fn hashes_keep_their_own_parameters() {
        let old = cheap().hash("an old password").unwrap();
        let stronger = PasswordHasher::new(Cost {
            memory_kib: 512,
            iterations: 2,
            parallelism: 1,
        })
        .unwrap();
        assert!(stronger.verify("an old password", &old));
    }

    #[test]
    fn policy() {
        assert!(check_policy("alice", "short").is_err());
        assert!(check_policy("alice", "my-alice-password").is_err());
        assert!(check_policy("alice", "PasswordPassword").is_err());
        assert!(check_policy("alice", "aaaaaaaaaaaaaaaa").is_err());
        assert!(check_policy("alice", &"x".repeat(300)).is_err());
        assert!(check_policy("alice", "tulip-voltage-river-9").is_ok());
    }
}
