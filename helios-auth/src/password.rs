//! Password rules and hashing (bcrypt, never truncating).
//!
//! Rules of a new password ([`check_rules`]): 10 characters or more (configurable), at most
//! [`PASSWORD_SIZE_MAX`] bytes, not blank, not the username, and a zxcvbn score of
//! [`STRENGTH_SCORE_MIN`] or more with the username counted against it. zxcvbn reads only
//! the first 100 characters, so the check is bounded whatever the input.
//!
//! bcrypt only reads the first 72 bytes of a password, and the `bcrypt` crate's `hash`
//! silently truncates (its `non_truncating_*` functions refuse 72 bytes and more, counting
//! the terminating NUL). Here passwords of 72 bytes or more are pre-hashed: SHA-256 of the
//! password, base64-encoded (44 bytes), is what bcrypt sees, marked by a `$sha256$` prefix on
//! the stored hash, so two long passwords sharing their first 72 bytes stay distinct.
//! Shorter passwords go to bcrypt unchanged through `non_truncating_hash`.
//!
//! [`verify`] runs exactly one bcrypt verification whatever the inputs (a long password
//! against a short-password hash, or the reverse, still costs one bcrypt), so its time does
//! not tell which kind of password a user has.

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

/// Lowest zxcvbn score accepted (of 0..=4): "safely unguessable" for an online attack.
pub const STRENGTH_SCORE_MIN: u8 = 3;

/// Checks the rules of a new password, for the user `username`: at least `len_min`
/// characters, at most [`PASSWORD_SIZE_MAX`] bytes, not blank, not the username, and a
/// zxcvbn score of at least [`STRENGTH_SCORE_MIN`] with the username counted against it
/// (common passwords, dictionary words, keyboard walks, repeats and dates score low).
/// `field` names the input in the error (`password`, `new_password`,
/// `HELIOS_ADMIN_PASSWORD`); the reason says why, with zxcvbn's warning when it has one.
pub fn check_rules(
    field: &'static str,
    password: &str,
    username: &str,
    len_min: usize,
) -> Result<()> {
    let invalid = |reason: String| AuthError::Invalid { field, reason };
    if password.chars().count() < len_min {
        return Err(invalid(format!("must be at least {len_min} characters")));
    }
    if password.len() > PASSWORD_SIZE_MAX {
        return Err(invalid(format!(
            "must be at most {PASSWORD_SIZE_MAX} bytes"
        )));
    }
    if password.trim().is_empty() {
        return Err(invalid("must not be blank".to_owned()));
    }
    if !username.is_empty() && password.trim().eq_ignore_ascii_case(username) {
        return Err(invalid("must not be the username".to_owned()));
    }
    let estimate = zxcvbn::zxcvbn(password, &[username]);
    let score = u8::from(estimate.score());
    if score < STRENGTH_SCORE_MIN {
        let mut reason = format!(
            "too easy to guess (strength {score} of 4, at least {STRENGTH_SCORE_MIN} needed)"
        );
        if let Some(w) = estimate.feedback().and_then(|f| f.warning()) {
            reason.push_str(": ");
            reason.push_str(&w.to_string());
        } else {
            reason.push_str(": use a longer passphrase of unrelated words");
        }
        return Err(invalid(reason));
    }
    Ok(())
}

/// Hashes a password with bcrypt at `cost`, pre-hashing long ones (see the module docs).
/// The salt comes from `salt` (16 bytes from the injected randomness).
pub fn hash(password: &str, cost: u32, salt: [u8; 16]) -> Result<String> {
    if password.len() >= BCRYPT_INPUT_MAX {
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
    let long = password.len() >= BCRYPT_INPUT_MAX;
    let (stored_long, bcrypt_hash) = match stored.strip_prefix(PREHASH_MARK) {
        Some(h) => (true, h),
        None => (false, stored),
    };
    // Oversized input is hashed down like any long one, so it costs the same bcrypt.
    let input = if long {
        prehash(password)
    } else {
        password.to_owned()
    };
    let matched = bcrypt::verify(input.as_bytes(), bcrypt_hash).unwrap_or(false);
    matched && long == stored_long && password.len() <= PASSWORD_SIZE_MAX
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
    fn exactly_72_and_73_bytes_work() {
        for n in [71, 72, 73] {
            let p = "z".repeat(n);
            let h = hash(&p, 4, [3; 16]).unwrap();
            assert!(verify(&p, &h), "{n} bytes");
            assert!(!verify(&"z".repeat(n + 1), &h), "{n}+1 bytes");
        }
    }

    #[test]
    fn short_passwords_round_trip_and_rules_hold() {
        let h = hash("correct horse", 4, [1; 16]).unwrap();
        assert!(verify("correct horse", &h));
        assert!(!verify("correct horsf", &h));
        assert!(!verify("x", "not a hash"));
    }

    fn reason(field: &'static str, pw: &str, user: &str) -> String {
        match check_rules(field, pw, user, 10) {
            Err(AuthError::Invalid { field: f, reason }) => {
                assert_eq!(f, field);
                reason
            }
            other => panic!("{pw:?}: expected Invalid, got {other:?}"),
        }
    }

    #[test]
    fn rules_refuse_short_blank_huge_the_username_and_guessable_passwords() {
        assert!(reason("password", "short", "bob").contains("at least 10"));
        assert!(reason("password", "          ", "bob").contains("blank"));
        assert!(reason("password", &"y".repeat(2000), "bob").contains("at most"));
        assert!(reason("new_password", "Marguerite-77", "marguerite-77").contains("username"));
        // Common passwords and repeats are refused with zxcvbn's warning, naming the field.
        let r = reason("HELIOS_ADMIN_PASSWORD", "password123", "admin");
        assert!(
            r.contains("too easy to guess") && r.contains("common"),
            "{r}"
        );
        assert!(reason("password", &"q".repeat(72), "bob").contains("Repeats"));
        // The username counts against the score.
        check_rules("password", "Qwopfrank2024!", "someone", 10).unwrap();
        assert!(reason("password", "Qwopfrank2024!", "qwopfrank").contains("guess"));
        for strong in [
            "tangerine-kayak-47-violet",
            "correct horse battery",
            "admin password 1",
        ] {
            check_rules("password", strong, "admin", 10).unwrap();
        }
    }
}
