//! Display templates shared by modules: `{name}` placeholders from a module's
//! own set, `{{` and `}}` for literal braces. Parsed once when the instance is
//! configured, so a typo is refused then and not discovered on a call.
//!
//! A module's placeholders are an enum (declare it with
//! [`placeholders!`](crate::placeholders)): a parsed template holds the
//! variants it names and rendering matches on them, so every value is bound
//! to its name and no list order can swap two fields.

/// One module's set of placeholders; implemented by
/// [`placeholders!`](crate::placeholders).
pub trait Placeholder: Copy + Eq + std::fmt::Debug + 'static {
    /// Every placeholder, in the order error messages list them.
    const ALL: &'static [Self];
    /// The name written between the braces.
    fn name(self) -> &'static str;
}

/// Declares a placeholder enum: each variant with the name a template
/// writes between braces.
///
/// ```
/// callhost_plugin_sdk::placeholders! {
///     /// The placeholders of `greeting`.
///     pub enum Greeting {
///         Caller = "caller",
///         CalleeNumber = "callee_number",
///     }
/// }
/// let template =
///     callhost_plugin_sdk::template::Template::<Greeting>::parse("{caller} for {callee_number}")
///         .unwrap();
/// let text = template.render(|placeholder| match placeholder {
///     Greeting::Caller => "Anna",
///     Greeting::CalleeNumber => "201",
/// });
/// assert_eq!(text, "Anna for 201");
/// ```
#[macro_export]
macro_rules! placeholders {
    (
        $(#[$meta:meta])*
        $vis:vis enum $name:ident {
            $($(#[$variant_meta:meta])* $variant:ident = $text:literal),* $(,)?
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        $vis enum $name {
            $($(#[$variant_meta])* $variant),*
        }

        impl $crate::template::Placeholder for $name {
            const ALL: &'static [Self] = &[$(Self::$variant),*];
            fn name(self) -> &'static str {
                match self {
                    $(Self::$variant => $text),*
                }
            }
        }
    };
}

/// A parsed template over the placeholders `P`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template<P>(Vec<Piece<P>>);

#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece<P> {
    Text(String),
    Value(P),
}

impl<P: Placeholder> Template<P> {
    /// Parses `text`; errors name the culprit and list the known
    /// placeholders.
    pub fn parse(text: &str) -> Result<Template<P>, String> {
        let known = || {
            P::ALL
                .iter()
                .map(|p| format!("{{{}}}", p.name()))
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
                    let Some(placeholder) = P::ALL.iter().copied().find(|p| p.name() == name)
                    else {
                        return Err(format!(
                            "unknown placeholder `{{{name}}}`: known are {}",
                            known()
                        ));
                    };
                    if !literal.is_empty() {
                        pieces.push(Piece::Text(std::mem::take(&mut literal)));
                    }
                    pieces.push(Piece::Value(placeholder));
                }
                c => literal.push(c),
            }
        }
        if !literal.is_empty() {
            pieces.push(Piece::Text(literal));
        }
        Ok(Template(pieces))
    }

    /// Fills the template; `value(p)` gives the text of placeholder `p`.
    pub fn render<'a>(&self, value: impl Fn(P) -> &'a str) -> String {
        let mut out = String::new();
        for piece in &self.0 {
            match piece {
                Piece::Text(text) => out.push_str(text),
                Piece::Value(placeholder) => out.push_str(value(*placeholder)),
            }
        }
        out
    }

    /// Whether the template uses `placeholder`.
    pub fn uses(&self, placeholder: P) -> bool {
        self.0.contains(&Piece::Value(placeholder))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    crate::placeholders! {
        enum Names {
            Caller = "caller",
            Callee = "callee",
        }
    }

    fn value(name: Names) -> &'static str {
        match name {
            Names::Caller => "Anna",
            Names::Callee => "Bob",
        }
    }

    #[test]
    fn renders_and_refuses_unknown_names() {
        let t = Template::<Names>::parse("{caller} (für {callee}) {{x}}").unwrap();
        assert_eq!(t.render(value), "Anna (für Bob) {x}");
        assert!(t.uses(Names::Callee));
        let error = Template::<Names>::parse("{calller}").unwrap_err();
        assert!(error.contains("unknown placeholder `{calller}`"), "{error}");
        assert!(error.contains("{caller}, {callee}"), "{error}");
        assert!(Template::<Names>::parse("{caller")
            .unwrap_err()
            .contains("unclosed"));
    }

    /// Values are bound by name: the order a template names them in, or the
    /// order of the declaration, decides nothing.
    #[test]
    fn placeholders_are_filled_by_name_in_any_order() {
        crate::placeholders! {
            enum Reordered {
                Callee = "callee",
                Caller = "caller",
            }
        }
        let reordered = |name: Reordered| match name {
            Reordered::Caller => "Anna",
            Reordered::Callee => "Bob",
        };
        for text in ["{callee} ← {caller}", "{caller} → {callee}"] {
            let declared = Template::<Names>::parse(text).unwrap().render(value);
            let swapped = Template::<Reordered>::parse(text)
                .unwrap()
                .render(reordered);
            assert_eq!(declared, swapped, "{text}");
        }
        assert_eq!(
            Template::<Names>::parse("{callee} ← {caller}")
                .unwrap()
                .render(value),
            "Bob ← Anna"
        );
        let t = Template::<Names>::parse("{caller} only").unwrap();
        assert!(t.uses(Names::Caller) && !t.uses(Names::Callee));
    }
}
