//! The parts of in-dialog requests the B2BUA reads itself: a REFER's
//! `Refer-To` (with an attended transfer's `Replaces`, RFC 3891) and a SIP
//! INFO's DTMF key. Both arrive from either party of a call, so every
//! function here takes arbitrary text and never panics (fuzzed in `fuzz/`).

use rsipstack::sip::Uri;

/// Longest `Refer-To` value looked at.
const MAX_REFER_TO: usize = 2048;

/// The dialog an attended transfer replaces, as its `Replaces` names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Replaces {
    pub call_id: String,
    pub to_tag: String,
    pub from_tag: String,
}

/// Where a REFER sends the call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReferTarget {
    /// A blind transfer to this number (the user part of the URI).
    Blind(String),
    /// An attended transfer: the dialog that `Replaces` names.
    Attended(Replaces),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ReferError {
    #[error("Refer-To is too long")]
    TooLong,
    #[error("Refer-To names no number")]
    NoNumber,
    #[error("Replaces lacks the call id, to-tag or from-tag")]
    IncompleteReplaces,
}

/// Reads a `Refer-To` value: `<sip:201@host>` or
/// `<sip:201@host?Replaces=CALLID%3Bto-tag%3DA%3Bfrom-tag%3DB>`.
pub fn parse_refer_to(value: &str) -> Result<ReferTarget, ReferError> {
    if value.len() > MAX_REFER_TO {
        return Err(ReferError::TooLong);
    }
    let inner = angle_content(value);
    let (uri, headers) = match inner.split_once('?') {
        Some((uri, headers)) => (uri, Some(headers)),
        None => (inner, None),
    };
    if let Some(replaces) = headers.and_then(|headers| uri_header(headers, "replaces")) {
        return parse_replaces(&percent_decode(replaces)).map(ReferTarget::Attended);
    }
    // Only the user part matters (the target is on this PBX), so a URI
    // with an odd host part still transfers.
    let user = match Uri::try_from(uri) {
        Ok(uri) => uri.auth.map(|auth| auth.user),
        Err(_) => uri
            .split_once(':')
            .and_then(|(_, rest)| rest.split_once('@'))
            .map(|(user, _)| user.to_string()),
    };
    user.map(|user| percent_decode(&user))
        .filter(|user| {
            !user.is_empty()
                && user.chars().all(|c| {
                    c.is_ascii_alphanumeric() || matches!(c, '+' | '*' | '#' | '.' | '_' | '-')
                })
        })
        .map(ReferTarget::Blind)
        .ok_or(ReferError::NoNumber)
}

/// What is between `<` and `>`, or the whole trimmed value.
fn angle_content(value: &str) -> &str {
    let value = value.trim();
    match value.find('<') {
        Some(start) => {
            let rest = &value[start + 1..];
            rest.split('>').next().unwrap_or(rest).trim()
        }
        None => value,
    }
}

/// The (still escaped) value of URI header `name` in `a=1&b=2`.
fn uri_header<'a>(headers: &'a str, name: &str) -> Option<&'a str> {
    headers.split('&').find_map(|pair| {
        let (key, value) = pair.split_once('=')?;
        key.trim().eq_ignore_ascii_case(name).then_some(value)
    })
}

/// `CALLID;to-tag=A;from-tag=B` (RFC 3891 §6.1, parameters in any order).
pub fn parse_replaces(value: &str) -> Result<Replaces, ReferError> {
    let mut parts = value.split(';');
    let call_id = parts.next().unwrap_or_default().trim();
    let (mut to_tag, mut from_tag) = (None, None);
    for part in parts {
        let Some((key, tag)) = part.split_once('=') else {
            continue;
        };
        match key.trim().to_ascii_lowercase().as_str() {
            "to-tag" => to_tag = Some(tag.trim()),
            "from-tag" => from_tag = Some(tag.trim()),
            _ => {}
        }
    }
    match (call_id, to_tag, from_tag) {
        (call_id, Some(to_tag), Some(from_tag))
            if !call_id.is_empty() && !to_tag.is_empty() && !from_tag.is_empty() =>
        {
            Ok(Replaces {
                call_id: call_id.to_string(),
                to_tag: to_tag.to_string(),
                from_tag: from_tag.to_string(),
            })
        }
        _ => Err(ReferError::IncompleteReplaces),
    }
}

/// `%XX` escapes decoded byte-wise; anything that is not an escape, and
/// bytes that do not form UTF-8, pass through (lossily).
pub fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let high = bytes.get(i + 1).and_then(|b| (*b as char).to_digit(16));
            let low = bytes.get(i + 2).and_then(|b| (*b as char).to_digit(16));
            if let (Some(high), Some(low)) = (high, low) {
                out.push((high * 16 + low) as u8);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The key of a SIP INFO DTMF (`application/dtmf-relay`: `Signal=5`).
pub fn info_digit(body: &[u8]) -> Option<char> {
    let text = std::str::from_utf8(body).ok()?;
    text.lines().find_map(|line| {
        let (name, value) = line.split_once('=')?;
        if !name.trim().eq_ignore_ascii_case("signal") {
            return None;
        }
        let digit = value.trim().chars().next()?.to_ascii_uppercase();
        matches!(digit, '0'..='9' | '*' | '#' | 'A'..='D').then_some(digit)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blind_targets() {
        let blind = |s: &str| {
            parse_refer_to(s).map(|t| match t {
                ReferTarget::Blind(n) => n,
                ReferTarget::Attended(_) => panic!("attended"),
            })
        };
        assert_eq!(blind("<sip:201@127.0.0.1>").unwrap(), "201");
        assert_eq!(blind("sip:boss@pbx.example;user=phone").unwrap(), "boss");
        assert_eq!(blind("<sip:101@:5060>").unwrap(), "101");
        assert_eq!(blind("<sip:%2B4930123@h>").unwrap(), "+4930123");
        assert_eq!(blind("<sip:host.example>"), Err(ReferError::NoNumber));
        assert_eq!(blind("<sip:a>b@h>"), Err(ReferError::NoNumber));
        assert_eq!(blind(&"x".repeat(5000)), Err(ReferError::TooLong));
    }

    #[test]
    fn replaces_names_call_id_and_both_tags() {
        assert_eq!(
            parse_refer_to("<sip:201@h?Replaces=abc%40host%3Bto-tag%3D1%3Bfrom-tag%3D2>"),
            Ok(ReferTarget::Attended(Replaces {
                call_id: "abc@host".into(),
                to_tag: "1".into(),
                from_tag: "2".into(),
            }))
        );
        assert_eq!(
            parse_refer_to("<sip:201@h?Subject=x&replaces=c%3Bfrom-tag%3DB%3Bto-tag%3DA>"),
            Ok(ReferTarget::Attended(Replaces {
                call_id: "c".into(),
                to_tag: "A".into(),
                from_tag: "B".into(),
            }))
        );
        assert_eq!(
            parse_refer_to("<sip:201@h?Replaces=abc>"),
            Err(ReferError::IncompleteReplaces)
        );
    }

    #[test]
    fn percent_decoding_never_panics_on_multibyte_text() {
        // The old decoder sliced the text at byte offsets after `%`.
        assert_eq!(percent_decode("%é"), "%é");
        assert_eq!(percent_decode("a%€b"), "a%€b");
        assert_eq!(percent_decode("%4"), "%4");
        assert_eq!(percent_decode("%41%42"), "AB");
        assert_eq!(percent_decode("%ff"), "\u{fffd}");
        let _ = parse_refer_to("<sip:201@h?Replaces=%é%3Bto-tag%3D€>");
    }

    #[test]
    fn info_dtmf_bodies() {
        assert_eq!(info_digit(b"Signal=5\r\nDuration=160\r\n"), Some('5'));
        assert_eq!(info_digit(b"signal= #\nDuration=100"), Some('#'));
        assert_eq!(info_digit(b"Duration=100"), None);
        assert_eq!(info_digit(b"Signal=x"), None);
    }
}
