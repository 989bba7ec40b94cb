//! The names engines give what they make for an environment (pure).

use sha2::{Digest, Sha256};

use crate::domain::digest::hex;

/// `<namespace>_<name>`, lowercased, with every character outside `[a-z0-9_]` turned into `_` (and a
/// leading digit escaped with `_`), then `_` and 8 hex digits of a hash of `<namespace>/<name>`. The
/// hash keeps names apart that read the same once cleaned (`team-a/pr-42` and `team/a-pr-42`), so no
/// tenant can take another's name; names longer than `max_len` bytes keep their start.
pub fn environment_name(namespace: &str, name: &str, max_len: usize) -> String {
    let raw = format!("{namespace}/{name}");
    let mut clean: String = format!("{namespace}_{name}")
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .collect();
    if clean.starts_with(|c: char| c.is_ascii_digit()) {
        clean.insert(0, '_');
    }
    let hash = &hex(&Sha256::digest(raw.as_bytes()))[..8];
    clean.truncate(max_len - hash.len() - 1);
    format!("{clean}_{hash}")
}

/// `s` percent-encoded for a URI's user, password or path: every byte but the unreserved ones.
pub fn uri_component(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
