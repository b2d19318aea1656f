//! What we write about a caller into the messages we send: display names
//! and numbers come from the directory, from modules or from a carrier's
//! `From`, so they are reduced to characters that cannot break a header
//! (no CR/LF, no quotes or backslashes in a quoted string, no URI
//! delimiters in a user part).

/// Longest display name we send.
const MAX_DISPLAY: usize = 64;
/// Longest number (URI user part) we send or take from a carrier.
const MAX_NUMBER: usize = 32;

/// A display name for a quoted string: printable characters other than
/// `"` and `\`, whitespace runs as one space, at most 64 characters.
pub fn safe_display(text: &str) -> String {
    let mut out = String::with_capacity(text.len().min(MAX_DISPLAY * 4));
    let mut last_space = true;
    for c in text.chars() {
        if out.chars().count() >= MAX_DISPLAY {
            break;
        }
        if c.is_whitespace() || c.is_control() {
            if !last_space {
                out.push(' ');
                last_space = true;
            }
            continue;
        }
        if c == '"' || c == '\\' {
            out.push('\'');
        } else {
            out.push(c);
        }
        last_space = false;
    }
    out.trim_end().to_string()
}

/// A number for a URI user part: ASCII letters, digits and `+*._-` only,
/// at most 32 characters; `anonymous` when nothing usable is left.
pub fn safe_number(text: &str) -> String {
    let out: String = text
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '*' | '.' | '_' | '-'))
        .take(MAX_NUMBER)
        .collect();
    if out.is_empty() {
        "anonymous".into()
    } else {
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_breaking_characters_never_pass() {
        assert_eq!(safe_display("Anna \"A\" \\ Alpha"), "Anna 'A' ' Alpha");
        assert_eq!(
            safe_display("Evil\r\nP-Asserted-Identity: <sip:boss@x>"),
            "Evil P-Asserted-Identity: <sip:boss@x>"
        );
        assert_eq!(
            safe_display("Müller-Lüdenscheidt GmbH"),
            "Müller-Lüdenscheidt GmbH"
        );
        assert_eq!(safe_display(&"x".repeat(500)).len(), 64);
        assert_eq!(safe_number("+49 30 1234"), "+49301234");
        assert_eq!(safe_number("201>;tag=x"), "201tagx");
        assert_eq!(safe_number("\r\n"), "anonymous");
        assert_eq!(safe_number(&"9".repeat(100)).len(), 32);
    }
}
