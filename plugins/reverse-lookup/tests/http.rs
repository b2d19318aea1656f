//! Web and CRM providers against a local server that answers like the real
//! services, plus the race, the budget, the cache, spam and quotas.

mod support;

use std::time::{Duration, Instant};

use callhost_plugin_sdk::{
    abi_stable::std_types::ROption,
    testing::{external_de, party, setup, user},
    CallSetup, Decision, Module as _, PartyKind, Setup,
};
use support::{action, decide, instance, name, refusal, steps, test, Services};

/// A Das-Örtliche-shaped provider at the local server.
fn phone_book(base: &str) -> String {
    format!(
        r#"
[[providers]]
id = "oertliche"
template = "das-oertliche"
url = "{base}/oertliche?ph={{tel}}"
"#
    )
}

#[tokio::test]
async fn a_german_phone_book_page_gives_name_and_company() {
    let s = Services::start();
    let dir = tempfile::tempdir().unwrap();
    let rl = instance(dir.path(), &phone_book(&s.base));
    let result = test(&rl, "030 1234567").await;
    assert_eq!(result["result"], "success", "{result:#}");
    assert_eq!(name(&result).as_deref(), Some("Müller & Söhne"));
    assert_eq!(result["lookup"]["found"]["company"], "Müller Bau GmbH");
    assert_eq!(result["number"]["e164"], "+49301234567");
    assert_eq!(s.seen.all(), ["/oertliche?ph=0301234567"]);
}

#[tokio::test]
async fn incoming_calls_get_the_display_and_name_fields() {
    let s = Services::start();
    let dir = tempfile::tempdir().unwrap();
    let rl = instance(
        dir.path(),
        &format!(
            "display = \"{{name}} ({{company}})\"\nprefix_callee_name = true\n{}",
            phone_book(&s.base)
        ),
    );
    let call = setup(external_de("0301234567"), user("anna", "Anna", "201"));
    let decision = decide(&rl, &call).await;
    assert_eq!(
        decision.display.as_ref().map(|d| d.as_str()),
        Some("Anna: Müller & Söhne (Müller Bau GmbH)").into()
    );
    assert_eq!(
        decision.company.as_ref().map(|d| d.as_str()),
        Some("Müller Bau GmbH").into()
    );

    // RL18: a call to something that is neither a user nor a group is left alone.
    let to_number = setup(external_de("0301234567"), party(PartyKind::Unknown, "999"));
    assert!(decide(&rl, &to_number).await.display.is_none());

    // RL2: an outgoing call's name goes to the caller (callee_name), not the display.
    let out = setup(user("anna", "Anna", "201"), external_de("0301234567"));
    let decision = decide(&rl, &out).await;
    assert!(decision.display.is_none());
    assert_eq!(
        decision.callee_name.as_ref().map(|d| d.as_str()),
        Some("Müller & Söhne").into()
    );
}

#[tokio::test]
async fn tel_search_ch_atom_with_key_and_the_key_never_shows() {
    let s = Services::start();
    let dir = tempfile::tempdir().unwrap();
    let rl = instance(
        dir.path(),
        &format!(
            r#"
[[providers]]
id = "ch"
template = "tel-search-ch"
url = "{}/telsearch/api/?was={{tel}}&key={{api_key}}"
secrets.api_key = "KEY-123"
"#,
            s.base
        ),
    );
    let result = test(&rl, "+41 44 123 45 67").await;
    assert_eq!(name(&result).as_deref(), Some("Hans Muster"), "{result:#}");
    assert_eq!(result["lookup"]["found"]["company"], "Schreiner");
    let text = result.to_string();
    assert!(!text.contains("KEY-123"), "the key leaked: {text}");
    assert!(text.contains("key=********"), "{text}");
    // The effective configuration masks it too.
    let shown = toml::to_string(&rl_config(&rl)).unwrap();
    assert!(!shown.contains("KEY-123"), "{shown}");

    // Country-specific: a German caller never asks the Swiss book.
    let before = s.seen.count("/telsearch");
    let german = test(&rl, "030 1234567").await;
    assert_eq!(s.seen.count("/telsearch"), before);
    assert!(steps(&german)
        .iter()
        .any(|(p, r)| p == "ch" && r.starts_with("skipped: not for callers from DE")));
}

fn rl_config(rl: &reverse_lookup::ReverseLookup) -> reverse_lookup::config::Config {
    rl.config().clone()
}

#[tokio::test]
async fn whitepages_pipedrive_salesforce_and_dynamics_answer_in_their_shapes() {
    let s = Services::start();
    let dir = tempfile::tempdir().unwrap();
    let base = &s.base;
    let rl = instance(
        dir.path(),
        &format!(
            r#"
[[providers]]
id = "wp"
template = "whitepages-pro"
url = "{base}/whitepages/3.0/phone?phone={{tel}}&api_key={{api_key}}"
secrets.api_key = "WP-KEY"

[[providers]]
id = "pd"
template = "pipedrive"
url = "{base}/pipedrive"
secrets.api_token = "PD-TOKEN"

[[providers]]
id = "sf"
template = "salesforce"
url = "{base}/salesforce"
secrets.access_token = "SF-TOKEN"

[[providers]]
id = "d365"
template = "dynamics"
url = "{base}/dynamics"
secrets.access_token = "D365-TOKEN"
"#
        ),
    );
    let cases = [
        ("+1 206 555 0100", "wp", "Walt Page", None),
        ("089 123456", "pd", "Petra Pipe", Some("Pipe Works GmbH")),
        ("040 123456", "sf", "Sally Force", Some("Cloud AG")),
        ("0211 12345", "d365", "Dana Dyn", Some("Dyn Corp")),
    ];
    for (number, provider, expected, company) in cases {
        let result = test(&rl, number).await;
        assert_eq!(
            result["lookup"]["provider"], provider,
            "{number}: {result:#}"
        );
        assert_eq!(name(&result).as_deref(), Some(expected), "{number}");
        if let Some(company) = company {
            assert_eq!(result["lookup"]["found"]["company"], company, "{number}");
        }
        let text = result.to_string();
        for secret in ["WP-KEY", "PD-TOKEN", "SF-TOKEN", "D365-TOKEN"] {
            assert!(!text.contains(secret), "{secret} leaked: {text}");
        }
    }
}

#[tokio::test]
async fn refused_credentials_are_an_error_not_a_miss() {
    let s = Services::start();
    let dir = tempfile::tempdir().unwrap();
    let rl = instance(
        dir.path(),
        &format!(
            "[[providers]]\nid = \"sf\"\ntemplate = \"salesforce\"\nurl = \"{}/salesforce\"\nsecrets.access_token = \"WRONG\"\n",
            s.base
        ),
    );
    let result = test(&rl, "040 123456").await;
    assert_eq!(result["result"], "error", "{result:#}");
    assert!(steps(&result)
        .iter()
        .any(|(p, r)| p == "sf" && r.contains("credentials were refused")));
}

#[tokio::test]
async fn the_fastest_success_wins_and_a_hanging_provider_cannot_hold_the_call() {
    let s = Services::start();
    let dir = tempfile::tempdir().unwrap();
    let base = &s.base;
    let rule = r#"rules = [{ name = "n", field = "display", matcher = '<span id="name">([^<]+)</span>' }]"#;
    let rl = instance(
        dir.path(),
        &format!(
            r#"
budget_ms = 400
[[providers]]
id = "hangs"
kind = "http"
url = "{base}/hang?n={{tel}}"
{rule}
timeout_ms = 5000

[[providers]]
id = "breaks"
kind = "http"
url = "{base}/error?n={{tel}}"
{rule}

[[providers]]
id = "slow"
kind = "http"
url = "{base}/slow?ms=200&n={{tel}}"
{rule}

[[providers]]
id = "fast"
kind = "http"
url = "{base}/slow?ms=20&n={{tel}}"
{rule}
"#
        ),
    );
    let result = test(&rl, "030 4444444").await;
    assert_eq!(name(&result).as_deref(), Some("Slow 20"), "{result:#}");
    let steps = steps(&result);
    let of = |p: &str| {
        steps
            .iter()
            .rev()
            .find(|(id, _)| id == p)
            .unwrap()
            .1
            .clone()
    };
    assert_eq!(of("fast"), "won");
    assert!(
        of("breaks").starts_with("error: HTTP status 500"),
        "{steps:?}"
    );
    assert_eq!(of("hangs"), "cancelled");
    assert_eq!(of("slow"), "cancelled");

    // Only the hanging provider left: the budget ends the lookup.
    let dir = tempfile::tempdir().unwrap();
    let rl = instance(
        dir.path(),
        &format!(
            "budget_ms = 300\n[[providers]]\nid = \"hangs\"\nkind = \"http\"\nurl = \"{base}/hang?n={{tel}}\"\n{rule}\ntimeout_ms = 5000\n"
        ),
    );
    let started = Instant::now();
    let call = setup(external_de("0304444444"), user("anna", "Anna", "201"));
    let decision = decide(&rl, &call).await;
    let took = started.elapsed();
    assert!(decision.display.is_none());
    // 300 ms budget; generous slack for a loaded 2-core machine, far below
    // the 5 s the provider's own timeout would allow.
    assert!(took < Duration::from_millis(1500), "took {took:?}");
    let history = action(&rl, "history", &[]).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut history = history;
    while history["lookups"].as_array().unwrap().is_empty() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
        history = action(&rl, "history", &[]).await.unwrap();
    }
    let attempts = history["lookups"][0]["attempts"].to_string();
    assert!(attempts.contains("timed out"), "{history:#}");
}

#[tokio::test]
async fn an_answer_that_is_the_number_itself_is_not_a_name() {
    let s = Services::start();
    let dir = tempfile::tempdir().unwrap();
    let rl = instance(dir.path(), &phone_book(&s.base));
    let result = test(&rl, "030 7777777").await;
    assert!(name(&result).is_none(), "{result:#}");
    assert!(result["result"].as_str().unwrap().starts_with("warning"));
    let notes = result["lookup"]["steps"].to_string();
    assert!(notes.contains("IsTheNumber"), "{notes}");
}

#[tokio::test]
async fn base_numbers_find_a_blocks_listed_number() {
    let s = Services::start();
    let dir = tempfile::tempdir().unwrap();
    let rl = instance(dir.path(), &phone_book(&s.base));
    // 030 555-34: the book lists only 030 555-0.
    let result = test(&rl, "030 55534").await;
    assert_eq!(
        name(&result).as_deref(),
        Some("Zentrale Beispiel AG"),
        "{result:#}"
    );
    let asked: Vec<String> = s.seen.all();
    assert_eq!(
        asked.first().map(String::as_str),
        Some("/oertliche?ph=03055534")
    );
    assert_eq!(
        asked.last().map(String::as_str),
        Some("/oertliche?ph=0305550")
    );

    // With base numbers off, the same caller stays unknown.
    let dir = tempfile::tempdir().unwrap();
    let off = instance(
        dir.path(),
        &format!("max_extension_length = 0\n{}", phone_book(&s.base)),
    );
    assert!(name(&test(&off, "030 55534").await).is_none());
}

#[tokio::test]
async fn the_cache_answers_repeats_remembers_misses_and_purges() {
    let s = Services::start();
    let dir = tempfile::tempdir().unwrap();
    let rl = instance(
        dir.path(),
        &format!("max_extension_length = 0\n{}", phone_book(&s.base)),
    );
    test(&rl, "030 1234567").await;
    let second = test(&rl, "030 1234567").await;
    assert_eq!(second["lookup"]["source"], "cache", "{second:#}");
    assert_eq!(name(&second).as_deref(), Some("Müller & Söhne"));
    assert_eq!(s.seen.count("/oertliche?ph=0301234567"), 1);

    // Negative: a number no one knows is asked once.
    test(&rl, "030 2222222").await;
    let again = test(&rl, "030 2222222").await;
    assert!(steps(&again)
        .iter()
        .any(|(p, r)| p == "oertliche" && r == "negative"));
    assert_eq!(s.seen.count("/oertliche?ph=0302222222"), 1);

    // `--fresh` asks the provider even so.
    test_fresh(&rl, "030 1234567").await;
    assert_eq!(s.seen.count("/oertliche?ph=0301234567"), 2);

    let purged = action(&rl, "purge", &["cache"]).await.unwrap();
    assert_eq!(purged["cache_entries_deleted"], 2, "{purged}");
    test(&rl, "030 1234567").await;
    assert_eq!(s.seen.count("/oertliche?ph=0301234567"), 3);
}

async fn test_fresh(rl: &reverse_lookup::ReverseLookup, number: &str) -> serde_json::Value {
    action(rl, "test", &[number, "--fresh"]).await.unwrap()
}

#[tokio::test]
async fn a_stale_entry_is_served_at_once_and_refreshed_in_the_background() {
    let s = Services::start();
    let dir = tempfile::tempdir().unwrap();
    let rl = instance(
        dir.path(),
        &format!(
            "max_extension_length = 0\ncache.refresh_after = \"0s\"\n{}",
            phone_book(&s.base)
        ),
    );
    test(&rl, "030 1234567").await;
    let served = test(&rl, "030 1234567").await;
    assert_eq!(served["lookup"]["source"], "cache");
    assert!(
        steps(&served).iter().any(|(_, r)| r == "stale"),
        "{served:#}"
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    while s.seen.count("/oertliche?ph=0301234567") < 2 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(s.seen.count("/oertliche?ph=0301234567"), 2, "no refresh");
}

#[tokio::test]
async fn spam_scores_show_flag_or_reject() {
    let s = Services::start();
    let tellows = format!(
        r#"
[[providers]]
id = "tellows"
template = "tellows"
url = "{}/tellows/basic/num/{{tel}}?json=1&partner={{partner}}&apikey={{api_key}}"
secrets = {{ partner = "callhost", api_key = "TELLOWS-KEY" }}
"#,
        s.base
    );
    let spammer = setup(external_de("0309999999"), user("anna", "Anna", "201"));
    let honest = setup(external_de("0301111111"), user("anna", "Anna", "201"));

    let dir = tempfile::tempdir().unwrap();
    let show = instance(dir.path(), &tellows);
    let decision = decide(&show, &spammer).await;
    assert_eq!(
        decision.display.as_ref().map(|d| d.as_str()),
        Some("SPAM? 0309999999 (8/9)").into()
    );
    assert!(decision.reject.is_none() && decision.flag.is_none());
    assert!(
        decide(&show, &honest).await.display.is_none(),
        "score 4 < 7"
    );

    let dir = tempfile::tempdir().unwrap();
    let flag = instance(dir.path(), &format!("spam.action = \"flag\"\n{tellows}"));
    let decision = decide(&flag, &spammer).await;
    assert!(decision.flag.is_some() && decision.reject.is_none());

    let dir = tempfile::tempdir().unwrap();
    let reject = instance(
        dir.path(),
        &format!("spam.action = \"reject\"\nspam.threshold = 8\n{tellows}"),
    );
    let decision = decide(&reject, &spammer).await;
    let reason = decision
        .reject
        .as_ref()
        .map(|r| r.to_string())
        .into_option();
    assert_eq!(
        reason.as_deref(),
        Some("spam score 8 from tellows (threshold 8)")
    );
    assert!(decide(&reject, &honest).await.reject.is_none());
}

#[tokio::test]
async fn the_monthly_quota_and_rate_limit_stop_requests() {
    let s = Services::start();
    let dir = tempfile::tempdir().unwrap();
    let rl = instance(
        dir.path(),
        &format!(
            "max_extension_length = 0\ncache.enabled = false\n{}monthly_quota = 2\n",
            phone_book(&s.base)
        ),
    );
    for _ in 0..2 {
        assert!(name(&test(&rl, "030 1234567").await).is_some());
    }
    let third = test(&rl, "030 1234567").await;
    assert!(name(&third).is_none());
    assert!(
        steps(&third)
            .iter()
            .any(|(p, r)| p == "oertliche" && r.starts_with("skipped: monthly quota exhausted")),
        "{third:#}"
    );
    assert_eq!(s.seen.count("/oertliche"), 2);
    let stats = action(&rl, "stats", &[]).await.unwrap();
    assert_eq!(stats["requests_this_month"]["oertliche"], 2, "{stats}");

    let dir = tempfile::tempdir().unwrap();
    let limited = instance(
        dir.path(),
        &format!(
            "max_extension_length = 0\ncache.enabled = false\n{}rate_limit_per_minute = 1\n",
            phone_book(&s.base)
        ),
    );
    test(&limited, "030 1234567").await;
    let second = test(&limited, "030 1234567").await;
    assert!(steps(&second)
        .iter()
        .any(|(_, r)| r.starts_with("skipped: rate limit")));
}

#[tokio::test]
async fn history_and_live_list_lookups() {
    let s = Services::start();
    let dir = tempfile::tempdir().unwrap();
    let rl = instance(dir.path(), &phone_book(&s.base));
    let first = test(&rl, "030 1234567").await;
    let id = first["lookup"]["id"].as_i64().unwrap();
    let history = action(&rl, "history", &[]).await.unwrap();
    let entry = &history["lookups"][0];
    assert_eq!(entry["number"], "+49301234567");
    assert_eq!(entry["provider"], "oertliche");
    assert_eq!(entry["name"], "Müller & Söhne");
    assert_eq!(entry["origin"], "test");

    // The feed returns what came after the id it is given.
    let after = id.to_string();
    let args = [after.as_str(), "5"];
    let (feed, ()) = tokio::join!(action(&rl, "live", &args), async {
        tokio::time::sleep(Duration::from_millis(100)).await;
        test(&rl, "030 2222222").await;
    });
    let feed = feed.unwrap();
    let lookups = feed["lookups"].as_array().unwrap();
    assert_eq!(lookups.len(), 1, "{feed:#}");
    assert_eq!(lookups[0]["number"], "+49302222222");
    assert_eq!(feed["next"], lookups[0]["id"]);
    // Nothing new: the feed waits, then answers empty.
    let next = feed["next"].to_string();
    let quiet = action(&rl, "live", &[&next, "1"]).await.unwrap();
    assert!(quiet["lookups"].as_array().unwrap().is_empty());

    let purged = action(&rl, "purge", &["history"]).await.unwrap();
    assert_eq!(purged["history_entries_deleted"], 2);
}

#[test]
fn bad_configurations_are_refused_naming_the_field() {
    let bad_rule = refusal(
        r#"
[[providers]]
id = "x"
kind = "http"
url = "http://127.0.0.1/?n={tel}"
rules = [{ name = "surname", field = "last_name", matcher = "(unclosed" }]
"#,
    );
    assert!(bad_rule.starts_with("providers[0].rules[0]"), "{bad_rule}");
    assert!(bad_rule.contains("\"surname\""), "{bad_rule}");
    assert!(bad_rule.contains("invalid matcher regex"), "{bad_rule}");

    let missing_key = refusal("[[providers]]\nid = \"ch\"\ntemplate = \"tel-search-ch\"\n");
    assert!(
        missing_key.starts_with("providers[0].secrets.api_key: missing"),
        "{missing_key}"
    );

    let typo = refusal(
        "[[providers]]\nid = \"x\"\nkind = \"http\"\nurl = \"http://h/?n={tle}\"\nrules = [{ name = \"n\", field = \"display\", matcher = \"(.*)\" }]\n",
    );
    assert!(typo.starts_with("providers[0].url"), "{typo}");
    assert!(typo.contains("{tle}"), "{typo}");

    let twice = refusal("[[providers]]\nid = \"a\"\ntemplate = \"goyellow\"\n[[providers]]\nid = \"a\"\ntemplate = \"herold\"\n");
    assert!(twice.starts_with("providers[1].id"), "{twice}");

    let template = refusal("display = \"{nmae}\"");
    assert!(
        template.starts_with("display: unknown placeholder `{nmae}`"),
        "{template}"
    );

    let country =
        refusal("[[providers]]\nid = \"a\"\ntemplate = \"goyellow\"\ncountry = \"Germany\"\n");
    assert!(country.starts_with("providers[0].country"), "{country}");

    let ttl = refusal("cache.positive_ttl = \"forever\"");
    assert!(ttl.starts_with("cache.positive_ttl"), "{ttl}");
}

#[tokio::test]
async fn profiles_and_defaults_are_actions() {
    let dir = tempfile::tempdir().unwrap();
    let rl = instance(dir.path(), "");
    let profiles = action(&rl, "profiles", &[]).await.unwrap();
    let names: Vec<&str> = profiles["profiles"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["template"].as_str().unwrap())
        .collect();
    for expected in [
        "das-oertliche",
        "11880",
        "goyellow",
        "herold",
        "tel-search-ch",
        "etv",
        "detelefoongids",
        "paginebianche",
        "whitepages-pro",
        "tellows",
    ] {
        assert!(
            names.contains(&expected),
            "{expected} missing from {names:?}"
        );
    }
    let defaults = action(&rl, "defaults", &["tel-search-ch", "web"])
        .await
        .unwrap();
    let toml_text = defaults["toml"].as_str().unwrap();
    assert!(toml_text.contains("variant = \"web\""), "{toml_text}");
    // The snippet is a working configuration.
    instance(tempfile::tempdir().unwrap().path(), toml_text);
}

/// What reached a server: one line per request, `path?query` and then
/// every header as `name: value`.
type Received = std::sync::Arc<std::sync::Mutex<Vec<String>>>;

/// A server on its own port that records everything it receives and
/// answers like a phone book that knows everybody.
fn recording_server() -> (String, Received) {
    let received = Received::default();
    let record = received.clone();
    let app = axum::Router::new().fallback(move |request: axum::extract::Request| {
        let record = record.clone();
        async move {
            let mut line = request.uri().to_string();
            for (name, value) in request.headers() {
                line.push_str(&format!("\n{name}: {}", value.to_str().unwrap_or("?")));
            }
            record.lock().unwrap().push(line);
            axum::Json(serde_json::json!({
                "success": true,
                "data": {"items": [{"item": {"name": "Stolen Name"}}]},
                "searchRecords": [{"FirstName": "Stolen", "LastName": "Name"}],
                "html": "<span id=\"name\">Stolen Name</span>"
            }))
        }
    });
    (support::serve(app), received)
}

/// A server that redirects every request to `target`, keeping path and
/// query (an open redirect on a provider's host).
fn redirecting_server(target: String) -> String {
    let app = axum::Router::new().fallback(move |uri: axum::http::Uri| {
        let location = format!("{target}{uri}");
        async move { (axum::http::StatusCode::FOUND, [("location", location)]) }
    });
    support::serve(app)
}

#[tokio::test]
async fn a_redirect_to_another_origin_carries_no_credential_there() {
    let (elsewhere, received) = recording_server();
    let provider = redirecting_server(elsewhere.clone());
    let authority = provider.strip_prefix("http://").unwrap();
    let rule = r#"rules = [{ name = "n", field = "display", matcher = '<span id=\\"name\\">([^<]+)</span>' }]"#;
    let dir = tempfile::tempdir().unwrap();
    let rl = instance(
        dir.path(),
        &format!(
            r#"
[[providers]]
id = "keys"
kind = "http"
url = "{provider}/phonebook?n={{tel}}&key={{query_key}}"
headers = {{ "X-Api-Key" = "{{header_key}}" }}
auth = "bearer"
secrets = {{ token = "BEARER-SECRET", query_key = "QUERY-SECRET", header_key = "HEADER-SECRET" }}
{rule}

[[providers]]
id = "basic"
kind = "http"
url = "{provider}/phonebook?n={{tel}}"
auth = "basic"
secrets = {{ user = "alice", password = "BASIC-SECRET" }}
{rule}

[[providers]]
id = "userinfo"
kind = "http"
url = "http://alice:{{pw}}@{authority}/phonebook?n={{tel}}"
secrets = {{ pw = "USERINFO-SECRET" }}
{rule}

[[providers]]
id = "pd"
template = "pipedrive"
url = "{provider}/pipedrive"
secrets.api_token = "PIPEDRIVE-SECRET"

[[providers]]
id = "sf"
template = "salesforce"
url = "{provider}/salesforce"
secrets.access_token = "SALESFORCE-SECRET"
"#
        ),
    );
    let result = test(&rl, "030 1234567").await;
    // Nothing at all reached the other server, so no secret did.
    let received = received.lock().unwrap().clone();
    assert!(received.is_empty(), "reached {elsewhere}: {received:#?}");
    assert_eq!(result["result"], "error", "{result:#}");
    for id in ["keys", "basic", "userinfo", "pd", "sf"] {
        let step = result["lookup"]["steps"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["provider"] == id && s["step"] == "provider")
            .unwrap_or_else(|| panic!("no request by {id}: {result:#}"));
        let outcome = step["result"].as_str().unwrap();
        assert!(
            outcome.starts_with("error") && outcome.contains("redirect to another origin"),
            "{id}: {outcome}"
        );
    }
    let text = result.to_string();
    for secret in [
        "BEARER-SECRET",
        "QUERY-SECRET",
        "HEADER-SECRET",
        "BASIC-SECRET",
        "USERINFO-SECRET",
        "PIPEDRIVE-SECRET",
        "SALESFORCE-SECRET",
    ] {
        assert!(
            !text.contains(secret),
            "{secret} in the test output: {text}"
        );
    }
}

#[tokio::test]
async fn a_redirect_within_the_providers_origin_is_followed() {
    let s = Services::start();
    let dir = tempfile::tempdir().unwrap();
    let rl = instance(
        dir.path(),
        &format!(
            "[[providers]]\nid = \"moved\"\ntemplate = \"das-oertliche\"\nurl = \"{}/moved?ph={{tel}}\"\n",
            s.base
        ),
    );
    let result = test(&rl, "030 1234567").await;
    assert_eq!(
        name(&result).as_deref(),
        Some("Müller & Söhne"),
        "{result:#}"
    );
    assert_eq!(
        s.seen.all(),
        ["/moved?ph=0301234567", "/oertliche?ph=0301234567"]
    );
}

/// `call_setup` answered without a future: the host runs it on its call
/// thread (`quick_setup`), so this is the no-hop path.
fn answered_at_once(rl: &reverse_lookup::ReverseLookup, call: &CallSetup) -> Option<Decision> {
    match rl.call_setup(call) {
        Setup::Ready(decision) => Some(decision),
        Setup::Later(_) => None,
    }
}

#[tokio::test]
async fn a_cached_or_known_caller_is_answered_at_once_without_the_disk() {
    let s = Services::start();
    let dir = tempfile::tempdir().unwrap();
    let rl = instance(
        dir.path(),
        &format!("max_extension_length = 0\n{}", phone_book(&s.base)),
    );
    let call = setup(external_de("0301234567"), user("anna", "Anna", "201"));
    // First call: nothing in memory, so the provider is asked later.
    assert!(answered_at_once(&rl, &call).is_none());
    decide(&rl, &call).await;
    // Repeats come from the cache in memory, at once, without the provider.
    let again = answered_at_once(&rl, &call).expect("a cache hit answers at once");
    assert_eq!(
        again.display.as_ref().map(|d| d.as_str()),
        Some("Müller & Söhne").into()
    );
    assert_eq!(s.seen.count("/oertliche?ph=0301234567"), 1);
    // A miss the provider reported is remembered the same way.
    let unknown = setup(external_de("0302222222"), user("anna", "Anna", "201"));
    decide(&rl, &unknown).await;
    let miss = answered_at_once(&rl, &unknown).expect("a negative entry answers at once");
    assert!(miss.display.is_none());
    // After a purge the cache is empty in memory too.
    action(&rl, "purge", &["cache"]).await.unwrap();
    assert!(answered_at_once(&rl, &call).is_none());
    // A name the host's address book has needs nobody.
    let mut known = external_de("0309999999");
    known.name = ROption::RSome("Known Kunde".into());
    let decision = answered_at_once(&rl, &setup(known, user("anna", "Anna", "201")))
        .expect("the address book answers at once");
    assert_eq!(
        decision.display.as_ref().map(|d| d.as_str()),
        Some("Known Kunde").into()
    );
}

#[tokio::test]
async fn a_calls_lookup_still_queued_when_the_instance_goes_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let rl = instance(dir.path(), "");
    let mut known = external_de("0309999999");
    known.name = ROption::RSome("Known Kunde".into());
    answered_at_once(&rl, &setup(known, user("anna", "Anna", "201")))
        .expect("the address book answers at once");
    // Gone before the history writer's next round (every 20 ms).
    drop(rl);
    let rl = instance(dir.path(), "");
    let history = action(&rl, "history", &[]).await.unwrap();
    let lookups = history["lookups"].as_array().unwrap();
    assert_eq!(lookups.len(), 1, "{history:#}");
    assert_eq!(lookups[0]["origin"], "call");
    assert_eq!(lookups[0]["name"], "Known Kunde");
}
