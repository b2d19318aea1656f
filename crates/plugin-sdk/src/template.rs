//! Display templates shared by modules: `{name}` placeholders from a fixed
//! list, `{{` and `}}` for literal braces. Parsed once when the instance is
//! configured, so a typo is refused then and not discovered on a call.

/// A parsed template; placeholders are indexes into the list it was parsed
/// against.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template(Vec<Piece>);

#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Text(String),
    Value(usize),
}

impl Template {
    /// Parses `text` against `names` (without braces); errors name the
    /// culprit and list the known placeholders.
    pub fn parse(text: &str, names: &[&str]) -> Result<Template, String> {
        let known = || {
            names
                .iter()
                .map(|n| format!("{{{n}}}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let mut pieces = Vec::new();
        let mut literal = String::new();
        let mut chars = text.chars().peekable();
        while let Some(c) = chars.next() {
            match c {
                '{' if chars.peek() == Some(&'{') => {
                    chars.next();
                    literal.push('{');
                }
                '}' if chars.peek() == Some(&'}') => {
                    chars.next();
                    literal.push('}');
                }
                '{' => {
                    let mut name = String::new();
                    let mut closed = false;
                    for c in chars.by_ref() {
                        if c == '}' {
                            closed = true;
                            break;
                        }
                        name.push(c);
                    }
                    if !closed {
                        return Err(format!(
                            "unclosed `{{{name}`: placeholders are {} (write `{{{{` for a literal brace)",
                            known()
                        ));
                    }
                    let Some(index) = names.iter().position(|n| *n == name) else {
                        return Err(format!(
                            "unknown placeholder `{{{name}}}`: known are {}",
                            known()
                        ));
                    };
                    if !literal.is_empty() {
                        pieces.push(Piece::Text(std::mem::take(&mut literal)));
                    }
                    pieces.push(Piece::Value(index));
                }
                c => literal.push(c),
            }
        }
        if !literal.is_empty() {
            pieces.push(Piece::Text(literal));
        }
        Ok(Template(pieces))
    }

    /// Fills the template; `value(i)` gives the value of `names[i]`.
    pub fn render<'a>(&self, value: impl Fn(usize) -> &'a str) -> String {
        let mut out = String::new();
        for piece in &self.0 {
            match piece {
                Piece::Text(text) => out.push_str(text),
                Piece::Value(i) => out.push_str(value(*i)),
            }
        }
        out
    }

    /// Whether the template uses `names[index]`.
    pub fn uses(&self, index: usize) -> bool {
        self.0.contains(&Piece::Value(index))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_and_refuses_unknown_names() {
        let names = ["caller", "callee"];
        let t = Template::parse("{caller} (für {callee}) {{x}}", &names).unwrap();
        assert_eq!(t.render(|i| ["Anna", "Bob"][i]), "Anna (für Bob) {x}");
        assert!(t.uses(1));
        let error = Template::parse("{calller}", &names).unwrap_err();
        assert!(error.contains("unknown placeholder `{calller}`"), "{error}");
        assert!(error.contains("{caller}, {callee}"), "{error}");
        assert!(Template::parse("{caller", &names)
            .unwrap_err()
            .contains("unclosed"));
    }
}
