//! Detectors for PII and secrets, written so that a stream can be redacted exactly like the whole text.
//!
//! Every detector is a scanner that starts at one position and reads forward. It answers [`Scan::Match`] (the
//! pattern ends here), [`Scan::No`], or [`Scan::Partial`]: it reached the end of the text it has, so the answer
//! depends on text not yet seen. A scanner sees at most [`CONTEXT`] bytes to the left of its start and
//! says `Partial` whenever it would look past the end, so any `Match` or `No` it gives stays true however the text
//! continues. [`analyze`] relies on that: everything before the first `Partial` position is final.
//!
//! All patterns are ASCII, so every position a scanner starts or ends at is a UTF-8 character boundary.

use std::fmt;

/// How many bytes before a position the detectors look at (a stream keeps that many of what it emitted).
pub const CONTEXT: usize = 2;

/// What was found. The order is the priority when two matches start at the same place.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    /// API keys and tokens: `sk-…`, `AKIA…`, `Bearer …`, private-key blocks.
    Secret,
    /// Luhn-checked card numbers, 13–19 digits, optionally grouped by spaces or hyphens.
    CreditCard,
    /// Checksum-verified IBANs, optionally grouped by spaces.
    Iban,
    Email,
    Ipv4,
    /// 10–15 digits with a leading `+` or in at least three groups (separated by `-`, `.` or a space, or parenthesized).
    Phone,
}

pub const KINDS: [Kind; 6] = [Kind::Secret, Kind::CreditCard, Kind::Iban, Kind::Email, Kind::Ipv4, Kind::Phone];

impl Kind {
    /// The config key and the mask's label.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Secret => "secret",
            Kind::CreditCard => "credit_card",
            Kind::Iban => "iban",
            Kind::Email => "email",
            Kind::Ipv4 => "ipv4",
            Kind::Phone => "phone",
        }
    }

    /// In words, for error messages.
    pub fn describe(self) -> &'static str {
        match self {
            Kind::Secret => "an API key or secret",
            Kind::CreditCard => "a credit card number",
            Kind::Iban => "an IBAN",
            Kind::Email => "an email address",
            Kind::Ipv4 => "an IP address",
            Kind::Phone => "a phone number",
        }
    }

    fn scan(self, t: &[u8], i: usize, eof: bool) -> Scan {
        let s = Scanner { t, eof };
        match self {
            Kind::Secret => s.secret(i),
            Kind::CreditCard => s.card(i),
            Kind::Iban => s.iban(i),
            Kind::Email => s.email(i),
            Kind::Ipv4 => s.ipv4(i),
            Kind::Phone => s.phone(i),
        }
    }

    /// Whether a match may start after `prev2 prev` (the two bytes before it).
    fn left_ok(self, prev2: u8, prev: u8) -> bool {
        // Numbers do not start inside a longer group of numbers (`1234 5678 …` is not a phone at `5678`).
        let inside_number = matches!(prev, b' ' | b'-' | b'.') && prev2.is_ascii_digit();
        match self {
            Kind::Email => !is_local(prev),
            Kind::Secret => !(prev.is_ascii_alphanumeric() || prev == b'_' || prev == b'-'),
            Kind::Ipv4 => !(prev.is_ascii_alphanumeric() || prev == b'.'),
            Kind::Phone => !(prev.is_ascii_alphanumeric() || prev == b'+' || prev == b'_' || inside_number),
            Kind::CreditCard => !(prev.is_ascii_alphanumeric() || prev == b'_' || inside_number),
            Kind::Iban => !(prev.is_ascii_alphanumeric() || prev == b'_'),
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scan {
    Match(usize),
    No,
    Partial,
}

/// A match: `kind` at `start..end` of the analysed text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Found {
    pub kind: Kind,
    pub start: usize,
    pub end: usize,
}

fn is_local(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'%' | b'+' | b'-')
}

fn is_domain(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-')
}

fn is_token(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_')
}

fn is_bearer_token(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~' | b'+' | b'/' | b'=')
}

/// `Err(scan)` ends a scanner early with that answer.
type Step<T> = Result<T, Scan>;

struct Scanner<'a> {
    t: &'a [u8],
    eof: bool,
}

impl Scanner<'_> {
    /// The byte at `j`: `Ok(None)` past the end of the whole text, `Err(Partial)` past the end of what has arrived.
    fn at(&self, j: usize) -> Step<Option<u8>> {
        match self.t.get(j) {
            Some(&b) => Ok(Some(b)),
            None if self.eof => Ok(None),
            None => Err(Scan::Partial),
        }
    }

    /// The end of the run of bytes from `j` that satisfy `f`.
    fn run(&self, mut j: usize, f: impl Fn(u8) -> bool) -> Step<usize> {
        while self.at(j)?.is_some_and(&f) {
            j += 1;
        }
        Ok(j)
    }

    /// Matches `lit` at `j` (ASCII case-insensitively if `fold`); returns the end.
    fn literal(&self, j: usize, lit: &[u8], fold: bool) -> Step<usize> {
        for (k, &want) in lit.iter().enumerate() {
            match self.at(j + k)? {
                Some(b) if b == want || (fold && b.eq_ignore_ascii_case(&want)) => {}
                _ => return Err(Scan::No),
            }
        }
        Ok(j + lit.len())
    }

    /// Whether the byte at `j` (just after a match) ends it: not one of `cont`.
    fn ends(&self, j: usize, cont: impl Fn(u8) -> bool) -> Step<bool> {
        Ok(!self.at(j)?.is_some_and(cont))
    }

    fn finish(r: Step<Scan>) -> Scan {
        r.unwrap_or_else(|s| s)
    }

    fn email(&self, i: usize) -> Scan {
        Self::finish((|| {
            if !self.at(i)?.is_some_and(|b| b.is_ascii_alphanumeric()) {
                return Ok(Scan::No);
            }
            let at = self.run(i, is_local)?;
            self.literal(at, b"@", false)?;
            let run_end = self.run(at + 1, is_domain)?;
            // A sentence's full stop (or a stray hyphen) after the address is not part of it.
            let mut end = run_end;
            while end > at + 1 && matches!(self.t[end - 1], b'.' | b'-') {
                end -= 1;
            }
            let domain = &self.t[at + 1..end];
            let labels: Vec<&[u8]> = domain.split(|&b| b == b'.').collect();
            let tld = labels.last().copied().unwrap_or_default();
            let ok = labels.len() >= 2
                && labels.iter().all(|l| !l.is_empty() && l[0] != b'-')
                && tld.len() >= 2
                && tld.iter().all(u8::is_ascii_alphabetic);
            Ok(if ok { Scan::Match(end) } else { Scan::No })
        })())
    }

    fn secret(&self, i: usize) -> Scan {
        match self.at(i) {
            Err(s) => s,
            Ok(Some(b's')) => self.sk(i),
            Ok(Some(b'A')) => self.akia(i),
            Ok(Some(b'B' | b'b')) => self.bearer(i),
            Ok(Some(b'-')) => self.pem(i),
            Ok(_) => Scan::No,
        }
    }

    fn sk(&self, i: usize) -> Scan {
        Self::finish((|| {
            let j = self.literal(i, b"sk-", false)?;
            let end = self.run(j, is_token)?;
            Ok(if end - j >= 20 { Scan::Match(end) } else { Scan::No })
        })())
    }

    fn akia(&self, i: usize) -> Scan {
        Self::finish((|| {
            let j = self.literal(i, b"AKIA", false)?;
            let end = self.run(j, |b| b.is_ascii_alphanumeric())?;
            let ok = end - j == 16 && self.t[j..end].iter().all(|b| b.is_ascii_uppercase() || b.is_ascii_digit());
            Ok(if ok { Scan::Match(end) } else { Scan::No })
        })())
    }

    fn bearer(&self, i: usize) -> Scan {
        Self::finish((|| {
            let j = self.literal(i, b"bearer", true)?;
            let k = self.run(j, |b| b == b' ')?;
            if k == j {
                return Ok(Scan::No);
            }
            let end = self.run(k, is_bearer_token)?;
            Ok(if end - k >= 16 { Scan::Match(end) } else { Scan::No })
        })())
    }

    /// `-----BEGIN … PRIVATE KEY-----` to the matching `-----END … PRIVATE KEY-----`. An unterminated block at the
    /// end of the text runs to the end (it is a key, cut short).
    fn pem(&self, i: usize) -> Scan {
        Self::finish((|| {
            let j = self.literal(i, b"-----BEGIN ", false)?;
            let label_end = self.run(j, |b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b' ')?;
            if !self.t[j..label_end].ends_with(b"PRIVATE KEY") {
                return Ok(Scan::No);
            }
            let mut k = self.literal(label_end, b"-----", false)?;
            loop {
                match self.at(k)? {
                    None => return Ok(Scan::Match(k)),
                    Some(b'-') => match self.literal(k, b"-----END ", false) {
                        Ok(l) => {
                            let e = self.run(l, |b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b' ')?;
                            if self.t[l..e].ends_with(b"PRIVATE KEY") {
                                return self.literal(e, b"-----", false).map(Scan::Match);
                            }
                            k = e;
                        }
                        Err(Scan::No) => k += 1,
                        Err(s) => return Err(s),
                    },
                    Some(_) => k += 1,
                }
            }
        })())
    }

    /// Digits with single separators from `seps` between them: the end and the digits, or `Partial`.
    fn grouped_digits(&self, i: usize, seps: &[u8]) -> Step<(usize, Vec<u8>)> {
        let mut digits = Vec::new();
        let mut j = i;
        loop {
            match self.at(j)? {
                Some(b) if b.is_ascii_digit() => {
                    digits.push(b - b'0');
                    j += 1;
                }
                Some(b) if seps.contains(&b) && j > i && self.at(j + 1)?.is_some_and(|c| c.is_ascii_digit()) => j += 1,
                _ => return Ok((j, digits)),
            }
        }
    }

    fn card(&self, i: usize) -> Scan {
        Self::finish((|| {
            let (end, digits) = self.grouped_digits(i, b" -")?;
            let ok =
                (13..=19).contains(&digits.len()) && luhn(&digits) && self.ends(end, |b| b.is_ascii_alphanumeric())?;
            Ok(if ok { Scan::Match(end) } else { Scan::No })
        })())
    }

    fn ipv4(&self, i: usize) -> Scan {
        Self::finish((|| {
            let mut j = i;
            for octet in 0..4 {
                if octet > 0 {
                    j = self.literal(j, b".", false)?;
                }
                let e = self.run(j, |b| b.is_ascii_digit())?;
                let n: u32 = std::str::from_utf8(&self.t[j..e]).ok().and_then(|s| s.parse().ok()).unwrap_or(999);
                if e == j || e - j > 3 || n > 255 {
                    return Ok(Scan::No);
                }
                j = e;
            }
            // Not followed by more of an address or version-like text: `1.2.3.4.5`, `1.2.3.4a`.
            let more = match self.at(j)? {
                Some(b'.') => self.at(j + 1)?.is_some_and(|b| b.is_ascii_digit()),
                Some(b) => b.is_ascii_alphanumeric(),
                None => false,
            };
            Ok(if more { Scan::No } else { Scan::Match(j) })
        })())
    }

    fn phone(&self, i: usize) -> Scan {
        Self::finish((|| {
            let mut j = i;
            let plus = self.at(j)? == Some(b'+');
            if plus {
                j += 1;
            }
            let (mut digits, mut groups) = (0usize, 0usize);
            loop {
                match self.at(j)? {
                    Some(b) if b.is_ascii_digit() => {
                        let e = self.run(j, |b| b.is_ascii_digit())?;
                        digits += e - j;
                        j = e;
                    }
                    Some(b'(') => {
                        let e = self.run(j + 1, |b| b.is_ascii_digit())?;
                        if e == j + 1 || e - j - 1 > 4 || self.at(e)? != Some(b')') {
                            break;
                        }
                        digits += e - j - 1;
                        j = e + 1;
                    }
                    _ => break,
                }
                groups += 1;
                // One separator, then another group (after `)`, the separator is optional).
                match self.at(j)? {
                    Some(b' ' | b'-' | b'.') if matches!(self.at(j + 1)?, Some(b'0'..=b'9' | b'(')) => j += 1,
                    Some(b'0'..=b'9') if self.t[j - 1] == b')' => {}
                    _ => break,
                }
            }
            let ok =
                (10..=15).contains(&digits) && (plus || groups >= 3) && self.ends(j, |b| b.is_ascii_alphanumeric())?;
            Ok(if ok { Scan::Match(j) } else { Scan::No })
        })())
    }

    fn iban(&self, i: usize) -> Scan {
        Self::finish((|| {
            let up = |b: Option<u8>| b.is_some_and(|b| b.is_ascii_uppercase());
            let dig = |b: Option<u8>| b.is_some_and(|b| b.is_ascii_digit());
            if !(up(self.at(i)?) && up(self.at(i + 1)?) && dig(self.at(i + 2)?) && dig(self.at(i + 3)?)) {
                return Ok(Scan::No);
            }
            let alnum = |b: u8| b.is_ascii_uppercase() || b.is_ascii_digit();
            // Groups of [A-Z0-9] separated by single spaces; the IBAN is the longest prefix ending at a group
            // boundary whose checksum holds.
            let mut ends = Vec::new();
            let mut j = i;
            loop {
                j = self.run(j, alnum)?;
                if self.at(j)?.is_some_and(|b| b.is_ascii_lowercase() || b == b'_') {
                    break; // glued to a word: this group cannot end an IBAN
                }
                ends.push(j);
                if self.at(j)? == Some(b' ') && self.at(j + 1)?.is_some_and(alnum) {
                    j += 1;
                } else {
                    break;
                }
            }
            for &end in ends.iter().rev() {
                let compact: Vec<u8> = self.t[i..end].iter().copied().filter(|&b| b != b' ').collect();
                if (15..=34).contains(&compact.len()) && iban_checksum(&compact) {
                    return Ok(Scan::Match(end));
                }
            }
            Ok(Scan::No)
        })())
    }
}

fn luhn(digits: &[u8]) -> bool {
    let sum: u32 = digits
        .iter()
        .rev()
        .enumerate()
        .map(|(k, &d)| {
            let d = u32::from(d);
            if k % 2 == 1 { if d * 2 > 9 { d * 2 - 9 } else { d * 2 } } else { d }
        })
        .sum();
    sum.is_multiple_of(10)
}

fn iban_checksum(compact: &[u8]) -> bool {
    let rotated = compact[4..].iter().chain(&compact[..4]);
    let mut rem = 0u32;
    for &b in rotated {
        let v = if b.is_ascii_digit() { u32::from(b - b'0') } else { u32::from(b - b'A') + 10 };
        rem = if v >= 10 { (rem * 100 + v) % 97 } else { (rem * 10 + v) % 97 };
    }
    rem == 1
}

/// Finds the matches in `t[from..]` (`t[..from]` is context: text before, at most [`CONTEXT`] bytes) that are
/// final: all of them when `eof`, else those before the first position where a pattern might still be starting.
/// Returns them, non-overlapping and in order, and that position: `t[from..hold]` can be emitted now; `t[hold..]`
/// must wait for more text.
pub fn analyze(t: &[u8], from: usize, eof: bool, enabled: &[Kind]) -> (Vec<Found>, usize) {
    let mut found: Vec<Found> = Vec::new();
    let mut hold = t.len();
    let byte = |i: usize, back: usize| if i >= back { t[i - back] } else { b' ' };
    'positions: for i in from..t.len() {
        let (p2, p1) = (byte(i, 2), byte(i, 1));
        for &kind in enabled {
            if !kind.left_ok(p2, p1) {
                continue;
            }
            match kind.scan(t, i, eof) {
                Scan::Partial => {
                    hold = i;
                    break 'positions;
                }
                Scan::Match(end) => {
                    // Earliest start wins; at the same start, the first kind in priority order.
                    if found.last().is_none_or(|f| i >= f.end) {
                        found.push(Found { kind, start: i, end });
                    }
                }
                Scan::No => {}
            }
        }
    }
    // A final match that runs past the hold point is held with it, whole.
    if let Some(last) = found.last()
        && last.end > hold
    {
        hold = last.start;
        found.pop();
    }
    (found, hold)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds(text: &str) -> Vec<(Kind, &str)> {
        analyze(text.as_bytes(), 0, true, &KINDS).0.iter().map(|f| (f.kind, &text[f.start..f.end])).collect()
    }

    #[test]
    fn finds_each_kind() {
        let cases = [
            ("mail jane.doe+x@mail.example.co.uk.", Kind::Email, "jane.doe+x@mail.example.co.uk"),
            ("call +1 415 555 0132 now", Kind::Phone, "+1 415 555 0132"),
            ("call (415) 555-0132", Kind::Phone, "(415) 555-0132"),
            ("call 415.555.0132", Kind::Phone, "415.555.0132"),
            ("card 4111 1111 1111 1111, thanks", Kind::CreditCard, "4111 1111 1111 1111"),
            ("card 5500-0000-0000-0004", Kind::CreditCard, "5500-0000-0000-0004"),
            ("iban DE89 3704 0044 0532 0130 00 ok", Kind::Iban, "DE89 3704 0044 0532 0130 00"),
            ("iban GB82WEST12345698765432", Kind::Iban, "GB82WEST12345698765432"),
            ("host 192.168.10.254.", Kind::Ipv4, "192.168.10.254"),
            ("key sk-proj-abcdefghijklmnopqrstuv123", Kind::Secret, "sk-proj-abcdefghijklmnopqrstuv123"),
            ("aws AKIAIOSFODNN7EXAMPLE", Kind::Secret, "AKIAIOSFODNN7EXAMPLE"),
            ("Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.e30.abc", Kind::Secret, "Bearer eyJhbGciOiJIUzI1NiJ9.e30.abc"),
        ];
        for (text, kind, hit) in cases {
            assert_eq!(kinds(text), [(kind, hit)], "{text}");
        }
        let pem = "x -----BEGIN RSA PRIVATE KEY-----\nMIIBOgIBAAJBAK\n-----END RSA PRIVATE KEY----- y";
        assert_eq!(kinds(pem), [(Kind::Secret, &pem[2..pem.len() - 2])]);
    }

    #[test]
    fn leaves_lookalikes_alone() {
        for text in [
            "version 1.2.3.4.5 and 300.1.1.1",
            "card 4111 1111 1111 1112",
            "iban DE89 3704 0044 0532 0130 01",
            "order 12345678901234",
            "date 2026-11-22 at 10:30",
            "task-sk-abcdefghijklmnopqrstuvwxyz",
            "a@b, x@localhost, @user",
            "AKIA is a prefix",
            "bearer of bad news",
        ] {
            assert_eq!(kinds(text), [], "{text}");
        }
    }

    #[test]
    fn holds_what_might_still_be_a_match() {
        let hold = |t: &str| analyze(t.as_bytes(), 0, false, &KINDS).1;
        assert_eq!(hold("Hello wor"), 6, "a word could become an address");
        assert_eq!(hold("Hello world. "), 13);
        assert_eq!(hold("write to jane@exa"), 9);
        assert_eq!(hold("call 415 555"), 5);
        assert_eq!(hold("key: -----BEGIN RSA PRIVATE KEY-----\nMIIB"), 5);
        assert_eq!(hold("ok! "), 4);
    }
}
