//! Phone-number normalisation and STARFACE-style `?`/`*` number patterns.
//!
//! Only external numbers are handled here: callers resolve internal
//! extensions (e.g. `"201"`) before calling [`NumberPlan::normalize`],
//! which rejects them.

use std::fmt;
use std::str::FromStr;

use phonenumber::country::{self, Id};
use phonenumber::metadata::{Descriptor, Format, DATABASE};
use phonenumber::Metadata;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Errors from parsing numbers, countries and patterns. Every message names the offending value.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum NumberError {
    /// The home country is not an ISO 3166 alpha-2 code phonenumber knows.
    #[error("unknown country {0:?}: expected an ISO 3166 alpha-2 code such as \"DE\"")]
    UnknownCountry(String),
    /// A phone number could not be cleaned or normalised.
    #[error("invalid phone number {value:?}: {reason}")]
    Invalid { value: String, reason: String },
    /// A number pattern is malformed.
    #[error("invalid number pattern {pattern:?}: {reason}")]
    BadPattern { pattern: String, reason: String },
}

fn invalid(value: &str, reason: impl Into<String>) -> NumberError {
    NumberError::Invalid {
        value: value.to_owned(),
        reason: reason.into(),
    }
}

/// Strip separators (whitespace and `-/().`); keep a leading `+`, digits, `*` and `#`.
///
/// Anything else (letters, a `+` after the start, ...) is an error, as is a
/// result without any digit, `*` or `#`.
pub fn clean(raw: &str) -> Result<String, NumberError> {
    Ok(cleaned(raw)?.collect())
}

/// What [`clean`] keeps, without building a string: for comparisons in
/// call setup.
pub fn cleaned(raw: &str) -> Result<impl Iterator<Item = char> + Clone + '_, NumberError> {
    let mut kept_any = false;
    let mut kept_digit = false;
    for c in raw.chars() {
        match c {
            '0'..='9' | '*' | '#' => (kept_any, kept_digit) = (true, true),
            // "+49 (0)30 …" is common, so a '+' after separators still counts as leading.
            '+' if !kept_any => kept_any = true,
            '+' => return Err(invalid(raw, "'+' is only allowed at the start")),
            '-' | '/' | '(' | ')' | '.' => {}
            c if c.is_whitespace() => {}
            c => return Err(invalid(raw, format!("unexpected character {c:?}"))),
        }
    }
    if !kept_digit {
        return Err(invalid(raw, "no digits"));
    }
    Ok(raw
        .chars()
        .filter(|c| matches!(c, '0'..='9' | '*' | '#' | '+')))
}

/// A home country's numbering plan. Built once, used for every call.
#[derive(Clone)]
pub struct NumberPlan {
    id: Id,
    meta: &'static Metadata,
}

impl fmt::Debug for NumberPlan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The metadata is large and not informative in logs.
        f.debug_struct("NumberPlan")
            .field("home_country", &self.home_country())
            .field("country_code", &self.meta.country_code())
            .finish()
    }
}

impl NumberPlan {
    /// `home_country` is an ISO 3166 alpha-2 code like "DE" (case-insensitive);
    /// an unknown code is an error naming the value.
    pub fn new(home_country: &str) -> Result<NumberPlan, NumberError> {
        let unknown = || NumberError::UnknownCountry(home_country.to_owned());
        let id: Id = home_country
            .trim()
            .to_ascii_uppercase()
            .parse()
            .map_err(|_| unknown())?;
        // This also forces the lazy metadata load, so the first call does not pay for it.
        let meta = DATABASE.by_id(id.as_ref()).ok_or_else(unknown)?;
        Ok(NumberPlan { id, meta })
    }

    /// The home country's ISO code, e.g. "DE".
    pub fn home_country(&self) -> &str {
        self.id.as_ref()
    }

    /// Normalise an external number given as `+4930123456`, `004930123456`
    /// (or the home country's own international prefix, e.g. `011` in the US)
    /// or national `030 123456`; whitespace and `-/().` are ignored.
    ///
    /// National input must be the complete national form, as returned in
    /// [`ExternalNumber::national`] (a leading trunk prefix is also accepted
    /// where that form omits it, e.g. `1` in the US). Local numbers without
    /// area code and internal extensions such as `201` are rejected: callers
    /// resolve internal numbers before calling this.
    ///
    /// Numbers are checked for a possible length, not for validity, so new
    /// number ranges keep working with older metadata.
    pub fn normalize(&self, raw: &str) -> Result<ExternalNumber, NumberError> {
        let cleaned = clean(raw)?;
        if cleaned.contains(['*', '#']) {
            return Err(invalid(
                raw,
                "contains '*' or '#' (a service code, not a number)",
            ));
        }

        let parsed = match self.strip_international_prefix(&cleaned) {
            // Parsing with a default region would apply the *home* country's
            // trunk-prefix rules to foreign numbers (+39 06… lost its 0), so
            // international numbers are parsed on their own. "+49 (0)30…" still
            // loses its "(0)" via the number's own rules.
            Some(rest) => phonenumber::parse(None, format!("+{rest}")),
            None => phonenumber::parse(Some(self.id), &cleaned),
        }
        .map_err(|e| invalid(raw, e.to_string()))?;

        let code = parsed.code().value();
        let nsn = parsed.national().to_string();
        let (meta, region) = region_for(code, &nsn)
            .ok_or_else(|| invalid(raw, format!("unknown country calling code +{code}")))?;
        if !is_possible_length(meta, nsn.len()) {
            return Err(invalid(
                raw,
                format!(
                    "{} digits after +{code} is not a possible length for {}",
                    nsn.len(),
                    region.unwrap_or_else(|| meta.id())
                ),
            ));
        }

        let e164 = format!("+{code}{nsn}");
        let international = format!("00{code}{nsn}");
        let national = if code == self.meta.country_code() {
            national_digits(meta, &nsn)
        } else {
            // What a phone in the home country dials for a foreign number.
            international.clone()
        };

        // Without an international prefix only the complete national form is
        // accepted, not libphonenumber's guesses (a local number without area
        // code, or a country code without '+').
        if !matches!(
            parsed.code().source(),
            country::Source::Plus | country::Source::Idd
        ) {
            let with_prefix = self
                .meta
                .national_prefix()
                .is_some_and(|p| cleaned.strip_prefix(p) == Some(national.as_str()));
            if cleaned != national && !with_prefix {
                return Err(invalid(
                    raw,
                    format!(
                        "not a complete national number for {} (would be {national:?}); \
                         internal and local numbers must be resolved by the caller",
                        self.home_country()
                    ),
                ));
            }
        }

        Ok(ExternalNumber {
            international,
            e164,
            national,
            country: region.map(str::to_owned),
        })
    }

    /// The rest of `cleaned` after a leading "+", "00" or the home country's
    /// international prefix; `None` for national input.
    fn strip_international_prefix<'s>(&self, cleaned: &'s str) -> Option<&'s str> {
        if let Some(rest) = cleaned.strip_prefix('+') {
            return Some(rest);
        }
        // A PBX sees "00" whatever the home country's own prefix is.
        if let Some(rest) = cleaned.strip_prefix("00") {
            return Some(rest);
        }
        let m = self.meta.international_prefix()?.find(cleaned)?;
        (m.start() == 0 && m.end() > 0).then(|| &cleaned[m.end()..])
    }
}

/// The digits a phone in the number's own country dials: the trunk prefix
/// where the country's formatting rule uses one, then the national number.
fn national_digits(meta: &Metadata, nsn: &str) -> String {
    let national_prefix = meta.national_prefix().unwrap_or("");
    // Regions sharing a calling code often have no formats of their own and
    // use the main country's.
    let formats = if meta.formats().is_empty() {
        DATABASE
            .by_code(&meta.country_code())
            .and_then(|m| m.first().map(|main| main.formats()))
            .unwrap_or_default()
    } else {
        meta.formats()
    };
    let prefix = match find_format(formats, nsn) {
        // e.g. "$NP$FG" (DE: 0), "8 ($FG)" (RU), "($FG)" (US: none).
        Some(format) => format
            .national_prefix()
            .unwrap_or("")
            .replace("$NP", national_prefix)
            .replace("$FG", "")
            .replace("$CC", "")
            .chars()
            .filter(char::is_ascii_digit)
            .collect(),
        // No formatting rule: dial the prefix to be safe outside the local area.
        None => national_prefix.to_owned(),
    };
    prefix + nsn
}

/// The first format whose leading digits and pattern fit `nsn`, as libphonenumber picks it.
fn find_format<'a>(formats: &'a [Format], nsn: &str) -> Option<&'a Format> {
    formats.iter().find(|f| {
        let leading_ok = f
            .leading_digits()
            .last()
            .is_none_or(|re| re.find(nsn).is_some_and(|m| m.start() == 0));
        leading_ok
            && f.pattern()
                .find(nsn)
                .is_some_and(|m| m.start() == 0 && m.end() == nsn.len())
    })
}

/// The metadata for a number and, if it can be told, its ISO region.
///
/// `PhoneNumber::metadata` drops the national number's leading zeros, which
/// breaks shared calling codes such as +39 (IT/VA), so the region is picked
/// here from the full national significant number.
fn region_for(code: u16, nsn: &str) -> Option<(&'static Metadata, Option<&'static str>)> {
    let metas = DATABASE.by_code(&code)?;
    // The database puts the main country for a shared code first.
    let main = *metas.first()?;
    let found = if metas.len() == 1 {
        Some(main)
    } else {
        metas.iter().copied().find(|m| match m.leading_digits() {
            Some(re) => re.find(nsn).is_some_and(|f| f.start() == 0),
            None => number_descriptors(m).any(|d| d.is_match(nsn)),
        })
    };
    let meta = found.unwrap_or(main);
    // Non-geographic codes (+800, +882, ...) have the region "001".
    let region = found
        .map(Metadata::id)
        .filter(|id| id.parse::<Id>().is_ok());
    Some((meta, region))
}

/// Descriptors of diallable number types; short codes and emergency numbers
/// are not external numbers.
fn number_descriptors(meta: &Metadata) -> impl Iterator<Item = &Descriptor> {
    let d = meta.descriptors();
    [
        d.fixed_line(),
        d.mobile(),
        d.toll_free(),
        d.premium_rate(),
        d.shared_cost(),
        d.personal_number(),
        d.voip(),
        d.pager(),
        d.uan(),
        d.voicemail(),
    ]
    .into_iter()
    .flatten()
}

/// libphonenumber's "possible number" length check. The general descriptor's
/// lengths are empty in this crate's metadata, so use the union of the types.
fn is_possible_length(meta: &Metadata, len: usize) -> bool {
    let len = len as u16;
    number_descriptors(meta).any(|d| d.possible_length().contains(&len))
}

/// An external number in every form a PBX may see or dial.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExternalNumber {
    /// `00` + country code + national significant number, e.g. "004930123456".
    pub international: String,
    /// E.164, e.g. "+4930123456".
    pub e164: String,
    /// What a phone in the home country dials, digits only: "030123456" for a
    /// home-country number, the `00` international form for foreign numbers.
    pub national: String,
    /// ISO region of the number, e.g. "DE"; `None` for non-geographic codes.
    pub country: Option<String>,
}

impl ExternalNumber {
    /// The forms to match patterns against: international, E.164, national.
    pub fn forms(&self) -> [&str; 3] {
        [&self.international, &self.e164, &self.national]
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Token {
    Literal(u8),
    /// `?`: exactly one digit.
    One,
    /// `*`: zero or more digits.
    Any,
}

/// A STARFACE-style wildcard pattern: digits, `+`, `?` = exactly one digit,
/// `*` = zero or more digits.
///
/// Wildcards match ASCII digits only, so `+` must be written literally:
/// `*2515906850` matches `00492515906850` but not `+492515906850`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pattern {
    text: String,
    tokens: Vec<Token>,
}

impl Pattern {
    /// Parse a pattern; an empty pattern or any other character is an error.
    pub fn parse(text: &str) -> Result<Pattern, NumberError> {
        let bad = |reason: String| NumberError::BadPattern {
            pattern: text.to_owned(),
            reason,
        };
        if text.is_empty() {
            return Err(bad("empty pattern".to_owned()));
        }
        let mut tokens = Vec::with_capacity(text.len());
        for c in text.chars() {
            let token = match c {
                '0'..='9' | '+' => Token::Literal(c as u8),
                '?' => Token::One,
                // Consecutive stars match the same as one; collapsing keeps matching cheap.
                '*' if tokens.last() == Some(&Token::Any) => continue,
                '*' => Token::Any,
                c => {
                    return Err(bad(format!(
                        "unexpected character {c:?} (allowed: digits, '+', '?', '*')"
                    )))
                }
            };
            tokens.push(token);
        }
        Ok(Pattern {
            text: text.to_owned(),
            tokens,
        })
    }

    /// Whether the whole of `number` matches. O(pattern × number).
    pub fn matches(&self, number: &str) -> bool {
        let number = number.as_bytes();
        // reach[j]: the tokens so far can match exactly number[..j]. On the
        // stack for any real number: this runs in call setup, per rule.
        let mut on_stack = [false; 64];
        let mut on_heap = Vec::new();
        let reach: &mut [bool] = if number.len() < on_stack.len() {
            &mut on_stack[..=number.len()]
        } else {
            on_heap.resize(number.len() + 1, false);
            &mut on_heap
        };
        reach[0] = true;
        for token in &self.tokens {
            match *token {
                Token::Any => {
                    // Extend every reachable prefix across a run of digits.
                    for j in 1..=number.len() {
                        if !reach[j] && reach[j - 1] && number[j - 1].is_ascii_digit() {
                            reach[j] = true;
                        }
                    }
                }
                Token::One | Token::Literal(_) => {
                    // Walk backwards so each cell still holds the previous row.
                    for j in (1..=number.len()).rev() {
                        let b = number[j - 1];
                        let ok = match *token {
                            Token::Literal(l) => b == l,
                            _ => b.is_ascii_digit(),
                        };
                        reach[j] = reach[j - 1] && ok;
                    }
                    reach[0] = false;
                }
            }
            if !reach.contains(&true) {
                return false;
            }
        }
        reach[number.len()]
    }

    /// The original pattern text.
    pub fn as_str(&self) -> &str {
        &self.text
    }
}

impl fmt::Display for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl FromStr for Pattern {
    type Err = NumberError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Pattern::parse(s)
    }
}

impl Serialize for Pattern {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.text)
    }
}

impl<'de> Deserialize<'de> for Pattern {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Pattern::parse(&text).map_err(serde::de::Error::custom)
    }
}

/// True if any pattern in `patterns` matches any of `forms`.
pub fn any_matches<'a>(
    patterns: &[Pattern],
    forms: impl IntoIterator<Item = &'a str> + Clone,
) -> bool {
    patterns
        .iter()
        .any(|p| forms.clone().into_iter().any(|f| p.matches(f)))
}

#[cfg(test)]
mod tests;
