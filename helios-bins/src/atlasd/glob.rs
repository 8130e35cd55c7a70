//! Redis glob patterns for KEYS and SCAN MATCH: `*`, `?`, `[abc]`, `[^a]`, `[a-z]`, `\x`.
//!
//! Matching is over bytes, iterative with one backtrack point for `*` (so no pattern can
//! make it exponential): O(pattern x subject) at worst. An unclosed `[` matches the rest of
//! the pattern literally as a class up to the end, as Redis does.
//!
//! Redis's matcher recurses once per `*` group and gives up (no match) past
//! [`STAR_NESTING_MAX`] levels; so does this one, so a pattern of 50,000 `*?` against a key
//! of 50,000 bytes answers no match, quickly, as in Redis (its "pattern matching very long
//! nested loops" regression test).

/// The depth at which Redis's `stringmatchlen` stops (`nesting > 1000`): a `*` group past
/// the 1000th, reached with bytes left to match and pattern after it, fails the match.
pub const STAR_NESTING_MAX: usize = 1000;

/// Whether `s` matches the glob `pattern`.
pub fn matches(pattern: &[u8], s: &[u8]) -> bool {
    let (mut p, mut i) = (0usize, 0usize);
    let mut star: Option<(usize, usize, usize)> = None;
    // `*` groups entered so far: Redis's recursion depth along this match.
    let mut stars = 0usize;
    loop {
        if p < pattern.len() {
            match pattern[p] {
                b'*' => {
                    while p < pattern.len() && pattern[p] == b'*' {
                        p += 1;
                    }
                    if p == pattern.len() {
                        return true;
                    }
                    stars += 1;
                    if stars > STAR_NESTING_MAX && i < s.len() {
                        // Redis's recursion limit: every continuation fails.
                        return false;
                    }
                    star = Some((p, i, stars));
                    continue;
                }
                _ if i < s.len() => {
                    if let Some(next) = match_one(pattern, p, s[i]) {
                        p = next;
                        i += 1;
                        continue;
                    }
                }
                _ => {}
            }
        } else if i == s.len() {
            return true;
        }
        // Mismatch: let the last `*` swallow one more byte.
        match star {
            Some((sp, si, depth)) if si < s.len() => {
                star = Some((sp, si + 1, depth));
                p = sp;
                i = si + 1;
                stars = depth;
            }
            _ => return false,
        }
    }
}

/// Matches one pattern element at `p` (not `*`) against `c`; returns the next position.
fn match_one(pattern: &[u8], p: usize, c: u8) -> Option<usize> {
    match pattern[p] {
        b'?' => Some(p + 1),
        b'\\' if p + 1 < pattern.len() => (pattern[p + 1] == c).then_some(p + 2),
        b'[' => {
            let mut q = p + 1;
            let negate = q < pattern.len() && pattern[q] == b'^';
            if negate {
                q += 1;
            }
            let mut hit = false;
            while q < pattern.len() && pattern[q] != b']' {
                if pattern[q] == b'\\' && q + 1 < pattern.len() {
                    hit |= pattern[q + 1] == c;
                    q += 2;
                } else if q + 2 < pattern.len() && pattern[q + 1] == b'-' && pattern[q + 2] != b']'
                {
                    let (a, b) = (
                        pattern[q].min(pattern[q + 2]),
                        pattern[q].max(pattern[q + 2]),
                    );
                    hit |= (a..=b).contains(&c);
                    q += 3;
                } else {
                    hit |= pattern[q] == c;
                    q += 1;
                }
            }
            let next = if q < pattern.len() { q + 1 } else { q };
            (hit != negate).then_some(next)
        }
        lit => (lit == c).then_some(p + 1),
    }
}

#[cfg(test)]
mod tests {
    use super::matches;

    #[test]
    fn redis_glob_cases() {
        let m = |p: &str, s: &str| matches(p.as_bytes(), s.as_bytes());
        assert!(m("*", ""));
        assert!(m("*", "abc"));
        assert!(m("h?llo", "hello"));
        assert!(!m("h?llo", "hllo"));
        assert!(m("h*llo", "heeeello"));
        assert!(m("h*llo", "hllo"));
        assert!(m("h[ae]llo", "hallo"));
        assert!(!m("h[ae]llo", "hillo"));
        assert!(m("h[^e]llo", "hallo"));
        assert!(!m("h[^e]llo", "hello"));
        assert!(m("h[a-b]llo", "hbllo"));
        assert!(!m("h[a-b]llo", "hcllo"));
        assert!(m("h[b-a]llo", "hallo"));
        assert!(m("a\\*b", "a*b"));
        assert!(!m("a\\*b", "axb"));
        assert!(m("user:*:name", "user:42:name"));
        assert!(!m("user:*:name", "user:42:age"));
        assert!(m("*a*a*a*a*a*a*b", "aaaaaaaaaaaaaaaaaaaaab"));
        assert!(!m("*a*a*a*a*a*a*b", "aaaaaaaaaaaaaaaaaaaaaa"));
        assert!(m("[a-", "b") || !m("[a-", "b"));
    }

    #[test]
    fn nesting_is_capped_as_in_redis() {
        let key = vec![b'a'; 50_000];
        let pattern = b"*?".repeat(50_000);
        let t = std::time::Instant::now();
        assert!(!matches(&pattern, &key));
        assert!(t.elapsed() < std::time::Duration::from_secs(1));
        // Under the cap the same shape matches.
        assert!(matches(&b"*?".repeat(900), &vec![b'a'; 900]));
        // Trailing stars past the cap still match an exhausted subject.
        let mut p = b"a".to_vec();
        p.extend(b"*".repeat(3000));
        assert!(matches(&p, b"a"));
    }
}
