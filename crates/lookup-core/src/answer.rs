//! RL19: is a provider's answer a real name?
//!
//! Providers answer with the number itself, empty text, labels or "no
//! results" phrases instead of saying nothing. Such an answer must not count
//! as a success: it would win the race, end in the cache and be shown on
//! the phone as if it were a name, and it would stop later resolution (the
//! seed describes exactly this problem with the original module).

use callhost_numbers::ExternalNumber;

/// Phrases that are never a name, compared case-insensitively against the
/// whole answer after digits and punctuation are dropped and whitespace is
/// collapsed (so "Unbekannt (030 1234567)" and "-- keine Treffer! --" are
/// caught, but "Unbekannt GmbH" is a name). Whole-answer comparison, because
/// a substring test would reject real names such as "Private Banking AG".
pub const BOILERPLATE: &[&str] = &[
    // No result.
    "unbekannt",
    "unknown",
    "keine treffer",
    "kein treffer",
    "keine treffer gefunden",
    "keine ergebnisse",
    "kein ergebnis",
    "no results",
    "no result",
    "no results found",
    "no match",
    "no matches",
    "not found",
    "nicht gefunden",
    "kein eintrag",
    "keine einträge",
    "kein eintrag gefunden",
    "no entry",
    "no entries",
    "unbekannter anrufer",
    "unknown caller",
    // Withheld or private.
    "anonym",
    "anonymous",
    "privat",
    "private",
    "private number",
    "privatnummer",
    "unterdrückt",
    "rufnummer unterdrückt",
    "nummer unterdrückt",
    "withheld",
    "number withheld",
    "unavailable",
    // Empty values as templates and JSON render them ("n/a" becomes "n a").
    "n a",
    "na",
    "null",
    "none",
    "nil",
    "undefined",
    "nan",
    "error",
    "fehler",
    // Bare labels whose value was empty.
    "name",
    "firma",
    "company",
    "anrufer",
    "caller",
    "tel",
    "telefon",
    "telefonnummer",
    "rufnummer",
    "nummer",
    "phone",
    "phone number",
    "number",
];

/// Why an answer is or is not a name; for the provider test (RL14).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// A name.
    Meaningful,
    /// Empty or whitespace only.
    Empty,
    /// The looked-up number itself, in any form ("030 1234567", "+49 (0)30 …").
    IsTheNumber,
    /// Digits and punctuation only, but not the number: another number, "---".
    NoLetters,
    /// One of [`BOILERPLATE`], maybe around the number.
    Boilerplate(&'static str),
}

/// Classify `name` as an answer for `number`; see [`Verdict`].
pub fn verdict(name: &str, number: &ExternalNumber) -> Verdict {
    if name.trim().is_empty() {
        return Verdict::Empty;
    }
    if !name.chars().any(char::is_alphabetic) {
        // "+49 (0)30 …" writes the trunk prefix the international form drops.
        let digits: String = name
            .replace("(0)", "")
            .chars()
            .filter(char::is_ascii_digit)
            .collect();
        let is_number = number
            .forms()
            .iter()
            .any(|form| form.trim_start_matches('+') == digits);
        return if is_number {
            Verdict::IsTheNumber
        } else {
            Verdict::NoLetters
        };
    }
    let words = name
        .to_lowercase()
        .chars()
        .map(|c| if c.is_alphabetic() { c } else { ' ' })
        .collect::<String>();
    let phrase = words.split_whitespace().collect::<Vec<_>>().join(" ");
    match BOILERPLATE.iter().find(|b| **b == phrase) {
        Some(b) => Verdict::Boilerplate(b),
        None => Verdict::Meaningful,
    }
}

/// Whether `name` counts as a successful lookup of `number` (RL19).
pub fn is_meaningful(name: &str, number: &ExternalNumber) -> bool {
    verdict(name, number) == Verdict::Meaningful
}

#[cfg(test)]
mod tests {
    use super::*;
    use callhost_numbers::NumberPlan;

    fn berlin() -> ExternalNumber {
        NumberPlan::new("DE")
            .unwrap()
            .normalize("030 1234567")
            .unwrap()
    }

    #[test]
    fn verdict_table() {
        use Verdict::*;
        let cases = [
            ("Müller & Söhne GmbH", Meaningful),
            ("Anna Schmidt", Meaningful),
            ("1&1 Telecom GmbH", Meaningful),
            ("3M Deutschland", Meaningful),
            ("Unbekannt GmbH", Meaningful),
            ("Private Banking AG", Meaningful),
            ("Schmidt, 030 1234567", Meaningful),
            ("李小龙", Meaningful),
            ("", Empty),
            ("   \t\n ", Empty),
            ("\u{a0}", Empty),
            ("0301234567", IsTheNumber),
            ("030 1234567", IsTheNumber),
            ("030-123 45 67", IsTheNumber),
            ("030/1234567", IsTheNumber),
            ("(030) 1234567", IsTheNumber),
            ("+49301234567", IsTheNumber),
            ("+49 30 1234567", IsTheNumber),
            ("+49 (0)30 1234567", IsTheNumber),
            ("0049 30 1234567", IsTheNumber),
            (" 0049301234567 ", IsTheNumber),
            ("030 7654321", NoLetters),
            ("12345", NoLetters),
            ("---", NoLetters),
            ("…", NoLetters),
            ("+", NoLetters),
            ("Unbekannt", Boilerplate("unbekannt")),
            ("UNKNOWN", Boilerplate("unknown")),
            ("Keine Treffer", Boilerplate("keine treffer")),
            ("-- keine Treffer! --", Boilerplate("keine treffer")),
            ("No results", Boilerplate("no results")),
            ("No Results Found.", Boilerplate("no results found")),
            ("anonymous", Boilerplate("anonymous")),
            ("Privat", Boilerplate("privat")),
            ("Private Number", Boilerplate("private number")),
            ("Kein Eintrag", Boilerplate("kein eintrag")),
            ("Keine Einträge", Boilerplate("keine einträge")),
            (
                "Rufnummer unterdrückt",
                Boilerplate("rufnummer unterdrückt"),
            ),
            ("Unbekannt (030 1234567)", Boilerplate("unbekannt")),
            ("Tel.: 030 1234567", Boilerplate("tel")),
            ("N/A", Boilerplate("n a")),
            ("null", Boilerplate("null")),
            ("undefined", Boilerplate("undefined")),
            ("Name:", Boilerplate("name")),
        ];
        let n = berlin();
        for (name, want) in cases {
            assert_eq!(verdict(name, &n), want, "{name:?}");
            assert_eq!(is_meaningful(name, &n), want == Meaningful, "{name:?}");
        }
    }

    #[test]
    fn foreign_number_in_its_own_forms() {
        let zurich = NumberPlan::new("DE")
            .unwrap()
            .normalize("+41 44 123 45 67")
            .unwrap();
        for name in ["+41 44 123 45 67", "0041441234567", "41441234567"] {
            assert_eq!(verdict(name, &zurich), Verdict::IsTheNumber, "{name}");
        }
        assert_eq!(verdict("044 123 45 67", &zurich), Verdict::NoLetters);
    }

    #[test]
    fn boilerplate_list_is_normalised() {
        // Entries must be in the form answers are compared in, or never match.
        for b in BOILERPLATE {
            let normal = b
                .to_lowercase()
                .chars()
                .map(|c| if c.is_alphabetic() { c } else { ' ' })
                .collect::<String>()
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" ");
            assert_eq!(&normal, b);
            assert_eq!(verdict(b, &berlin()), Verdict::Boilerplate(b));
        }
    }
}
