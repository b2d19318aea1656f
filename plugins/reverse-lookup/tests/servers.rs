//! SQL, LDAP and CardDAV providers against real servers: PostgreSQL and
//! MariaDB (local services), SQLite, a private slapd and Radicale (see
//! crates/test-services).

mod support;

use callhost_numbers::ExternalNumber;
use callhost_test_services::{ensure_mariadb, ensure_postgres, Radicale, Slapd};
use reverse_lookup::{
    config::ProviderConfig,
    providers::{BuildContext, Provider, Trace},
};
use support::{instance, name, refusal, test};

/// These tests check answers, not speed: first connections on a busy
/// machine may take longer than a call could wait.
const SLOW_OK: &str = "budget_ms = 5000\n";

/// A table name no other test run uses.
fn table(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!("{prefix}_{}_{nanos}", std::process::id())
}

/// Numbers a caller ID can never be, aimed at the statement.
const ATTACKS: [&str; 3] = [
    "+49' OR '1'='1",
    "+49'; DROP TABLE {table}; --",
    "+49\" OR 1=1 --",
];

fn hostile(text: &str) -> ExternalNumber {
    ExternalNumber {
        international: text.to_string(),
        e164: text.to_string(),
        national: text.to_string(),
        country: Some("DE".into()),
    }
}

/// Builds one provider from TOML, as the module does.
fn provider(toml: &str) -> Provider {
    let config: ProviderConfig = toml::from_str(toml).unwrap();
    Provider::build(
        &config,
        &[],
        &BuildContext {
            home_country: "DE",
            index: 0,
        },
    )
    .unwrap_or_else(|e| panic!("{}: {}", e.field, e.message))
}

/// Every attack finds nothing and leaves the table (and its row) in place.
async fn attacks_find_nothing(provider: &Provider, table: &str) -> Vec<String> {
    let mut notes = Vec::new();
    for attack in ATTACKS {
        let attack = attack.replace("{table}", table);
        let trace = Trace::default();
        let result = provider
            .lookup(&hostile(&attack), 0, &|| Ok(()), &trace)
            .await;
        assert!(
            matches!(result, Ok(None)),
            "{attack}: {result:?} {:?}",
            trace.lines()
        );
        notes.extend(trace.lines());
    }
    notes
}

#[tokio::test]
async fn postgresql_by_column_names_and_injection_proof() {
    let url = ensure_postgres().unwrap();
    let table = table("rl_pg");
    let pool = sqlx::PgPool::connect(&url).await.unwrap();
    sqlx::query(&format!(
        "CREATE TABLE {table} (phone text, first_name text, last_name text, company text, rank int)"
    ))
    .execute(&pool)
    .await
    .unwrap();
    sqlx::query(&format!(
        "INSERT INTO {table} VALUES ('+49301234567', 'Paula', 'Postgres', 'Elephant AG', 1)"
    ))
    .execute(&pool)
    .await
    .unwrap();
    let config = format!(
        r#"
id = "pg"
kind = "sql"
driver = "postgres"
url = "{url}"
query = "SELECT first_name, last_name, company, rank FROM {table} WHERE phone = {{tel}}"
tel_format = "e164"
timeout_ms = 4000
"#
    );
    let dir = tempfile::tempdir().unwrap();
    let rl = instance(dir.path(), &format!("{SLOW_OK}[[providers]]\n{config}"));
    let result = test(&rl, "030 1234567").await;
    assert_eq!(
        name(&result).as_deref(),
        Some("Paula Postgres"),
        "{result:#}"
    );
    assert_eq!(result["lookup"]["found"]["company"], "Elephant AG");
    let notes = result["lookup"]["steps"].to_string();
    assert!(
        notes.contains("WHERE phone = $1"),
        "bound, not pasted: {notes}"
    );

    let notes = attacks_find_nothing(&provider(&config), &table).await;
    assert!(
        notes.iter().all(|n| !n.contains("OR '1'='1' ")),
        "{notes:?}"
    );
    let rows: i64 = sqlx::query_scalar(&format!("SELECT count(*) FROM {table}"))
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(rows, 1, "the table survived");
    sqlx::query(&format!("DROP TABLE {table}"))
        .execute(&pool)
        .await
        .unwrap();
}

#[tokio::test]
async fn mariadb_by_rules_per_column_as_in_the_original() {
    let url = ensure_mariadb().unwrap();
    let table = table("rl_my");
    let pool = sqlx::MySqlPool::connect(&url).await.unwrap();
    sqlx::query(&format!(
        "CREATE TABLE {table} (phone varchar(32), anrufer varchar(64), firma varchar(64))"
    ))
    .execute(&pool)
    .await
    .unwrap();
    sqlx::query(&format!(
        "INSERT INTO {table} VALUES ('00498912345', 'Maria DB-Nutzerin', 'Seelöwe KG (Zentrale)')"
    ))
    .execute(&pool)
    .await
    .unwrap();
    // The seed's own style: '{tel}' quoted, one parser per column.
    let config = format!(
        r#"
id = "maria"
kind = "sql"
driver = "mysql"
url = "{url}"
query = "SELECT anrufer, firma FROM {table} WHERE phone = '{{tel}}'"
rules = [
  {{ name = "caller", field = "display", matcher = '^(.+)$' }},
  {{ name = "company", field = "company", matcher = '^([^(]+?)\s*\(', formatter = "{{1}}" }},
]
timeout_ms = 4000
"#
    );
    let dir = tempfile::tempdir().unwrap();
    let rl = instance(dir.path(), &format!("{SLOW_OK}[[providers]]\n{config}"));
    let result = test(&rl, "089 12345").await;
    assert_eq!(
        name(&result).as_deref(),
        Some("Maria DB-Nutzerin"),
        "{result:#}"
    );
    assert_eq!(result["lookup"]["found"]["company"], "Seelöwe KG");

    attacks_find_nothing(&provider(&config), &table).await;
    let rows: i64 = sqlx::query_scalar(&format!("SELECT count(*) FROM {table}"))
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(rows, 1, "the table survived");
    sqlx::query(&format!("DROP TABLE {table}"))
        .execute(&pool)
        .await
        .unwrap();
}

#[tokio::test]
async fn sqlite_with_positional_columns() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/crm.db?mode=rwc", dir.path().display());
    let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
    sqlx::query("CREATE TABLE contacts (nummer text, wer text, wo text)")
        .execute(&pool)
        .await
        .unwrap();
    sqlx::query("INSERT INTO contacts VALUES ('0049301234567', 'Lite Lena', 'Feder GmbH')")
        .execute(&pool)
        .await
        .unwrap();
    // Columns named like nothing known: first is the name, second the company.
    let config = format!(
        "id = \"lite\"\nkind = \"sql\"\ndriver = \"sqlite\"\nurl = \"{url}\"\nquery = \"SELECT wer, wo FROM contacts WHERE nummer = #CALLERID_INT#\"\ntimeout_ms = 4000\n"
    );
    let rl = instance(dir.path(), &format!("{SLOW_OK}[[providers]]\n{config}"));
    let result = test(&rl, "030 1234567").await;
    assert_eq!(name(&result).as_deref(), Some("Lite Lena"), "{result:#}");
    assert_eq!(result["lookup"]["found"]["company"], "Feder GmbH");
    attacks_find_nothing(&provider(&config), "contacts").await;
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM contacts")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(rows, 1);
}

#[test]
fn a_placeholder_inside_a_longer_literal_is_refused() {
    let error = refusal(
        "[[providers]]\nid = \"x\"\nkind = \"sql\"\ndriver = \"sqlite\"\nurl = \"sqlite::memory:\"\nquery = \"SELECT n FROM t WHERE phone LIKE '%{tel}'\"\n",
    );
    assert!(error.starts_with("providers[0].query"), "{error}");
    assert!(error.contains("inside a quoted SQL literal"), "{error}");
}

#[tokio::test]
async fn an_unreachable_database_is_an_error_within_the_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let rl = instance(
        dir.path(),
        "[[providers]]\nid = \"gone\"\nkind = \"sql\"\ndriver = \"postgres\"\nurl = \"postgres://nobody:hunter22@127.0.0.1:1/none\"\nquery = \"SELECT 1 WHERE {tel} = ''\"\ntimeout_ms = 300\n",
    );
    let result = test(&rl, "030 1234567").await;
    assert_eq!(result["result"], "error", "{result:#}");
    assert!(
        !result.to_string().contains("hunter22"),
        "password leaked: {result}"
    );
}

#[tokio::test]
async fn ldap_directory_with_a_bound_user_and_escaped_filter() {
    let ldif = "dn: cn=Lara Ldap,dc=example,dc=com
objectClass: inetOrgPerson
cn: Lara Ldap
sn: Ldap
givenName: Lara
o: Verzeichnis GmbH
telephoneNumber: +49 69 1234567

dn: cn=Other Person,dc=example,dc=com
objectClass: inetOrgPerson
cn: Other Person
sn: Person
telephoneNumber: +49 69 7654321
";
    let slapd = Slapd::start("dc=example,dc=com", ldif).unwrap();
    let config = format!(
        r#"
id = "ldap"
template = "metadirectory"
url = "{}"
base_dn = "{}"
bind_dn = "{}"
secrets.password = "{}"
timeout_ms = 4000
"#,
        slapd.url(),
        slapd.base_dn(),
        slapd.bind_dn(),
        slapd.password()
    );
    let dir = tempfile::tempdir().unwrap();
    let rl = instance(dir.path(), &format!("{SLOW_OK}[[providers]]\n{config}"));
    let result = test(&rl, "069 1234567").await;
    assert_eq!(name(&result).as_deref(), Some("Lara Ldap"), "{result:#}");
    assert_eq!(result["lookup"]["found"]["company"], "Verzeichnis GmbH");
    assert!(!result.to_string().contains(slapd.password()));

    // A filter injection matches nothing instead of everyone.
    let merged = reverse_lookup::profiles::resolve(&toml::from_str(&config).unwrap())
        .unwrap()
        .0;
    let provider = Provider::build(
        &merged,
        &[],
        &BuildContext {
            home_country: "DE",
            index: 0,
        },
    )
    .unwrap();
    let trace = Trace::default();
    let found = provider
        .lookup(&hostile("*)(cn=*"), 0, &|| Ok(()), &trace)
        .await;
    assert!(matches!(found, Ok(None)), "{found:?} {:?}", trace.lines());
    assert!(
        trace
            .lines()
            .iter()
            .any(|l| l.contains("\\2a\\29\\28cn=\\2a")),
        "{:?}",
        trace.lines()
    );
}

#[tokio::test]
async fn carddav_address_book_with_numbers_as_people_type_them() {
    let radicale = tokio::task::spawn_blocking(Radicale::start)
        .await
        .unwrap()
        .unwrap();
    let book = radicale.create_addressbook("contacts").unwrap();
    radicale
        .put_vcard(
            &book,
            "card-1",
            "BEGIN:VCARD\r\nVERSION:3.0\r\nUID:card-1\r\nFN:Carla Dav\r\nN:Dav;Carla;;;\r\nORG:Kalender AG\r\nTEL;TYPE=WORK:0711 / 123 45-6\r\nEND:VCARD\r\n",
        )
        .unwrap();
    let config = format!(
        r#"
[[providers]]
id = "cloud"
template = "nextcloud"
url = "{book}"
secrets = {{ user = "{}", password = "{}" }}
timeout_ms = 4000
"#,
        radicale.user(),
        radicale.password()
    );
    let dir = tempfile::tempdir().unwrap();
    let rl = instance(dir.path(), &format!("{SLOW_OK}{config}"));
    let result = test(&rl, "+49 711 123456").await;
    assert_eq!(name(&result).as_deref(), Some("Carla Dav"), "{result:#}");
    assert_eq!(result["lookup"]["found"]["company"], "Kalender AG");
    let unknown = test(&rl, "0711 999999").await;
    assert!(name(&unknown).is_none());

    // Wrong credentials: an error, not a silent miss.
    let wrong = config.replace(radicale.password(), "wrong-password");
    let dir = tempfile::tempdir().unwrap();
    let rl = instance(dir.path(), &format!("{SLOW_OK}{wrong}"));
    let result = test(&rl, "0711 123456").await;
    assert_eq!(result["result"], "error", "{result:#}");
}
