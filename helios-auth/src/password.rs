//! Password rules and hashing (bcrypt, never truncating).
//!
//! bcrypt only reads the first 72 bytes of a password, and the `bcrypt` crate's `hash`
//! silently truncates. Here passwords longer than 72 bytes are pre-hashed: SHA-256 of the
//! password, base64-encoded (44 bytes), is what bcrypt sees, marked by a `$sha256$` prefix on
//! the stored hash, so two long passwords sharing their first 72 bytes stay distinct.
//! Shorter passwords go to bcrypt unchanged through `non_truncating_hash`.

use crate::error::{AuthError, Result};
use base64::Engine as _;

/// Longest password accepted (bytes): far above any human password, and bounds the work.
pub const PASSWORD_SIZE_MAX: usize = 1024;
const BCRYPT_INPUT_MAX: usize = 72;
const PREHASH_MARK: &str = "$sha256$";

fn prehash(password: &str) -> String {
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, password.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(d.as_ref())
}

/// Checks the password rules: at least `len_min` characters, at most
/// [`PASSWORD_SIZE_MAX`] bytes, not all whitespace.
pub fn check_rules(password: &str, len_min: usize) -> Result<()> {
    if password.chars().count() < len_min {
        return Err(AuthError::Invalid {
            field: "password",
            reason: format!("must be at least {len_min} characters"),
        });
    }
    if password.len() > PASSWORD_SIZE_MAX {
        return Err(AuthError::Invalid {
            field: "password",
            reason: format!("must be at most {PASSWORD_SIZE_MAX} bytes"),
        });
    }
    if password.trim().is_empty() {
        return Err(AuthError::Invalid {
            field: "password",
            reason: "must not be blank".to_owned(),
        });
    }
    Ok(())
}

/// Hashes a password with bcrypt at `cost`, pre-hashing long ones (see the module docs).
/// The salt comes from `salt` (16 bytes from the injected randomness).
pub fn hash(password: &str, cost: u32, salt: [u8; 16]) -> Result<String> {
    if password.len() > BCRYPT_INPUT_MAX {
        let h = bcrypt::hash_with_salt(prehash(password), cost, salt)
            .map_err(|e| AuthError::Hash(e.to_string()))?;
        return Ok(format!("{PREHASH_MARK}{h}"));
    }
    let h = bcrypt::non_truncating_hash_with_salt(password, cost, salt)
        .map_err(|e| AuthError::Hash(e.to_string()))?;
    Ok(h.to_string())
}

/// Verifies a password against a stored hash, in time that does not depend on where the
/// two differ (bcrypt's comparison). An unparsable hash verifies as false.
pub fn verify(password: &str, stored: &str) -> bool {
    if password.len() > PASSWORD_SIZE_MAX {
        return false;
    }
    match stored.strip_prefix(PREHASH_MARK) {
        Some(h) => bcrypt::verify(prehash(password), h).unwrap_or(false),
        None if password.len() > BCRYPT_INPUT_MAX => false,
        None => bcrypt::non_truncating_verify(password, stored).unwrap_or(false),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_passwords_sharing_72_bytes_are_not_interchangeable() {
        let base = "x".repeat(72);
        let a = format!("{base}A-tail");
        let b = format!("{base}B-tail");
        let h = hash(&a, 4, [7; 16]).unwrap();
        assert!(verify(&a, &h));
        assert!(!verify(&b, &h));
        assert!(!verify(&base, &h));
    }

    #[test]
    fn short_passwords_round_trip_and_rules_hold() {
        let h = hash("correct horse", 4, [1; 16]).unwrap();
        assert!(verify("correct horse", &h));
        assert!(!verify("correct horsf", &h));
        assert!(!verify("x", "not a hash"));
        assert!(check_rules("short", 10).is_err());
        assert!(check_rules("          ", 10).is_err());
        assert!(check_rules(&"y".repeat(2000), 10).is_err());
        assert!(check_rules("long enough pw", 10).is_ok());
    }
}
