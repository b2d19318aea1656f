//! SIP over TLS end to end: `callhost serve` with `[sip.tls]`, baresip as
//! real TLS phones (and a UDP phone on the other side of the call), the
//! OpenSSL command line for certificates and raw handshakes, and a scripted
//! carrier (`host/tests/tls_peer.py`, Python's ssl) where a test needs
//! exact control of the client certificate.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use crate::sip::{trunk_call, user_call, DIRECTORY};
use crate::sip_harness::{
    callhost, free_port, leg_packets, Baresip, Serve, Setup, Sipp, LOCALHOST,
};

/// Anna's and Bert's numbers (see `crate::sip::DIRECTORY`).
const ANNA: &str = "+4930123456201";
const BERT: &str = "+4930123456202";

/// `callhost serve` with SIP over TLS on a port of its own, in a data
/// directory whose `tls/` holds the host's self-signed certificate.
struct TlsServe {
    serve: Serve,
    tls_port: u16,
    _data: Option<tempfile::TempDir>,
}

impl TlsServe {
    /// `tls` adds lines to `[sip.tls]`, `trunk` to `[sip.trunk]`.
    fn start(tls: &str, trunk: &str) -> TlsServe {
        TlsServe::start_with(tls, "", trunk)
    }

    /// As [`TlsServe::start`], with more `[sip.*]` tables (`[sip.srtp]`).
    fn start_with(tls: &str, tables: &str, trunk: &str) -> TlsServe {
        let data = tempfile::tempdir().unwrap();
        let mut server = TlsServe::start_in(data.path(), tls, tables, trunk);
        server._data = Some(data);
        server
    }

    /// As [`TlsServe::start_with`], in an existing data directory.
    fn start_in(data: &Path, tls: &str, tables: &str, trunk: &str) -> TlsServe {
        callhost(
            data,
            &[
                "tls",
                "self-signed",
                "--name",
                LOCALHOST,
                "--name",
                "localhost",
            ],
        );
        let tls_port = free_port();
        // Relative names: taken from callhost.toml's directory.
        let sip = format!(
            "[sip.tls]\nlisten = \"{LOCALHOST}:{tls_port}\"\n\
             certificate = \"tls/sip-cert.pem\"\nkey = \"tls/sip-key.pem\"\n{tls}\n{tables}\n"
        );
        let serve = Serve::start_in_with(
            data,
            DIRECTORY,
            Setup {
                sip: &sip,
                trunk,
                ..Setup::default()
            },
        );
        assert!(
            serve
                .banner
                .contains(&format!("TLS on {LOCALHOST}:{tls_port}")),
            "{}",
            serve.banner
        );
        TlsServe {
            serve,
            tls_port,
            _data: None,
        }
    }

    /// A server whose trunk is the scripted carrier of `tls_peer.py` (any
    /// TLS client on loopback) with `policy` as the trunk's SRTP policy;
    /// in `data` (one with modules installed, say) or a fresh directory.
    fn scripted_carrier(data: Option<&Path>, policy: &str) -> TlsServe {
        let tables = format!("[sip.srtp]\ntrunk = \"{policy}\"");
        let trunk = "transport = \"tls\"";
        match data {
            Some(data) => TlsServe::start_in(data, "", &tables, trunk),
            None => TlsServe::start_with("", &tables, trunk),
        }
    }

    fn certificate(&self) -> PathBuf {
        self.serve.data.join("tls/sip-cert.pem")
    }

    fn tls_addr(&self) -> String {
        format!("{LOCALHOST}:{}", self.tls_port)
    }

    /// A baresip phone registered as `user` over TLS, trusting the host's
    /// certificate (it verifies the server).
    fn tls_phone(&self, dir: &Path, user: &str, args: &[&str]) -> Baresip {
        Baresip::start(
            dir,
            &format!(
                "<sip:{user}@{};transport=tls>;auth_pass={user}-pw;answermode=auto;regint=60",
                self.tls_addr()
            ),
            &format!("sip_cafile\t\t{}", self.certificate().display()),
            args,
        )
    }

    /// A baresip phone registered as `user` over TLS that insists on SRTP
    /// (`mediaenc=srtp-mand`: RTP/SAVP with SDES keys).
    fn srtp_phone(&self, dir: &Path, user: &str, args: &[&str]) -> Baresip {
        Baresip::start(
            dir,
            &format!(
                "<sip:{user}@{};transport=tls>;auth_pass={user}-pw;answermode=auto;mediaenc=srtp-mand;regint=60",
                self.tls_addr()
            ),
            &format!(
                "sip_cafile\t\t{}\nmodule\t\t\tsrtp.so",
                self.certificate().display()
            ),
            args,
        )
    }

    /// A baresip phone registered as `user` over UDP.
    fn udp_phone(&self, dir: &Path, user: &str, args: &[&str]) -> Baresip {
        Baresip::start(
            dir,
            &format!(
                "<sip:{user}@{};transport=udp>;auth_pass={user}-pw;answermode=auto;regint=60",
                self.serve.addr()
            ),
            "",
            args,
        )
    }
}

fn run(program: &str, args: &[&str], stdin: &[u8]) -> (bool, String) {
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("start {program}: {e}"));
    child.stdin.take().unwrap().write_all(stdin).ok();
    let output = child.wait_with_output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), text)
}

fn openssl(dir: &Path, args: &[&str]) {
    let output = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl (is it installed?)");
    assert!(
        output.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// The SHA-256 fingerprint of a PEM certificate (`openssl x509`).
fn fingerprint_of_pem(pem: &[u8]) -> String {
    let (ok, text) = run(
        "openssl",
        &["x509", "-noout", "-fingerprint", "-sha256"],
        pem,
    );
    assert!(ok, "openssl x509: {text}");
    text.trim().to_string()
}

/// What `openssl s_client` makes of a handshake with `address`: whether
/// it succeeded and its output (the server's certificate in PEM with
/// `-showcerts`).
fn s_client(address: &str, extra: &[&str]) -> (bool, String) {
    let mut args = vec!["s_client", "-connect", address, "-showcerts"];
    args.extend_from_slice(extra);
    let (_, text) = run("openssl", &args, b"");
    let ok = text.contains("Cipher is") && !text.contains("Cipher is (NONE)");
    (ok, text)
}

/// The fingerprint of the certificate the server at `address` presents.
fn served_fingerprint(address: &str) -> String {
    let (ok, text) = s_client(address, &[]);
    assert!(ok, "TLS handshake with {address} failed:\n{text}");
    let start = text
        .find("-----BEGIN CERTIFICATE-----")
        .expect("a certificate");
    let end = text.find("-----END CERTIFICATE-----").unwrap() + "-----END CERTIFICATE-----".len();
    fingerprint_of_pem(&text.as_bytes()[start..end])
}

/// A CA, a carrier certificate it signed (client and server use; for
/// 127.0.0.1 and `carrier.test`) and a rogue self-signed certificate.
struct CarrierPki {
    dir: tempfile::TempDir,
}

impl CarrierPki {
    fn make() -> CarrierPki {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let ec = [
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
        ];
        let mut ca = vec!["req", "-x509"];
        ca.extend_from_slice(&ec);
        ca.extend_from_slice(&[
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-subj",
            "/CN=Carrier Test CA",
            "-days",
            "30",
        ]);
        openssl(d, &ca);
        let mut request = vec!["req", "-new"];
        request.extend_from_slice(&ec);
        request.extend_from_slice(&[
            "-keyout",
            "carrier.key",
            "-out",
            "carrier.csr",
            "-subj",
            "/CN=carrier.test",
        ]);
        openssl(d, &request);
        std::fs::write(
            d.join("carrier.ext"),
            "basicConstraints=CA:FALSE\n\
             keyUsage=digitalSignature\n\
             extendedKeyUsage=serverAuth,clientAuth\n\
             subjectAltName=DNS:carrier.test,IP:127.0.0.1\n",
        )
        .unwrap();
        openssl(
            d,
            &[
                "x509",
                "-req",
                "-in",
                "carrier.csr",
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                "carrier.pem",
                "-days",
                "30",
                "-extfile",
                "carrier.ext",
            ],
        );
        let mut rogue = vec!["req", "-x509"];
        rogue.extend_from_slice(&ec);
        rogue.extend_from_slice(&[
            "-keyout",
            "rogue.key",
            "-out",
            "rogue.pem",
            "-subj",
            "/CN=carrier.test",
            "-days",
            "30",
        ]);
        openssl(d, &rogue);
        CarrierPki { dir }
    }

    fn path(&self, name: &str) -> String {
        self.dir.path().join(name).to_str().unwrap().to_string()
    }
}

fn tls_peer() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/tls_peer.py")
}

/// The scripted carrier sends one INVITE for `number` over TLS to
/// `address`; returns its output (status lines, or `handshake failed`).
fn carrier_invite(address: &str, number: &str, certificate: Option<(&str, &str)>) -> String {
    let (host, port) = address.split_once(':').unwrap();
    let peer = tls_peer();
    let mut args = vec![peer.to_str().unwrap(), "client", host, port, number];
    if let Some((cert, key)) = certificate {
        args.extend_from_slice(&["--cert", cert, "--key", key]);
    }
    let (_, text) = run("python3", &args, b"");
    text
}

// ---------------------------------------------------------------------------

#[test]
fn a_tls_phone_calls_a_udp_phone_and_is_called_back_with_audio_both_ways() {
    let server = TlsServe::start("", "");
    let serve = &server.serve;
    let dir = tempfile::tempdir().unwrap();
    let _bert = server.udp_phone(&dir.path().join("bert"), "bert", &[]);
    serve.wait_log(&["device registered", "user=bert"]);
    // Anna registers over TLS (checking the host's certificate) and dials
    // Bert at once: her REGISTER and INVITE share the connection.
    let anna = server.tls_phone(&dir.path().join("anna"), "anna", &["-e", "/dial 202"]);
    let registered = serve.wait_log(&["device registered", "user=anna"]);
    assert!(registered.contains("transport=TLS"), "{registered}");
    let ended = serve.wait_log_nth(
        &["call ended", "from_user=anna"],
        0,
        Duration::from_secs(30),
    );
    assert!(ended.contains("answered_by=bert"), "{ended}");
    let legs = leg_packets(&ended);
    assert_eq!(legs.len(), 2, "{ended}");
    let ((caller_in, caller_out), (callee_in, callee_out)) = (legs[0], legs[1]);
    assert!(
        caller_in >= 50 && caller_out >= 50,
        "TLS phone's RTP: {ended}"
    );
    assert!(
        callee_in >= 50 && callee_out >= 50,
        "UDP phone's RTP: {ended}"
    );
    assert!(
        anna.output().contains("Call established"),
        "{}",
        anna.output()
    );

    // The trunk calls Anna: the INVITE reaches her over her own TLS
    // connection (she listens on no TLS port we could reach otherwise).
    let carrier = trunk_call(serve, "uac.xml", ANNA, &["-d", "2000"]).wait();
    carrier.assert_ok();
    let ended = serve.wait_log_nth(
        &["call ended", "answered_by=anna"],
        0,
        Duration::from_secs(30),
    );
    let legs = leg_packets(&ended);
    assert!(
        legs[1].0 >= 50 && legs[1].1 >= 50,
        "to and from the TLS phone: {ended}"
    );
}

#[test]
fn tls_refuses_old_versions_plaintext_and_stalled_handshakes_and_keeps_serving() {
    let server = TlsServe::start("handshake_seconds = 1\nmax_handshakes = 2", "");
    let serve = &server.serve;
    let address = server.tls_addr();

    let (ok, text) = s_client(&address, &["-tls1_1"]);
    assert!(!ok, "TLS 1.1 was accepted:\n{text}");
    for version in ["-tls1_2", "-tls1_3"] {
        let (ok, text) = s_client(&address, &[version]);
        assert!(ok, "{version} refused:\n{text}");
    }

    // Plain SIP on the TLS port: the handshake fails, the connection goes.
    let mut plain = TcpStream::connect(&address).unwrap();
    plain
        .write_all(b"OPTIONS sip:127.0.0.1 SIP/2.0\r\nContent-Length: 0\r\n\r\n")
        .unwrap();
    plain
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut answer = Vec::new();
    plain.read_to_end(&mut answer).ok();
    assert!(
        !String::from_utf8_lossy(&answer).contains("SIP/2.0"),
        "plain SIP answered on the TLS port: {answer:?}"
    );
    serve.wait_log(&["TLS handshake refused"]);

    // Two connections that never start a handshake take every slot: a
    // third is closed at once; once they time out, handshakes work again.
    let stalled: Vec<TcpStream> = (0..2)
        .map(|_| TcpStream::connect(&address).unwrap())
        .collect();
    thread::sleep(Duration::from_millis(200));
    let mut third = TcpStream::connect(&address).unwrap();
    third
        .set_read_timeout(Some(Duration::from_millis(800)))
        .unwrap();
    let closed = matches!(third.read(&mut [0u8; 16]), Ok(0) | Err(_));
    assert!(closed, "a connection past max_handshakes was kept");
    serve.wait_log(&["TLS handshake not finished in time"]);
    drop(stalled);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let (ok, text) = s_client(&address, &[]);
        if ok {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no handshake after the stalled ones:\n{text}"
        );
        thread::sleep(Duration::from_millis(200));
    }

    // UDP was never disturbed.
    crate::sip::register(serve, "anna", free_port());
}

#[test]
fn a_renewed_certificate_is_served_to_new_connections_without_dropping_a_call() {
    let server = TlsServe::start("", "");
    let serve = &server.serve;
    let address = server.tls_addr();
    let first = fingerprint_of_pem(&std::fs::read(server.certificate()).unwrap());
    assert_eq!(served_fingerprint(&address), first);

    let dir = tempfile::tempdir().unwrap();
    let _bert = server.udp_phone(&dir.path().join("bert"), "bert", &[]);
    serve.wait_log(&["device registered", "user=bert"]);
    let _anna = server.tls_phone(&dir.path().join("anna"), "anna", &["-e", "/dial 202"]);
    serve.wait_log(&["answered", "answered_by=bert"]);

    // Renewal while the call runs.
    let tls_dir = serve.data.join("tls");
    callhost(
        &serve.data,
        &[
            "tls",
            "self-signed",
            "--name",
            LOCALHOST,
            "--force",
            "--out",
            tls_dir.to_str().unwrap(),
        ],
    );
    let second = fingerprint_of_pem(&std::fs::read(server.certificate()).unwrap());
    assert_ne!(first, second);
    serve.wait_log(&["TLS certificate reloaded"]);
    assert_eq!(served_fingerprint(&address), second);

    // A broken file is refused; the certificate before stays.
    std::fs::write(tls_dir.join("sip-key.pem"), "not a key").unwrap();
    serve.wait_log(&["TLS certificate not reloaded"]);
    assert_eq!(served_fingerprint(&address), second);

    // The call went on over its old connection until Bert hung up.
    let ended = serve.wait_log_nth(
        &["call ended", "from_user=anna"],
        0,
        Duration::from_secs(30),
    );
    assert!(ended.contains("end=callee"), "{ended}");
    let legs = leg_packets(&ended);
    assert!(
        legs[0].0 >= 300,
        "the TLS phone's call was cut short: {ended}"
    );
}

#[test]
fn the_tls_trunk_is_known_by_its_client_certificate_and_calls_out_with_ours() {
    let pki = CarrierPki::make();
    let tls = format!(
        "trunk_client_ca = \"{}\"\ntrunk_ca = \"{}\"\ntrunk_name = \"carrier.test\"",
        pki.path("ca.pem"),
        pki.path("ca.pem")
    );
    let server = TlsServe::start(&tls, "transport = \"tls\"");
    let serve = &server.serve;
    let address = server.tls_addr();

    // With the carrier's certificate the INVITE is the trunk's: routed to
    // Bert's DID without a challenge (Bert is not registered: 480).
    let certified = carrier_invite(
        &address,
        BERT,
        Some((&pki.path("carrier.pem"), &pki.path("carrier.key"))),
    );
    assert!(certified.contains("SIP/2.0 480"), "{certified}");
    serve.wait_log(&["TLS client certificate verified"]);
    // Without one it is anybody's: challenged like a phone.
    let anonymous = carrier_invite(&address, BERT, None);
    assert!(anonymous.contains("SIP/2.0 407"), "{anonymous}");
    // A certificate of another CA ends the handshake.
    let rogue = carrier_invite(
        &address,
        BERT,
        Some((&pki.path("rogue.pem"), &pki.path("rogue.key"))),
    );
    assert!(rogue.contains("handshake failed"), "{rogue}");
    serve.wait_log(&["TLS handshake refused"]);

    // Out to the trunk: TLS to its address, its certificate checked
    // against trunk_ca for carrier.test, ours presented as the client's.
    let out = pki.dir.path().join("carrier-saw.txt");
    let peer = tls_peer();
    let host_cert = server.certificate();
    let trunk_port = serve.trunk_port.to_string();
    let mut carrier = Command::new("python3")
        .args([
            peer.to_str().unwrap(),
            "server",
            &trunk_port,
            "--cert",
            &pki.path("carrier.pem"),
            "--key",
            &pki.path("carrier.key"),
            "--client-ca",
            host_cert.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ])
        .spawn()
        .unwrap();
    thread::sleep(Duration::from_millis(500));
    let caller = user_call(serve, "anna", "03012345678");
    let status = carrier.wait().unwrap();
    assert!(status.success(), "the carrier's TLS server failed");
    assert_eq!(
        caller.final_invite_status(),
        Some(486),
        "{}",
        caller.context()
    );
    let saw = std::fs::read_to_string(&out).unwrap();
    assert!(saw.contains("subject=commonName=127.0.0.1"), "{saw}");
    assert!(saw.contains("request=INVITE sip:+493012345678@"), "{saw}");
}

// ---------------------------------------------------------------------------
// SRTP (SDES keys over TLS), terminated in the relay

/// The per-leg media counters of a call, from its "call media" log line.
fn call_media(serve: &Serve, call_ended: &str) -> Vec<serde_json::Value> {
    let call_id = call_ended
        .split("call_id=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("call_id in the call ended line");
    let line = serve.wait_log(&["call media", &format!("call={call_id}")]);
    let json = line
        .split("media=\"")
        .nth(1)
        .and_then(|rest| rest.rsplit_once('"'))
        .map(|(json, _)| json.replace("\\\"", "\""))
        .expect("media= in the call media line");
    serde_json::from_str(&json).unwrap_or_else(|e| panic!("{e}: {json}"))
}

/// A packet capture on loopback, for the relay's ports; stopped (and read)
/// by [`Capture::payloads`].
struct Capture {
    child: std::process::Child,
    file: PathBuf,
}

impl Capture {
    fn start(dir: &Path, ports: (u16, u16)) -> Capture {
        let file = dir.join("relay.pcap");
        let mut child = Command::new("tshark")
            .args(["-i", "lo", "-q", "-f"])
            .arg(format!("udp portrange {}-{}", ports.0, ports.1))
            .arg("-w")
            .arg(&file)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("tshark (is it installed?)");
        // It says so on stderr once it captures.
        let mut stderr = child.stderr.take().unwrap();
        let mut seen = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut byte = [0u8; 1];
        while !String::from_utf8_lossy(&seen).contains("Capturing on") {
            assert!(
                Instant::now() < deadline,
                "tshark did not start: {}",
                String::from_utf8_lossy(&seen)
            );
            if stderr.read(&mut byte).unwrap_or(0) == 0 {
                panic!("tshark ended: {}", String::from_utf8_lossy(&seen));
            }
            seen.push(byte[0]);
        }
        thread::spawn(move || std::io::copy(&mut stderr, &mut std::io::sink()));
        Capture { child, file }
    }

    /// Every captured datagram: (source port, destination port, payload).
    fn payloads(mut self) -> Vec<(u16, u16, Vec<u8>)> {
        thread::sleep(Duration::from_millis(300));
        Command::new("kill")
            .args(["-INT", &self.child.id().to_string()])
            .status()
            .unwrap();
        self.child.wait().unwrap();
        let (ok, text) = run(
            "tshark",
            &[
                "-r",
                self.file.to_str().unwrap(),
                "-T",
                "fields",
                "-e",
                "udp.srcport",
                "-e",
                "udp.dstport",
                "-e",
                "udp.payload",
            ],
            b"",
        );
        assert!(ok, "tshark -r: {text}");
        text.lines()
            .filter_map(|line| {
                let mut fields = line.split('\t');
                let source = fields.next()?.parse().ok()?;
                let destination = fields.next()?.parse().ok()?;
                let hex = fields.next()?.replace(':', "");
                let bytes = (0..hex.len() / 2)
                    .map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16))
                    .collect::<Result<Vec<u8>, _>>()
                    .ok()?;
                Some((source, destination, bytes))
            })
            .collect()
    }
}

/// The RTP payloads (after the 12-byte header, the first 160 bytes) of
/// captured datagrams that `keep` selects.
fn audio_of(
    captured: &[(u16, u16, Vec<u8>)],
    keep: impl Fn(u16, u16) -> bool,
) -> std::collections::HashSet<Vec<u8>> {
    captured
        .iter()
        .filter(|(source, destination, bytes)| keep(*source, *destination) && bytes.len() >= 172)
        .map(|(_, _, bytes)| bytes[12..172].to_vec())
        .collect()
}

fn port_of(remote: &serde_json::Value) -> u16 {
    remote
        .as_str()
        .and_then(|text| text.rsplit(':').next())
        .and_then(|port| port.parse().ok())
        .unwrap_or_else(|| panic!("no remote in {remote}"))
}

#[test]
fn srtp_phones_call_each_other_and_a_plain_trunk_with_no_plain_audio_on_their_legs() {
    let server = TlsServe::start_with(
        "",
        "[sip.srtp]\ndefault = \"required\"\ntrunk = \"off\"",
        "",
    );
    let serve = &server.serve;
    let dir = tempfile::tempdir().unwrap();
    let _bert = server.srtp_phone(&dir.path().join("bert"), "bert", &[]);
    serve.wait_log(&["device registered", "user=bert"]);
    let _anna = server.srtp_phone(&dir.path().join("anna"), "anna", &["-e", "/dial 202"]);

    // SRTP phone to SRTP phone: both legs keyed by the host, audio both ways.
    let ended = serve.wait_log_nth(
        &["call ended", "from_user=anna"],
        0,
        Duration::from_secs(30),
    );
    assert!(ended.contains("answered_by=bert"), "{ended}");
    let media = call_media(serve, &ended);
    for leg in &media {
        assert_eq!(leg["srtp"], true, "{leg}");
        assert_eq!(leg["srtp_rejected"], 0, "{leg}");
        assert!(leg["packets_in"].as_u64().unwrap() >= 50, "{leg}");
        assert!(leg["packets_out"].as_u64().unwrap() >= 50, "{leg}");
    }

    // The plain trunk (SIPp) calls Anna's SRTP phone, captured on loopback.
    let capture = Capture::start(dir.path(), serve.rtp);
    let carrier = trunk_call(serve, "uac.xml", ANNA, &["-d", "3000"]).wait();
    carrier.assert_ok();
    let ended = serve.wait_log_nth(
        &["call ended", "answered_by=anna"],
        0,
        Duration::from_secs(30),
    );
    let captured = capture.payloads();
    let media = call_media(serve, &ended);
    let (trunk, phone) = (&media[0], &media[1]);
    assert_eq!(trunk["srtp"], false, "{trunk}");
    assert_eq!(phone["srtp"], true, "{phone}");
    assert!(phone["packets_out"].as_u64().unwrap() >= 50, "{phone}");
    assert!(trunk["packets_out"].as_u64().unwrap() >= 50, "{trunk}");
    let (sipp, baresip) = (port_of(&trunk["remote"]), port_of(&phone["remote"]));
    let from_sipp = audio_of(&captured, |source, _| source == sipp);
    let to_anna = audio_of(&captured, |_, destination| destination == baresip);
    let from_anna = audio_of(&captured, |source, _| source == baresip);
    let to_sipp = audio_of(&captured, |_, destination| destination == sipp);
    assert!(
        !from_sipp.is_empty()
            && !to_anna.is_empty()
            && !from_anna.is_empty()
            && !to_sipp.is_empty(),
        "capture incomplete: {} datagrams",
        captured.len()
    );
    assert!(
        from_sipp.is_disjoint(&to_anna),
        "plain trunk audio reached the SRTP leg in the clear"
    );
    assert!(
        to_sipp.is_disjoint(&from_anna),
        "the SRTP leg's audio went out unchanged"
    );
    // The trunk got decrypted audio: what it received is not what Anna sent.
    assert!(to_sipp.iter().all(|payload| !from_anna.contains(payload)));
}

/// What the scripted SRTP carrier saw of its call.
struct ScriptedCall {
    /// Our SDP answer.
    answer: String,
    /// Our answer to its re-INVITE (`--rekey`).
    reanswer: Option<String>,
    /// What it printed (the answer's Contact, the BYE's status).
    output: String,
}

/// Bert registered from a SIPp phone (UDP) that answers.
fn bert_answers(serve: &Serve) -> Sipp {
    let bert = free_port();
    crate::sip::register(serve, "bert", bert);
    crate::sip::answering_phone("bert answers", bert)
}

/// The scripted SRTP carrier calls `number` and sends `packets` packets of
/// A-law 0x55 (see `tls_peer.py srtp-call`).
fn scripted_srtp_call(server: &TlsServe, number: &str, packets: u32) -> ScriptedCall {
    scripted_srtp_call_with(server, number, packets, &[])
}

/// As [`scripted_srtp_call`], with more arguments (`--rekey`, `--sips`).
fn scripted_srtp_call_with(
    server: &TlsServe,
    number: &str,
    packets: u32,
    extra: &[&str],
) -> ScriptedCall {
    let dir = tempfile::tempdir().unwrap();
    let answer_file = dir.path().join("answer.sdp");
    let (host, port) = (LOCALHOST.to_string(), server.tls_port.to_string());
    let rtp = free_port().to_string();
    let peer = tls_peer();
    let packets = packets.to_string();
    let mut args = vec![
        peer.to_str().unwrap(),
        "srtp-call",
        &host,
        &port,
        number,
        "--rtp-port",
        &rtp,
        "--packets",
        &packets,
        "--out",
        answer_file.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    let (ok, output) = run("python3", &args, b"");
    assert!(
        ok && output.contains("SIP/2.0 200"),
        "the scripted caller: {output}"
    );
    ScriptedCall {
        answer: std::fs::read_to_string(&answer_file).unwrap(),
        reanswer: std::fs::read_to_string(answer_file.with_extension("sdp.reanswer")).ok(),
        output,
    }
}

#[test]
fn a_scripted_srtp_caller_is_decrypted_for_dtmf_and_replays_and_wrong_keys_are_dropped() {
    // The scripted peer is the carrier: a TLS trunk on loopback.
    let server = TlsServe::scripted_carrier(None, "preferred");
    let serve = &server.serve;
    let phone = bert_answers(serve);
    let call = scripted_srtp_call(&server, BERT, 50);
    let phone = phone.wait();
    phone.assert_ok();
    let answer = call.answer;
    // Bert's phone is on UDP: it is offered plain RTP, and no key at all
    // (neither ours nor the caller's).
    let invite = phone.received_request("INVITE").expect("Bert's INVITE");
    assert!(
        invite.text.contains(" RTP/AVP ") && !invite.text.contains("a=crypto"),
        "{}",
        invite.text
    );

    // Our answer: RTP/SAVP with a key of our own for the caller's leg.
    assert!(answer.contains(" RTP/SAVP 8"), "{answer}");
    assert_eq!(
        answer
            .matches("a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:")
            .count(),
        1,
        "{answer}"
    );

    let ended = serve.wait_log_nth(
        &["call ended", "answered_by=bert"],
        0,
        Duration::from_secs(20),
    );
    let media = call_media(serve, &ended);
    let (caller, callee) = (&media[0], &media[1]);
    assert_eq!(caller["srtp"], true, "{caller}");
    assert_eq!(callee["srtp"], false, "{callee}");
    assert_eq!(caller["srtp_replayed"], 1, "{caller}");
    assert_eq!(caller["srtp_rejected"], 1, "{caller}");
    // The key press inside SRTP was seen, decrypted.
    assert_eq!(caller["dtmf_digits"], 1, "{caller}");
    // Every genuine packet (50 audio, 4 events) went on to Bert, nothing
    // else did.
    assert_eq!(callee["packets_out"], 54, "{callee}");
    // Bert's INVITE (plain UDP phone) carried no key at all.
    let log = serve.log();
    assert!(!log.contains("inline:"), "a key reached the log");
}

/// CR9: a call whose caller's leg is SRTP is recorded in the clear (the
/// relay decrypts before the tap), complete and signed like any other.
#[test]
fn an_srtp_call_is_recorded_decrypted() {
    let h = crate::recording::recorder("users = [\"bert\"]\n");
    let server = TlsServe::scripted_carrier(Some(h.data()), "preferred");
    let serve = &server.serve;
    let phone = bert_answers(serve);
    scripted_srtp_call(&server, BERT, 100);
    phone.wait().assert_ok();
    let entries = crate::recording::wait_for_recordings(&h, "rec", 1);
    let entry = &entries[0];
    assert_eq!(entry["status"], "complete", "{entry:#}");
    let wav = crate::recording::read_wav(&crate::recording::file_of(entry, ".wav"));
    let caller = crate::recording::channel(&wav, 0);
    // 100 packets of 160 samples of 0x55 were sent encrypted: the file has
    // them as sent, not as ciphertext.
    let plain = caller.iter().filter(|&&sample| sample == 0x55).count();
    assert!(
        plain >= 100 * 160,
        "{plain} samples of the caller's audio in the clear"
    );
    let report: serde_json::Value =
        serde_json::from_str(&h.ok(&["instance", "action", "rec", "verify", "--json"])).unwrap();
    assert_eq!(report["passed"], true, "{report:#}");
}

#[test]
fn a_re_invite_with_a_new_key_rekeys_the_leg_and_the_old_key_is_refused() {
    let server = TlsServe::scripted_carrier(None, "preferred");
    let serve = &server.serve;
    let phone = bert_answers(serve);
    let call = scripted_srtp_call_with(&server, BERT, 30, &["--rekey", "--sips"]);
    phone.wait().assert_ok();
    // A dialog set up with a sips: URI gets a sips: Contact.
    assert!(
        call.output.contains("answer Contact: sips:"),
        "{}",
        call.output
    );
    // Our key stays what it was in the re-answer.
    let (first, again) = (&call.answer, call.reanswer.as_deref().expect("a re-answer"));
    let key = |sdp: &str| {
        sdp.lines()
            .find(|line| line.starts_with("a=crypto:"))
            .map(str::to_string)
            .expect("a=crypto")
    };
    assert_eq!(key(first), key(again));
    let ended = serve.wait_log_nth(
        &["call ended", "answered_by=bert"],
        0,
        Duration::from_secs(20),
    );
    let media = call_media(serve, &ended);
    let (caller, callee) = (&media[0], &media[1]);
    // 30 under the first key, 4 events, 30 under the new one went on; the
    // stranger's and the old key's after the re-INVITE did not.
    assert_eq!(callee["packets_out"], 64, "{callee}");
    assert_eq!(caller["srtp_rejected"], 2, "{caller}");
    assert_eq!(caller["srtp_replayed"], 1, "{caller}");
}

/// `callhost serve` with `config` as its callhost.toml: its exit status
/// and stderr (killed after 20 s if it keeps running).
fn serve_once(data: &Path, config: &str) -> (std::process::ExitStatus, String) {
    // Its own HTTP port: tests run side by side.
    std::fs::write(
        data.join("callhost.toml"),
        format!("{config}\n[http]\nlisten = \"127.0.0.1:0\"\n"),
    )
    .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_callhost"))
        .arg("--data")
        .arg(data)
        .arg("serve")
        .env_remove("CALLHOST_DATA")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            child.kill().ok();
            panic!("callhost serve kept running");
        }
        thread::sleep(Duration::from_millis(50));
    };
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .ok();
    (status, stderr)
}

#[test]
fn a_taken_tls_port_or_a_missing_key_stops_serve_with_the_reason_and_no_panic() {
    let data = tempfile::tempdir().unwrap();
    callhost(data.path(), &["tls", "self-signed", "--name", LOCALHOST]);
    let directory = data.path().join("directory.toml");
    std::fs::write(&directory, DIRECTORY).unwrap();
    callhost(
        data.path(),
        &["directory", "load", directory.to_str().unwrap()],
    );
    let taken = std::net::TcpListener::bind((LOCALHOST, 0)).unwrap();
    let taken_port = taken.local_addr().unwrap().port();
    let rtp = crate::sip_harness::free_ports(8);
    let config = |tls_port: u16, key: &str| {
        format!(
            "[sip]\nlisten = \"{LOCALHOST}:{}\"\n[sip.tls]\nlisten = \"{LOCALHOST}:{tls_port}\"\n\
             certificate = \"tls/sip-cert.pem\"\nkey = \"{key}\"\n\
             [media]\naddress = \"{LOCALHOST}\"\nrtp_ports = \"{rtp}-{}\"\n",
            free_port(),
            rtp + 7
        )
    };
    let (status, stderr) = serve_once(data.path(), &config(taken_port, "tls/sip-key.pem"));
    assert!(!status.success(), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "cannot listen for SIP over TLS on {LOCALHOST}:{taken_port}"
        )),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
    let (status, stderr) = serve_once(data.path(), &config(free_port(), "tls/missing-key.pem"));
    assert!(!status.success(), "{stderr}");
    assert!(stderr.contains("missing-key.pem"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

/// A PulseAudio server with a null sink of its own (linphone needs a sound
/// device to send audio; there is none in a container), stopped on drop.
struct Pulse {
    child: std::process::Child,
    server: String,
}

impl Pulse {
    fn start(dir: &Path) -> Pulse {
        let runtime = dir.join("pulse");
        std::fs::create_dir_all(&runtime).unwrap();
        let socket = runtime.join("native");
        let child = Command::new("pulseaudio")
            .args(["--daemonize=no", "--exit-idle-time=-1", "-n"])
            .arg("--load=module-null-sink sink_name=null")
            .arg(format!(
                "--load=module-native-protocol-unix socket={}",
                socket.display()
            ))
            .env("PULSE_RUNTIME_PATH", &runtime)
            .env("HOME", dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("pulseaudio (is it installed?)");
        let deadline = Instant::now() + Duration::from_secs(10);
        while !socket.exists() {
            assert!(Instant::now() < deadline, "pulseaudio did not start");
            thread::sleep(Duration::from_millis(50));
        }
        Pulse {
            child,
            server: format!("unix:{}", socket.display()),
        }
    }
}

impl Drop for Pulse {
    fn drop(&mut self) {
        self.child.kill().ok();
        self.child.wait().ok();
    }
}

#[test]
fn linphone_over_tls_with_srtp_answers_an_srtp_baresip_with_audio_both_ways() {
    let server = TlsServe::start_with("", "[sip.srtp]\ndefault = \"required\"", "");
    let serve = &server.serve;
    let dir = tempfile::tempdir().unwrap();
    let pulse = Pulse::start(dir.path());
    let home = dir.path().join("home");
    std::fs::create_dir_all(home.join(".local/share/linphone")).unwrap();
    let (sip, rtp) = (free_port(), crate::sip_harness::free_ports(10));
    let config = dir.path().join("linphonerc");
    std::fs::write(
        &config,
        format!(
            "[sip]\nsip_port=-1\nsip_tcp_port=-1\nsip_tls_port={sip}\ndefault_proxy=0\n\
             media_encryption=srtp\nmedia_encryption_mandatory=1\n\
             root_ca={}\nverify_server_certs=1\nverify_server_cn=0\n\
             [proxy_0]\nreg_proxy=<sip:{addr};transport=tls>\nreg_route=<sip:{addr};transport=tls>\n\
             reg_identity=sip:bert@{LOCALHOST}\nreg_expires=60\nreg_sendregister=1\n\
             [auth_info_0]\nusername=bert\npasswd=bert-pw\nrealm=callhost\n\
             [rtp]\naudio_rtp_port={rtp}-{}\n[video]\nenabled=0\n",
            server.certificate().display(),
            rtp + 9,
            addr = server.tls_addr(),
        ),
    )
    .unwrap();
    // linphonec reads commands from stdin and quits at its end: a pipe we
    // hold open keeps it running.
    let log = dir.path().join("linphone.log");
    let mut linphone = Command::new("linphonec")
        .arg("-c")
        .arg(&config)
        .args(["-a", "-d", "3", "-l"])
        .arg(&log)
        .env("HOME", &home)
        .env("PULSE_SERVER", &pulse.server)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("linphonec (is linphone-cli installed?)");
    let registered = serve.wait_log_nth(
        &["device registered", "user=bert"],
        0,
        Duration::from_secs(20),
    );
    assert!(registered.contains("transport=TLS"), "{registered}");
    let _anna = server.srtp_phone(&dir.path().join("anna"), "anna", &["-e", "/dial 202"]);
    let ended = serve.wait_log_nth(
        &["call ended", "from_user=anna"],
        0,
        Duration::from_secs(40),
    );
    linphone.kill().ok();
    linphone.wait().ok();
    let media = call_media(serve, &ended);
    let linphone_log = std::fs::read_to_string(&log).unwrap_or_default();
    let tail: String = linphone_log
        .lines()
        .rev()
        .take(40)
        .collect::<Vec<_>>()
        .join("\n");
    assert!(ended.contains("answered_by=bert"), "{ended}\n{tail}");
    for leg in &media {
        assert_eq!(leg["srtp"], true, "{leg}");
    }
    let (anna, bert) = (&media[0], &media[1]);
    assert_eq!(anna["srtp_rejected"], 0, "{anna}");
    assert!(
        anna["packets_out"].as_u64().unwrap() >= 100,
        "from linphone to baresip: {bert}\n{tail}"
    );
    assert!(
        bert["packets_out"].as_u64().unwrap() >= 100,
        "from baresip to linphone: {bert}\n{tail}"
    );
}

#[test]
fn an_offer_that_breaks_a_required_srtp_policy_is_refused_with_488() {
    // The carrier must use SRTP; the scripted one offers plain RTP.
    let server = TlsServe::scripted_carrier(None, "required");
    let refused = carrier_invite(&server.tls_addr(), BERT, None);
    assert!(refused.contains("SIP/2.0 488"), "{refused}");
    let line = server.serve.wait_log(&["request refused", "status=488"]);
    assert!(line.contains("SRTP is required"), "{line}");
}
