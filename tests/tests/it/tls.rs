//! TLS with client certificates and per-device ACLs on mosquitto: the system runs end to end
//! over TLS; a client with a certificate from an unknown CA, or without TLS, is refused; a
//! device cannot publish on another device's topic (the broker drops it before the hub).

use std::path::Path;
use std::time::{Duration, Instant};

use hub_link::tls::TlsFiles;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
};
use rumqttc::{Client, Event, MqttOptions, Packet, QoS, TlsConfiguration, Transport};
use tests::broker::Mosquitto;
use tests::system::{Device, Hub, Spy, delivery, figures, serial};

struct Ca {
    issuer: Issuer<'static, KeyPair>,
}

impl Ca {
    fn new(dir: &Path, name: &str) -> Ca {
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.distinguished_name.push(DnType::CommonName, name);
        let key = KeyPair::generate().unwrap();
        let cert = p.self_signed(&key).unwrap();
        std::fs::write(dir.join(format!("{name}.pem")), cert.pem()).unwrap();
        Ca {
            issuer: Issuer::new(p, key),
        }
    }

    /// A certificate for `cn`, written as `{file}.pem` / `{file}.key`.
    fn issue(&self, dir: &Path, file: &str, cn: &str, server: bool) -> TlsFiles {
        let sans = if server {
            vec!["localhost".to_owned(), "127.0.0.1".to_owned()]
        } else {
            vec![]
        };
        let mut p = CertificateParams::new(sans).unwrap();
        p.distinguished_name.push(DnType::CommonName, cn);
        p.extended_key_usages = vec![if server {
            ExtendedKeyUsagePurpose::ServerAuth
        } else {
            ExtendedKeyUsagePurpose::ClientAuth
        }];
        let key = KeyPair::generate().unwrap();
        let cert = p.signed_by(&key, &self.issuer).unwrap();
        let (c, k) = (
            dir.join(format!("{file}.pem")),
            dir.join(format!("{file}.key")),
        );
        std::fs::write(&c, cert.pem()).unwrap();
        std::fs::write(&k, key.serialize_pem()).unwrap();
        TlsFiles {
            ca: dir.join("ca.pem"),
            cert: c,
            key: k,
        }
    }
}

fn tls_section(f: &TlsFiles) -> String {
    format!(
        "[mqtt.tls]\nca = \"{}\"\ncert = \"{}\"\nkey = \"{}\"\n",
        f.ca.display(),
        f.cert.display(),
        f.key.display()
    )
}

/// Whether a client gets a CONNACK within a few seconds.
fn connects(port: u16, id: &str, tls: Option<&TlsFiles>) -> bool {
    let mut o = MqttOptions::new(id, "127.0.0.1", port);
    if let Some(f) = tls {
        let cfg = hub_link::tls::client_config(f).unwrap();
        o.set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(cfg)));
    }
    let (_c, mut conn) = Client::new(o, 8);
    let start = Instant::now();
    for ev in conn.iter() {
        match ev {
            Ok(Event::Incoming(Packet::ConnAck(a))) => {
                return a.code == rumqttc::ConnectReturnCode::Success;
            }
            Ok(_) => {}
            Err(_) => std::thread::sleep(Duration::from_millis(200)),
        }
        if start.elapsed() > Duration::from_secs(3) {
            break;
        }
    }
    false
}

#[test]
fn tls_client_certificates_and_acls() {
    let _g = serial();
    let tmp = tempfile::tempdir().unwrap();
    let pki = tmp.path().join("pki");
    std::fs::create_dir_all(&pki).unwrap();
    let ca = Ca::new(&pki, "ca");
    let server = ca.issue(&pki, "server", "broker", true);
    let hub_tls = ca.issue(&pki, "hub", "hub", false);
    let d1_tls = ca.issue(&pki, "d-001", "d-001", false);
    let spy_tls = ca.issue(&pki, "spy", "spy", false);
    let rogue_dir = tmp.path().join("rogue");
    std::fs::create_dir_all(&rogue_dir).unwrap();
    let rogue = Ca::new(&rogue_dir, "ca");
    let mut rogue_client = rogue.issue(&rogue_dir, "d-001", "d-001", false);
    rogue_client.ca = pki.join("ca.pem"); // it trusts the real broker; the broker does not trust it
    let acl = tmp.path().join("acl");
    std::fs::write(
        &acl,
        "user hub\ntopic read iat/v1/+/+/agg/+\ntopic read iat/v1/+/+/checkpoint\ntopic write iat/v1/+/+/ack\n\
         user spy\ntopic read #\n\
         pattern write iat/v1/+/%u/agg/+\npattern write iat/v1/+/%u/checkpoint\n\
         pattern readwrite iat/v1/+/%u/status\npattern read iat/v1/+/%u/ack\n",
    )
    .unwrap();
    let broker = Mosquitto::start_with(
        tmp.path(),
        &format!(
            "cafile {}\ncertfile {}\nkeyfile {}\nrequire_certificate true\nuse_identity_as_username true\n\
             allow_anonymous false\nacl_file {}\n",
            pki.join("ca.pem").display(),
            server.cert.display(),
            server.key.display(),
            acl.display()
        ),
    );
    let spy_cfg = hub_link::tls::client_config(&spy_tls).unwrap();
    let spy = Spy::start(
        broker.port,
        Some(Transport::tls_with_config(TlsConfiguration::Rustls(
            spy_cfg,
        ))),
    );
    let mut hub = Hub::setup(
        &tmp.path().join("hub"),
        broker.port,
        &format!("client_id = \"hub\"\n{}", tls_section(&hub_tls)),
        "30s",
    );
    let dev = Device::setup(
        &tmp.path().join("dev"),
        "d-001",
        broker.port,
        &hub.vkey(),
        2,
        &tls_section(&d1_tls),
    );
    hub.enroll(&dev);
    // d-002 is enrolled only to be the victim of the cross-device publication below.
    let _d2 = hub.enroll_new(&tmp.path().join("d2"), "d-002", broker.port, 1);
    hub.start();
    let ok = dev.spawn("run").wait().unwrap().success();
    assert!(
        ok,
        "{}",
        std::fs::read_to_string(dev.dir.join("agent.log")).unwrap_or_default()
    );
    let (size, _) = dev.log_state();
    assert!(hub.wait_stored(&dev.id, size, Duration::from_secs(10)));

    // Refused: a certificate from an unknown CA, and plain TCP on the TLS port.
    let mut accepted = 0;
    if connects(broker.port, "d-001", Some(&rogue_client)) {
        accepted += 1;
    }
    if connects(broker.port, "d-001", None) {
        accepted += 1;
    }
    // d-001, properly authenticated, publishes its own genuine record on d-002's topic: the
    // broker's ACL drops it, so the hub never sees it (no record, no alarm).
    let rec = &hub.records(&dev.id)[0];
    let mut o = MqttOptions::new("d-001", "127.0.0.1", broker.port);
    let cfg = hub_link::tls::client_config(&d1_tls).unwrap();
    o.set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(cfg)));
    let (c, mut conn) = Client::new(o, 8);
    let payload =
        hub_link::encode_record(0, &rec.entry, &rec.signature.clone().try_into().unwrap()).unwrap();
    c.publish(
        "iat/v1/fr-test/d-002/agg/silero-vad-16k",
        QoS::AtLeastOnce,
        false,
        payload,
    )
    .unwrap();
    let start = Instant::now();
    for ev in conn.iter() {
        if matches!(ev, Ok(Event::Incoming(Packet::PubAck(_))))
            || start.elapsed() > Duration::from_secs(3)
        {
            break;
        }
    }
    std::thread::sleep(Duration::from_millis(500));
    let stats = hub.stats();
    if stats
        .devices
        .iter()
        .any(|d| d.device == "d-002" && d.stored > 0)
    {
        accepted += 1;
    }
    let d = delivery(&hub, &dev);
    let (seen, violations) = spy.finish();
    figures(
        "tls-acl",
        &d,
        stats.alarms.len(),
        stats.alarms.len(),
        (seen, violations.len()),
        &format!("| refused: unknown CA, plaintext, other device's topic; accepted {accepted}"),
    );
    assert_eq!(accepted, 0);
    assert!(stats.alarms.is_empty(), "{:?}", stats.alarms);
    assert_eq!((d.lost, d.duplicates_stored, d.unverified), (0, 0, 0));
    assert!(violations.is_empty(), "{violations:?}");
    assert!(seen > size, "the spy saw {seen}");
}
