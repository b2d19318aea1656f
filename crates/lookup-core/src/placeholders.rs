//! RL5: lookup URL and SQL templates with number placeholders.
//!
//! # Placeholders
//!
//! | placeholder       | value for `+49 30 1234567` (home DE) | source |
//! |-------------------|--------------------------------------|--------|
//! | `#CALLERID_INT#`  | `0049301234567`                      | seed: international, non-canonical (`00…`) |
//! | `#CALLERID_INT+#` | `+49301234567`                       | seed: international, canonical (`+…`) |
//! | `{tel}`           | the provider's [`TelFormat`], by default `0049301234567` | seed: "the number in the chosen number format" |
//! | `{tel_national}`  | `0301234567` (foreign numbers: the `00…` form) | [`ExternalNumber::national`] |
//! | `{tel_digits}`    | `49301234567`                        | ours: international without prefix, as many web APIs want it |
//!
//! `{tel}` defaults to the `00…` form because the seed notes that the PBX
//! nowadays signals only international numbers; a provider that wants
//! another form picks a [`TelFormat`].
//!
//! The original module wrapped values in single quotes itself, which broke
//! them inside other strings (`like '%#CALLERID_INT#'`). Here:
//! - **URLs** get the bare value, percent-encoded (`+` → `%2B`), no quotes.
//! - **SQL** never gets the value as text: every placeholder becomes a bind
//!   marker (`?`, `$1`, `@P1`) and the values are returned in marker order.
//!   A placeholder written inside quotes as the whole literal (`'{tel}'`, the
//!   seed's own example) becomes a bare marker, quotes and all; one inside a
//!   longer literal (`'%{tel}'`) is refused, as its value could not be bound.
//!
//! # Syntax
//!
//! A placeholder is `#NAME#` or `{name}` where the name consists of ASCII
//! letters, digits, `_` and (for `#…#`) `+`. Anything of that shape that is
//! not in the table is an error naming it, so a typo cannot silently reach a
//! provider. Any other `#`, `{` or `}` is literal text (JSON braces, a lone
//! `#`). SQL comments (`-- …`, `/* … */`) are copied without expanding.

use std::fmt;

use callhost_numbers::ExternalNumber;

/// Errors in a URL or SQL template; every message names the placeholder or
/// marker and its byte offset in the template.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    /// A placeholder-shaped token that is not a known placeholder.
    #[error(
        "unknown placeholder {placeholder:?} at byte {offset}; known: #CALLERID_INT#, \
         #CALLERID_INT+#, {{tel}}, {{tel_national}}, {{tel_digits}}"
    )]
    UnknownPlaceholder { placeholder: String, offset: usize },
    /// A placeholder inside a longer SQL string literal or a quoted
    /// identifier, where a bound value cannot go.
    #[error(
        "placeholder {placeholder:?} at byte {offset} is inside a quoted SQL literal; \
         values are bound, not pasted: write it outside quotes (e.g. concatenate: '%' || {placeholder})"
    )]
    PlaceholderInQuotes { placeholder: String, offset: usize },
    /// The template already contains a bind marker of the chosen style,
    /// which would shift the numbering of the bound values.
    #[error("SQL template contains the bind marker {marker:?} at byte {offset}; use placeholders such as {{tel}} instead")]
    BindMarkerInTemplate { marker: String, offset: usize },
    /// A quote, identifier quote or block comment is not closed.
    #[error("unterminated {what} starting at byte {offset} in SQL template")]
    Unterminated { what: &'static str, offset: usize },
}

/// The number form `{tel}` stands for; chosen per provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TelFormat {
    /// `0049301234567`, what the PBX signals.
    #[default]
    International,
    /// `+49301234567`.
    E164,
    /// `0301234567` at home, the `00…` form for foreign numbers.
    National,
    /// `49301234567`, international without prefix.
    Digits,
}

/// A known placeholder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placeholder {
    /// `#CALLERID_INT#`: `00…`.
    CallerIdInt,
    /// `#CALLERID_INT+#`: `+…`.
    CallerIdIntPlus,
    /// `{tel}`: the provider's [`TelFormat`].
    Tel,
    /// `{tel_national}`.
    TelNational,
    /// `{tel_digits}`: `49…`.
    TelDigits,
}

impl Placeholder {
    /// The placeholder's text in a template.
    pub fn as_str(self) -> &'static str {
        match self {
            Placeholder::CallerIdInt => "#CALLERID_INT#",
            Placeholder::CallerIdIntPlus => "#CALLERID_INT+#",
            Placeholder::Tel => "{tel}",
            Placeholder::TelNational => "{tel_national}",
            Placeholder::TelDigits => "{tel_digits}",
        }
    }

    fn from_token(token: &str) -> Option<Placeholder> {
        [
            Placeholder::CallerIdInt,
            Placeholder::CallerIdIntPlus,
            Placeholder::Tel,
            Placeholder::TelNational,
            Placeholder::TelDigits,
        ]
        .into_iter()
        .find(|p| p.as_str() == token)
    }

    /// The value for `number`, unencoded.
    pub fn value(self, number: &ExternalNumber, tel: TelFormat) -> String {
        let digits = || number.e164.trim_start_matches('+').to_owned();
        match self {
            Placeholder::CallerIdInt => number.international.clone(),
            Placeholder::CallerIdIntPlus => number.e164.clone(),
            Placeholder::TelNational => number.national.clone(),
            Placeholder::TelDigits => digits(),
            Placeholder::Tel => match tel {
                TelFormat::International => number.international.clone(),
                TelFormat::E164 => number.e164.clone(),
                TelFormat::National => number.national.clone(),
                TelFormat::Digits => digits(),
            },
        }
    }
}

impl fmt::Display for Placeholder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// SQL bind-marker style of the target database.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BindStyle {
    /// `?` (MySQL/MariaDB, SQLite).
    QuestionMark,
    /// `$1`, `$2`, … (PostgreSQL).
    Dollar,
    /// `@P1`, `@P2`, … (MS SQL Server).
    AtP,
}

impl BindStyle {
    /// The marker for the `n`-th bound value (1-based).
    fn marker(self, n: usize) -> String {
        match self {
            BindStyle::QuestionMark => "?".to_owned(),
            BindStyle::Dollar => format!("${n}"),
            BindStyle::AtP => format!("@P{n}"),
        }
    }

    /// The length of a marker of this style starting at `rest`, if any.
    fn marker_at(self, rest: &str) -> Option<usize> {
        let digits_after = |prefix: &str| {
            let tail = rest.strip_prefix(prefix)?;
            let n = tail.bytes().take_while(u8::is_ascii_digit).count();
            (n > 0).then_some(prefix.len() + n)
        };
        match self {
            BindStyle::QuestionMark => rest.starts_with('?').then_some(1),
            BindStyle::Dollar => digits_after("$"),
            // T-SQL names are case-insensitive.
            BindStyle::AtP => digits_after("@P").or_else(|| digits_after("@p")),
        }
    }
}

/// A placeholder-shaped token at the start of `rest`: its length, if `rest`
/// starts with `#NAME#` or `{name}`.
fn token_at(rest: &str) -> Option<usize> {
    let (close, plus_ok) = match rest.as_bytes().first()? {
        b'#' => (b'#', true),
        b'{' => (b'}', false),
        _ => return None,
    };
    let body = rest[1..]
        .bytes()
        .take_while(|&b| b.is_ascii_alphanumeric() || b == b'_' || (plus_ok && b == b'+'))
        .count();
    (body > 0 && rest.as_bytes().get(1 + body) == Some(&close)).then_some(body + 2)
}

/// Resolve the token at `offset`; unknown ones are an error.
fn placeholder(token: &str, offset: usize) -> Result<Placeholder, TemplateError> {
    Placeholder::from_token(token).ok_or_else(|| TemplateError::UnknownPlaceholder {
        placeholder: token.to_owned(),
        offset,
    })
}

/// Check that every placeholder-shaped token in `template` is known, without
/// expanding (for validating a provider's configuration when it is saved).
pub fn check_url_template(template: &str) -> Result<(), TemplateError> {
    check_template(template, &[])
}

/// Expand a lookup URL: `{tel}` is the `00…` form. See [`expand_url_with`].
pub fn expand_url(template: &str, number: &ExternalNumber) -> Result<String, TemplateError> {
    expand_url_with(template, number, TelFormat::default())
}

/// Expand a lookup URL, every value percent-encoded as a URL component (all
/// but `A–Z a–z 0–9 - . _ ~`), so `+` arrives as `+` and not as a space. The
/// rest of the template is copied unchanged.
pub fn expand_url_with(
    template: &str,
    number: &ExternalNumber,
    tel: TelFormat,
) -> Result<String, TemplateError> {
    expand(template, number, tel, &[], percent_encode)
}

/// Expand `template` with the number placeholders plus `extras` (`{name}`
/// tokens with their values, e.g. a provider's API key), each value passed
/// through `escape` on its way into the text (percent-encoding for URLs,
/// RFC 4515 escaping for LDAP filters, nothing for headers). Anything else
/// placeholder-shaped is an error, as in [`check_url_template`].
pub fn expand(
    template: &str,
    number: &ExternalNumber,
    tel: TelFormat,
    extras: &[(&str, &str)],
    escape: fn(&str, &mut String),
) -> Result<String, TemplateError> {
    let mut out = String::with_capacity(template.len() + 16);
    let mut i = 0;
    while i < template.len() {
        let rest = &template[i..];
        if let Some(len) = token_at(rest) {
            let token = &rest[..len];
            match extras.iter().find(|(name, _)| extra_token(name, token)) {
                Some((_, value)) => escape(value, &mut out),
                None => escape(&placeholder(token, i)?.value(number, tel), &mut out),
            }
            i += len;
        } else {
            let c = rest.chars().next().expect("i < len");
            out.push(c);
            i += c.len_utf8();
        }
    }
    Ok(out)
}

/// Like [`check_url_template`], with `extras` (names without braces) known too.
pub fn check_template(template: &str, extras: &[&str]) -> Result<(), TemplateError> {
    let mut i = 0;
    while i < template.len() {
        if let Some(len) = token_at(&template[i..]) {
            let token = &template[i..i + len];
            if !extras.iter().any(|name| extra_token(name, token)) {
                placeholder(token, i)?;
            }
            i += len;
        } else {
            i += template[i..].chars().next().map_or(1, char::len_utf8);
        }
    }
    Ok(())
}

/// Whether `token` is `{name}`.
fn extra_token(name: &str, token: &str) -> bool {
    token
        .strip_prefix('{')
        .and_then(|t| t.strip_suffix('}'))
        .is_some_and(|inner| inner == name)
}

/// Copies `value` unchanged (for header values and log text).
pub fn no_escape(value: &str, out: &mut String) {
    out.push_str(value);
}

/// Percent-encodes `value` as a URL component.
pub fn percent_encode(value: &str, out: &mut String) {
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
}

/// Turn an SQL template into a statement with bind markers and the values to
/// bind, in order; `{tel}` is the `00…` form. See [`sql_with_binds_with`].
pub fn sql_with_binds(
    template: &str,
    number: &ExternalNumber,
    style: BindStyle,
) -> Result<(String, Vec<String>), TemplateError> {
    sql_with_binds_with(template, number, style, TelFormat::default())
}

/// Turn an SQL template into a statement with bind markers and the values to
/// bind, in order: one marker and one value per placeholder occurrence (the
/// same placeholder twice binds twice, which every database accepts).
///
/// The template is lexed just enough to know what is code: `'…'` and `"…"`
/// literals (doubled quotes inside), `` `…` `` identifiers, `-- …` and
/// `/* … */` comments. Errors: unknown placeholders, placeholders inside a
/// longer quoted literal, bind markers of `style` already in the code, and
/// unterminated quotes or comments.
pub fn sql_with_binds_with(
    template: &str,
    number: &ExternalNumber,
    style: BindStyle,
    tel: TelFormat,
) -> Result<(String, Vec<String>), TemplateError> {
    let mut sql = String::with_capacity(template.len());
    let mut binds = Vec::new();
    let mut bind = |p: Placeholder, sql: &mut String| {
        binds.push(p.value(number, tel));
        sql.push_str(&style.marker(binds.len()));
    };
    let bytes = template.as_bytes();
    let mut i = 0;
    while i < template.len() {
        let rest = &template[i..];
        match bytes[i] {
            quote @ (b'\'' | b'"' | b'`') => {
                let end = closing_quote(template, i, quote)?;
                let inner = &template[i + 1..end];
                // `'{tel}'`: the seed's own style; the marker replaces the
                // literal, quotes included. Identifiers (`) never hold values.
                if quote != b'`' && token_at(inner) == Some(inner.len()) {
                    bind(placeholder(inner, i + 1)?, &mut sql);
                } else {
                    refuse_placeholders_in(inner, i + 1)?;
                    sql.push_str(&template[i..=end]);
                }
                i = end + 1;
            }
            b'-' if rest.starts_with("--") => {
                let end = rest.find('\n').map_or(template.len(), |n| i + n);
                sql.push_str(&template[i..end]);
                i = end;
            }
            b'/' if rest.starts_with("/*") => {
                let end = rest[2..].find("*/").map(|n| i + 2 + n + 2).ok_or(
                    TemplateError::Unterminated {
                        what: "block comment",
                        offset: i,
                    },
                )?;
                sql.push_str(&template[i..end]);
                i = end;
            }
            _ => {
                if let Some(len) = token_at(rest) {
                    bind(placeholder(&rest[..len], i)?, &mut sql);
                    i += len;
                } else if let Some(len) = style.marker_at(rest) {
                    return Err(TemplateError::BindMarkerInTemplate {
                        marker: rest[..len].to_owned(),
                        offset: i,
                    });
                } else {
                    let c = rest.chars().next().expect("i < len");
                    sql.push(c);
                    i += c.len_utf8();
                }
            }
        }
    }
    Ok((sql, binds))
}

/// Byte index of the quote closing the one at `start`; a doubled quote is an
/// escaped one inside.
fn closing_quote(template: &str, start: usize, quote: u8) -> Result<usize, TemplateError> {
    let bytes = template.as_bytes();
    let mut j = start + 1;
    while j < bytes.len() {
        if bytes[j] == quote {
            if bytes.get(j + 1) == Some(&quote) {
                j += 2;
                continue;
            }
            return Ok(j);
        }
        j += 1;
    }
    Err(TemplateError::Unterminated {
        what: match quote {
            b'\'' => "string literal '…'",
            b'"' => "quoted literal \"…\"",
            _ => "quoted identifier `…`",
        },
        offset: start,
    })
}

/// Error on the first placeholder-shaped token inside quoted text (an
/// unknown one is reported as unknown, a typo being the likelier cause).
fn refuse_placeholders_in(inner: &str, offset: usize) -> Result<(), TemplateError> {
    let mut k = 0;
    while k < inner.len() {
        if let Some(len) = token_at(&inner[k..]) {
            let token = &inner[k..k + len];
            placeholder(token, offset + k)?;
            return Err(TemplateError::PlaceholderInQuotes {
                placeholder: token.to_owned(),
                offset: offset + k,
            });
        }
        k += inner[k..].chars().next().map_or(1, char::len_utf8);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use callhost_numbers::NumberPlan;

    fn de(raw: &str) -> ExternalNumber {
        NumberPlan::new("DE").unwrap().normalize(raw).unwrap()
    }

    /// A "number" whose forms are hostile strings, to show that values never
    /// reach the SQL text whatever they contain.
    fn hostile() -> ExternalNumber {
        ExternalNumber {
            international: "0049'; DROP TABLE contacts; --".into(),
            e164: "+49\" OR \"1\"=\"1".into(),
            national: "030' OR '1'='1".into(),
            country: Some("DE".into()),
        }
    }

    #[test]
    fn placeholder_values() {
        let berlin = de("030 1234567");
        let zurich = de("+41 44 123 45 67");
        let cases = [
            (Placeholder::CallerIdInt, &berlin, "0049301234567"),
            (Placeholder::CallerIdIntPlus, &berlin, "+49301234567"),
            (Placeholder::Tel, &berlin, "0049301234567"),
            (Placeholder::TelNational, &berlin, "0301234567"),
            (Placeholder::TelDigits, &berlin, "49301234567"),
            (Placeholder::CallerIdInt, &zurich, "0041441234567"),
            (Placeholder::CallerIdIntPlus, &zurich, "+41441234567"),
            (Placeholder::TelNational, &zurich, "0041441234567"),
            (Placeholder::TelDigits, &zurich, "41441234567"),
        ];
        for (p, n, want) in cases {
            assert_eq!(p.value(n, TelFormat::default()), want, "{p} for {}", n.e164);
        }
    }

    #[test]
    fn tel_follows_the_chosen_format() {
        let n = de("030 1234567");
        let cases = [
            (TelFormat::International, "0049301234567"),
            (TelFormat::E164, "+49301234567"),
            (TelFormat::National, "0301234567"),
            (TelFormat::Digits, "49301234567"),
        ];
        for (format, want) in cases {
            assert_eq!(Placeholder::Tel.value(&n, format), want, "{format:?}");
        }
    }

    #[test]
    fn urls_are_expanded_and_encoded() {
        let n = de("030 1234567");
        let cases = [
            (
                "http://mein-lookup-dienst.com/resolve?callerid=#CALLERID_INT#",
                "http://mein-lookup-dienst.com/resolve?callerid=0049301234567",
            ),
            (
                "https://x.example/q?n=#CALLERID_INT+#&fmt=json",
                "https://x.example/q?n=%2B49301234567&fmt=json",
            ),
            (
                "https://x.example/{tel}/{tel_national}",
                "https://x.example/0049301234567/0301234567",
            ),
            (
                "https://tel.search.ch/api/?was={tel_digits}&key=K",
                "https://tel.search.ch/api/?was=49301234567&key=K",
            ),
            // Not placeholder-shaped: copied as they are.
            (
                "https://x.example/#top?q={tel}",
                "https://x.example/#top?q=0049301234567",
            ),
            (
                "https://x.example/?json={\"n\":\"{tel}\"}",
                "https://x.example/?json={\"n\":\"0049301234567\"}",
            ),
            (
                "https://x.example/ä?q=#CALLERID_INT#",
                "https://x.example/ä?q=0049301234567",
            ),
            ("no placeholders", "no placeholders"),
            ("", ""),
        ];
        for (template, want) in cases {
            assert_eq!(expand_url(template, &n).as_deref(), Ok(want), "{template}");
        }
        assert_eq!(
            expand_url_with("q={tel}", &n, TelFormat::E164).as_deref(),
            Ok("q=%2B49301234567")
        );
    }

    #[test]
    fn url_values_are_encoded_whatever_they_contain() {
        assert_eq!(
            expand_url("a=#CALLERID_INT#&b={tel_national}", &hostile()).as_deref(),
            Ok("a=0049%27%3B%20DROP%20TABLE%20contacts%3B%20--&b=030%27%20OR%20%271%27%3D%271")
        );
    }

    #[test]
    fn unknown_placeholders_are_named() {
        let n = de("030 1234567");
        let cases = [
            ("https://x/?n=#CALLERID#", "#CALLERID#", 13),
            ("https://x/?n={telefon}", "{telefon}", 13),
            ("https://x/?n={TEL}", "{TEL}", 13),
            ("https://x/?n=#callerid_int#", "#callerid_int#", 13),
            ("{0}", "{0}", 0),
        ];
        for (template, token, offset) in cases {
            let want = TemplateError::UnknownPlaceholder {
                placeholder: token.into(),
                offset,
            };
            assert_eq!(expand_url(template, &n), Err(want.clone()), "{template}");
            assert_eq!(
                check_url_template(template),
                Err(want.clone()),
                "{template}"
            );
            assert_eq!(
                sql_with_binds(template, &n, BindStyle::Dollar),
                Err(want),
                "{template}"
            );
        }
        let msg = expand_url("x={telefon}", &n).unwrap_err().to_string();
        assert!(
            msg.contains("\"{telefon}\"") && msg.contains("byte 2"),
            "{msg}"
        );
        assert_eq!(
            check_url_template("https://x/?n={tel}&m=#CALLERID_INT+#"),
            Ok(())
        );
    }

    fn sql(template: &str, style: BindStyle) -> (String, Vec<String>) {
        sql_with_binds(template, &de("030 1234567"), style)
            .unwrap_or_else(|e| panic!("{template}: {e}"))
    }

    #[test]
    fn sql_binds_in_every_style() {
        let t = "SELECT name, company FROM c WHERE phone = #CALLERID_INT# OR phone = #CALLERID_INT+# OR phone = {tel_national}";
        let values = vec![
            "0049301234567".to_owned(),
            "+49301234567".to_owned(),
            "0301234567".to_owned(),
        ];
        let cases = [
            (
                BindStyle::QuestionMark,
                "SELECT name, company FROM c WHERE phone = ? OR phone = ? OR phone = ?",
            ),
            (
                BindStyle::Dollar,
                "SELECT name, company FROM c WHERE phone = $1 OR phone = $2 OR phone = $3",
            ),
            (
                BindStyle::AtP,
                "SELECT name, company FROM c WHERE phone = @P1 OR phone = @P2 OR phone = @P3",
            ),
        ];
        for (style, want) in cases {
            assert_eq!(
                sql(t, style),
                (want.to_owned(), values.clone()),
                "{style:?}"
            );
        }
    }

    #[test]
    fn sql_quoted_whole_literal_becomes_a_marker() {
        let cases = [
            // The seed's own examples.
            (
                "SELECT name, company, city FROM mycontactstable WHERE phonenumer='{tel}'",
                "SELECT name, company, city FROM mycontactstable WHERE phonenumer=$1",
                vec!["0049301234567"],
            ),
            (
                "SELECT name AS Anrufername, company AS Firmenname, city AS Ort FROM myaddresstable WHERE phonenumer=#CALLERID_INT#",
                "SELECT name AS Anrufername, company AS Firmenname, city AS Ort FROM myaddresstable WHERE phonenumer=$1",
                vec!["0049301234567"],
            ),
            (
                "SELECT n FROM t WHERE a=\"#CALLERID_INT+#\" AND b = '{tel}'",
                "SELECT n FROM t WHERE a=$1 AND b = $2",
                vec!["+49301234567", "0049301234567"],
            ),
            (
                "SELECT n FROM t WHERE a={tel} OR b={tel}",
                "SELECT n FROM t WHERE a=$1 OR b=$2",
                vec!["0049301234567", "0049301234567"],
            ),
        ];
        for (template, want, values) in cases {
            let values: Vec<String> = values.into_iter().map(String::from).collect();
            assert_eq!(
                sql(template, BindStyle::Dollar),
                (want.to_owned(), values),
                "{template}"
            );
        }
    }

    #[test]
    fn sql_literals_comments_and_lookalikes_stay_untouched() {
        let cases = [
            (
                "SELECT '#not a placeholder#', \"{ok x}\" FROM t WHERE p={tel}",
                "SELECT '#not a placeholder#', \"{ok x}\" FROM t WHERE p=?",
            ),
            (
                "SELECT 'it''s' FROM t WHERE p={tel}",
                "SELECT 'it''s' FROM t WHERE p=?",
            ),
            (
                "SELECT `{tel`} FROM t WHERE p={tel}",
                "SELECT `{tel`} FROM t WHERE p=?",
            ),
            (
                "SELECT n FROM t -- by {tel}\nWHERE p={tel}",
                "SELECT n FROM t -- by {tel}\nWHERE p=?",
            ),
            (
                "SELECT n /* '{tel}' ? */ FROM t WHERE p={tel}",
                "SELECT n /* '{tel}' ? */ FROM t WHERE p=?",
            ),
            (
                "SELECT {fn NOW()}, '?' FROM t WHERE p={tel}",
                "SELECT {fn NOW()}, '?' FROM t WHERE p=?",
            ),
            (
                "SELECT n FROM t WHERE p={tel} -- trailing",
                "SELECT n FROM t WHERE p=? -- trailing",
            ),
            (
                "SELECT n FROM t WHERE p='Müller' AND q={tel}",
                "SELECT n FROM t WHERE p='Müller' AND q=?",
            ),
        ];
        for (template, want) in cases {
            assert_eq!(sql(template, BindStyle::QuestionMark).0, want, "{template}");
            assert_eq!(
                sql(template, BindStyle::QuestionMark).1.len(),
                1,
                "{template}"
            );
        }
    }

    #[test]
    fn sql_refusals_name_the_culprit() {
        let n = de("030 1234567");
        let cases = [
            (
                "SELECT n FROM t WHERE p LIKE '%#CALLERID_INT#'",
                BindStyle::QuestionMark,
                TemplateError::PlaceholderInQuotes {
                    placeholder: "#CALLERID_INT#".into(),
                    offset: 31,
                },
            ),
            (
                "SELECT n FROM t WHERE p LIKE '%{tell}'",
                BindStyle::QuestionMark,
                TemplateError::UnknownPlaceholder {
                    placeholder: "{tell}".into(),
                    offset: 31,
                },
            ),
            (
                "SELECT n FROM t WHERE p = ? OR p = {tel}",
                BindStyle::QuestionMark,
                TemplateError::BindMarkerInTemplate {
                    marker: "?".into(),
                    offset: 26,
                },
            ),
            (
                "SELECT n FROM t WHERE p = $1 OR p = {tel}",
                BindStyle::Dollar,
                TemplateError::BindMarkerInTemplate {
                    marker: "$1".into(),
                    offset: 26,
                },
            ),
            (
                "SELECT n FROM t WHERE p = @P1 OR p = {tel}",
                BindStyle::AtP,
                TemplateError::BindMarkerInTemplate {
                    marker: "@P1".into(),
                    offset: 26,
                },
            ),
            (
                "SELECT n FROM t WHERE p = 'x OR p = {tel}",
                BindStyle::AtP,
                TemplateError::Unterminated {
                    what: "string literal '…'",
                    offset: 26,
                },
            ),
            (
                "SELECT n /* {tel}",
                BindStyle::AtP,
                TemplateError::Unterminated {
                    what: "block comment",
                    offset: 9,
                },
            ),
        ];
        for (template, style, want) in cases {
            assert_eq!(sql_with_binds(template, &n, style), Err(want), "{template}");
        }
        // A marker of another style is not one for this database.
        assert_eq!(
            sql(
                "SELECT '$1', @P1x FROM t WHERE p = {tel} AND jsonb ? 'k'",
                BindStyle::Dollar
            )
            .0,
            "SELECT '$1', @P1x FROM t WHERE p = $1 AND jsonb ? 'k'"
        );
        let msg = sql_with_binds("WHERE p LIKE '%{tel}'", &n, BindStyle::QuestionMark)
            .unwrap_err()
            .to_string();
        assert!(
            msg.contains("\"{tel}\"") && msg.contains("byte 15"),
            "{msg}"
        );
    }

    #[test]
    fn hostile_values_never_reach_the_sql_text() {
        let n = hostile();
        let template = "SELECT name FROM c WHERE a = #CALLERID_INT# OR b = '#CALLERID_INT+#' OR c = {tel_national}";
        for style in [BindStyle::QuestionMark, BindStyle::Dollar, BindStyle::AtP] {
            let (text, binds) = sql_with_binds(template, &n, style).unwrap();
            assert_eq!(
                binds,
                [
                    "0049'; DROP TABLE contacts; --",
                    "+49\" OR \"1\"=\"1",
                    "030' OR '1'='1"
                ],
                "{style:?}"
            );
            for needle in ["DROP", "OR \"1\"", "'1'='1", "--", "''"] {
                assert!(!text.contains(needle), "{style:?}: {needle:?} in {text}");
            }
            let quotes = text.chars().filter(|&c| c == '\'' || c == '"').count();
            assert_eq!(quotes, 0, "{style:?}: {text}");
        }
        assert_eq!(
            sql_with_binds(template, &n, BindStyle::AtP).unwrap().0,
            "SELECT name FROM c WHERE a = @P1 OR b = @P2 OR c = @P3"
        );
    }

    #[test]
    fn sql_without_placeholders_binds_nothing() {
        assert_eq!(
            sql("SELECT 1", BindStyle::QuestionMark),
            ("SELECT 1".to_owned(), vec![])
        );
    }
}
