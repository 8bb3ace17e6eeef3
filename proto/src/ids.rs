//! Identifier rules shared by every interface: meter and feeder ids are 1 to 64 bytes of
//! `[A-Za-z0-9._:-]`. Keeping them short and plain makes them safe as storage key prefixes
//! (length-prefixed with one byte) and in log lines and metric labels.

/// Longest identifier accepted, in bytes.
pub const MAX_ID_LEN: usize = 64;

/// Why an identifier was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    /// The id is empty.
    #[error("{kind} id is empty")]
    Empty {
        /// "meter" or "feeder".
        kind: &'static str,
    },
    /// The id is longer than [`MAX_ID_LEN`].
    #[error("{kind} id is {len} bytes long; at most {MAX_ID_LEN} are allowed")]
    TooLong {
        /// "meter" or "feeder".
        kind: &'static str,
        /// Its length.
        len: usize,
    },
    /// The id contains a character outside `[A-Za-z0-9._:-]`.
    #[error("{kind} id contains {found:?}; only A-Z a-z 0-9 . _ : - are allowed")]
    BadChar {
        /// "meter" or "feeder".
        kind: &'static str,
        /// The first offending character.
        found: char,
    },
}

/// Checks a meter id.
pub fn check_meter_id(id: &str) -> Result<(), IdError> {
    check_id("meter", id)
}

/// Checks a feeder id.
pub fn check_feeder_id(id: &str) -> Result<(), IdError> {
    check_id("feeder", id)
}

fn check_id(kind: &'static str, id: &str) -> Result<(), IdError> {
    if id.is_empty() {
        return Err(IdError::Empty { kind });
    }
    if id.len() > MAX_ID_LEN {
        return Err(IdError::TooLong {
            kind,
            len: id.len(),
        });
    }
    match id
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | ':' | '-')))
    {
        Some(found) => Err(IdError::BadChar { kind, found }),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_plain_ids_and_refuses_the_rest() {
        assert!(check_meter_id("MTR-0001.a:b_c").is_ok());
        assert_eq!(check_meter_id(""), Err(IdError::Empty { kind: "meter" }));
        assert_eq!(
            check_meter_id(&"x".repeat(65)),
            Err(IdError::TooLong {
                kind: "meter",
                len: 65
            })
        );
        assert!(check_meter_id(&"x".repeat(64)).is_ok());
        assert_eq!(
            check_feeder_id("a b"),
            Err(IdError::BadChar {
                kind: "feeder",
                found: ' '
            })
        );
        assert!(check_meter_id("mätare").is_err());
    }
}
