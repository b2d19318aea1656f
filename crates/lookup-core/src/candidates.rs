//! RL3 base-number resolution: shortened forms of a number to try when the
//! exact number finds nothing.
//!
//! Directories usually list only the base number of a business line's number
//! block ("Stammrufnummer", e.g. `+49 1234 5678-0` for the block
//! `+49 1234 5678[0–999]`), so a caller signalling another extension of the
//! block is not found. The product documentation gives the heuristics: the
//! numbers that matter usually end in 0; extensions are never split at a 0;
//! 2-digit extensions step by 10 (-0, -10, -20), 3-digit ones by 10 and 100.
//! The block size is unknown, so every block size up to a configured maximum
//! extension length is assumed in turn.
//!
//! # Rules
//!
//! Let `s` be the subscriber part of the number (the national significant
//! number after the area code) and `max` the maximum extension length.
//!
//! 1. **Only numbers that can belong to a block.** Mobile, pager, personal and
//!    voicemail numbers are personal: a shortened form would name a stranger,
//!    so they get no candidates. Neither do numbers whose area code cannot be
//!    told from the numbering metadata (no grouping rule), nor numbers without
//!    a region (`+800` …), nor `max == 0`.
//! 2. **Cuts.** A cut of length `k` (1 ≤ k ≤ `max`) splits `s` into base and a
//!    `k`-digit extension. A cut is valid only if the extension does not start
//!    with 0 (extensions are never split at a 0: a leading 0 always belongs to
//!    the base or is the central extension itself) and the base keeps at least
//!    2 subscriber digits (so every candidate keeps the complete area code and
//!    has a subscriber part of at least 3 digits, the shortest that German
//!    numbering uses).
//! 3. **Central number** `C(k)`: for each valid cut, base + `0`, the block's
//!    "-0" (1-digit extensions: `…5678-3` → `…5678-0`; 2-digit: `…5678-34` →
//!    `…5678-0`).
//! 4. **Rounding** `R(j)` (1 ≤ j < `max`): the last `j` digits replaced by
//!    zeros, the 10-, 100-, 1000-step within an extension (`…5678-345` →
//!    `…5678-340`, `…5678-300`). It assumes a block of more than `j` digits,
//!    so it is made only if some cut `k` with `j < k ≤ max` is valid. `R(1)` is
//!    the same string as `C(1)` (`…5678-34` as a 1-digit block → `…5678-30`).
//! 5. **Order: most specific first**, i.e. by the block size a candidate
//!    assumes, smallest first: `C(1)`, `C(2)`, `R(2)`, `C(3)`, `R(3)`, `C(4)`, …
//!    (within one block size the candidate keeping more original digits
//!    first). Why: the lookup stops at the first hit, and the wider a cut, the
//!    likelier it lands on another subscriber's number (in a 2-digit block
//!    `5678-0` may be a different company than `56783-0`); the nearest
//!    candidate that is listed is the best guess for the caller.
//! 6. **Clean-up:** the exact number is never a candidate (a number already
//!    ending in 0 rounds to itself), duplicates are dropped (first place
//!    kept), and a candidate must be a possible length for its country and
//!    for the signalled number's type (so a fixed-length plan such as US, CH
//!    or NL keeps only the roundings, which do not change the length).
//!
//! `CANDIDATES.md` in this crate lists signalled numbers with their exact
//! candidate sequences; the unit tests parse that table and assert every row.

use callhost_numbers::{ExternalNumber, NumberPlan};
use phonenumber::metadata::DATABASE;
use phonenumber::{Mode, PhoneNumber, Type};

/// Subscriber digits a base must keep after the area code (see rule 2).
const MIN_KEPT_SUBSCRIBER_DIGITS: usize = 2;

/// Shortened variants of `number` to try after the exact number found
/// nothing, most specific first, each in E.164 form (`+49301234560`).
///
/// E.164 rather than bare national significant numbers, so a caller can turn
/// each into an [`ExternalNumber`] with [`NumberPlan::normalize`] (for the
/// placeholders) whatever the number's country. The rules are in the
/// [module documentation](self).
pub fn base_number_candidates(number: &ExternalNumber, max_extension_len: u8) -> Vec<String> {
    let max = usize::from(max_extension_len);
    if max == 0 {
        return Vec::new();
    }
    // The number's own plan checks candidate lengths; its home country does
    // not matter for '+' input.
    let Some(plan) = number
        .country
        .as_deref()
        .and_then(|c| NumberPlan::new(c).ok())
    else {
        return Vec::new();
    };
    let Some(parts) = split(number) else {
        return Vec::new();
    };

    let nsn = format!("{}{}", parts.area_code, parts.subscriber);
    let s = parts.subscriber.as_bytes();
    let cut_ok =
        |k: usize| k <= max && k + MIN_KEPT_SUBSCRIBER_DIGITS <= s.len() && s[s.len() - k] != b'0';
    let keep = |digits: usize| &nsn[..nsn.len() - digits];

    let mut ordered = Vec::new();
    for block in 1..=max {
        // R(block - 1): rounding inside a block of at least `block` digits.
        let j = block - 1;
        if j >= 1 && (block..=max).any(cut_ok) {
            ordered.push(format!("{}{}", keep(j), "0".repeat(j)));
        }
        // C(block): the block's central number.
        if cut_ok(block) {
            ordered.push(format!("{}0", keep(block)));
        }
    }
    // Pushed by the block size each candidate assumes (rule 5); R(1) repeats
    // C(1) or is the exact number, and both are dropped here.
    let mut out: Vec<String> = Vec::new();
    for candidate in ordered {
        let e164 = format!("+{}{}", parts.country_code, candidate);
        let length_ok = parts.type_lengths.is_empty()
            || u16::try_from(candidate.len()).is_ok_and(|l| parts.type_lengths.contains(&l));
        if candidate != nsn
            && length_ok
            && !out.contains(&e164)
            && plan.normalize(&e164).is_ok_and(|n| n.e164 == e164)
        {
            out.push(e164);
        }
    }
    out
}

/// A number split into country code, area code and subscriber part.
#[derive(Debug, PartialEq, Eq)]
struct Parts {
    country_code: String,
    area_code: String,
    subscriber: String,
    /// Possible national significant number lengths for the number's type;
    /// empty when the type is unknown. [`NumberPlan::normalize`] only checks
    /// the union over all types, which lets 8 digits pass for a 9-digit
    /// Dutch landline (Dutch toll-free numbers may be 8 digits long).
    type_lengths: Vec<u16>,
}

/// Split `number` with libphonenumber's grouping rule; `None` for numbers
/// that cannot belong to a block or whose area code cannot be told (rule 1).
fn split(number: &ExternalNumber) -> Option<Parts> {
    let parsed: PhoneNumber = phonenumber::parse(None, &number.e164).ok()?;
    let number_type = parsed.number_type(&DATABASE);
    if matches!(
        number_type,
        Type::Mobile | Type::Pager | Type::PersonalNumber | Type::Voicemail
    ) {
        return None;
    }
    // By region, not `PhoneNumber::metadata`, which picks the wrong region
    // for shared calling codes such as +39 (see callhost-numbers).
    let type_lengths = match (number_type, number.country.as_deref()) {
        (Type::Unknown, _) | (_, None) => Vec::new(),
        (t, Some(region)) => DATABASE
            .by_id(region)
            .and_then(|meta| meta.descriptors().get(t))
            .map(|d| d.possible_length().to_vec())
            .unwrap_or_default(),
    };
    // libphonenumber's own way to find the area code: the first group after
    // the country code in the international format ("+49 30 123456").
    let formatted = parsed.format().mode(Mode::International).to_string();
    let mut groups = formatted
        .split(|c: char| !c.is_ascii_digit())
        .filter(|g| !g.is_empty());
    let country_code = groups.next()?.to_owned();
    let area_code = groups.next()?.to_owned();
    let subscriber: String = groups.collect();
    let nsn = parsed.national().to_string();
    // No subscriber group means no grouping rule matched: the area code is
    // unknown. A format that reorders digits would not add up to the number.
    if subscriber.is_empty()
        || format!("{area_code}{subscriber}") != nsn
        || number.e164 != format!("+{country_code}{nsn}")
    {
        return None;
    }
    Some(Parts {
        country_code,
        area_code,
        subscriber,
        type_lengths,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn de(raw: &str) -> ExternalNumber {
        NumberPlan::new("DE")
            .unwrap()
            .normalize(raw)
            .unwrap_or_else(|e| panic!("{raw}: {e}"))
    }

    /// One row of CANDIDATES.md.
    struct Row {
        line: usize,
        signalled: String,
        max: u8,
        expected: Vec<String>,
    }

    /// Parse the table rows (`| +49 30 1234567 | 2 | +4930…, +4930… | note |`)
    /// of CANDIDATES.md; header, separator and prose lines are skipped.
    fn table() -> Vec<Row> {
        let text = include_str!("../CANDIDATES.md");
        let mut rows = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let cells: Vec<&str> = line.split('|').map(str::trim).collect();
            // "| a | b | c | d |" splits into ["", a, b, c, d, ""].
            if cells.len() < 5 || !cells[1].starts_with('+') {
                continue;
            }
            let expected = match cells[3] {
                "–" | "-" | "" => Vec::new(),
                list => list.split(',').map(|c| c.trim().to_owned()).collect(),
            };
            rows.push(Row {
                line: i + 1,
                signalled: cells[1].to_owned(),
                max: cells[2]
                    .parse()
                    .unwrap_or_else(|e| panic!("CANDIDATES.md:{}: max {:?}: {e}", i + 1, cells[2])),
                expected,
            });
        }
        rows
    }

    #[test]
    fn candidates_md_table_holds_line_for_line() {
        let rows = table();
        assert!(
            rows.len() >= 48,
            "only {} rows in CANDIDATES.md",
            rows.len()
        );
        let mut signalled: Vec<&str> = rows.iter().map(|r| r.signalled.as_str()).collect();
        signalled.dedup();
        assert!(signalled.len() >= 12, "only {} numbers", signalled.len());
        let mut failures = Vec::new();
        for row in &rows {
            let got = base_number_candidates(&de(&row.signalled), row.max);
            if got != row.expected {
                failures.push(format!(
                    "CANDIDATES.md:{}: {} max {}: expected {:?}, got {:?}",
                    row.line, row.signalled, row.max, row.expected, got
                ));
            }
        }
        assert!(failures.is_empty(), "\n{}", failures.join("\n"));
    }

    #[test]
    fn every_number_has_rows_for_max_1_to_4() {
        let rows = table();
        let mut seen: Vec<(&str, Vec<u8>)> = Vec::new();
        for row in &rows {
            match seen.iter_mut().find(|(s, _)| *s == row.signalled) {
                Some((_, maxes)) => maxes.push(row.max),
                None => seen.push((&row.signalled, vec![row.max])),
            }
        }
        for (number, maxes) in seen {
            assert_eq!(maxes, [1, 2, 3, 4], "{number}");
        }
    }

    #[test]
    fn table_invariants() {
        for row in table() {
            let number = de(&row.signalled);
            let got = base_number_candidates(&number, row.max);
            assert!(
                !got.contains(&number.e164),
                "{}: exact number",
                row.signalled
            );
            let mut unique = got.clone();
            unique.sort();
            unique.dedup();
            assert_eq!(unique.len(), got.len(), "{}: duplicates", row.signalled);
            for c in &got {
                assert!(
                    c.len() <= number.e164.len(),
                    "{c} longer than {}",
                    number.e164
                );
            }
        }
    }

    #[test]
    fn max_zero_means_off() {
        assert!(base_number_candidates(&de("+49 30 1234567"), 0).is_empty());
    }

    #[test]
    fn larger_max_only_adds_at_the_end() {
        // Each extra digit of block size appends; the specific ones stay first.
        let n = de("+49 30 12345678");
        for max in 1..8u8 {
            let shorter = base_number_candidates(&n, max);
            let longer = base_number_candidates(&n, max + 1);
            assert_eq!(longer[..shorter.len()], shorter[..], "max {max}");
        }
    }

    #[test]
    fn large_max_is_bounded_by_the_subscriber_part() {
        let n = de("+49 30 12345678");
        let all = base_number_candidates(&n, 255);
        assert_eq!(all, base_number_candidates(&n, 6));
        assert_eq!(all.last().map(String::as_str), Some("+4930120"));
    }

    #[test]
    fn split_finds_area_codes() {
        let cases = [
            ("+49 30 123456", "49", "30", "123456"),
            ("+49 7022 2797830", "49", "7022", "2797830"),
            ("+49 33208 12345", "49", "33208", "12345"),
            ("+41 44 123 45 67", "41", "44", "1234567"),
            ("+39 06 1234 5678", "39", "06", "12345678"),
            ("+1 212 555 1234", "1", "212", "5551234"),
            ("+43 1 5880123", "43", "1", "5880123"),
        ];
        for (raw, cc, area, sub) in cases {
            let parts = split(&de(raw)).unwrap_or_else(|| panic!("{raw}: not split"));
            assert_eq!(
                (
                    parts.country_code.as_str(),
                    parts.area_code.as_str(),
                    parts.subscriber.as_str()
                ),
                (cc, area, sub),
                "{raw}"
            );
        }
    }

    #[test]
    fn personal_numbers_are_not_split() {
        for raw in ["+49 176 12345678", "+49 151 23456789", "+41 79 123 45 67"] {
            assert_eq!(split(&de(raw)), None, "{raw}");
            assert!(base_number_candidates(&de(raw), 4).is_empty(), "{raw}");
        }
    }

    #[test]
    fn number_without_region_has_no_candidates() {
        let n = ExternalNumber {
            international: "0080012345678".into(),
            e164: "+80012345678".into(),
            national: "0080012345678".into(),
            country: None,
        };
        assert!(base_number_candidates(&n, 4).is_empty());
    }
}
