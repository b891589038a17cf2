//! Applying the policy to text: whole texts, and streams cut into pieces anywhere.

use std::collections::HashMap;

use sha2::{Digest, Sha256};

use crate::detect::{CONTEXT, Found, KINDS, Kind, analyze};

/// What to do with one kind of finding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Replace with `[KIND]`.
    Mask,
    /// Replace with `[KIND:<8 hex>]`, the same for the same value within one request (and different across them).
    Hash,
    /// Refuse the request, or stop the answer.
    Block,
    /// Leave it.
    Off,
}

/// The policy for one request.
#[derive(Debug, Clone)]
pub struct Policy {
    modes: HashMap<Kind, Mode>,
    enabled: Vec<Kind>,
    /// Makes hashes stable within a request and unlinkable across requests.
    salt: String,
    /// Values that are never redacted (see [`Allow`]).
    allow: Vec<Allow>,
}

/// A value that is not personal data: an exact value (`noreply@anthropic.com`), or a pattern with `*` at its start
/// (`*@example.com`, any address of that domain) or its end (`10.*`). Compared without regard to ASCII case.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Allow {
    Exact(String),
    Suffix(String),
    Prefix(String),
}

impl Allow {
    pub fn parse(p: &str) -> Result<Allow, String> {
        let p = p.trim().to_ascii_lowercase();
        let (head, tail) = (p.strip_prefix('*'), p.strip_suffix('*'));
        let a = match (head, tail) {
            (Some(s), None) => Allow::Suffix(s.to_string()),
            (None, Some(s)) => Allow::Prefix(s.to_string()),
            (None, None) => Allow::Exact(p.clone()),
            (Some(_), Some(_)) => return Err(format!("`{p}`: `*` goes at the start or at the end, not both")),
        };
        match &a {
            Allow::Exact(s) | Allow::Suffix(s) | Allow::Prefix(s) if s.is_empty() || s.contains('*') => {
                Err(format!("`{p}`: a value, or one `*` at its start or end"))
            }
            _ => Ok(a),
        }
    }

    fn matches(&self, v: &str) -> bool {
        let v = v.to_ascii_lowercase();
        match self {
            Allow::Exact(s) => v == *s,
            Allow::Suffix(s) => v.ends_with(s.as_str()),
            Allow::Prefix(s) => v.starts_with(s.as_str()),
        }
    }
}

/// A finding in a mode that blocks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Blocked(pub Kind);

impl Policy {
    pub fn new(modes: HashMap<Kind, Mode>, salt: &str, allow: Vec<Allow>) -> Policy {
        let enabled =
            KINDS.iter().copied().filter(|k| modes.get(k).copied().unwrap_or(Mode::Mask) != Mode::Off).collect();
        Policy { modes, enabled, salt: salt.to_string(), allow }
    }

    fn mode(&self, k: Kind) -> Mode {
        self.modes.get(&k).copied().unwrap_or(Mode::Mask)
    }

    /// `t[from..end]` with the findings replaced.
    fn render(&self, t: &str, from: usize, end: usize, found: &[Found], out: &mut String) -> Result<(), Blocked> {
        let mut at = from;
        for f in found {
            out.push_str(&t[at..f.start]);
            let label = f.kind.name().to_ascii_uppercase();
            let value = &t[f.start..f.end];
            let mode = if self.allow.iter().any(|a| a.matches(value)) { Mode::Off } else { self.mode(f.kind) };
            match mode {
                Mode::Block => return Err(Blocked(f.kind)),
                Mode::Off => out.push_str(&t[f.start..f.end]),
                Mode::Mask => {
                    out.push('[');
                    out.push_str(&label);
                    out.push(']');
                }
                Mode::Hash => {
                    let d = Sha256::digest(format!("{}\0{}\0{}", self.salt, f.kind, &t[f.start..f.end]).as_bytes());
                    out.push_str(&format!("[{label}:{}]", weir_sdk::util::hex(&d[..4])));
                }
            }
            at = f.end;
        }
        out.push_str(&t[at..end]);
        Ok(())
    }

    /// A whole text, redacted. `Ok(None)`: nothing to change.
    pub fn text(&self, t: &str) -> Result<Option<String>, Blocked> {
        let (found, _) = analyze(t.as_bytes(), 0, true, &self.enabled);
        if found.is_empty() {
            return Ok(None);
        }
        let mut out = String::with_capacity(t.len());
        self.render(t, 0, t.len(), &found, &mut out)?;
        Ok(Some(out))
    }
}

/// Redacts a text that arrives in pieces. What it returns is exactly what [`Policy::text`] makes of the whole, cut
/// wherever it is safe: text is held back only from the first position where a pattern might be starting, and no
/// longer than until the pattern is decided.
#[derive(Debug, Default)]
pub struct Stream {
    /// Up to [`CONTEXT`] bytes already emitted, then the text held back.
    buf: String,
    /// Where the held text starts in `buf`.
    from: usize,
}

impl Stream {
    /// Adds a piece; returns what can be sent now.
    pub fn push(&mut self, policy: &Policy, piece: &str) -> Result<String, Blocked> {
        self.buf.push_str(piece);
        self.take(policy, false)
    }

    /// The end of the text: returns everything still held, redacted.
    pub fn finish(&mut self, policy: &Policy) -> Result<String, Blocked> {
        self.take(policy, true)
    }

    /// Whether text is held back.
    pub fn holding(&self) -> bool {
        self.buf.len() > self.from
    }

    fn take(&mut self, policy: &Policy, eof: bool) -> Result<String, Blocked> {
        let (found, hold) = analyze(self.buf.as_bytes(), self.from, eof, &policy.enabled);
        let mut out = String::new();
        policy.render(&self.buf, self.from, hold, &found, &mut out)?;
        // Keep the last bytes sent as the detectors' left context (rounded down to a character boundary).
        let mut keep = hold.saturating_sub(CONTEXT);
        while !self.buf.is_char_boundary(keep) {
            keep -= 1;
        }
        self.buf.drain(..keep);
        self.from = hold - keep;
        Ok(out)
    }
}
