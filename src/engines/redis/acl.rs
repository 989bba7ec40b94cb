//! The ACL rules of an environment's user (pure): its keys and channels under its prefix, every
//! command but the administrative and dangerous ones, and nothing that reaches past the prefix
//! (another database, the server's configuration, every key at once).

/// The hash (admin-only: no tenant's prefix starts with `lifeboat:`) mapping each user Lifeboat made
/// to the UID of the object it was made for. A user or key without an entry here, or with another
/// UID, is never changed or deleted.
pub const OWNERS_KEY: &str = "lifeboat:owners";

/// The hash (admin-only, like [`OWNERS_KEY`]) mapping a user to the backup its keys were restored
/// from (`spec.restore`), written once the restore was checked.
pub const RESTORED_KEY: &str = "lifeboat:restored";

/// Commands an environment's user never gets, besides the `@admin` and `@dangerous` categories
/// (which already hold most of them; named again so a server's own category changes cannot give
/// them back): whole-server deletes, configuration, ACLs, debugging, modules, `KEYS` (use `SCAN`),
/// and every way out of database 0 or into server-wide state (functions, the script cache).
pub const DENIED_COMMANDS: &[&str] = &[
    "flushall",
    "flushdb",
    "config",
    "acl",
    "debug",
    "module",
    "keys",
    "select",
    "swapdb",
    "move",
    "copy",
    "migrate",
    "function",
    "script|flush",
    "script|kill",
    "shutdown",
    "monitor",
    // Key and channel names beyond the prefix (SCAN without MATCH still lists them: Redis cannot limit
    // it; docs/redis.md says so).
    "randomkey",
    "pubsub|channels",
    "pubsub|numsub",
    "pubsub|shardchannels",
    "pubsub|shardnumsub",
];

/// The rules of `ACL SETUSER <user> …` for a user limited to `prefix` whose password has the SHA-256
/// `password_sha256` (the server never sees the password in clear text from us, and neither does
/// `ACL LIST`). `reset` first, so a rule someone added by hand does not survive a reconcile.
pub fn user_rules(prefix: &str, password_sha256: &str, uid: &str) -> Vec<String> {
    let pattern = glob_escape(prefix);
    let mut rules = vec![
        "reset".to_string(),
        "on".to_string(),
        format!("#{password_sha256}"),
        format!("~{pattern}*"),
        "resetchannels".to_string(),
        format!("&{pattern}*"),
        // The owner's mark, kept with the user itself (a FLUSHALL or an eviction cannot take it).
        format!("&{}", glob_escape(&owner_channel(uid))),
        "+@all".to_string(),
        "-@admin".to_string(),
        "-@dangerous".to_string(),
    ];
    rules.extend(DENIED_COMMANDS.iter().map(|c| format!("-{c}")));
    rules
}

/// The channel whose permission marks a user as made for the object of UID `uid`: harmless to hold
/// (nobody listens on it), and listed by `ACL GETUSER`.
pub fn owner_channel(uid: &str) -> String {
    format!("{OWNER_CHANNEL_PREFIX}{uid}")
}

const OWNER_CHANNEL_PREFIX: &str = "lifeboat-owner:";

/// The owner's UID from the channel patterns `ACL GETUSER` lists (space-separated), if one is there.
pub fn owner_from_channels(channels: &str) -> Option<String> {
    channels
        .split_whitespace()
        .filter_map(|c| c.strip_prefix('&'))
        .find_map(|c| c.strip_prefix(OWNER_CHANNEL_PREFIX))
        .map(|uid| uid.replace('\\', ""))
}

/// `prefix` with the glob characters of a key pattern escaped, so a prefix is matched literally.
pub fn glob_escape(prefix: &str) -> String {
    let mut out = String::with_capacity(prefix.len());
    for c in prefix.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_user_is_limited_to_its_prefix_without_dangerous_commands() {
        let rules = user_rules("shop_orders_1a2b3c4d:", "ab12", "uid-1");
        assert!(rules.contains(&"&lifeboat-owner:uid-1".to_string()));
        assert_eq!(
            owner_from_channels("&shop_orders_1a2b3c4d:* &lifeboat-owner:uid-1").as_deref(),
            Some("uid-1")
        );
        assert_eq!(owner_from_channels("&shop:*"), None);
        assert_eq!(rules[0], "reset", "earlier rules do not survive");
        assert!(rules.contains(&"#ab12".to_string()));
        assert!(rules.contains(&"~shop_orders_1a2b3c4d:*".to_string()));
        assert!(rules.contains(&"&shop_orders_1a2b3c4d:*".to_string()));
        for c in [
            "-@admin",
            "-@dangerous",
            "-flushall",
            "-keys",
            "-select",
            "-acl",
        ] {
            assert!(rules.contains(&c.to_string()), "{c}");
        }
        // Denials come after the grant: ACL rules apply left to right.
        let all = rules.iter().position(|r| r == "+@all").unwrap();
        let deny = rules.iter().position(|r| r == "-@dangerous").unwrap();
        assert!(all < deny);
        assert!(
            !rules.iter().any(|r| r.starts_with('>')),
            "no clear-text password"
        );
    }

    #[test]
    fn glob_characters_in_a_prefix_match_literally() {
        assert_eq!(glob_escape("a*b?[c]\\:"), "a\\*b\\?\\[c\\]\\\\:");
        assert_eq!(glob_escape("plain_1:"), "plain_1:");
    }
}
