//! Pure helpers: identifier and literal quoting, names Lifeboat gives databases and roles, and the
//! ownership marker it leaves on them.

/// PostgreSQL truncates identifiers longer than this many bytes.
pub const MAX_IDENTIFIER: usize = 63;

/// Quotes an identifier: `my"db` → `"my""db"`.
pub fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Quotes a string literal: `it's` → `'it''s'` (standard_conforming_strings is on since PostgreSQL 9.1).
pub fn literal(value: &str) -> String {
    format!("'{}'", value.replace('\'', "''"))
}

/// The default database (and role) name for an environment: `<namespace>_<name>`, lowercased, with every
/// character outside `[a-z0-9_]` turned into `_`, then `_` and 8 hex digits of a hash of
/// `<namespace>/<name>`. The hash keeps names apart that read the same once cleaned (`team-a/pr-42`
/// and `team/a-pr-42`), so no tenant can take another's name; names longer than 63 bytes keep their
/// start.
pub fn default_name(namespace: &str, name: &str) -> String {
    crate::engines::naming::environment_name(namespace, name, MAX_IDENTIFIER)
}

/// The comment Lifeboat puts on a database and role it created, naming the owning object's UID. A
/// database or role without it (or with another UID) is never altered or dropped.
pub fn marker(uid: &str) -> String {
    format!("managed-by=lifeboat uid={uid}")
}

/// The marker after the seed with the given checksum has been applied (written in the seed's own
/// transaction, so "seeded" is recorded exactly when the seed committed).
pub fn seeded_marker(uid: &str, seed_sha256: &str) -> String {
    format!("{} seed={seed_sha256}", marker(uid))
}

/// Whether a database/role comment says it belongs to the object with `uid`.
pub fn is_ours(comment: Option<&str>, uid: &str) -> bool {
    comment.is_some_and(|c| c == marker(uid) || c.starts_with(&format!("{} ", marker(uid))))
}

/// The seed checksum recorded in a comment, if any.
pub fn recorded_seed(comment: Option<&str>) -> Option<&str> {
    comment?
        .split(' ')
        .find_map(|part| part.strip_prefix("seed="))
}

/// A generated password: 32 alphanumeric characters (~190 bits).
pub fn random_password() -> String {
    use rand::{Rng, distr::Alphanumeric};
    rand::rng()
        .sample_iter(&Alphanumeric)
        .take(32)
        .map(char::from)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting() {
        assert_eq!(ident("my\"db"), "\"my\"\"db\"");
        assert_eq!(literal("it's"), "'it''s'");
    }

    #[test]
    fn default_names_are_valid_identifiers() {
        let name = default_name("team-a", "pr-123");
        assert!(name.starts_with("team_a_pr_123_"), "{name}");
        assert_eq!(name.len(), "team_a_pr_123_".len() + 8);
        assert!(default_name("9ns", "X.Y").starts_with("_9ns_x_y_"));
        let long = default_name(&"n".repeat(40), &"e".repeat(40));
        assert_eq!(long.len(), MAX_IDENTIFIER);
        let other = default_name(&"n".repeat(40), &format!("{}f", "e".repeat(39)));
        assert_ne!(long, other, "truncated names keep a distinguishing hash");
        assert_ne!(
            default_name("team-a", "pr-42"),
            default_name("team", "a-pr-42"),
            "names that read the same once cleaned stay apart"
        );
    }

    #[test]
    fn markers() {
        let uid = "1234";
        assert!(is_ours(Some(&marker(uid)), uid));
        assert!(is_ours(Some(&seeded_marker(uid, "abc")), uid));
        assert!(!is_ours(Some(&marker("12345")), uid));
        assert!(!is_ours(Some("managed-by=lifeboat uid=12345 seed=x"), uid));
        assert!(!is_ours(None, uid));
        assert_eq!(recorded_seed(Some(&seeded_marker(uid, "abc"))), Some("abc"));
        assert_eq!(recorded_seed(Some(&marker(uid))), None);
    }
}
