//! RL7: parser rules that pull names, companies and spam scores out of a
//! provider's answer (HTML, text, JSON or an SQL row).
//!
//! A [`Rule`] has a matcher (a regular expression, `regex` crate syntax) and
//! a formatter that assembles the result from the match: `{0}` is the whole
//! match, `{1}`, `{2}`, … the capture groups, `{name}` a named group, `{{`
//! and `}}` literal braces. Rules are compiled once ([`RuleSet::compile`]);
//! invalid ones are refused with the rule's name, so a configuration screen
//! can show them as invalid.
//!
//! Applying: for each [`Field`] the first rule (in configuration order) that
//! matches *and* yields a non-empty value wins. Captured text is
//! HTML-entity-decoded (`html-escape`: all HTML5 named and numeric
//! references) before it is put into the formatter, then the result is
//! trimmed and inner whitespace runs (including decoded `&nbsp;`) collapse
//! to one space. A spam rule's value must be a whole number 0–255, else that
//! rule counts as not matching.
//!
//! Regex defaults apply: `.` does not match a newline; write `(?s)` for
//! matches across lines of an HTML page.

use regex::Regex;

/// Errors compiling a rule; each names the rule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RuleError {
    /// The matcher is not a valid regular expression.
    #[error("rule {rule:?}: invalid matcher regex {matcher:?}: {error}")]
    BadRegex {
        rule: String,
        matcher: String,
        error: String,
    },
    /// The formatter refers to a group the matcher does not have.
    #[error("rule {rule:?}: formatter {formatter:?} refers to group {{{group}}}, but the matcher has {groups}")]
    MissingGroup {
        rule: String,
        formatter: String,
        group: String,
        /// What the matcher offers, e.g. "groups {0}–{2}" or "groups {0}–{2} and {name}".
        groups: String,
    },
    /// A `{` or `}` in the formatter that is neither a group reference nor doubled.
    #[error("rule {rule:?}: formatter {formatter:?} has a stray {brace:?} at byte {offset} (write {{{{ or }}}} for a literal brace)")]
    StrayBrace {
        rule: String,
        formatter: String,
        brace: char,
        offset: usize,
    },
}

/// The display field a rule fills.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Field {
    FirstName,
    LastName,
    Company,
    /// A complete display text, for providers that give one name only.
    Display,
    /// A spam score (tellows-like, e.g. 1–9).
    Spam,
}

/// A parser rule as configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// Shown in errors and the provider test.
    pub name: String,
    /// Regular expression searched in the answer.
    pub matcher: String,
    /// Result template, e.g. `"{1} {2}"`.
    pub formatter: String,
    pub field: Field,
}

/// What the rules found in one answer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Extracted {
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    pub company: Option<String>,
    pub display: Option<String>,
    pub spam_score: Option<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Text(String),
    Group(usize),
}

#[derive(Debug, Clone)]
struct Compiled {
    regex: Regex,
    pieces: Vec<Piece>,
    field: Field,
}

/// Compiled rules, ready to apply to many answers.
#[derive(Debug, Clone)]
pub struct RuleSet {
    rules: Vec<Compiled>,
}

impl RuleSet {
    /// Compile `rules`; the first invalid one is an error naming it.
    pub fn compile(rules: &[Rule]) -> Result<RuleSet, RuleError> {
        let rules = rules.iter().map(compile).collect::<Result<_, _>>()?;
        Ok(RuleSet { rules })
    }

    /// Apply the rules to `text`; see the [module documentation](self).
    pub fn apply(&self, text: &str) -> Extracted {
        let mut out = Extracted::default();
        for rule in &self.rules {
            let taken = match rule.field {
                Field::FirstName => out.first_name.is_some(),
                Field::LastName => out.last_name.is_some(),
                Field::Company => out.company.is_some(),
                Field::Display => out.display.is_some(),
                Field::Spam => out.spam_score.is_some(),
            };
            if taken {
                continue;
            }
            let Some(value) = rule.run(text) else {
                continue;
            };
            match rule.field {
                Field::FirstName => out.first_name = Some(value),
                Field::LastName => out.last_name = Some(value),
                Field::Company => out.company = Some(value),
                Field::Display => out.display = Some(value),
                // "7" or " 7 " after clean-up; "7.5" or "hoch" is no score.
                Field::Spam => out.spam_score = value.parse().ok(),
            }
        }
        out
    }
}

fn compile(rule: &Rule) -> Result<Compiled, RuleError> {
    let regex = Regex::new(&rule.matcher).map_err(|e| RuleError::BadRegex {
        rule: rule.name.clone(),
        matcher: rule.matcher.clone(),
        error: e.to_string(),
    })?;
    let pieces = parse_formatter(rule, &regex)?;
    Ok(Compiled {
        regex,
        pieces,
        field: rule.field,
    })
}

/// Apply compiled `rules` to `text` (see [`RuleSet::apply`]).
pub fn apply(rules: &RuleSet, text: &str) -> Extracted {
    rules.apply(text)
}

impl Compiled {
    /// The cleaned, formatted value of the first match, if non-empty.
    fn run(&self, text: &str) -> Option<String> {
        let caps = self.regex.captures(text)?;
        let mut raw = String::new();
        for piece in &self.pieces {
            match piece {
                Piece::Text(t) => raw.push_str(t),
                Piece::Group(i) => {
                    // A group that did not take part counts as empty.
                    if let Some(m) = caps.get(*i) {
                        raw.push_str(&html_escape::decode_html_entities(m.as_str()));
                    }
                }
            }
        }
        let value = collapse_whitespace(&raw);
        (!value.is_empty()).then_some(value)
    }
}

/// Trim and collapse every whitespace run (Unicode, so NBSP too) to one space.
fn collapse_whitespace(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn parse_formatter(rule: &Rule, regex: &Regex) -> Result<Vec<Piece>, RuleError> {
    let f = &rule.formatter;
    let stray = |brace, offset| RuleError::StrayBrace {
        rule: rule.name.clone(),
        formatter: f.clone(),
        brace,
        offset,
    };
    let mut pieces = Vec::new();
    let mut text = String::new();
    let mut i = 0;
    while i < f.len() {
        let rest = &f[i..];
        if rest.starts_with("{{") || rest.starts_with("}}") {
            text.push_str(&rest[..1]);
            i += 2;
        } else if rest.starts_with('}') {
            return Err(stray('}', i));
        } else if rest.starts_with('{') {
            let close = rest.find('}').ok_or_else(|| stray('{', i))?;
            let name = &rest[1..close];
            if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
                return Err(stray('{', i));
            }
            let index = match name.parse::<usize>() {
                Ok(n) => (n < regex.captures_len()).then_some(n),
                Err(_) => regex.capture_names().position(|c| c == Some(name)),
            }
            .ok_or_else(|| RuleError::MissingGroup {
                rule: rule.name.clone(),
                formatter: f.clone(),
                group: name.to_owned(),
                groups: describe_groups(regex),
            })?;
            if !text.is_empty() {
                pieces.push(Piece::Text(std::mem::take(&mut text)));
            }
            pieces.push(Piece::Group(index));
            i += close + 1;
        } else {
            let c = rest.chars().next().expect("i < len");
            text.push(c);
            i += c.len_utf8();
        }
    }
    if !text.is_empty() {
        pieces.push(Piece::Text(text));
    }
    Ok(pieces)
}

fn describe_groups(regex: &Regex) -> String {
    let last = regex.captures_len() - 1;
    let mut s = if last == 0 {
        "only group {0}".to_owned()
    } else {
        format!("groups {{0}}–{{{last}}}")
    };
    let names: Vec<String> = regex
        .capture_names()
        .flatten()
        .map(|n| format!("{{{n}}}"))
        .collect();
    if !names.is_empty() {
        s.push_str(" and ");
        s.push_str(&names.join(", "));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(name: &str, matcher: &str, formatter: &str, field: Field) -> Rule {
        Rule {
            name: name.into(),
            matcher: matcher.into(),
            formatter: formatter.into(),
            field,
        }
    }

    fn set(rules: &[Rule]) -> RuleSet {
        RuleSet::compile(rules).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn invalid_regex_is_refused_naming_rule_and_error() {
        let err = RuleSet::compile(&[
            rule("ok", "(x)", "{1}", Field::Display),
            rule("Name 11880", "<h2>(.*</h2>", "{1}", Field::Display),
        ])
        .unwrap_err();
        let RuleError::BadRegex {
            rule,
            matcher,
            error,
        } = &err
        else {
            panic!("{err:?}");
        };
        assert_eq!(
            (rule.as_str(), matcher.as_str()),
            ("Name 11880", "<h2>(.*</h2>")
        );
        assert!(error.contains("unclosed group"), "{error}");
        let msg = err.to_string();
        assert!(
            msg.starts_with("rule \"Name 11880\": invalid matcher regex \"<h2>(.*</h2>\": "),
            "{msg}"
        );
    }

    #[test]
    fn formatter_references_are_checked() {
        let cases = [
            ("(a)(b)", "{1} {3}", "3", "groups {0}–{2}"),
            ("ab", "{1}", "1", "only group {0}"),
            (
                "(?P<first>a)(b)",
                "{last}",
                "last",
                "groups {0}–{2} and {first}",
            ),
        ];
        for (matcher, formatter, group, groups) in cases {
            let err =
                RuleSet::compile(&[rule("R", matcher, formatter, Field::Display)]).unwrap_err();
            assert_eq!(
                err,
                RuleError::MissingGroup {
                    rule: "R".into(),
                    formatter: formatter.into(),
                    group: group.into(),
                    groups: groups.into(),
                },
                "{formatter}"
            );
        }
        let msg = RuleSet::compile(&[rule("Firma", "(a)(b)", "{3}", Field::Company)])
            .unwrap_err()
            .to_string();
        assert_eq!(
            msg,
            "rule \"Firma\": formatter \"{3}\" refers to group {3}, but the matcher has groups {0}–{2}"
        );
    }

    #[test]
    fn stray_braces_are_refused() {
        let cases = [
            ("{1", '{', 0),
            ("x }", '}', 2),
            ("{ 1}", '{', 0),
            ("{}", '{', 0),
        ];
        for (formatter, brace, offset) in cases {
            assert_eq!(
                RuleSet::compile(&[rule("R", "(a)", formatter, Field::Display)]).unwrap_err(),
                RuleError::StrayBrace {
                    rule: "R".into(),
                    formatter: formatter.into(),
                    brace,
                    offset,
                },
                "{formatter}"
            );
        }
    }

    #[test]
    fn formatter_table() {
        let text = "Name: Anna Schmidt; Firma: Schmidt &amp; S&ouml;hne GmbH";
        let cases = [
            ("Name: (\\w+) (\\w+)", "{2}, {1}", "Schmidt, Anna"),
            ("Name: (\\w+) (\\w+)", "{0}", "Name: Anna Schmidt"),
            (
                "Name: (?P<v>\\w+) (?P<n>\\w+)",
                "{n} ({v})",
                "Schmidt (Anna)",
            ),
            ("Firma: (.+)$", "{1}", "Schmidt & Söhne GmbH"),
            ("Name: (\\w+)", "{{{1}}}", "{Anna}"),
            ("Name: (\\w+)( X)?", "{1}{2}", "Anna"),
            ("Name: (\\w+)", "  Frau   {1}  ", "Frau Anna"),
            // Formatter text is not decoded, only captured text.
            ("Name: (\\w+)", "{1} &amp;", "Anna &amp;"),
        ];
        for (matcher, formatter, want) in cases {
            let got = set(&[rule("R", matcher, formatter, Field::Display)]).apply(text);
            assert_eq!(
                got.display.as_deref(),
                Some(want),
                "{matcher} / {formatter}"
            );
        }
    }

    #[test]
    fn first_matching_rule_per_field_wins() {
        let rules = set(&[
            rule("none", "Vorname: (\\w+)", "{1}", Field::FirstName),
            rule("empty", "Name:( *)", "{1}", Field::FirstName),
            rule("first", "Name: (\\w+)", "{1}", Field::FirstName),
            rule("second", "Name: \\w+ (\\w+)", "{1}", Field::FirstName),
            rule("last", "Name: \\w+ (\\w+)", "{1}", Field::LastName),
        ]);
        let got = rules.apply("Name: Anna Schmidt");
        assert_eq!(
            got,
            Extracted {
                first_name: Some("Anna".into()),
                last_name: Some("Schmidt".into()),
                ..Extracted::default()
            }
        );
        assert_eq!(rules.apply("nothing here"), Extracted::default());
    }

    #[test]
    fn spam_scores() {
        let cases = [
            ("Score: 7", Some(7)),
            ("Score:  9 ", Some(9)),
            ("Score: 0", Some(0)),
            ("Score: 255", Some(255)),
            ("Score: 256", Some(1)),
            ("Score: 7.5", Some(1)),
            ("Score: hoch", Some(1)),
            ("nothing", None),
        ];
        // The second rule is the fallback when the first yields no number.
        let rules = set(&[
            rule("score", "Score:\\s*(\\S*)", "{1}", Field::Spam),
            rule("fallback", "Score", "1", Field::Spam),
        ]);
        for (text, want) in cases {
            assert_eq!(rules.apply(text).spam_score, want, "{text}");
        }
    }

    #[test]
    fn german_phone_book_result_list() {
        let html = r#"<!DOCTYPE html>
<html lang="de"><head><title>Rückwärtssuche 030 1234567 | Telefonbuch</title></head>
<body>
<div class="result-list">
  <article class="entry" data-id="4711">
    <h2 class="name"><a href="/eintrag/4711">M&uuml;ller&nbsp;&amp;&nbsp;S&ouml;hne
        Sanit&auml;r GmbH</a></h2>
    <p class="contact">Ansprechpartner: <span class="first">J&ouml;rg</span> <span class="last">M&#252;ller-L&uuml;denscheidt</span></p>
    <address><span class="street">Hauptstra&szlig;e 12</span>, <span class="zip">10115</span> <span class="city">Berlin</span></address>
    <span class="tellows">Score: 3</span>
  </article>
  <article class="entry" data-id="4712">
    <h2 class="name"><a href="/eintrag/4712">Zweiter Treffer AG</a></h2>
  </article>
</div>
</body></html>"#;
        let rules = set(&[
            rule(
                "Firma",
                r#"(?s)<h2 class="name"><a[^>]*>(.*?)</a></h2>"#,
                "{1}",
                Field::Company,
            ),
            rule(
                "Vorname",
                r#"<span class="first">([^<]*)</span>"#,
                "{1}",
                Field::FirstName,
            ),
            rule(
                "Nachname",
                r#"<span class="last">([^<]*)</span>"#,
                "{1}",
                Field::LastName,
            ),
            rule(
                "Anzeige",
                r#"(?s)<h2 class="name"><a[^>]*>(.*?)</a>.*?<span class="city">([^<]*)</span>"#,
                "{1} ({2})",
                Field::Display,
            ),
            rule("Spam", r#"Score: (\d+)"#, "{1}", Field::Spam),
        ]);
        assert_eq!(
            rules.apply(html),
            Extracted {
                first_name: Some("Jörg".into()),
                last_name: Some("Müller-Lüdenscheidt".into()),
                company: Some("Müller & Söhne Sanitär GmbH".into()),
                display: Some("Müller & Söhne Sanitär GmbH (Berlin)".into()),
                spam_score: Some(3),
            }
        );
    }

    #[test]
    fn json_answer() {
        let json = r#"{"status":"ok","results":[{"firstName":"Anna","lastName":"O\u0027Brien","company":"Beispiel &amp; Co. KG","address":{"city":"M\u00fcnchen"}}],"score":null}"#;
        let rules = set(&[
            rule(
                "first",
                r#""firstName"\s*:\s*"([^"]*)""#,
                "{1}",
                Field::FirstName,
            ),
            rule(
                "last",
                r#""lastName"\s*:\s*"([^"]*)""#,
                "{1}",
                Field::LastName,
            ),
            rule(
                "company",
                r#""company"\s*:\s*"([^"]*)""#,
                "{1}",
                Field::Company,
            ),
            rule("score", r#""score"\s*:\s*(\d+)"#, "{1}", Field::Spam),
        ]);
        assert_eq!(
            rules.apply(json),
            Extracted {
                first_name: Some("Anna".into()),
                // Regex rules see JSON escapes as text; decoding them is the
                // JSON provider's job, not the rules'.
                last_name: Some("O\\u0027Brien".into()),
                company: Some("Beispiel & Co. KG".into()),
                display: None,
                spam_score: None,
            }
        );
    }

    #[test]
    fn tel_search_ch_atom_feed() {
        let atom = r#"<?xml version="1.0" encoding="utf-8" ?>
<feed xml:lang="de" xmlns="http://www.w3.org/2005/Atom" xmlns:openSearch="http://a9.com/-/spec/opensearchrss/1.0/" xmlns:tel="http://tel.search.ch/api/spec/result/1.0/">
  <id>https://tel.search.ch/api/?was=0441234567</id>
  <title type="text">tel.search.ch API Search Results</title>
  <openSearch:totalResults>1</openSearch:totalResults>
  <entry>
    <id>urn:uuid:ca71838ddcbb6a92</id>
    <updated>2024-05-02T04:00:00Z</updated>
    <title type="text">Gr&#252;ter-Meier, Hans</title>
    <content type="text">Grüter-Meier, Hans
Bahnhofstrasse 1
8001 Zürich ZH
044 123 45 67</content>
    <tel:type>Person</tel:type>
    <tel:name>Grüter-Meier</tel:name>
    <tel:firstname>Hans</tel:firstname>
    <tel:street>Bahnhofstrasse</tel:street>
    <tel:zip>8001</tel:zip>
    <tel:city>Zürich</tel:city>
    <tel:phone>+41441234567</tel:phone>
  </entry>
</feed>"#;
        let rules = set(&[
            rule(
                "Titel",
                r"(?s)<entry>.*?<title[^>]*>([^<]*)</title>",
                "{1}",
                Field::Display,
            ),
            rule(
                "Nachname",
                r"<tel:name>([^<]*)</tel:name>",
                "{1}",
                Field::LastName,
            ),
            rule(
                "Vorname",
                r"<tel:firstname>([^<]*)</tel:firstname>",
                "{1}",
                Field::FirstName,
            ),
            rule(
                "Firma",
                r"<tel:type>Organisation</tel:type>.*?<tel:name>([^<]*)</tel:name>",
                "{1}",
                Field::Company,
            ),
        ]);
        assert_eq!(
            rules.apply(atom),
            Extracted {
                first_name: Some("Hans".into()),
                last_name: Some("Grüter-Meier".into()),
                company: None,
                display: Some("Grüter-Meier, Hans".into()),
                spam_score: None,
            }
        );
    }

    #[test]
    fn whitespace_is_collapsed_and_entities_decoded() {
        let cases = [
            ("  a  \n\t b  ", "a b"),
            ("a&nbsp;&nbsp;b", "a b"),
            ("&lt;b&gt;", "<b>"),
            ("&#x4D;&#252;ller", "Müller"),
            ("&amp;amp;", "&amp;"),
            ("Caf&eacute; &unknownentity;", "Café &unknownentity;"),
            ("\u{a0}", ""),
        ];
        for (captured, want) in cases {
            let rules = set(&[rule("R", "(?s)^(.*)$", "{1}", Field::Display)]);
            let want = (!want.is_empty()).then(|| want.to_owned());
            assert_eq!(rules.apply(captured).display, want, "{captured:?}");
        }
    }
}
