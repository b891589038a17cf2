//! kv keys built from names, and the reservation records that travel from `on-request` to `on-complete`: one codec,
//! so that no name can split a key or a record in two.
//!
//! Names come from operators and from issued keys (a key id, a team such as `ML Ops`, a model). In a kv key each
//! name is one part: [`key`] joins parts with `/` and escapes, inside a part, only `%` (as `%25`), `/` (`%2F`) and
//! control characters (`%0A`, …). Everything else stays as written, spaces included, so keys stay readable in the
//! admin API (`spend/team/ML Ops/2026-12`) and names without those characters keep the keys they always had.
//!
//! A [`Reservation`] (an amount and the counters it was added to) is written as a JSON array, `[amount, "key", …]`;
//! records of the earlier space-separated form are still read, for requests in flight across a plugin swap.

use std::fmt::Write as _;

/// One name as one part of a kv key (see the module doc).
pub fn part(name: &str) -> std::borrow::Cow<'_, str> {
    if !name.chars().any(needs_escape) {
        return name.into();
    }
    let mut out = String::with_capacity(name.len() + 8);
    for c in name.chars() {
        if needs_escape(c) {
            let mut buf = [0u8; 4];
            for b in c.encode_utf8(&mut buf).bytes() {
                let _ = write!(out, "%{b:02X}");
            }
        } else {
            out.push(c);
        }
    }
    out.into()
}

fn needs_escape(c: char) -> bool {
    c == '%' || c == '/' || c.is_control()
}

/// A kv key from its parts: each escaped with [`part`], joined by `/`.
pub fn key(parts: &[&str]) -> String {
    let mut out = String::with_capacity(parts.iter().map(|p| p.len() + 1).sum());
    for (i, p) in parts.iter().enumerate() {
        if i > 0 {
            out.push('/');
        }
        out.push_str(&part(p));
    }
    out
}

/// What a request reserved in `on-request` (an estimate, in the plugin's unit) and the counters it added it to, so
/// that `on-complete` — possibly on another instance — can settle exactly those.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reservation {
    pub amount: i64,
    pub keys: Vec<String>,
}

impl Reservation {
    /// `[amount, "key", …]`.
    pub fn encode(&self) -> String {
        Self::encode_parts(self.amount, &self.keys)
    }

    /// [`Reservation::encode`] of `amount` and `keys`, without building a `Reservation` (no copies of the keys).
    pub fn encode_parts<K: AsRef<str>>(amount: i64, keys: &[K]) -> String {
        // Written directly rather than through a `serde_json::Value` tree: it is made on every request.
        let mut out = Vec::with_capacity(24 + keys.iter().map(|k| k.as_ref().len() + 3).sum::<usize>());
        out.push(b'[');
        out.extend_from_slice(amount.to_string().as_bytes());
        for k in keys {
            out.push(b',');
            // Writing a string into a Vec cannot fail.
            let _ = serde_json::to_writer(&mut out, k.as_ref());
        }
        out.push(b']');
        // serde_json writes UTF-8.
        String::from_utf8(out).unwrap_or_default()
    }

    /// Reads [`Reservation::encode`]'s form, or the earlier one (amount and keys separated by spaces or newlines).
    /// None when it is neither.
    pub fn decode(record: &str) -> Option<Reservation> {
        if record.starts_with('[') {
            let v: Vec<serde_json::Value> = serde_json::from_str(record).ok()?;
            let (amount, keys) = v.split_first()?;
            let keys = keys.iter().map(|k| k.as_str().map(str::to_string)).collect::<Option<Vec<_>>>()?;
            return Some(Reservation { amount: amount.as_i64()?, keys });
        }
        let mut parts = record.split([' ', '\n']).filter(|p| !p.is_empty());
        let amount = parts.next()?.parse().ok()?;
        Some(Reservation { amount, keys: parts.map(str::to_string).collect() })
    }
}

/// Whether `name` can be a key id or a team name: 1 to 128 bytes, no control characters. Plugins that read
/// principals from operators (config, issued keys) check it where the name comes in, so a bad one is refused with
/// its own message rather than stored under a key nobody expects.
pub fn check_name(what: &str, name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > 128 {
        return Err(format!("{what} must be 1 to 128 bytes long (it is {})", name.len()));
    }
    if name.chars().any(char::is_control) {
        return Err(format!("{what} `{}` has a control character", name.escape_debug()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_names_keep_their_keys() {
        assert_eq!(key(&["spend", "team", "ml", "2026-12"]), "spend/team/ml/2026-12");
        assert_eq!(key(&["spend", "team", "ML Ops", "2026-12"]), "spend/team/ML Ops/2026-12");
    }

    #[test]
    fn separators_and_escapes_cannot_forge_a_part() {
        assert_eq!(key(&["spend", "team", "a/b", "2026-12"]), "spend/team/a%2Fb/2026-12");
        assert_eq!(key(&["rl", "a%2Fb"]), "rl/a%252Fb");
        assert_eq!(key(&["x", "line\nbreak\u{7f}"]), "x/line%0Abreak%7F");
        // Two different names never give the same key.
        assert_ne!(key(&["spend", "team", "a/b"]), key(&["spend", "team", "a", "b"]));
    }

    #[test]
    fn reservations_round_trip_whatever_the_keys_hold() {
        let r = Reservation { amount: -42, keys: vec!["spend/team/ML Ops/2026-12".into(), "k \"q\" \n".into()] };
        assert_eq!(r.encode(), r#"[-42,"spend/team/ML Ops/2026-12","k \"q\" \n"]"#, "the JSON array form");
        assert_eq!(Reservation::decode(&r.encode()), Some(r));
        let empty = Reservation { amount: 7, keys: vec![] };
        assert_eq!(Reservation::decode(&empty.encode()), Some(empty));
    }

    #[test]
    fn the_earlier_form_is_still_read() {
        let r = Reservation::decode("150 spend/key/k/2026-12-05 spend/team/ml/2026-12").unwrap();
        assert_eq!((r.amount, r.keys.len()), (150, 2));
        assert_eq!(Reservation::decode("150\nrl/tokens/key/k/1").unwrap().keys, ["rl/tokens/key/k/1"]);
        assert_eq!(Reservation::decode("not a number"), None);
        assert_eq!(Reservation::decode("[\"x\"]"), None);
        assert_eq!(Reservation::decode("[]"), None);
    }

    #[test]
    fn names() {
        assert!(check_name("team", "ML Ops").is_ok());
        assert!(check_name("team", "").is_err());
        assert!(check_name("team", &"x".repeat(129)).is_err());
        assert!(check_name("key id", "a\nb").unwrap_err().contains("a\\nb"));
    }
}
