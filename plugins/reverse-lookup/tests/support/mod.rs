//! Shared by the reverse-lookup tests: a local HTTP server that answers like
//! the public services (same paths, parameters, authentication and answer
//! shapes), and helpers to build and drive an instance in-process.

#![allow(dead_code)]

use std::{
    net::SocketAddr,
    path::Path,
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::{
    extract::{Path as UrlPath, Query},
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Response},
    routing::get,
    Router,
};
use callhost_plugin_sdk::{testing, Action, Actions, CallSetup, Decision, Module, Setup};
use reverse_lookup::{config::Config, ReverseLookup};
use serde_json::{json, Value};

/// Requests the server saw, as "path?query".
#[derive(Clone, Default)]
pub struct Seen(Arc<Mutex<Vec<String>>>);

impl Seen {
    pub fn count(&self, prefix: &str) -> usize {
        self.0
            .lock()
            .unwrap()
            .iter()
            .filter(|r| r.starts_with(prefix))
            .count()
    }

    pub fn all(&self) -> Vec<String> {
        self.0.lock().unwrap().clone()
    }
}

pub struct Services {
    pub base: String,
    pub seen: Seen,
}

type Params = Query<std::collections::HashMap<String, String>>;

fn html(body: String) -> Response {
    (
        [("content-type", "text/html; charset=utf-8")],
        format!("<!DOCTYPE html><html><head><title>Inverssuche</title></head><body>{body}</body></html>"),
    )
        .into_response()
}

/// A German phone-book result page shaped like Das Örtliche's.
async fn phone_book(Query(q): Params) -> Response {
    let entry = |name: &str, company: &str| {
        html(format!(
            r#"<div class="hit"><a href="/d/1" class="hitlnk_name" title="{name}">
                 <span class="st-treff-name">{name}</span></a>
               <div class="hit_company"> {company} </div>
               <address>Hauptstr. 1, 10115 Berlin</address></div>"#
        ))
    };
    match q.get("ph").map(String::as_str) {
        Some("0301234567") => entry("Müller &amp; Söhne", "Müller Bau GmbH"),
        // Only a block's base number is listed (RL3).
        Some("0305550") => entry("Zentrale Beispiel AG", "Beispiel AG"),
        // A page that names the number itself (RL19).
        Some("0307777777") => entry("030 7777777", ""),
        _ => html("<p>Leider keine Treffer für Ihre Suche.</p>".into()),
    }
}

/// tel.search.ch's API: Atom with the `tel:` namespace; the key is required.
async fn tel_search(Query(q): Params) -> Response {
    if q.get("key").map(String::as_str) != Some("KEY-123") {
        return (StatusCode::FORBIDDEN, "invalid key").into_response();
    }
    let entries = match q.get("was").map(String::as_str) {
        Some("+41441234567") => {
            r#"<entry>
      <id>urn:uuid:ca71838e</id>
      <updated>2026-11-01T00:00:00Z</updated>
      <published>2026-11-01T00:00:00Z</published>
      <title type="text">Muster, Hans</title>
      <content type="text">Muster, Hans
Bahnhofstrasse 1
8001 Zürich</content>
      <tel:pos>1</tel:pos>
      <tel:id>ca71838e</tel:id>
      <tel:type>Person</tel:type>
      <tel:name>Muster</tel:name>
      <tel:firstname>Hans</tel:firstname>
      <tel:occupation>Schreiner</tel:occupation>
      <tel:street>Bahnhofstrasse</tel:street>
      <tel:streetno>1</tel:streetno>
      <tel:zip>8001</tel:zip>
      <tel:city>Zürich</tel:city>
      <tel:canton>ZH</tel:canton>
      <tel:phone>+41441234567</tel:phone>
    </entry>"#
        }
        _ => "",
    };
    let total = if entries.is_empty() { 0 } else { 1 };
    (
        [("content-type", "application/atom+xml; charset=utf-8")],
        format!(
            r#"<?xml version="1.0" encoding="utf-8" ?>
<feed xml:lang="de" xmlns="http://www.w3.org/2005/Atom" xmlns:openSearch="http://a9.com/-/spec/opensearchrss/1.0/" xmlns:tel="http://tel.search.ch/api/spec/result/1.0/">
  <id>https://tel.search.ch/api/</id>
  <title type="text">tel.search.ch API Search Results</title>
  <generator version="1.0" uri="https://tel.search.ch">tel.search.ch</generator>
  <updated>2026-11-22T00:00:00Z</updated>
  <openSearch:totalResults>{total}</openSearch:totalResults>
  <openSearch:startIndex>1</openSearch:startIndex>
  <openSearch:itemsPerPage>1</openSearch:itemsPerPage>
  {entries}
</feed>"#
        ),
    )
        .into_response()
}

/// tellows' partner API: `/basic/num/{number}?json=1&partner=…&apikey=…`.
async fn tellows(UrlPath(number): UrlPath<String>, Query(q): Params) -> Response {
    if q.get("partner").map(String::as_str) != Some("callhost")
        || q.get("apikey").map(String::as_str) != Some("TELLOWS-KEY")
        || q.get("json").map(String::as_str) != Some("1")
    {
        return (StatusCode::UNAUTHORIZED, "partner or apikey wrong").into_response();
    }
    let score = if number == "0049309999999" { "8" } else { "4" };
    axum::Json(json!({"tellows": {
        "number": number, "normalizedNumber": number, "score": score,
        "searches": "1043", "comments": "12", "scorecolor": "#ff0000",
        "location": "Berlin", "country": "DE",
        "callerTypes": {"caller": [{"name": "Werbung", "count": "9"}]},
        "callerNames": {"caller": ["Gewinnspiel GmbH"]}
    }}))
    .into_response()
}

/// Pipedrive: `GET /v1/persons/search?term=…&fields=phone&api_token=…`.
async fn pipedrive(Query(q): Params) -> Response {
    if q.get("api_token").map(String::as_str) != Some("PD-TOKEN") {
        return (
            StatusCode::UNAUTHORIZED,
            axum::Json(json!({"success": false, "error": "unauthorized access", "errorCode": 401})),
        )
            .into_response();
    }
    assert_eq!(q.get("fields").map(String::as_str), Some("phone"));
    let items = if q.get("term").map(String::as_str) == Some("+4989123456") {
        json!([{"result_score": 0.9, "item": {"id": 7, "type": "person", "name": "Petra Pipe",
            "phones": ["+49 89 123456"], "emails": [], "visible_to": 3,
            "owner": {"id": 1}, "organization": {"id": 3, "name": "Pipe Works GmbH", "address": null},
            "custom_fields": [], "notes": []}}])
    } else {
        json!([])
    };
    axum::Json(json!({"success": true, "data": {"items": items}, "additional_data": {"pagination": {"start": 0, "limit": 1, "more_items_in_collection": false}}})).into_response()
}

fn bearer(headers: &HeaderMap, token: &str) -> bool {
    headers.get("authorization").and_then(|v| v.to_str().ok()) == Some(&format!("Bearer {token}"))
}

/// Salesforce REST: `GET /services/data/v61.0/search/?q=<SOSL>` with a bearer token.
async fn salesforce(headers: HeaderMap, Query(q): Params) -> Response {
    if !bearer(&headers, "SF-TOKEN") {
        return (
            StatusCode::UNAUTHORIZED,
            axum::Json(json!([{"message": "Session expired or invalid", "errorCode": "INVALID_SESSION_ID"}])),
        )
            .into_response();
    }
    let sosl = q.get("q").cloned().unwrap_or_default();
    assert!(sosl.contains("IN PHONE FIELDS"), "{sosl}");
    let records = if sosl.starts_with("FIND {\\+4940123456}") {
        json!([{"attributes": {"type": "Contact", "url": "/services/data/v61.0/sobjects/Contact/003"},
                "FirstName": "Sally", "LastName": "Force", "Account": {"attributes": {"type": "Account"}, "Name": "Cloud AG"}}])
    } else {
        json!([])
    };
    axum::Json(json!({"searchRecords": records})).into_response()
}

/// Dynamics 365 Web API: `GET /api/data/v9.2/contacts?$filter=…` with a bearer token.
async fn dynamics(headers: HeaderMap, Query(q): Params) -> Response {
    if !bearer(&headers, "D365-TOKEN") {
        return (StatusCode::UNAUTHORIZED, "").into_response();
    }
    let filter = q.get("$filter").cloned().unwrap_or_default();
    let value = if filter.contains("telephone1 eq '+4921112345'") {
        json!([{"@odata.etag": "W/\"1\"", "contactid": "c1", "firstname": "Dana", "lastname": "Dyn",
                "fullname": "Dana Dyn", "parentcustomerid_account": {"accountid": "a1", "name": "Dyn Corp"}}])
    } else {
        json!([])
    };
    axum::Json(json!({"@odata.context": "https://org.crm4.dynamics.com/api/data/v9.2/$metadata#contacts", "value": value}))
        .into_response()
}

/// Whitepages Pro 3.0: `GET /3.0/phone?phone=…&api_key=…`.
async fn whitepages(Query(q): Params) -> Response {
    if q.get("api_key").map(String::as_str) != Some("WP-KEY") {
        return (
            StatusCode::FORBIDDEN,
            axum::Json(json!({"error": {"message": "Invalid api key"}})),
        )
            .into_response();
    }
    let belongs = if q.get("phone").map(String::as_str) == Some("+12065550100") {
        json!([{"id": "Person.1", "name": "Walt Page", "firstname": "Walt", "lastname": "Page", "type": "Person"}])
    } else {
        json!([])
    };
    axum::Json(json!({"id": "Phone.1", "phone_number": q.get("phone"), "is_valid": true, "line_type": "Landline", "belongs_to": belongs}))
        .into_response()
}

/// A provider that never answers.
async fn hang() -> Response {
    tokio::time::sleep(Duration::from_secs(3600)).await;
    html(String::new())
}

async fn error() -> Response {
    (StatusCode::INTERNAL_SERVER_ERROR, "database on fire").into_response()
}

/// Answers after `ms` milliseconds with a name.
async fn slow(Query(q): Params) -> Response {
    let ms: u64 = q.get("ms").and_then(|m| m.parse().ok()).unwrap_or(0);
    tokio::time::sleep(Duration::from_millis(ms)).await;
    html(format!(r#"<span id="name">Slow {ms}</span>"#))
}

impl Services {
    /// Serves on a thread of its own (tests run on their own runtimes).
    pub fn start() -> Services {
        let seen = Seen::default();
        let record = seen.clone();
        let app = Router::new()
            .route("/oertliche", get(phone_book))
            .route("/telsearch/api/", get(tel_search))
            .route("/tellows/basic/num/{number}", get(tellows))
            .route("/pipedrive/v1/persons/search", get(pipedrive))
            .route("/salesforce/services/data/v61.0/search/", get(salesforce))
            .route("/dynamics/api/data/v9.2/contacts", get(dynamics))
            .route("/whitepages/3.0/phone", get(whitepages))
            .route("/hang", get(hang))
            .route("/error", get(error))
            .route("/slow", get(slow))
            .route("/moved", get(moved))
            .layer(axum::middleware::from_fn(
                move |request: axum::extract::Request, next: axum::middleware::Next| {
                    let record = record.clone();
                    async move {
                        let uri = request.uri();
                        let line = match uri.query() {
                            Some(q) => format!("{}?{q}", uri.path()),
                            None => uri.path().to_string(),
                        };
                        record.0.lock().unwrap().push(line);
                        next.run(request).await
                    }
                },
            ))
            .with_state(());
        Services {
            base: serve(app),
            seen,
        }
    }
}

/// Serves `app` on a free port of 127.0.0.1, on a thread of its own
/// (tests run on their own runtimes); returns `http://127.0.0.1:PORT`.
pub fn serve(app: Router) -> String {
    let (bound, address) = std::sync::mpsc::channel::<SocketAddr>();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async move {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            bound.send(listener.local_addr().unwrap()).unwrap();
            axum::serve(listener, app).await.unwrap()
        })
    });
    format!("http://{}", address.recv().unwrap())
}

/// A page that moved within the site: `/moved?…` answers 302 to
/// `/oertliche?…` (a relative `Location`, the query kept).
async fn moved(uri: axum::http::Uri) -> Response {
    let query = uri.query().unwrap_or_default();
    (
        StatusCode::FOUND,
        [("location", format!("/oertliche?{query}"))],
    )
        .into_response()
}

/// An instance configured with `toml`, its files in `dir`.
pub fn instance(dir: &Path, toml: &str) -> ReverseLookup {
    let config: Config = toml::from_str(toml).expect("test configuration parses");
    match ReverseLookup::new(&testing::context_in("rl", dir), config) {
        Ok(instance) => instance,
        Err(e) => panic!("refused: {}: {}", e.field, e.message),
    }
}

/// The refusal of `toml` as "field: message".
pub fn refusal(toml: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let config: Config = toml::from_str(toml).expect("test configuration parses");
    match ReverseLookup::new(&testing::context_in("rl", dir.path()), config) {
        Ok(_) => panic!("accepted"),
        Err(e) => format!("{}: {}", e.field, e.message),
    }
}

pub async fn action(instance: &ReverseLookup, name: &str, args: &[&str]) -> Result<Value, String> {
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    match instance.action(name, &args) {
        Action::Ready(result) => result,
        Action::Later(future) => future.await,
    }
}

pub async fn decide(instance: &ReverseLookup, setup: &CallSetup) -> Decision {
    match instance.call_setup(setup) {
        Setup::Ready(decision) => decision,
        Setup::Later(future) => future.await,
    }
}

/// The `test` action's result for `number`.
pub async fn test(instance: &ReverseLookup, number: &str) -> Value {
    action(instance, "test", &[number])
        .await
        .expect("test runs")
}

/// The provider steps of a `test` result as (provider, result).
pub fn steps(result: &Value) -> Vec<(String, String)> {
    result["lookup"]["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["provider"].as_str().unwrap_or("").to_string(),
                s["result"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// The resolved display name of a `test` result.
pub fn name(result: &Value) -> Option<String> {
    result["display"].as_str().map(str::to_string)
}
