//! The helpers against the real servers: each test checks the server from
//! outside (CLI or HTTP), so a helper that starts nothing, loads nothing or
//! configures auth wrongly fails here.

use std::net::TcpStream;
use std::process::Command;
use std::time::Duration;

use callhost_test_services::{ensure_mariadb, ensure_postgres, Radicale, Slapd};

const BASE: &str = "dc=example,dc=org";

const PEOPLE: &str = "\
dn: cn=Alice Example,dc=example,dc=org
objectClass: inetOrgPerson
cn: Alice Example
givenName: Alice
sn: Example
o: Example Corp
telephoneNumber: +49 30 1234567

dn: cn=Bob Sample,dc=example,dc=org
objectClass: inetOrgPerson
cn: Bob Sample
givenName: Bob
sn: Sample
o: Sample GmbH
telephoneNumber: +49 89 7654321
";

fn ldapsearch(slapd: &Slapd, auth: bool, filter: &str) -> String {
    let mut c = Command::new("ldapsearch");
    c.args(["-x", "-LLL", "-H", &slapd.url(), "-b", slapd.base_dn()]);
    if auth {
        c.args(["-D", slapd.bind_dn(), "-w", slapd.password()]);
    }
    let out = c.arg(filter).output().expect("run ldapsearch (ldap-utils)");
    assert!(
        out.status.success(),
        "ldapsearch {filter} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn accepts(port: u16) -> bool {
    TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_secs(1)).is_ok()
}

#[test]
fn slapd_serves_the_loaded_entries() {
    let slapd = Slapd::start(BASE, PEOPLE).unwrap();
    assert!(
        slapd.url().starts_with("ldap://127.0.0.1:"),
        "{}",
        slapd.url()
    );
    assert_ne!(slapd.port(), 389);
    assert_eq!(slapd.bind_dn(), "cn=admin,dc=example,dc=org");

    // Telephone numbers match ignoring spaces (telephoneNumberMatch).
    let found = ldapsearch(&slapd, true, "(telephoneNumber=+4930 1234567)");
    assert!(
        found.contains("dn: cn=Alice Example,dc=example,dc=org"),
        "{found}"
    );
    assert!(found.contains("givenName: Alice"), "{found}");
    assert!(found.contains("sn: Example"), "{found}");
    assert!(found.contains("o: Example Corp"), "{found}");
    assert!(!found.contains("Bob"), "{found}");

    // Anonymous reads work too, and the base entry was made.
    let found = ldapsearch(&slapd, false, "(telephoneNumber=+49 89 7654321)");
    assert!(
        found.contains("dn: cn=Bob Sample,dc=example,dc=org"),
        "{found}"
    );
    let base = ldapsearch(&slapd, false, "(objectClass=dcObject)");
    assert!(base.contains("dn: dc=example,dc=org"), "{base}");
    assert_eq!(
        ldapsearch(&slapd, false, "(telephoneNumber=+1 555 0000)"),
        ""
    );

    // A wrong password is refused (so the right one above was checked).
    let refused = Command::new("ldapwhoami")
        .args([
            "-x",
            "-H",
            &slapd.url(),
            "-D",
            slapd.bind_dn(),
            "-w",
            "wrong",
        ])
        .output()
        .unwrap();
    assert!(!refused.status.success());

    let port = slapd.port();
    drop(slapd);
    assert!(!accepts(port), "slapd still listens on {port} after drop");
}

#[test]
fn slapd_reports_a_bad_ldif() {
    let err = Slapd::start(
        BASE,
        "dn: cn=x,dc=example,dc=org\nobjectClass: noSuchClass\ncn: x\n",
    )
    .unwrap_err()
    .to_string();
    assert!(err.starts_with("slapd: `/usr/sbin/slapadd"), "{err}");
    assert!(err.contains("noSuchClass"), "{err}");
}

#[test]
fn radicale_stores_and_serves_a_vcard() {
    let radicale = Radicale::start().unwrap();
    let book = radicale.create_addressbook("contacts").unwrap();
    assert_eq!(
        book,
        format!("{}/{}/contacts/", radicale.url(), radicale.user())
    );

    let vcard = "BEGIN:VCARD\r\nVERSION:3.0\r\nUID:alice-1\r\nFN:Alice Example\r\n\
                 N:Example;Alice;;;\r\nORG:Example Corp\r\nTEL;TYPE=WORK:+49 30 1234567\r\n\
                 END:VCARD\r\n";
    let item = radicale.put_vcard(&book, "alice-1", vcard).unwrap();
    assert_eq!(item, format!("{book}alice-1.vcf"));

    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .allow_non_standard_methods(true)
        .build()
        .into();
    let mut got = agent
        .get(&item)
        .header("Authorization", radicale.basic_auth())
        .call()
        .unwrap();
    assert_eq!(got.status().as_u16(), 200);
    let body = got.body_mut().read_to_string().unwrap();
    assert!(body.contains("FN:Alice Example"), "{body}");
    assert!(body.contains("+49 30 1234567"), "{body}");

    // The collection is a CardDAV address book, not a plain collection.
    let propfind = ureq::http::Request::builder()
        .method(ureq::http::Method::from_bytes(b"PROPFIND").unwrap())
        .uri(&book)
        .header("Authorization", radicale.basic_auth())
        .header("Depth", "0")
        .body(())
        .unwrap();
    let mut props = agent.run(propfind).unwrap();
    assert_eq!(props.status().as_u16(), 207);
    let props = props.body_mut().read_to_string().unwrap();
    assert!(props.contains("addressbook"), "{props}");

    // Basic auth is enforced.
    let anonymous = agent.get(&item).call().unwrap();
    assert_eq!(anonymous.status().as_u16(), 401);

    let port = radicale.port();
    drop(radicale);
    assert!(
        !accepts(port),
        "radicale still listens on {port} after drop"
    );
}

#[test]
fn radicale_reports_bad_requests() {
    let radicale = Radicale::start().unwrap();
    let book = radicale.create_addressbook("book").unwrap();
    // A collection that already exists cannot be made again.
    let err = radicale.create_addressbook("book").unwrap_err().to_string();
    assert!(err.starts_with("radicale: MKCOL"), "{err}");
    // Radicale rejects a body that is not a vCard.
    let err = radicale
        .put_vcard(&book, "x", "not a vcard")
        .unwrap_err()
        .to_string();
    assert!(err.starts_with("radicale: PUT"), "{err}");
    assert!(err.contains("HTTP 4"), "{err}");
    assert!(radicale.create_addressbook("../up").is_err());
}

#[test]
fn postgres_is_up() {
    let urls: Vec<String> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..4).map(|_| s.spawn(ensure_postgres)).collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap().unwrap())
            .collect()
    });
    assert!(
        urls.iter()
            .all(|u| u == "postgres://postgres@127.0.0.1:5432/test"),
        "{urls:?}"
    );
    assert!(accepts(5432));
    let out = Command::new("psql")
        .args([urls[0].as_str(), "-tAc", "select 40 + 2"])
        .output()
        .expect("run psql");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "42");
}

#[test]
fn mariadb_is_up() {
    let urls: Vec<String> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..4).map(|_| s.spawn(ensure_mariadb)).collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap().unwrap())
            .collect()
    });
    assert!(
        urls.iter().all(|u| u == "mysql://root@127.0.0.1:3306/test"),
        "{urls:?}"
    );
    assert!(accepts(3306));
    let out = Command::new("mysql")
        .args([
            "-h",
            "127.0.0.1",
            "-P",
            "3306",
            "-u",
            "root",
            "test",
            "-N",
            "-e",
            "select 40 + 2",
        ])
        .output()
        .expect("run mysql");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "42");
}
