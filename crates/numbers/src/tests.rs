use super::*;

fn de() -> NumberPlan {
    NumberPlan::new("DE").unwrap()
}

fn ext(international: &str, e164: &str, national: &str, country: &str) -> ExternalNumber {
    ExternalNumber {
        international: international.into(),
        e164: e164.into(),
        national: national.into(),
        country: Some(country.into()),
    }
}

#[test]
fn plan_home_country() {
    assert_eq!(de().home_country(), "DE");
    assert_eq!(NumberPlan::new(" at ").unwrap().home_country(), "AT");
    assert_eq!(
        format!("{:?}", de()),
        "NumberPlan { home_country: \"DE\", country_code: 49 }"
    );
}

#[test]
fn unknown_country_is_named() {
    for bad in ["XX", "", "DEU", "1"] {
        let err = NumberPlan::new(bad).unwrap_err();
        assert_eq!(err, NumberError::UnknownCountry(bad.into()));
        assert!(err.to_string().contains(&format!("{bad:?}")), "{err}");
    }
}

#[test]
fn normalize_de_table() {
    let berlin = ext("004930123456", "+4930123456", "030123456", "DE");
    let zurich = ext("0041446681800", "+41446681800", "0041446681800", "CH");
    let mobile = ext("00491711234567", "+491711234567", "01711234567", "DE");
    let cases = [
        ("+4930123456", &berlin),
        ("004930123456", &berlin),
        ("030123456", &berlin),
        ("030 / 12 34-56", &berlin),
        ("(030) 123.456", &berlin),
        ("+49 (0)30 123456", &berlin),
        ("+41446681800", &zurich),
        ("0041446681800", &zurich),
        ("+41 44 668 18 00", &zurich),
        ("0171/1234567", &mobile),
        ("+49 (0) 171 1234567", &mobile),
    ];
    let plan = de();
    for (raw, want) in cases {
        assert_eq!(&plan.normalize(raw).unwrap(), want, "input {raw:?}");
    }
}

#[test]
fn normalize_keeps_foreign_leading_zero() {
    // Italian numbers keep their 0 after +39; the home trunk prefix must not eat it.
    let n = de().normalize("+39 06 1234 5678").unwrap();
    assert_eq!(
        n,
        ext("00390612345678", "+390612345678", "00390612345678", "IT")
    );
    let it = NumberPlan::new("IT").unwrap();
    assert_eq!(it.normalize("06 1234 5678").unwrap().national, "0612345678");
    assert_eq!(
        it.normalize("+390612345678").unwrap().national,
        "0612345678"
    );
}

#[test]
fn normalize_other_home_countries() {
    let us = NumberPlan::new("US").unwrap();
    let nyc = ext("0012015550123", "+12015550123", "2015550123", "US");
    for raw in ["(201) 555-0123", "1 201 555 0123", "+1 201 555 0123"] {
        assert_eq!(us.normalize(raw).unwrap(), nyc, "input {raw:?}");
    }
    // The home country's own international prefix works too.
    assert_eq!(
        us.normalize("011 49 30 123456").unwrap().e164,
        "+4930123456"
    );
    // Same calling code, other region: dialled nationally.
    let toronto = us.normalize("+1 416 555 0123").unwrap();
    assert_eq!(toronto.national, "4165550123");
    assert_eq!(toronto.country.as_deref(), Some("CA"));

    let ru = NumberPlan::new("RU").unwrap();
    assert_eq!(
        ru.normalize("+7 495 1234567").unwrap().national,
        "84951234567"
    );

    // Non-geographic codes have no country.
    let freephone = de().normalize("+800 1234 5678").unwrap();
    assert_eq!(freephone.country, None);
    assert_eq!(freephone.national, "0080012345678");
}

#[test]
fn normalize_errors_name_the_value() {
    let plan = de();
    for raw in [
        "abc",
        "",
        "+999",
        "   ",
        "+",
        "030 12a456",
        "030+123456",
        "*31#",
        "201",
        // Local number without area code, or country code without '+'.
        "123456",
        "30123456",
        "4930123456",
        "+49 30 12345678901234",
    ] {
        match plan.normalize(raw) {
            Err(err @ NumberError::Invalid { .. }) => {
                assert!(err.to_string().contains(&format!("{raw:?}")), "{err}");
                let NumberError::Invalid { value, .. } = err else {
                    unreachable!()
                };
                assert_eq!(value, raw);
            }
            other => panic!("{raw:?} gave {other:?}"),
        }
    }
}

#[test]
fn normalize_round_trips() {
    let plan = de();
    for raw in [
        "+4930123456",
        "+41446681800",
        "+390612345678",
        "+491711234567",
    ] {
        let n = plan.normalize(raw).unwrap();
        for form in n.forms() {
            assert_eq!(plan.normalize(form).unwrap(), n, "form {form:?}");
        }
    }
}

#[test]
fn clean_strips_separators() {
    assert_eq!(clean(" +49 (0)30 / 123-456.7 ").unwrap(), "+490301234567");
    assert_eq!(clean("*31#").unwrap(), "*31#");
    assert_eq!(clean("\t201\n").unwrap(), "201");
    for bad in ["abc", "", " ", "+", "12+3", "12,3", "２01"] {
        let err = clean(bad).unwrap_err();
        assert!(err.to_string().contains(&format!("{bad:?}")), "{err}");
    }
}

fn pat(text: &str) -> Pattern {
    Pattern::parse(text).unwrap()
}

#[test]
fn pattern_table() {
    let cases: &[(&str, &str, bool)] = &[
        ("*2515906850", "00492515906850", true),
        ("*2515906850", "02515906850", true),
        ("*2515906850", "2515906850", true),
        // Wildcards match digits only: the '+' must be written in the pattern.
        ("*2515906850", "+492515906850", false),
        ("+*2515906850", "+492515906850", true),
        ("20?", "201", true),
        ("20?", "2011", false),
        ("20?", "20", false),
        ("20?", "20+", false),
        ("2*", "2", true),
        ("2*", "2999", true),
        ("2*", "3", false),
        ("2*", "2a", false),
        ("*", "", true),
        ("*", "0123456789", true),
        ("*", "+49", false),
        ("*", "12#", false),
        ("**", "123", true),
        ("?*?", "1", false),
        ("?*?", "12", true),
        ("1*2*3", "1112223", true),
        ("1*2*3", "132", false),
        ("+49*", "+4930123456", true),
        ("0049*", "+4930123456", false),
        ("123", "123", true),
        ("123", "1234", false),
        ("123", "", false),
    ];
    for &(p, number, want) in cases {
        assert_eq!(pat(p).matches(number), want, "{p:?} vs {number:?}");
    }
}

/// Numbers of 63 digits and more take the heap path; both agree.
#[test]
fn long_numbers_match_like_short_ones() {
    for len in [62, 63, 64, 65, 200] {
        let number = "7".repeat(len);
        assert!(pat("7*7").matches(&number), "length {len}");
        assert!(pat("*").matches(&number), "length {len}");
        assert!(!pat("7*8").matches(&number), "length {len}");
        let exact = "?".repeat(len);
        assert!(pat(&exact).matches(&number), "length {len}");
        assert!(!pat(&exact).matches(&number[1..]), "length {len}");
    }
}

#[test]
fn bad_patterns_are_named() {
    for (text, bad_char) in [
        ("2a", Some('a')),
        ("", None),
        ("20 1", Some(' ')),
        ("#1", Some('#')),
    ] {
        let err = Pattern::parse(text).unwrap_err();
        let NumberError::BadPattern { pattern, reason } = &err else {
            panic!("{err:?}")
        };
        assert_eq!(pattern, text);
        if let Some(c) = bad_char {
            assert!(reason.contains(&format!("{c:?}")), "{reason}");
        }
        assert!(err.to_string().contains(&format!("{text:?}")), "{err}");
    }
}

#[test]
fn pattern_text_display_and_serde() {
    let p = pat("+49**30?");
    assert_eq!(p.as_str(), "+49**30?");
    assert_eq!(p.to_string(), "+49**30?");
    assert_eq!("2*".parse::<Pattern>().unwrap(), pat("2*"));

    let json = serde_json::to_string(&vec![pat("2*"), pat("00?")]).unwrap();
    assert_eq!(json, r#"["2*","00?"]"#);
    let back: Vec<Pattern> = serde_json::from_str(&json).unwrap();
    assert_eq!(back, vec![pat("2*"), pat("00?")]);

    let err = serde_json::from_str::<Pattern>(r#""2a""#).unwrap_err();
    assert!(err.to_string().contains("\"2a\""), "{err}");
    assert!(serde_json::from_str::<Pattern>("12").is_err());
}

#[test]
fn any_matches_forms() {
    let n = de().normalize("+49 251 5906850").unwrap();
    assert!(any_matches(&[pat("*2515906850")], n.forms()));
    assert!(any_matches(&[pat("9"), pat("0251*")], n.forms()));
    assert!(!any_matches(&[pat("9"), pat("0252*")], n.forms()));
    assert!(!any_matches(&[], n.forms()));
    assert!(any_matches(&[pat("20?")], ["201"]));
    let owned = [String::from("x"), String::from("209")];
    assert!(any_matches(&[pat("20?")], owned.iter().map(String::as_str)));
}

/// Reference matcher: plain recursion, exponential but obviously right.
fn naive(p: &[u8], s: &[u8]) -> bool {
    match p.split_first() {
        None => s.is_empty(),
        Some((b'*', rest)) => {
            naive(rest, s) || (s.first().is_some_and(u8::is_ascii_digit) && naive(p, &s[1..]))
        }
        Some((b'?', rest)) => s.first().is_some_and(u8::is_ascii_digit) && naive(rest, &s[1..]),
        Some((c, rest)) => s.first() == Some(c) && naive(rest, &s[1..]),
    }
}

#[test]
fn matcher_agrees_with_naive_reference() {
    // Small alphabets so matches are frequent; a fixed LCG keeps it reproducible.
    let mut seed: u64 = 0x2545_f491_4f6c_dd1d;
    let mut next = move |n: usize| {
        seed = seed
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        ((seed >> 33) as usize) % n
    };
    let pattern_chars = b"12+?*";
    let number_chars = b"12+#";
    for _ in 0..20_000 {
        let p: Vec<u8> = (0..1 + next(7))
            .map(|_| pattern_chars[next(pattern_chars.len())])
            .collect();
        let s: Vec<u8> = (0..next(9))
            .map(|_| number_chars[next(number_chars.len())])
            .collect();
        let p = std::str::from_utf8(&p).unwrap();
        let s = std::str::from_utf8(&s).unwrap();
        assert_eq!(
            pat(p).matches(s),
            naive(p.as_bytes(), s.as_bytes()),
            "{p:?} vs {s:?}"
        );
    }
}
