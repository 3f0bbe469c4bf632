//! The web side over plain HTTP: public pages and API show the stored data, suppressed values
//! stay suppressed in every export, bad input is a 400, and every admin route refuses without a
//! valid session and CSRF token, and works with them.

mod common;

use common::{
    ADMIN, Fixture, K, LINE_DEVICE, LINE_MODEL, LINE_RECORDS, MODEL, PASSWORD, SOUND_DEVICE,
    SOUND_MODEL, SOUND_RECORDS, T0, V2_BUDGET_MILLI, V2_DEVICE, V2_PAID, V2_PER_VALUE_MILLI,
    V2_RECORDS, V2_SPENT_BEFORE, WINDOW_MS, line_bicycles_out, line_people_in, sound_music_ppm,
    total,
};
use serde_json::Value;

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .max_redirects(0)
        .http_status_as_error(false)
        .build()
        .into()
}

struct Resp {
    status: u16,
    location: Option<String>,
    set_cookie: Option<String>,
    body: String,
}

fn get(url: &str, cookie: Option<&str>) -> Resp {
    let mut req = agent().get(url);
    if let Some(c) = cookie {
        req = req.header("Cookie", c);
    }
    finish(req.call().expect("GET"))
}

fn post(url: &str, cookie: Option<&str>, origin: Option<&str>, form: &[(&str, &str)]) -> Resp {
    let mut req = agent().post(url);
    if let Some(c) = cookie {
        req = req.header("Cookie", c);
    }
    if let Some(o) = origin {
        req = req.header("Origin", o);
    }
    finish(req.send_form(form.iter().copied()).expect("POST"))
}

fn finish(mut r: ureq::http::Response<ureq::Body>) -> Resp {
    let h = |n: &str| {
        r.headers()
            .get(n)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let (location, set_cookie) = (h("location"), h("set-cookie"));
    Resp {
        status: r.status().as_u16(),
        location,
        set_cookie,
        body: r
            .body_mut()
            .with_config()
            .limit(64 << 20)
            .read_to_string()
            .unwrap_or_default(),
    }
}

fn json(url: &str) -> Value {
    let r = get(url, None);
    assert_eq!(r.status, 200, "{url}: {}", r.body);
    serde_json::from_str(&r.body).expect("json")
}

/// Device `id` as the register's JSON API shows it.
fn registered(fx: &Fixture, id: &str) -> Value {
    let reg = json(&fx.url("/api/register"));
    reg["devices"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["id"] == id)
        .unwrap_or_else(|| panic!("{id} is not in the register"))
        .clone()
}

/// Logs in and returns (cookie, csrf token).
fn login(fx: &Fixture) -> (String, String) {
    let r = post(
        &fx.url("/admin/login"),
        None,
        None,
        &[("name", ADMIN), ("password", PASSWORD)],
    );
    assert_eq!(r.status, 303, "{}", r.body);
    let sc = r.set_cookie.expect("a session cookie");
    assert!(
        sc.contains("HttpOnly") && sc.contains("SameSite=Strict"),
        "{sc}"
    );
    let cookie = sc.split(';').next().unwrap().to_owned();
    let page = get(&fx.url("/admin"), Some(&cookie));
    assert_eq!(page.status, 200);
    let csrf = page
        .body
        .split("name=\"csrf\" value=\"")
        .nth(1)
        .and_then(|s| s.split('"').next())
        .expect("a csrf field")
        .to_owned();
    (cookie, csrf)
}

fn open_alarms(fx: &Fixture) -> Vec<Value> {
    json(&fx.url("/api/alarms?open=true"))["alarms"]
        .as_array()
        .unwrap()
        .clone()
}

#[test]
fn public_pages_and_api_show_the_stored_data() {
    let fx = Fixture::new();
    // Dashboard: every device, by territory, with its state.
    let d = get(&fx.url("/"), None);
    assert_eq!(d.status, 200);
    for dev in &fx.devs {
        assert!(
            d.body.contains(&format!("data-device=\"{}\"", dev.id)),
            "{}",
            dev.id
        );
    }
    assert!(d.body.contains("Territoire fr-lyon") && d.body.contains("Territoire fr-nantes"));
    let api = json(&fx.url("/api/devices"));
    let devs = api["devices"].as_array().unwrap();
    let find = |id: &str| devs.iter().find(|d| d["id"] == id).unwrap().clone();
    assert_eq!(find("dev-1")["records"], 288);
    assert_eq!(find("dev-1")["status"], "online");
    assert_eq!(find("dev-2")["status"], "offline");
    assert_eq!(find("dev-1")["audit"], "verified");
    assert_eq!(find("cam-9")["audit"], "FORK");

    // One series, every window: values and "< k" exactly as published.
    let s = json(&fx.url(&format!(
        "/api/devices/dev-1/series?model={MODEL}&kind=count&class=face&bucket=window"
    )));
    let w = s["windows"].as_array().unwrap();
    assert_eq!(w.len(), 288);
    let mut suppressed = 0;
    for (i, win) in w.iter().enumerate() {
        match total(i as u64) {
            Some(v) => assert_eq!(win["value"], v, "window {i}"),
            None => {
                suppressed += 1;
                assert_eq!(win["value"], format!("< {K}"), "window {i}");
            }
        }
        assert_eq!(win["epsilon"], 1.0);
        assert_eq!(win["start"], hub::dates::format(T0 + i as i64 * WINDOW_MS));
    }
    assert!(suppressed > 0, "the fixture has suppressed windows");
    // Buckets of a day: sums of the published values, with the suppressed windows counted.
    let b = json(&fx.url(&format!(
        "/api/devices/dev-1/series?model={MODEL}&kind=count&class=face&bucket=1d"
    )));
    let buckets = b["buckets"].as_array().unwrap();
    assert_eq!(buckets.len(), 3);
    for (day, bk) in buckets.iter().enumerate() {
        let range = (day as u64 * 96)..(day as u64 * 96 + 96);
        let sum: u64 = range.clone().filter_map(total).sum();
        let sup = range.filter(|i| total(*i).is_none()).count();
        assert_eq!(bk["value"].as_f64().unwrap(), sum as f64);
        assert_eq!(bk["suppressed_windows"], sup);
        assert_eq!(bk["windows"], 96);
    }

    // CSV: "< k", never a number, for suppressed windows.
    let csv = get(
        &fx.url(&format!(
            "/export/dev-1/series.csv?model={MODEL}&kind=count&class=face"
        )),
        None,
    );
    assert_eq!(csv.status, 200);
    let lines: Vec<&str> = csv.body.lines().collect();
    assert_eq!(lines.len(), 289);
    assert!(lines[0].starts_with("device,territory,model"));
    for (i, l) in lines[1..].iter().enumerate() {
        let value = l.split(',').nth(11).unwrap();
        match total(i as u64) {
            Some(v) => assert_eq!(value, v.to_string()),
            None => assert_eq!(value, format!("< {K}")),
        }
    }

    // The national counting schema: suppressed counts are empty, not numbers.
    let m = get(&fx.url("/export/comptage/measures.csv?device=dev-1"), None);
    assert_eq!(m.status, 200);
    let ml: Vec<&str> = m.body.lines().collect();
    assert_eq!(
        ml[0],
        "channel_id,counter_id,start_datetime,end_datetime,count"
    );
    assert_eq!(ml.len(), 289);
    for (i, l) in ml[1..].iter().enumerate() {
        let f: Vec<&str> = l.split(',').collect();
        assert_eq!(f[0], "fr-lyon.dev-1.centerface-int8.face");
        assert_eq!(
            f[4],
            total(i as u64).map(|v| v.to_string()).unwrap_or_default()
        );
    }
    let ch = get(&fx.url("/export/comptage/channels.csv"), None).body;
    assert!(ch.contains("fr-lyon.dev-1.centerface-int8.face,"), "{ch}");
    assert!(ch.contains(",PEDESTRIAN,") && ch.contains("VIDEO SENSOR") && ch.contains(",900,"));
    let sites = get(&fx.url("/export/comptage/sites.csv"), None).body;
    assert!(sites.starts_with("site_id,parent_site_id,site_name,fr_insee_code,xlong,ylat"));
    assert_eq!(sites.lines().count(), 4);

    // The device page: chart and latest windows.
    let p = get(&fx.url("/device/dev-1"), None);
    assert_eq!(p.status, 200);
    assert!(p.body.contains("id=\"chart-centerface-int8-count-face\""));
    assert!(p.body.contains("ε = 1 par fenêtre"));
    assert_eq!(
        p.body
            .split("id=\"chart-centerface-int8-count-face\"")
            .nth(1)
            .unwrap()
            .split("</svg>")
            .next()
            .unwrap()
            .matches("<circle")
            .count(),
        288
    );
}

#[test]
fn the_register_lets_anyone_verify_a_device() {
    let fx = Fixture::new();
    let r = get(&fx.url("/register"), None);
    assert_eq!(r.status, 200);
    for needle in [
        "id=\"dev-dev-1\"",
        "GDPR art. 6(1)(e)",
        "IAT project maintainers",
        "MIT",
        "WIDER FACE",
        "1er mars 2026, 01:00",
        "hub verify",
    ] {
        assert!(r.body.contains(needle), "register lacks {needle}");
    }
    let d1 = registered(&fx, "dev-1");
    assert_eq!(d1["models"][0]["since"], "2026-03-01T00:00:00Z");
    assert_eq!(d1["models"][0]["licence"], "MIT");
    assert_eq!(d1["checkpoint_size"], 288);

    // Download what the register links to, and verify it independently.
    let key = get(&fx.url("/export/dev-1/device.vkey"), None).body;
    let records = get(&fx.url("/export/dev-1/records.jsonl"), None).body;
    let cp = get(&fx.url("/export/dev-1/checkpoint.txt"), None).body;
    assert!(cp.contains("iat/fr-lyon/dev-1\n288\n"), "{cp}");
    let k = audit::VerifierKey::parse(key.trim()).unwrap();
    let v = verify::export(std::slice::from_ref(&k), &records, &cp).expect("verifies");
    assert_eq!((v.records, v.checkpoint_size), (288, 288));
    // A changed record, a dropped one, or another device's key: refused.
    let tampered = records.replacen("\\\"frames\\\":900", "\\\"frames\\\":901", 1);
    assert_ne!(tampered, records);
    assert!(verify::export(std::slice::from_ref(&k), &tampered, &cp).is_err());
    let dropped: String = records.lines().skip(1).map(|l| format!("{l}\n")).collect();
    assert!(verify::export(std::slice::from_ref(&k), &dropped, &cp).is_err());
    let other = fx.devs[1].key.verifier();
    assert!(verify::export(&[other], &records, &cp).is_err());

    // The consistency proof the browser's verifier asks for: it links the device's signed
    // root at 100 records to its signed root at 288.
    let leaves: Vec<audit::Hash> = records
        .lines()
        .map(|l| {
            let env: hub_link::Envelope = serde_json::from_str(l).unwrap();
            audit::merkle::leaf_hash(env.entry.as_bytes())
        })
        .collect();
    let root = |n: usize| {
        let mut f = audit::Frontier::new();
        for l in &leaves[..n] {
            f.append(*l);
        }
        f.root()
    };
    let r = get(
        &fx.url("/api/devices/dev-1/consistency?from=100&to=288"),
        None,
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let body: Value = serde_json::from_str(&r.body).unwrap();
    let proof: Vec<audit::Hash> = body["proof"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| verify::unhex_hash(h.as_str().unwrap()).expect("64 hex digits"))
        .collect();
    assert!(!proof.is_empty());
    audit::merkle::verify_consistency(100, 288, &root(100), &root(288), &proof)
        .expect("the proof links the two roots");
    assert!(
        audit::merkle::verify_consistency(100, 288, &root(99), &root(288), &proof).is_err(),
        "and no other old root"
    );
    for (query, status) in [
        ("from=288&to=100", 400),
        ("from=1", 400),
        ("from=x&to=5", 400),
        ("from=0&to=5&size=3", 400),
        ("from=10&to=289", 404),
    ] {
        let r = get(
            &fx.url(&format!("/api/devices/dev-1/consistency?{query}")),
            None,
        );
        assert_eq!(r.status, status, "{query}: {}", r.body);
    }
    assert_eq!(
        get(&fx.url("/api/devices/nobody/consistency?from=0&to=1"), None).status,
        404
    );
}

#[test]
fn bad_input_is_a_clear_400_or_404() {
    let fx = Fixture::new();
    for (path, status, says) in [
        (
            "/api/devices/dev-1/series?model=centerface-int8&kind=count&class=face&from=yesterday",
            400,
            "not a date",
        ),
        (
            "/api/devices/dev-1/series?model=centerface-int8&kind=count&class=face&bucket=1s",
            400,
            "bucket",
        ),
        (
            "/api/devices/dev-1/series?model=centerface-int8&kind=count&class=face&from=2026-03-03&to=2026-03-01",
            400,
            "before",
        ),
        (
            "/api/devices/dev-1/series?model=centerface-int8&kind=count&class=face&bucket=1m&from=1000-01-01&to=2999-01-01",
            400,
            "buckets",
        ),
        (
            "/api/devices/dev-1/series?model=centerface-int8",
            400,
            "2 series match",
        ),
        ("/api/devices/dev-1/series?model=nope", 404, "no series"),
        ("/api/devices/dev-1/series?modle=x", 400, "modle"),
        ("/api/devices/nope/series", 404, "no device"),
        ("/device/nope", 404, "no device"),
        ("/device/dev-1?from=2026-13-01", 400, "not a date"),
        ("/export/dev-1/series.csv", 400, "name `model`"),
        ("/api/alarms?open=maybe", 400, "true or false"),
        (
            "/export/comptage/measures.csv?device=nope",
            404,
            "no enrolled device",
        ),
        ("/api/devices/%FF%FE", 400, "Invalid UTF-8"),
        ("/nowhere", 404, "no such page"),
    ] {
        let r = get(&fx.url(path), None);
        assert_eq!(r.status, status, "{path}: {}", r.body);
        assert!(r.body.contains(says), "{path}: {}", r.body);
    }
}

#[test]
fn admin_routes_refuse_without_a_session_and_work_with_one() {
    let fx = Fixture::new();
    let new_key = common::key_for("iat/fr-lyon/dev-7", 7)
        .verifier()
        .to_string();
    let rotated = common::key_for("iat/fr-lyon/dev-1", 11)
        .verifier()
        .to_string();
    let alarm = open_alarms(&fx)[0]["id"].as_i64().unwrap();
    let ack = format!("/admin/alarms/{alarm}/ack");
    let actions: Vec<(String, Vec<(&str, &str)>)> = vec![
        (
            "/admin/enrol".into(),
            vec![("vkey", &new_key), ("card", MODEL)],
        ),
        (
            "/admin/rotate".into(),
            vec![("device", "dev-1"), ("vkey", &rotated)],
        ),
        (ack.clone(), vec![]),
        ("/admin/logout".into(), vec![]),
    ];
    let enrolment_before = std::fs::read_to_string(&fx.devices_path).unwrap();

    // No session: the page redirects to the login, every action is a 401.
    let r = get(&fx.url("/admin"), None);
    assert_eq!(
        (r.status, r.location.as_deref()),
        (303, Some("/admin/login"))
    );
    for (path, form) in &actions {
        let r = post(&fx.url(path), None, None, form);
        assert_eq!(r.status, 401, "{path} without a session");
        // A forged or stale cookie is no better.
        let r = post(&fx.url(path), Some("iat_session=forged"), None, form);
        assert_eq!(r.status, 401, "{path} with a forged cookie");
        let mut with_csrf = form.clone();
        with_csrf.push(("csrf", "guess"));
        let r = post(&fx.url(path), Some("iat_session=forged"), None, &with_csrf);
        assert_eq!(r.status, 401, "{path} with a forged cookie and token");
    }
    assert_eq!(
        std::fs::read_to_string(&fx.devices_path).unwrap(),
        enrolment_before
    );
    assert_eq!(open_alarms(&fx).len(), 1);

    // A wrong password: no session.
    let r = post(
        &fx.url("/admin/login"),
        None,
        None,
        &[("name", ADMIN), ("password", "wrong password!")],
    );
    assert_eq!(r.status, 401);
    assert!(r.set_cookie.is_none());
    let r = post(
        &fx.url("/admin/login"),
        None,
        None,
        &[("name", "nobody"), ("password", PASSWORD)],
    );
    assert_eq!(r.status, 401);

    // A session without its CSRF token, or from another site: 403.
    let (cookie, csrf) = login(&fx);
    for (path, form) in &actions {
        let r = post(&fx.url(path), Some(&cookie), None, form);
        assert_eq!(r.status, 403, "{path} without the CSRF token");
        let mut with_csrf = form.clone();
        with_csrf.push(("csrf", &csrf));
        let r = post(
            &fx.url(path),
            Some(&cookie),
            Some("http://evil.example"),
            &with_csrf,
        );
        assert_eq!(r.status, 403, "{path} from another origin");
    }
    assert_eq!(
        std::fs::read_to_string(&fx.devices_path).unwrap(),
        enrolment_before
    );
    assert_eq!(open_alarms(&fx).len(), 1);

    // With both: each action works.
    fn with<'a>(form: &[(&'a str, &'a str)], csrf: &'a str) -> Vec<(&'a str, &'a str)> {
        let mut f = form.to_vec();
        f.push(("csrf", csrf));
        f
    }
    // A form posted by the signed-in admin with the CSRF token (no Origin header).
    let admin = |path: &str, form: &[(&str, &str)]| {
        post(&fx.url(path), Some(&cookie), None, &with(form, &csrf))
    };
    let r = post(
        &fx.url(&ack),
        Some(&cookie),
        Some(&fx.base),
        &with(&[], &csrf),
    );
    assert_eq!(r.status, 303, "{}", r.body);
    assert!(open_alarms(&fx).is_empty());
    let all = json(&fx.url("/api/alarms"));
    assert_eq!(all["alarms"][0]["acked_by"], ADMIN);
    // Twice: nothing left to acknowledge.
    assert_eq!(admin(&ack, &[]).status, 404);

    let r = admin(
        "/admin/enrol",
        &[
            ("vkey", &new_key),
            ("card", MODEL),
            ("site_name", "<script>alert(1)</script> Place Bellecour"),
            ("controller", "Ville de Lyon <b>voirie</b>"),
            ("purpose", "Mesurer la fréquentation de la place"),
            ("legal_basis", "RGPD art. 6.1.e"),
            ("lat", "45.7578"),
            ("lon", "4.8320"),
            ("insee", "69382"),
        ],
    );
    assert_eq!(r.status, 303, "{}", r.body);
    // Ingest sees the new enrolment at once: dev-7 may now publish.
    assert!(fx.enrolment.read().unwrap().devices.contains_key("dev-7"));
    let reg = get(&fx.url("/register"), None).body;
    assert!(reg.contains("id=\"dev-dev-7\""));
    assert!(!reg.contains("<script>alert(1)</script>"), "escaped");
    assert!(reg.contains("&lt;script&gt;alert(1)&lt;/script&gt; Place Bellecour"));
    let sites = get(&fx.url("/export/comptage/sites.csv"), None).body;
    assert!(
        sites.contains(
            "fr-lyon.dev-7,fr-lyon,<script>alert(1)</script> Place Bellecour,69382,4.832,45.7578"
        ),
        "{sites}"
    );
    // Bad enrolments: a clear 400, nothing written.
    for bad in [
        vec![("vkey", "not a key"), ("card", MODEL)],
        vec![("vkey", new_key.as_str())],
        vec![("vkey", new_key.as_str()), ("card", "no-such-card")],
        vec![
            ("vkey", new_key.as_str()),
            ("card", MODEL),
            ("lat", "91"),
            ("lon", "0"),
            ("site_name", "x"),
        ],
    ] {
        let r = admin("/admin/enrol", &bad);
        assert_eq!(r.status, 400, "{bad:?}: {}", r.body);
    }

    let r = admin("/admin/rotate", &[("device", "dev-1"), ("vkey", &rotated)]);
    assert_eq!(r.status, 303, "{}", r.body);
    let d1 = registered(&fx, "dev-1");
    assert_eq!(d1["key"], rotated.as_str());
    assert_eq!(
        d1["retired_keys"][0]["key"],
        fx.devs[0].key.verifier().to_string()
    );
    // A key naming another device cannot replace dev-1's.
    let r = admin("/admin/rotate", &[("device", "dev-2"), ("vkey", &rotated)]);
    assert_eq!(r.status, 400, "{}", r.body);

    // Logout ends the session.
    let r = admin("/admin/logout", &[]);
    assert_eq!(r.status, 303);
    assert_eq!(get(&fx.url("/admin"), Some(&cookie)).status, 303);
    assert_eq!(admin(&ack, &[]).status, 401);
}

#[test]
fn admin_passwd_sets_an_argon2id_hash() {
    let fx = Fixture::new();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_hub"))
        .args(["admin", "passwd", "--user", "carol", "--config"])
        .arg(&fx.config)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write;
            c.stdin
                .take()
                .unwrap()
                .write_all(b"a long enough secret\n")?;
            c.wait_with_output()
        })
        .expect("hub admin passwd");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let phc: String = fx
        .conn()
        .query_row(
            "SELECT phc FROM admins WHERE name = 'carol'",
            hub::params![],
            |r| r.get(0),
        )
        .unwrap();
    assert!(phc.starts_with("$argon2id$"));
    let r = post(
        &fx.url("/admin/login"),
        None,
        None,
        &[("name", "carol"), ("password", "a long enough secret")],
    );
    assert_eq!(r.status, 303);
}

#[test]
fn statuses_mark_devices_online_and_never_raise_alarms() {
    let fx = Fixture::new();
    let before = json(&fx.url("/api/alarms"))["alarms"]
        .as_array()
        .unwrap()
        .len();
    let conn = fx.conn();
    let tx = conn.transaction().unwrap();
    let e = fx.enrolment.read().unwrap().clone();
    for (topic, payload) in [
        (hub_link::status_topic("fr-lyon", "dev-2"), &b"online"[..]),
        (hub_link::status_topic("fr-lyon", "ghost"), b"online"),
        (hub_link::status_topic("fr-nantes", "dev-1"), b"offline"),
        (hub_link::status_topic("fr-lyon", "dev-1"), b"garbage"),
    ] {
        let (o, ack) = hub::ingest::handle(&tx, &e, &topic, payload, T0 + 9000).unwrap();
        assert_eq!((o.alarms, ack), (0, None), "{topic}");
    }
    tx.commit().unwrap();
    let after = json(&fx.url("/api/alarms"))["alarms"]
        .as_array()
        .unwrap()
        .len();
    assert_eq!(before, after);
    let devs = json(&fx.url("/api/devices"));
    let status = |id: &str| {
        devs["devices"]
            .as_array()
            .unwrap()
            .iter()
            .find(|d| d["id"] == id)
            .unwrap()["status"]
            .clone()
    };
    assert_eq!(status("dev-2"), "online");
    assert_eq!(
        status("dev-1"),
        "online",
        "another territory's dev-1 changes nothing"
    );
}

/// Back to schema 3: alarms without severity, counts or sources (issue 21).
const UNDO_SCHEMA_V4: &str = "DROP INDEX alarms_coalesced; DROP INDEX alarms_rank;
    ALTER TABLE alarms DROP COLUMN severity; ALTER TABLE alarms DROP COLUMN count;
    ALTER TABLE alarms DROP COLUMN last_ms; ALTER TABLE alarms DROP COLUMN source;
    ALTER TABLE alarms DROP COLUMN scope; ALTER TABLE alarms DROP COLUMN period_ms;
    PRAGMA user_version = 3;";

#[test]
fn a_schema_3_database_ranks_its_alarms() {
    let fx = Fixture::new();
    if !fx.on_sqlite("a SQLite file of schema 3") {
        return;
    }
    let conn = fx.conn();
    conn.execute_batch(UNDO_SCHEMA_V4).unwrap();
    drop(conn);
    let conn = fx.conn();
    let v = hub::db::store::schema_version(&conn).unwrap();
    assert_eq!(v, hub::db::store::SCHEMA_VERSION);
    // The fixture's FORK, raised before severities existed, is critical now.
    let (kind, severity, count): (String, i64, i64) = conn
        .query_row(
            "SELECT kind, severity, count FROM alarms",
            hub::params![],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .unwrap();
    assert_eq!((kind.as_str(), severity, count), ("FORK", 3, 1));
}

/// Behind a reverse proxy (issue 21): the proxy may rewrite `Host`, so admin POSTs are checked
/// against the configured public origin, and only it; over https the cookie is `Secure`.
#[test]
fn behind_a_reverse_proxy_the_public_origin_is_checked() {
    let fx = Fixture::new();
    let cfg = hub::config::Config::load(&fx.config).unwrap();
    let web = hub::web::start(
        hub::web::WebConfig {
            public_origin: Some("https://hub.example.org".into()),
            ..hub::web::WebConfig::from_config(&cfg).unwrap()
        },
        fx.enrolment.clone(),
    )
    .unwrap();
    let base = format!("http://{}", web.addr);
    let login = |origin: &str| {
        post(
            &format!("{base}/admin/login"),
            None,
            Some(origin),
            &[("name", ADMIN), ("password", PASSWORD)],
        )
    };
    let r = login("https://hub.example.org");
    assert_eq!(r.status, 303, "{}", r.body);
    let sc = r.set_cookie.unwrap();
    assert!(sc.contains("; Secure"), "{sc}");
    // The Host the request reached is not the public origin: refused, saying what to set.
    let r = login(&base);
    assert_eq!(r.status, 403);
    assert!(r.body.contains("public_origin"), "{}", r.body);
    assert_eq!(login("https://evil.example").status, 403);
    assert_eq!(login("null").status, 403);
    // Without a public origin, a mismatch says how to fix it behind a proxy.
    let r = post(
        &fx.url("/admin/login"),
        None,
        Some("https://hub.example.org"),
        &[("name", ADMIN), ("password", PASSWORD)],
    );
    assert_eq!(r.status, 403);
    assert!(r.body.contains("set `public_origin`"), "{}", r.body);
    web.stop();
}

/// The admin alarm list: the most serious first, filters, pages, and 400 on bad filters.
#[test]
fn admin_alarm_list_pages_and_filters() {
    let fx = Fixture::new();
    // Rejected traffic around the fixture's FORK.
    let conn = fx.conn();
    let tx = conn.transaction().unwrap();
    let e = fx.enrolment.read().unwrap().clone();
    for i in 0..300 {
        hub::ingest::handle(
            &tx,
            &e,
            &format!("iat/v1/fr-bots/bot-{i}/agg/x"),
            b"{}",
            T0 + 10_000,
        )
        .unwrap();
    }
    tx.commit().unwrap();
    let (cookie, _) = login(&fx);
    let page = |q: &str| get(&fx.url(&format!("/admin/alarms{q}")), Some(&cookie));
    let all = page("");
    assert_eq!(all.status, 200, "{}", all.body);
    let first_row = all.body.find("data-alarm=").unwrap();
    assert!(
        all.body[first_row..].starts_with("data-alarm=\"1\" data-kind=\"FORK\""),
        "the FORK first: {}",
        &all.body[first_row..first_row + 200]
    );
    // 32 bots, then the rest of fr-bots: 33 rows counting 300 messages, and the FORK.
    assert!(
        all.body
            .contains("34 alarme(s), 301 événement(s) ou message(s)"),
        "{}",
        all.body
    );
    let critical = page("?severity=critical");
    assert_eq!(critical.body.matches("data-kind=\"FORK\"").count(), 1);
    assert!(!critical.body.contains("data-kind=\"UNENROLLED\""));
    let second = page("?kind=UNENROLLED&per_page=10&page=2");
    assert!(second.body.contains("page 2 sur 4"), "{}", second.body);
    assert_eq!(second.body.matches("data-kind=\"UNENROLLED\"").count(), 10);
    assert!(
        second.body.contains(
            "rel=\"next\" href=\"/admin/alarms?page=3&amp;per_page=10&amp;kind=UNENROLLED\""
        ),
        "{}",
        second.body
    );
    let cam = page("?device=cam-9");
    assert!(cam.body.contains("1 alarme(s)"), "{}", cam.body);
    for bad in [
        "?severity=urgent",
        "?page=0",
        "?per_page=100000",
        "?kind=x;drop",
        "?bogus=1",
    ] {
        assert_eq!(page(bad).status, 400, "{bad}");
    }
    // Without a session: the login page.
    assert_eq!(get(&fx.url("/admin/alarms"), None).status, 303);
    // The API the same way.
    let api = json(&fx.url("/api/alarms?per_page=2"));
    assert_eq!(api["alarms"][0]["kind"], "FORK");
    assert_eq!(
        (api["total"].as_u64(), api["pages"].as_u64()),
        (Some(34), Some(17))
    );
}

#[test]
fn opening_an_older_database_backfills_the_series_from_stored_records() {
    let fx = Fixture::new();
    if !fx.on_sqlite("a SQLite file from before issue 7") {
        return;
    }
    let conn = fx.conn();
    let rows = |c: &hub::db::sql::Connection| -> i64 {
        c.query_row("SELECT COUNT(*) FROM series", hub::params![], |r| r.get(0))
            .unwrap()
    };
    let filled_at_ingest = rows(&conn);
    // Two rows per record (count and presence_share of `face`), for every stored record.
    assert_eq!(filled_at_ingest, 2 * (288 + 96 + 40));
    // Back to the schema before issue 7: no series, no presence, no accounts, no acks.
    conn.execute_batch(UNDO_SCHEMA_V4).unwrap();
    conn.execute_batch(
        "DROP TABLE series; DROP TABLE series_keys; DROP TABLE presence; DROP INDEX alarms_open; DROP TABLE admins; DROP TABLE sessions;
         ALTER TABLE alarms DROP COLUMN acked_ms; ALTER TABLE alarms DROP COLUMN acked_by;
         PRAGMA user_version = 0;",
    )
    .unwrap();
    drop(conn);
    let conn = fx.conn();
    assert_eq!(rows(&conn), filled_at_ingest);
    let v = hub::db::store::schema_version(&conn).unwrap();
    assert_eq!(v, hub::db::store::SCHEMA_VERSION);
    // The same values as ingest wrote.
    let s = json(&fx.url(&format!(
        "/api/devices/dev-1/series?model={MODEL}&kind=count&class=face&bucket=window"
    )));
    assert_eq!(s["windows"].as_array().unwrap().len(), 288);
}

/// The sentence of the fixture's v2 device: 10-second windows, ε = 0.999 each, a budget of
/// 8640 a day of which 8639.995 was spent when its last record could not be paid for.
const V2_SENTENCE: &str = "Protection de la vie privée : chaque fenêtre de 10 s dépense au plus ε = 0,999 ; budget de 8\u{202f}640 par jour et par chaîne ; dépensé le 01/03/2026 : 8\u{202f}639,995 (100 %).";

/// (seq, epsilon_milli, budget_day, budget_milli, budget_spent_milli, withheld) of the count
/// rows of the v2 device.
type BudgetRow = (
    i64,
    Option<i64>,
    Option<String>,
    Option<i64>,
    Option<i64>,
    Option<bool>,
);

fn v2_count_rows(conn: &hub::db::sql::Connection) -> Vec<BudgetRow> {
    let mut q = conn
        .prepare(
            "SELECT seq, epsilon_milli, budget_day, budget_milli, budget_spent_milli, withheld
             FROM series WHERE device = ?1 AND kind = 'count' ORDER BY seq",
        )
        .unwrap();
    q.query_map(hub::params![V2_DEVICE], |r| {
        Ok((
            r.get(0)?,
            r.get(1)?,
            r.get(2)?,
            r.get(3)?,
            r.get(4)?,
            r.get(5)?,
        ))
    })
    .unwrap()
    .collect::<Result<_, _>>()
    .unwrap()
}

fn assert_v2_rows(conn: &hub::db::sql::Connection) {
    let rows = v2_count_rows(conn);
    assert_eq!(
        rows.len() as u64,
        V2_RECORDS,
        "a row for every record, withheld too"
    );
    for (i, (seq, eps, day, budget, spent, withheld)) in rows.into_iter().enumerate() {
        let i = i as u64;
        let paid = i < V2_PAID;
        assert_eq!(seq as u64, i);
        // The record's whole loss (3 values at 0.333), not the per-value epsilon.
        assert_eq!(eps, Some(if paid { 999 } else { 0 }), "record {i}");
        assert_eq!(day.as_deref(), Some("2026-03-01"));
        assert_eq!(budget, Some(V2_BUDGET_MILLI as i64));
        assert_eq!(
            spent,
            Some((V2_SPENT_BEFORE + 999 * (i + 1).min(V2_PAID)) as i64)
        );
        assert_eq!(withheld, Some(!paid), "record {i}");
    }
}

#[test]
fn v2_records_keep_their_epsilon_and_budget_and_withheld_windows_are_shown() {
    let fx = Fixture::new();
    fx.add_v2_device();
    assert_v2_rows(&fx.conn());
    // v1 rows keep their epsilon and have no budget.
    let v1: (i64, Option<String>) = fx
        .conn()
        .query_row(
            "SELECT epsilon_milli, budget_day FROM series WHERE device = 'dev-1' LIMIT 1",
            hub::params![],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!(v1, (1000, None));

    // The API: every window with its epsilon and budget; withheld ones without a value.
    let s = json(&fx.url(&format!(
        "/api/devices/{V2_DEVICE}/series?model={MODEL}&kind=count&class=face&bucket=window"
    )));
    let w = s["windows"].as_array().unwrap();
    assert_eq!(w.len() as u64, V2_RECORDS);
    assert_eq!(w[0]["epsilon"], 0.999);
    assert_eq!(w[0]["value"], 40);
    assert_eq!(w[0]["budget"]["day"], "2026-03-01");
    assert_eq!(w[0]["budget"]["epsilon"], 8640.0);
    assert_eq!(w[0]["budget"]["spent"], 8635.999);
    assert_eq!(w[0]["budget"]["withheld"], false);
    let last = &w[V2_RECORDS as usize - 1];
    assert_eq!(last["budget"]["withheld"], true);
    assert_eq!(last["value"], Value::Null);
    assert_eq!(last["budget"]["spent"], 8639.995);
    let v1 = json(&fx.url(&format!(
        "/api/devices/dev-1/series?model={MODEL}&kind=count&class=face&bucket=window"
    )));
    assert_eq!(v1["windows"][0]["budget"], Value::Null);
    let b = json(&fx.url(&format!(
        "/api/devices/{V2_DEVICE}/series?model={MODEL}&kind=count&class=face&bucket=1d"
    )));
    assert_eq!(b["buckets"][0]["withheld_windows"], V2_RECORDS - V2_PAID);
    assert_eq!(b["buckets"][0]["epsilon_min"], 0.999);

    // The device page: the budget in one French sentence, withheld windows said in theirs.
    let p = get(&fx.url(&format!("/device/{V2_DEVICE}")), None);
    assert_eq!(p.status, 200);
    assert!(p.body.contains(V2_SENTENCE), "{}", p.body);
    assert!(p.body.contains(
        "Budget du jour épuisé : les comptes de la dernière fenêtre ne sont pas publiés."
    ));
    assert_eq!(
        p.body
            .matches("Budget du jour épuisé : les comptes de cette fenêtre ne sont pas publiés.")
            .count() as u64,
        2 * (V2_RECORDS - V2_PAID),
        "each withheld window, in the count and presence tables"
    );
    assert!(p.body.contains("ε = 0,999 par fenêtre"));
    // A v1 device has no budget sentence.
    let p1 = get(&fx.url("/device/dev-1"), None);
    assert!(!p1.body.contains("Protection de la vie privée"));

    // The register says it too, for the model.
    let r = get(&fx.url("/register"), None);
    assert!(r.body.contains(V2_SENTENCE), "{}", r.body);
    assert_eq!(
        registered(&fx, V2_DEVICE)["models"][0]["budget"]["budget"]["spent_milli"],
        8_639_995
    );
}

#[test]
fn a_schema_2_database_migrates_to_the_budget_columns() {
    let fx = Fixture::new();
    fx.add_v2_device();
    if !fx.on_sqlite("a SQLite file of schema 2") {
        return;
    }
    let conn = fx.conn();
    let rows = |c: &hub::db::sql::Connection| -> i64 {
        c.query_row("SELECT COUNT(*) FROM series", hub::params![], |r| r.get(0))
            .unwrap()
    };
    let all = rows(&conn);
    // Back to what schema 2 held: no budget columns, the per-value epsilon, no row for a
    // withheld record.
    conn.execute_batch(UNDO_SCHEMA_V4).unwrap();
    conn.execute_batch(&format!(
        "DELETE FROM series WHERE withheld = 1;
         UPDATE series SET epsilon_milli = {V2_PER_VALUE_MILLI} WHERE budget_day IS NOT NULL;
         ALTER TABLE series DROP COLUMN budget_day; ALTER TABLE series DROP COLUMN budget_milli;
         ALTER TABLE series DROP COLUMN budget_spent_milli; ALTER TABLE series DROP COLUMN withheld;
         PRAGMA user_version = 2;"
    ))
    .unwrap();
    assert!(rows(&conn) < all);
    drop(conn);
    let conn = fx.conn();
    let v = hub::db::store::schema_version(&conn).unwrap();
    assert_eq!(v, 5);
    assert_eq!(v, hub::db::store::SCHEMA_VERSION);
    assert_eq!(rows(&conn), all);
    assert_v2_rows(&conn);
    let p = get(&fx.url(&format!("/device/{V2_DEVICE}")), None);
    assert!(p.body.contains(V2_SENTENCE));
}

/// Line counts (record v3) become one series per line, class and direction: in the API, on
/// the device page in plain words, and in the national counting schema as channels with their
/// direction, suppressed counts left empty.
#[test]
fn line_counts_are_shown_and_exported_per_class_and_direction() {
    let fx = Fixture::new();
    fx.add_line_device();
    let s = json(&fx.url(&format!(
        "/api/devices/{LINE_DEVICE}/series?model={LINE_MODEL}&kind=line_count&class=rue:person:in&bucket=window"
    )));
    let w = s["windows"].as_array().unwrap();
    assert_eq!(w.len() as u64, LINE_RECORDS);
    for (i, win) in w.iter().enumerate() {
        assert_eq!(win["value"], line_people_in(i as u64), "{win}");
    }
    let bikes = json(&fx.url(&format!(
        "/api/devices/{LINE_DEVICE}/series?model={LINE_MODEL}&kind=line_count&class=rue:bicycle:out&bucket=window"
    )));
    for (i, win) in bikes["windows"].as_array().unwrap().iter().enumerate() {
        match line_bicycles_out(i as u64) {
            Some(v) => assert_eq!(win["value"], v),
            None => assert_eq!(win["value"], format!("< {K}"), "suppressed: {win}"),
        }
    }
    let day = json(&fx.url(&format!(
        "/api/devices/{LINE_DEVICE}/series?model={LINE_MODEL}&kind=line_count&class=rue:person:in&bucket=1d"
    )));
    let total: u64 = (0..LINE_RECORDS).map(line_people_in).sum();
    assert_eq!(day["buckets"][0]["value"], total as f64, "{day}");

    let p = get(&fx.url(&format!("/device/{LINE_DEVICE}")), None);
    assert_eq!(p.status, 200);
    assert!(
        p.body
            .contains("Passages de la ligne « rue » : personnes, entrées"),
        "{}",
        p.body
    );
    assert!(
        p.body
            .contains("Passages de la ligne « rue » : vélos, sorties")
    );
    assert!(p.body.contains("passages par "));

    let ch = get(&fx.url("/export/comptage/channels.csv"), None).body;
    let person_in = ch
        .lines()
        .find(|l| l.starts_with("fr-lyon.cpt-1.nanodet.rue.person.in,"))
        .unwrap_or_else(|| panic!("{ch}"));
    let f: Vec<&str> = person_in.split(',').collect();
    assert_eq!(f[4], "PEDESTRIAN");
    assert_eq!((f[10], f[11]), ("in", "rue : entrée"));
    let bike_out = ch
        .lines()
        .find(|l| l.starts_with("fr-lyon.cpt-1.nanodet.rue.bicycle.out,"))
        .unwrap();
    assert!(bike_out.contains(",BIKE,") && bike_out.contains(",out,rue : sortie,"));
    // Only line counts for a counting device: 2 classes x 2 directions.
    assert_eq!(ch.lines().filter(|l| l.contains(".cpt-1.")).count(), 4);

    let m = get(
        &fx.url(&format!(
            "/export/comptage/measures.csv?device={LINE_DEVICE}"
        )),
        None,
    )
    .body;
    let bike_rows: Vec<&str> = m
        .lines()
        .filter(|l| l.starts_with("fr-lyon.cpt-1.nanodet.rue.bicycle.out,"))
        .collect();
    assert_eq!(bike_rows.len() as u64, LINE_RECORDS);
    for (i, row) in bike_rows.iter().enumerate() {
        let count = row.rsplit(',').next().unwrap();
        assert_eq!(
            count,
            line_bicycles_out(i as u64)
                .map(|v| v.to_string())
                .unwrap_or_default()
        );
    }
}

#[test]
fn class_shares_are_shown_per_class_in_plain_words() {
    let fx = Fixture::new();
    fx.add_sound_device();
    let s = json(&fx.url(&format!(
        "/api/devices/{SOUND_DEVICE}/series?model={SOUND_MODEL}&kind=class_share&class=music&bucket=window"
    )));
    let w = s["windows"].as_array().unwrap();
    assert_eq!(w.len() as u64, SOUND_RECORDS, "{s}");
    for (i, win) in w.iter().enumerate() {
        assert_eq!(win["value"], sound_music_ppm(i as u64), "{win}");
    }
    let p = get(&fx.url(&format!("/device/{SOUND_DEVICE}")), None);
    assert_eq!(p.status, 200);
    for words in [
        "musique",
        "parole",
        "chant",
        "Part du temps où l'on entend : musique",
    ] {
        assert!(
            p.body.contains(words),
            "`{words}` missing from the device page"
        );
    }
}

/// Issue 21: French first, English on request, remembered; `<html lang>` follows; the pages'
/// errors are pages in the reader's language, the API's stay plain text.
#[test]
fn issue_21_pages_are_french_first_and_english_on_request() {
    let fx = Fixture::new();
    let fr = get(&fx.url("/"), None);
    assert!(fr.body.contains("<html lang=\"fr\">"), "{}", fr.body);
    assert!(fr.body.contains("<h1>Appareils</h1>"));
    assert!(fr.body.contains("href=\"/?lang=en\""), "the switch");
    assert!(fr.set_cookie.is_none());
    let en = get(&fx.url("/?lang=en"), None);
    assert!(en.body.contains("<html lang=\"en\">"));
    assert!(en.body.contains("<h1>Devices</h1>"));
    let cookie = en.set_cookie.expect("the choice is remembered");
    assert!(cookie.starts_with("iat_lang=en;"), "{cookie}");
    let again = get(&fx.url("/register"), Some("iat_lang=en"));
    assert!(again.body.contains("Public register of devices and models"));
    // The browser's preference, when nothing was chosen.
    let r = agent()
        .get(&fx.url("/alarms"))
        .header("Accept-Language", "en-GB,en;q=0.9,fr;q=0.5")
        .call()
        .expect("GET");
    let r = finish(r);
    assert!(r.body.contains("<html lang=\"en\">"));
    let r = finish(
        agent()
            .get(&fx.url("/alarms"))
            .header("Accept-Language", "de-DE,fr;q=0.7,en;q=0.3")
            .call()
            .expect("GET"),
    );
    assert!(r.body.contains("<html lang=\"fr\">"));
    // `lang` is allowed everywhere, and a bad one is ignored (French).
    let p = get(&fx.url("/device/dev-1?lang=xx&from=2026-03-02"), None);
    assert_eq!(p.status, 200);
    assert!(p.body.contains("<html lang=\"fr\">"));
    // Errors: a page, in French; the same message stays in it, escaped.
    let nf = get(&fx.url("/device/%3Cb%3Enope"), None);
    assert_eq!(nf.status, 404);
    assert!(nf.body.contains("<h1>Page introuvable</h1>"), "{}", nf.body);
    assert!(nf.body.contains("&lt;b&gt;nope"), "{}", nf.body);
    assert!(!nf.body.contains("<b>nope"));
    let bad = get(&fx.url("/device/dev-1?from=yesterday&lang=en"), None);
    assert_eq!(bad.status, 400);
    assert!(bad.body.contains("<h1>Bad request</h1>") && bad.body.contains("is not a date"));
    let api = get(&fx.url("/api/devices/nope"), None);
    assert_eq!(api.status, 404);
    assert!(api.body.starts_with("404 Not Found: "), "{}", api.body);
}

/// Issue 21: local time without milliseconds, shares as percentages, counts named for what
/// they are, privacy notes only where they apply, 10-second windows each their own point.
#[test]
fn issue_21_values_read_as_people_read_them() {
    let fx = Fixture::new();
    fx.add_v2_device();
    fx.add_sound_device();
    let p = get(&fx.url("/device/dev-1"), None).body;
    // 2026-03-01T00:00Z is 01:00 in Paris; the windows' starts in local time.
    assert!(p.contains("1er mars 2026, 01:00"), "local time");
    assert!(
        !p.contains("T00:00:00Z<") && !p.contains(".000"),
        "no UTC label, no ms"
    );
    assert!(p.contains("Présence moyenne : visages"));
    assert!(p.contains("présents à la fois (moyenne)"));
    assert!(!p.contains("objects x frames"));
    assert!(p.contains("Part du temps avec présence : visages"));
    assert!(p.contains("% du temps"));
    assert!(!p.contains("ppm"), "no ppm on a page");
    // Some of dev-1's windows are suppressed, and v1 records state a noise: both notes.
    assert!(p.contains("Petits nombres masqués : une valeur sous k = 3"));
    // The sound device: shares as percentages, neither suppressed nor noised: no note.
    let s = get(&fx.url(&format!("/device/{SOUND_DEVICE}")), None).body;
    assert!(
        !s.contains("class=\"privacy\""),
        "no privacy note on shares without noise"
    );
    assert!(
        s.contains("25\u{a0}%") && s.contains("75\u{a0}%"),
        "percentages"
    );
    // The v2 device's 10-second windows: each its own point, not merged into a minute.
    let v = get(&fx.url(&format!("/device/{V2_DEVICE}")), None).body;
    assert!(v.contains("data-bucket-ms=\"10000\""), "10 s buckets");
    assert!(!v.contains("data-bucket-ms=\"60000\""));
    // The same page in English.
    let e = get(&fx.url("/device/dev-1?lang=en"), None).body;
    assert!(e.contains("Average presence: face") && e.contains("1 Mar 2026, 01:00"));
}

/// Issue 21: a production hub refuses an enrolment without its controller, purpose or legal
/// basis and names the missing field; what is stated shows in the register, escaped, one
/// entry per model card.
#[test]
fn issue_21_enrolment_states_controller_purpose_and_legal_basis() {
    let fx = Fixture::new();
    let (cookie, csrf) = login(&fx);
    let key = common::key_for("iat/fr-lyon/dev-8", 8)
        .verifier()
        .to_string();
    let full = [
        ("vkey", key.as_str()),
        ("card", MODEL),
        ("controller", "Ville de Lyon <script>x</script>"),
        ("purpose", "Mesurer la fréquentation"),
        ("legal_basis", "RGPD art. 6.1.e"),
        ("csrf", csrf.as_str()),
    ];
    for missing in ["controller", "purpose", "legal_basis"] {
        let form: Vec<(&str, &str)> = full
            .iter()
            .map(|(k, v)| (*k, if *k == missing { "  " } else { *v }))
            .collect();
        let r = post(&fx.url("/admin/enrol"), Some(&cookie), None, &form);
        assert_eq!(r.status, 400, "{missing}");
        assert!(
            r.body.contains(&format!("`{missing}` is missing")),
            "{}",
            r.body
        );
    }
    assert!(!fx.enrolment.read().unwrap().devices.contains_key("dev-8"));
    let r = post(&fx.url("/admin/enrol"), Some(&cookie), None, &full);
    assert_eq!(r.status, 303, "{}", r.body);
    let reg = get(&fx.url("/register"), None).body;
    assert_eq!(
        reg.matches("<article class=\"model\"").count(),
        1,
        "one card entry"
    );
    assert_eq!(
        reg.matches("<article class=\"device\"").count(),
        4,
        "dev-1, dev-2, cam-9, dev-8"
    );
    assert!(reg.contains("Ville de Lyon &lt;script&gt;x&lt;/script&gt;"));
    assert!(!reg.contains("<script>x"));
    assert!(
        reg.contains("non renseigné à l'inscription"),
        "the fixture's devices"
    );
    let file = std::fs::read_to_string(&fx.devices_path).unwrap();
    assert!(file.contains("legal_basis = \"RGPD art. 6.1.e\""), "{file}");

    // The command line: refused without them (as production), accepted with them.
    let vkey = fx.dir.path().join("dev-9.vkey");
    std::fs::write(
        &vkey,
        common::key_for("iat/fr-lyon/dev-9", 9)
            .verifier()
            .to_string(),
    )
    .unwrap();
    let card = common::repo().join("models/centerface-int8/card.toml");
    let enroll = |extra: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_hub"))
            .arg("enroll")
            .arg("--devices")
            .arg(&fx.devices_path)
            .arg("--device-key")
            .arg(&vkey)
            .arg("--card")
            .arg(&card)
            .args(extra)
            .output()
            .expect("hub enroll")
    };
    let o = enroll(&["--controller", "Ville de Lyon", "--purpose", "Comptage"]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("`legal_basis` is missing"), "{err}");
    let o = enroll(&[
        "--controller",
        "Ville de Lyon",
        "--purpose",
        "Comptage",
        "--legal-basis",
        "RGPD art. 6.1.e",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

/// Issue 21: the period form takes days of the hub's calendar (Europe/Paris), and day buckets
/// start at local midnight, not at midnight UTC.
#[test]
fn issue_21_periods_and_day_buckets_follow_the_local_calendar() {
    let fx = Fixture::new();
    let p = get(
        &fx.url("/device/dev-1?from_day=2026-01-01&to_day=2026-12-31"),
        None,
    );
    assert_eq!(p.status, 200, "{}", p.body);
    let p = p.body;
    // The form gives the days back as it took them, the period runs from local midnight.
    assert!(
        p.contains("name=\"from_day\" value=\"2026-01-01\""),
        "from_day"
    );
    assert!(p.contains("name=\"to_day\" value=\"2026-12-31\""), "to_day");
    assert!(p.contains("1er janv. 2026, 00:00"), "from, local");
    assert!(
        p.contains("1er janv. 2027, 00:00"),
        "to, local: the end of the last day"
    );
    // dev-1: 288 windows of 15 min from 1 March 00:00 UTC (01:00 in Paris). A year in about
    // 400 points is a point per day, and a day is a Paris day: 1 March holds the windows up
    // to 23:00 UTC (92), 2 and 3 March 96 each, 4 March the last 4.
    let midnight = |d: &str| hub::dates::parse(&format!("{d}T00:00")).unwrap() - 3_600_000;
    for (day, windows) in [
        ("2026-03-01", 92),
        ("2026-03-02", 96),
        ("2026-03-03", 96),
        ("2026-03-04", 4),
    ] {
        let want = format!("data-start=\"{}\" data-value=", midnight(day));
        let at = p
            .find(&want)
            .unwrap_or_else(|| panic!("no point at Paris midnight of {day}"));
        let rest = &p[at..at + 300];
        assert!(
            rest.contains(&format!("data-windows=\"{windows}\"")),
            "{day}: {rest}"
        );
    }
    // Zoom links (instants) and the form's days do not mix for one end.
    let bad = get(
        &fx.url("/device/dev-1?from_day=2026-03-01&from=2026-03-01T00:00:00Z"),
        None,
    );
    assert_eq!(bad.status, 400);
    assert!(bad.body.contains("not both"), "{}", bad.body);
    // The API stays in UTC: its day buckets start at midnight UTC.
    let api = json(&fx.url(&format!(
        "/api/devices/dev-1/series?model={MODEL}&kind=count&class=face&bucket=1d"
    )));
    assert_eq!(api["buckets"][0]["start"], "2026-03-01T00:00:00Z");
    assert_eq!(api["buckets"][0]["windows"], 96);
}

/// The browser's verifier: its page allows exactly a script of its own, compiling WebAssembly
/// and requests to the hub; the other pages keep the policy without scripts; the module is
/// served as WebAssembly, and is the one the page names by its SHA-256.
#[test]
fn the_verifier_page_its_policy_and_its_module() {
    let fx = Fixture::new();
    let head = |path: &str| {
        let r = agent().get(&fx.url(path)).call().expect("GET");
        let h = |n: &str| {
            r.headers()
                .get(n)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned()
        };
        (h("content-security-policy"), h("content-type"), r)
    };
    let (csp, _, _) = head("/verify?device=dev-1");
    assert_eq!(
        csp,
        "default-src 'none'; script-src 'self' 'wasm-unsafe-eval'; connect-src 'self'; style-src 'self'; img-src 'self' data:; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    );
    for page in ["/", "/register", "/device/dev-1", "/verify.js"] {
        let (csp, _, _) = head(page);
        assert!(
            !csp.contains("script-src") && csp.starts_with("default-src 'none'"),
            "{page}: {csp}"
        );
    }
    let (_, ty, mut r) = head("/verify.wasm");
    assert_eq!(ty, "application/wasm");
    let wasm = r
        .body_mut()
        .with_config()
        .limit(16 << 20)
        .read_to_vec()
        .unwrap();
    assert!(wasm.starts_with(b"\0asm"), "a WebAssembly module");
    let sha: String = {
        use sha2::Digest;
        sha2::Sha256::digest(&wasm)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    };
    let (_, ty, _) = head("/verify.js");
    assert!(ty.starts_with("text/javascript"), "{ty}");
    let fr = get(&fx.url("/verify?device=dev-1"), None);
    assert_eq!(fr.status, 200);
    assert!(
        fr.body.contains("Vérifier l'historique d'un appareil"),
        "{}",
        fr.body
    );
    assert!(
        fr.body.contains(&sha),
        "the page names the module's SHA-256"
    );
    assert!(fr.body.contains("data-device=\"dev-1\""));
    assert!(
        fr.body.contains("<option value=\"dev-1\" selected>"),
        "{}",
        fr.body
    );
    let en = get(&fx.url("/verify?lang=en"), None);
    assert!(
        en.body
            .contains("Verify a device's history in your browser")
    );
    assert_eq!(get(&fx.url("/verify?size=3"), None).status, 400);
    // The register links each device to it.
    let reg = get(&fx.url("/register"), None);
    assert!(reg.body.contains("href=\"/verify?device=dev-1\""));
}

/// After a key rotation, `keys.txt` gives the current key and the retired one: the records
/// signed before the rotation still verify with them (what the browser's verifier downloads),
/// and not with the new key alone.
#[test]
fn keys_txt_carries_retired_keys_so_old_records_still_verify() {
    let fx = Fixture::new();
    let new = common::key_for("iat/fr-lyon/dev-1", 77);
    hub::enrolment::rotate_key(
        &fx.devices_path,
        "dev-1",
        &new.verifier().to_string(),
        "2026-04-01T00:00:00Z",
    )
    .expect("rotation");
    *fx.enrolment.write().unwrap() = hub::enrolment::Enrolment::load(&fx.devices_path).unwrap();
    let keys = get(&fx.url("/export/dev-1/keys.txt"), None);
    assert_eq!(keys.status, 200, "{}", keys.body);
    let parsed: Vec<audit::VerifierKey> = keys
        .body
        .lines()
        .map(|l| audit::VerifierKey::parse(l).expect("a key per line"))
        .collect();
    assert_eq!(parsed.len(), 2, "{}", keys.body);
    assert_eq!(
        parsed[0].to_string(),
        new.verifier().to_string(),
        "current first"
    );
    assert_eq!(parsed[1].to_string(), fx.devs[0].key.verifier().to_string());
    let records = get(&fx.url("/export/dev-1/records.jsonl"), None).body;
    let cp = get(&fx.url("/export/dev-1/checkpoint.txt"), None).body;
    let v = verify::export(&parsed, &records, &cp).expect("verifies with the retired key");
    assert_eq!(v.records, 288);
    let e = verify::export(&parsed[..1], &records, &cp).unwrap_err();
    assert_eq!(e.kind(), "checkpoint-signature", "{e}");
    assert_eq!(get(&fx.url("/export/nobody/keys.txt"), None).status, 404);
    // The register links to it for a device with a retired key.
    let reg = get(&fx.url("/register"), None).body;
    assert!(reg.contains("href=\"/export/dev-1/keys.txt\""), "{reg}");
    assert!(!reg.contains("href=\"/export/dev-2/keys.txt\""));
}
