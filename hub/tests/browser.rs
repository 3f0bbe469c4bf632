//! The dashboard in a real browser: headless Chromium driven through chromedriver (started by
//! this test on a free port) with fantoccini. Asserts that tables and SVG chart points show the
//! stored data, that zooming works, that the register reads right and that the admin login and
//! an alarm acknowledgement work from the browser. Screenshots are kept as artefacts in
//! `$CARGO_TARGET_DIR/iat-artefacts/screenshots/`.
//!
//! Needs `chromium` and `chromedriver` (Debian: `apt-get install chromium chromium-driver`;
//! `.ci/run` installs them). Missing, the test fails and says so: it never skips silently.

mod common;

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{ADMIN, Fixture, K, PASSWORD, T0, WINDOW_MS, total};
use fantoccini::{Client, ClientBuilder, Locator};

/// How long a page may take to appear after a submit or a click (a loaded CI machine).
const NAVIGATION: Duration = Duration::from_secs(30);

fn which(tool: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join(tool))
            .find(|p| p.is_file())
    })
}

fn artefacts() -> PathBuf {
    let target = match std::env::var_os("CARGO_TARGET_DIR") {
        Some(t) => PathBuf::from(t),
        // target/debug/deps/browser-xxxx -> target
        None => std::env::current_exe()
            .ok()
            .and_then(|p| p.ancestors().nth(3).map(PathBuf::from))
            .unwrap_or_else(|| PathBuf::from("target")),
    };
    let dir = target.join("iat-artefacts/screenshots");
    std::fs::create_dir_all(&dir).expect("screenshot dir");
    dir
}

struct Driver(Child);

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

fn start_driver() -> (Driver, u16) {
    let (Some(chromium), Some(driver)) = (which("chromium"), which("chromedriver")) else {
        panic!(
            "the browser tests need chromium and chromedriver: apt-get install chromium chromium-driver{}",
            if std::env::var("CI").as_deref() == Ok("true") {
                " (CI: .ci/run should have installed them)"
            } else {
                ""
            }
        );
    };
    let _ = chromium;
    let port = free_port();
    let child = Command::new(driver)
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("starting chromedriver");
    let d = Driver(child);
    let t = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "chromedriver did not listen on {port}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    (d, port)
}

async fn browser(port: u16, profile: &std::path::Path) -> Client {
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        serde_json::json!({
            "binary": which("chromium").expect("chromium"),
            "args": [
                "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--disable-dev-shm-usage", "--window-size=1280,1600", "--lang=fr-FR",
                format!("--user-data-dir={}", profile.display()),
            ],
            // A browser set to French, like a town hall's (issue 21: French first).
            "prefs": {"intl.accept_languages": "fr-FR,fr"},
        }),
    );
    let conn = hyper_util::client::legacy::connect::HttpConnector::new();
    ClientBuilder::new(conn)
        .capabilities(caps)
        .connect(&format!("http://127.0.0.1:{port}"))
        .await
        .expect("a WebDriver session with headless chromium")
}

async fn shot(c: &Client, name: &str) {
    let png = c.screenshot().await.expect("screenshot");
    assert!(png.starts_with(b"\x89PNG"), "a PNG");
    let path = artefacts().join(format!("{name}.png"));
    std::fs::write(&path, png).expect("writing the screenshot");
    eprintln!("screenshot: {}", path.display());
}

/// The text of the element `css` selects, waiting for it to appear (a page loading after a
/// submit or a click).
async fn text(c: &Client, css: &str) -> String {
    c.wait()
        .at_most(NAVIGATION)
        .for_element(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("{css}: {e}"))
        .text()
        .await
        .unwrap_or_else(|e| panic!("{css}: {e}"))
}

/// Follows the link whose text is `link`.
async fn click_link(c: &Client, link: &str) {
    c.find(Locator::LinkText(link))
        .await
        .unwrap_or_else(|e| panic!("link {link}: {e}"))
        .click()
        .await
        .unwrap_or_else(|e| panic!("clicking {link}: {e}"));
}

/// The points of the chart of faces counted by centerface.
async fn face_count_points(c: &Client) -> Vec<fantoccini::elements::Element> {
    c.find_all(Locator::Css(
        "svg#chart-centerface-int8-count-face circle.point",
    ))
    .await
    .expect("chart points")
}

async fn attr(e: &fantoccini::elements::Element, name: &str) -> String {
    e.attr(name)
        .await
        .expect("attribute")
        .unwrap_or_else(|| panic!("no attribute {name}"))
}

#[test]
fn dashboard_charts_register_and_admin_in_chromium() {
    let fx = Fixture::new();
    let (_driver, port) = start_driver();
    let profile = tempfile::tempdir().expect("profile dir");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let c = browser(port, profile.path()).await;
        let result = run(&c, &fx).await;
        let _ = c.close().await;
        result
    });
}

async fn run(c: &Client, fx: &Fixture) {
    // The dashboard: one row per device, grouped by territory, with its state.
    c.goto(&fx.url("/")).await.expect("dashboard");
    let rows = c
        .find_all(Locator::Css("table.devices tbody tr"))
        .await
        .expect("rows");
    assert_eq!(rows.len(), 3);
    let row = text(c, "tr[data-device='dev-1']").await;
    assert!(
        row.contains("288") && row.contains("vérifié") && row.contains("en ligne"),
        "{row}"
    );
    let cam = text(c, "tr[data-device='cam-9']").await;
    assert!(cam.contains("Historique contradictoire"), "{cam}");
    shot(c, "dashboard").await;

    // The device page: one chart point per stored window, with its published value.
    click_link(c, "dev-1").await;
    let points = face_count_points(c).await;
    assert_eq!(
        points.len(),
        288,
        "one point per 15-minute window over 3 days"
    );
    for (i, p) in points.iter().enumerate() {
        let start: i64 = attr(p, "data-start").await.parse().unwrap();
        assert_eq!(start, T0 + i as i64 * WINDOW_MS, "point {i}");
        let value = attr(p, "data-value").await;
        match total(i as u64) {
            // Drawn: people present at once on average (objects over 900 frames).
            Some(v) => {
                assert_eq!(attr(p, "data-sum").await, v.to_string(), "point {i}");
                let shown: f64 = value.parse().unwrap();
                assert!(
                    (shown - v as f64 / 900.0).abs() < 1e-4,
                    "point {i}: {value}"
                );
            }
            None => {
                assert_eq!(value, format!("< {K}"), "point {i}");
                let class = attr(p, "class").await;
                assert!(class.contains("suppressed"), "point {i}: {class}");
            }
        }
    }
    // The latest windows table: the newest window first, "< k" where suppressed.
    let first = text(c, "table#windows-0 tbody tr td.value").await;
    match total(287) {
        Some(v) => {
            let cell = c
                .find(Locator::Css("table#windows-0 tbody tr td.value"))
                .await
                .unwrap();
            assert_eq!(attr(&cell, "data-value").await, v.to_string());
        }
        None => assert_eq!(first, "masqué"),
    }
    let privacy = text(c, "section.series p.privacy").await;
    assert!(
        privacy.contains("k = 3") && privacy.contains("ε = 1 par fenêtre"),
        "{privacy}"
    );
    shot(c, "device").await;

    // Zoom on the last day: 15-minute points from the day before the last window.
    click_link(c, "dernier jour").await;
    let points = face_count_points(c).await;
    assert_eq!(points.len(), 97);
    let start: i64 = attr(&points[0], "data-start").await.parse().unwrap();
    assert_eq!(start, T0 + 191 * WINDOW_MS);
    shot(c, "device-zoomed").await;

    // The register: the card's metadata and the signed checkpoint, verbatim.
    c.goto(&fx.url("/register")).await.unwrap();
    let licence = text(c, "article#model-centerface-int8 td.licence").await;
    assert_eq!(licence, "MIT");
    let since = text(
        c,
        "article#model-centerface-int8 tr[data-device='dev-1'] td.since",
    )
    .await;
    assert_eq!(since, "1er mars 2026, 01:00");
    let cp = text(c, "article#dev-dev-1 pre.checkpoint").await;
    assert!(cp.starts_with("iat/fr-lyon/dev-1\n288\n"), "{cp}");
    shot(c, "register").await;

    // Admin: the login is required, then an alarm is acknowledged from the browser.
    c.goto(&fx.url("/admin")).await.unwrap();
    let url = c.current_url().await.unwrap();
    assert_eq!(url.path(), "/admin/login");
    let form = c.form(Locator::Css("form#login")).await.unwrap();
    form.set_by_name("name", ADMIN).await.unwrap();
    form.set_by_name("password", "not the password")
        .await
        .unwrap();
    form.submit().await.unwrap();
    let err = text(c, "#login-error").await;
    assert!(err.contains("incorrect"), "{err}");
    let form = c.form(Locator::Css("form#login")).await.unwrap();
    form.set_by_name("name", ADMIN).await.unwrap();
    form.set_by_name("password", PASSWORD).await.unwrap();
    form.submit().await.unwrap();
    let who = text(c, "#admin-name").await;
    assert_eq!(who, ADMIN);
    assert_eq!(c.current_url().await.unwrap().path(), "/admin");
    let open = c
        .find_all(Locator::Css("table#open-alarms tr[data-alarm]"))
        .await
        .unwrap();
    assert_eq!(open.len(), 1);
    shot(c, "admin").await;
    c.find(Locator::Css("table#open-alarms button"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    c.wait()
        .at_most(NAVIGATION)
        .for_element(Locator::Css("#no-open-alarms"))
        .await
        .expect("no open alarm left");
    c.goto(&fx.url("/alarms")).await.unwrap();
    let acked = text(c, "table#alarms td.acked").await;
    assert!(acked.ends_with(&format!("par {ADMIN}")), "{acked}");
    c.goto(&fx.url("/")).await.unwrap();
    let cam = text(c, "tr[data-device='cam-9']").await;
    assert!(
        !cam.contains("Historique contradictoire"),
        "acknowledged: {cam}"
    );
}

/// The in-page accessibility check ([`A11Y`]) on the current page: its violations, and how
/// many texts, form controls and table headers it looked at.
const A11Y: &str = include_str!("a11y.js");

async fn a11y(c: &Client, lang: &str) -> (Vec<String>, serde_json::Value) {
    let r = c
        .execute(A11Y, vec![serde_json::json!(lang)])
        .await
        .expect("the accessibility check runs");
    let violations = r["violations"]
        .as_array()
        .expect("violations")
        .iter()
        .map(|v| v.as_str().unwrap_or("?").to_owned())
        .collect();
    (violations, r["checked"].clone())
}

/// Checks the page and fails on any violation; the page must have been looked at (texts
/// measured), so that an empty result means something.
async fn accessible(c: &Client, lang: &str, page: &str) {
    let (violations, checked) = a11y(c, lang).await;
    eprintln!("accessibility of {page}: {checked}");
    assert!(
        checked["texts"].as_u64().unwrap_or(0) >= 10,
        "{page}: too little checked: {checked}"
    );
    assert!(
        violations.is_empty(),
        "{page}: {} accessibility violation(s):\n{}",
        violations.len(),
        violations.join("\n")
    );
}

/// Presses Tab `n` times; after each, the focused element must show a visible focus ring.
async fn focus_is_visible(c: &Client, n: usize, page: &str) -> Vec<String> {
    use fantoccini::actions::{InputSource, KeyAction, KeyActions};
    use fantoccini::key::Key;
    let mut seen = Vec::new();
    for i in 0..n {
        let tab = KeyActions::new("keyboard".into())
            .then(KeyAction::Down {
                value: Key::Tab.into(),
            })
            .then(KeyAction::Up {
                value: Key::Tab.into(),
            });
        c.perform_actions(tab).await.expect("Tab");
        let f = c
            .execute(
                "const e = document.activeElement; const s = getComputedStyle(e); \
                 const r = e.getBoundingClientRect(); \
                 return {tag: e.tagName, text: (e.textContent || e.name || '').trim().slice(0, 30), \
                 style: s.outlineStyle, width: parseFloat(s.outlineWidth), left: r.left, top: r.top};",
                vec![],
            )
            .await
            .expect("focus");
        let what = format!("{} {}", f["tag"], f["text"]);
        assert_ne!(f["tag"], "BODY", "{page}: Tab {i} reached nothing");
        assert!(
            f["style"] != "none" && f["width"].as_f64().unwrap_or(0.0) >= 2.0,
            "{page}: Tab {i}: {what} has no visible focus: {f}"
        );
        assert!(
            f["left"].as_f64().unwrap_or(-1.0) >= 0.0,
            "{page}: Tab {i}: {what} is off-screen when focused: {f}"
        );
        seen.push(what);
    }
    seen
}

async fn element_shot(c: &Client, css: &str, name: &str) {
    let e = c
        .wait()
        .at_most(NAVIGATION)
        .for_element(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("{css}: {e}"));
    let png = e.screenshot().await.expect("element screenshot");
    assert!(png.starts_with(b"\x89PNG"), "a PNG");
    let path = artefacts().join(format!("{name}.png"));
    std::fs::write(&path, png).expect("writing the screenshot");
    eprintln!("screenshot: {}", path.display());
}

/// The distinct labels of a chart's time axis (each tick's lines joined).
async fn axis_labels(c: &Client, chart: &str) -> Vec<String> {
    let labels = c
        .execute(
            "return [...document.querySelectorAll(arguments[0] + ' text.xlab')].map(t => \
             [...t.childNodes].map(n => n.textContent.trim()).filter(Boolean).join(' '));",
            vec![serde_json::json!(chart)],
        )
        .await
        .expect("labels");
    labels
        .as_array()
        .expect("labels")
        .iter()
        .map(|l| l.as_str().unwrap_or("").to_owned())
        .collect()
}

/// Issue 21: the pages an officer and a citizen read, in French, in a real browser: the
/// accessibility check passes on each, the keyboard reaches the skip link and the menu with a
/// visible focus, the axes read right at day and year zoom, the register has one entry per
/// model card; English is one link away. Screenshots in French are kept.
#[test]
fn issue_21_french_pages_are_accessible_and_readable() {
    let fx = Fixture::new();
    fx.add_year_device();
    let (_driver, port) = start_driver();
    let profile = tempfile::tempdir().expect("profile dir");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let c = browser(port, profile.path()).await;
        let result = french_pages(&c, &fx).await;
        let _ = c.close().await;
        result
    });
}

async fn french_pages(c: &Client, fx: &Fixture) {
    use common::{YEAR_DEVICE, YEAR_RECORDS};
    // The dashboard, in French, with the language switch and times in Paris time.
    c.goto(&fx.url("/")).await.expect("dashboard");
    assert_eq!(text(c, "h1").await, "Appareils");
    let html_lang = c
        .execute("return document.documentElement.lang", vec![])
        .await
        .unwrap();
    assert_eq!(html_lang, "fr");
    accessible(c, "fr", "dashboard").await;
    shot(c, "fr-dashboard").await;
    let tabs = focus_is_visible(c, 3, "dashboard").await;
    assert!(
        tabs[0].contains("Aller au contenu"),
        "skip link first: {tabs:?}"
    );

    // A device page over a year: months on the axis, people present at once as decimals.
    c.goto(&fx.url(&format!("/device/{YEAR_DEVICE}")))
        .await
        .unwrap();
    let chart = "svg#chart-nanodet-count-person";
    let year = axis_labels(c, chart).await;
    assert!(year.len() >= 4, "{year:?}");
    let mut distinct = year.clone();
    distinct.sort();
    distinct.dedup();
    assert_eq!(distinct.len(), year.len(), "distinct: {year:?}");
    for month in ["mai", "juil.", "sept.", "nov."] {
        assert!(
            year.iter().any(|l| l.starts_with(month)),
            "{month}: {year:?}"
        );
    }
    let axis = text(c, &format!("{chart} text.axis")).await;
    assert_eq!(axis, "présents à la fois (moyenne)");
    let title = text(c, "section.series[data-kind='count'] h3").await;
    assert_eq!(title, "Présence moyenne : personnes");
    // No privacy note on a series where nothing was hidden and nothing noised...
    let count_notes = c
        .find_all(Locator::Css("section.series[data-kind='count'] p.privacy"))
        .await
        .unwrap();
    let line_notes = c
        .find_all(Locator::Css(
            "section.series[data-kind='line_count'][data-class='parvis:person:in'] p.privacy",
        ))
        .await
        .unwrap();
    // ...and one where night-time crossings were below k.
    assert_eq!(line_notes.len(), 1, "crossings below k at night");
    let n = count_notes.len();
    let note = if n > 0 {
        text(c, "section.series[data-kind='count'] p.privacy").await
    } else {
        String::new()
    };
    assert!(!note.contains('ε'), "no noise on this device: {note}");
    accessible(c, "fr", "device, year").await;
    shot(c, "fr-device-year").await;
    element_shot(
        c,
        "section.series[data-kind='count']",
        "fr-device-year-chart",
    )
    .await;

    // Zoom on the last day: hours on the axis, each with its date.
    click_link(c, "dernier jour").await;
    let t = Instant::now();
    while !c.current_url().await.unwrap().as_str().contains("from=") {
        assert!(t.elapsed() < NAVIGATION, "the zoom link did not load");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    text(c, chart).await;
    let day = axis_labels(c, chart).await;
    assert!(day.len() >= 3, "{day:?}");
    assert!(
        day.iter().all(|l| l.len() >= 5 && l.as_bytes()[2] == b':'),
        "hours: {day:?}"
    );
    let mut distinct = day.clone();
    distinct.sort();
    distinct.dedup();
    assert_eq!(distinct.len(), day.len(), "distinct: {day:?}");
    let points = c
        .find_all(Locator::Css(&format!("{chart} circle.point")))
        .await
        .unwrap();
    assert!(
        (12..=13).contains(&points.len()),
        "one point per 2-hour window over the last day: {}",
        points.len()
    );
    accessible(c, "fr", "device, day").await;
    shot(c, "fr-device-day").await;
    element_shot(
        c,
        "section.series[data-kind='count']",
        "fr-device-day-chart",
    )
    .await;

    // The register: one entry per card, listing its devices; what the town stated.
    c.goto(&fx.url("/register")).await.unwrap();
    let cards = c.find_all(Locator::Css("article.model")).await.unwrap();
    assert_eq!(cards.len(), 2, "centerface-int8 and nanodet, once each");
    let users = c
        .find_all(Locator::Css(
            "article#model-centerface-int8 table.uses tbody tr[data-device]",
        ))
        .await
        .unwrap();
    assert_eq!(users.len(), 3, "dev-1, dev-2 and cam-9 run centerface-int8");
    let controller = text(
        c,
        &format!("article#model-nanodet tr[data-device='{YEAR_DEVICE}'] td.controller"),
    )
    .await;
    assert!(controller.starts_with("Ville de Lyon"), "{controller}");
    let unstated = text(c, "article#dev-dev-1 td.controller").await;
    assert_eq!(unstated, "non renseigné à l'inscription");
    let records = text(c, &format!("article#dev-{YEAR_DEVICE}")).await;
    assert!(
        records.contains("4\u{202f}380") && YEAR_RECORDS == 4380,
        "{records}"
    );
    accessible(c, "fr", "register").await;
    shot(c, "fr-register").await;

    // The admin alarms page: kinds in words, with what to do.
    c.goto(&fx.url("/admin/login")).await.unwrap();
    accessible(c, "fr", "login").await;
    let form = c.form(Locator::Css("form#login")).await.unwrap();
    form.set_by_name("name", ADMIN).await.unwrap();
    form.set_by_name("password", PASSWORD).await.unwrap();
    form.submit().await.unwrap();
    text(c, "#admin-name").await;
    accessible(c, "fr", "admin").await;
    c.goto(&fx.url("/admin/alarms")).await.unwrap();
    let legend = text(c, "section.legend").await;
    assert!(
        legend.contains("Historique contradictoire") && legend.contains("Que faire"),
        "{legend}"
    );
    let headers = c
        .find_all(Locator::Css("table#alarms thead th[scope='col']"))
        .await
        .unwrap();
    assert_eq!(headers.len(), 9);
    accessible(c, "fr", "admin alarms").await;
    shot(c, "fr-admin-alarms").await;

    // English is one link away, and stays chosen.
    click_link(c, "English").await;
    assert_eq!(text(c, "h1").await, "Alarms");
    c.goto(&fx.url("/register")).await.unwrap();
    assert_eq!(text(c, "h1").await, "Public register of devices and models");
    accessible(c, "en", "register in English").await;
    // A missing page is a page too, in the reader's language.
    c.goto(&fx.url("/device/nope")).await.unwrap();
    assert_eq!(text(c, "h1").await, "Page not found");
    accessible_or_small(c, "en", "not found").await;
    click_link(c, "Français").await;
    assert_eq!(text(c, "h1").await, "Page introuvable");
}

/// The check on a short page (an error page has little text): violations only.
async fn accessible_or_small(c: &Client, lang: &str, page: &str) {
    let (violations, _) = a11y(c, lang).await;
    assert!(violations.is_empty(), "{page}: {violations:?}");
}

/// The accessibility check finds what it looks for: a page made of known faults.
#[test]
fn issue_21_the_accessibility_check_finds_known_faults() {
    let (_driver, port) = start_driver();
    let profile = tempfile::tempdir().expect("profile dir");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let c = browser(port, profile.path()).await;
        let page = "<!DOCTYPE html><html><head><title>x</title></head><body>\
            <h1>Titre</h1><h3>Saut</h3>\
            <p style='color:#aaa;background:#fff'>gris clair sur blanc</p>\
            <p style='color:#fff;background:#000091'>blanc sur bleu</p>\
            <input name='q'><label>Nom <input name='ok'></label>\
            <table><tr><th>Sans portée</th></tr><tr><td>1</td></tr></table>\
            <img src='x.png'><a href='/x'></a><i id='d'></i><b id='d'></b>\
            <svg role='img'></svg></body></html>";
        c.goto(&format!("data:text/html;charset=utf-8,{}", encode(page)))
            .await
            .expect("the faulty page");
        let (v, checked) = a11y(&c, "fr").await;
        let _ = c.close().await;
        let has = |rule: &str, what: &str| {
            assert!(
                v.iter().any(|x| x.starts_with(rule) && x.contains(what)),
                "{rule} {what} not found in {v:#?}"
            );
        };
        has("lang:", "no lang");
        has("headings:", "h3 after h1");
        has("contrast:", "gris clair");
        has("label:", "name=q");
        has("table:", "no caption");
        has("table:", "has no scope");
        has("image:", "no alt");
        has("name:", "a");
        has("id:", "\"d\"");
        has("image:", "role=img without a name");
        has("skip link:", "first focusable");
        assert!(
            !v.iter()
                .any(|x| x.contains("blanc sur bleu") || x.contains("name=ok")),
            "no false alarm: {v:#?}"
        );
        assert_eq!(checked["controls"], 2, "{checked}");
    });
}

/// Percent-encodes a data: URL's content.
fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Runs `f` on a connection of its own, in a thread of its own: PostgreSQL's synchronous
/// client cannot block inside the test's async runtime.
fn sql<T: Send>(
    db: &hub::db::sql::Database,
    f: impl FnOnce(&hub::db::sql::Connection) -> T + Send,
) -> T {
    std::thread::scope(|s| {
        s.spawn(|| f(&hub::db::store::open(db).expect("db")))
            .join()
            .expect("the database work")
    })
}

/// Runs one statement without parameters, as [`sql`] does.
fn exec(db: &hub::db::sql::Database, statement: &str) {
    sql(db, |conn| {
        conn.execute(statement, hub::params![])
            .unwrap_or_else(|e| panic!("{statement}: {e}"))
    });
}

/// Waits until the verifier page has given a verdict whose status line contains `status`
/// (a new verdict replaces the last one), and returns the verdict element.
async fn verdict(c: &Client, status: &str) -> fantoccini::elements::Element {
    let t = Instant::now();
    loop {
        let shown = c.find(Locator::Css("#verdict[data-ok]")).await.ok();
        if let Some(v) = shown {
            let s = text(c, "#status").await;
            if s.contains(status) {
                return v;
            }
        }
        assert!(
            t.elapsed() < NAVIGATION,
            "no verdict with status {status:?}: {}",
            text(c, "#verdict").await
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A citizen verifies a device's history in the browser (the page `/verify`, the WebAssembly
/// build of the verifier): from the register's link, then again (the checkpoint kept from the
/// first visit is extended), then served a tampered export (one record altered, one removed,
/// an older checkpoint): each time the page names the problem. Then, the hub stopped, the files
/// saved earlier are dropped on the open page and verify. Prints the time to verify 10,000
/// records in the page.
#[test]
fn a_citizen_verifies_a_history_in_the_browser() {
    let mut fx = Fixture::new();
    const BIG: u64 = 10_000;
    let big = common::Dev {
        id: "grand-1",
        territory: "fr-lyon",
        windows: BIG,
        key: common::key_for("iat/fr-lyon/grand-1", 31),
    };
    fx.add_device_with_checkpoint(
        ("fr-lyon", "grand-1"),
        "models/centerface-int8/card.toml",
        31,
        BIG,
        &|i, sha, version| common::record(&big, i, sha, version),
    );
    // dev-1's files, saved before anything is tampered with (as a citizen would from the
    // register), and a copy of its records with one record altered.
    let saved = tempfile::tempdir().expect("dir");
    let mut files = Vec::new();
    for f in ["device.vkey", "records.jsonl", "checkpoint.txt"] {
        let mut r = ureq::get(&fx.url(&format!("/export/dev-1/{f}")))
            .call()
            .unwrap_or_else(|e| panic!("{f}: {e}"));
        let body = r.body_mut().read_to_string().expect(f);
        let path = saved.path().join(f);
        std::fs::write(&path, body).expect(f);
        files.push(path);
    }
    let records = std::fs::read_to_string(&files[1]).unwrap();
    let altered_dir = saved.path().join("altered");
    std::fs::create_dir(&altered_dir).unwrap();
    let altered = records.replacen("\\\"frames\\\":900", "\\\"frames\\\":901", 1);
    assert_ne!(altered, records, "a record was altered");
    std::fs::write(altered_dir.join("records.jsonl"), altered).unwrap();
    let altered_files = [
        files[0].clone(),
        altered_dir.join("records.jsonl"),
        files[2].clone(),
    ];

    let (_driver, port) = start_driver();
    let profile = tempfile::tempdir().expect("profile dir");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let c = browser(port, profile.path()).await;
        verify_pages(&c, &mut fx, &files, &altered_files).await;
        let _ = c.close().await;
    });
}

async fn verify_pages(c: &Client, fx: &mut Fixture, files: &[PathBuf], altered_files: &[PathBuf]) {
    let dev = &fx.devs[0];
    let card =
        hub::enrolment::cards::load(&common::repo().join("models/centerface-int8/card.toml"))
            .expect("card");
    let version = card.version.clone().unwrap_or_default();

    // From the register's link: the page verifies at once.
    c.goto(&fx.url("/register")).await.unwrap();
    c.find(Locator::Css("article#dev-dev-1 a.verify"))
        .await
        .expect("the register links to the browser's verifier")
        .click()
        .await
        .unwrap();
    let v = verdict(c, "vérifié dans ce navigateur").await;
    assert_eq!(
        attr(&v, "data-ok").await,
        "true",
        "{}",
        v.text().await.unwrap()
    );
    assert_eq!(attr(&v, "data-previous").await, "none");
    let shown = v.text().await.unwrap();
    for want in [
        "Historique vérifié",
        "iat/fr-lyon/dev-1",
        "288 (n° 0 à 287)",
        "centerface-int8",
        "288 résultats, du n° 0 au n° 287",
        &card.sha256,
        "Période couverte",
        "première vérification",
    ] {
        assert!(shown.contains(want), "{want:?} in {shown}");
    }
    shot(c, "verify-ok").await;
    accessible(c, "fr", "/verify").await;

    // The next visit: the new checkpoint extends the one kept from the first.
    c.goto(&fx.url("/verify?device=dev-1")).await.unwrap();
    let v = verdict(c, "vérifié dans ce navigateur").await;
    assert_eq!(attr(&v, "data-ok").await, "true");
    assert_eq!(attr(&v, "data-previous").await, "by-records");
    assert!(
        v.text()
            .await
            .unwrap()
            .contains("prolonge le point de contrôle")
    );

    // One record altered in the hub's database.
    let db = fx.db.clone();
    let entry: Vec<u8> = sql(&db, |conn| {
        conn.query_row(
            "SELECT entry FROM records WHERE device = 'dev-1' AND seq = 100",
            hub::params![],
            |r| r.get(0),
        )
        .expect("record 100")
    });
    let forged =
        String::from_utf8(entry.clone())
            .unwrap()
            .replacen("\"frames\":900", "\"frames\":901", 1);
    sql(&db, |conn| {
        conn.execute(
            "UPDATE records SET entry = ?1 WHERE device = 'dev-1' AND seq = 100",
            hub::params![forged.into_bytes()],
        )
        .unwrap();
    });
    c.goto(&fx.url("/verify?device=dev-1")).await.unwrap();
    let v = verdict(c, "vérifié dans ce navigateur").await;
    let shown = v.text().await.unwrap();
    assert_eq!(attr(&v, "data-ok").await, "false", "{shown}");
    assert_eq!(attr(&v, "data-kind").await, "signature", "{shown}");
    assert!(shown.contains("résultat n° 100"), "{shown}");
    assert!(
        shown.contains("100 (n° 0 à 99)"),
        "what verified before: {shown}"
    );
    shot(c, "verify-altered").await;
    sql(&db, |conn| {
        conn.execute(
            "UPDATE records SET entry = ?1 WHERE device = 'dev-1' AND seq = 100",
            hub::params![entry],
        )
        .unwrap();
    });

    // An older checkpoint: the device's own signature, but it covers fewer records than the
    // one this browser verified.
    let note: String = sql(&db, |conn| {
        conn.query_row(
            "SELECT ckpt_note FROM devices WHERE device = 'dev-1'",
            hub::params![],
            |r| r.get(0),
        )
        .unwrap()
    });
    let mut frontier = audit::Frontier::new();
    for i in 0..200 {
        frontier.append(audit::merkle::leaf_hash(&common::record(
            dev,
            i,
            &card.sha256,
            &version,
        )));
    }
    let older = dev
        .key
        .sign_checkpoint(&audit::Checkpoint {
            origin: dev.origin(),
            size: 200,
            root: frontier.root(),
            extensions: vec![],
        })
        .unwrap();
    sql(&db, |conn| {
        conn.execute(
            "UPDATE devices SET ckpt_note = ?1 WHERE device = 'dev-1'",
            hub::params![older],
        )
        .unwrap();
    });
    c.goto(&fx.url("/verify?device=dev-1")).await.unwrap();
    let v = verdict(c, "vérifié dans ce navigateur").await;
    let shown = v.text().await.unwrap();
    assert_eq!(attr(&v, "data-kind").await, "shrunk", "{shown}");
    assert!(shown.contains("l'historique a été raccourci"), "{shown}");
    sql(&db, |conn| {
        conn.execute(
            "UPDATE devices SET ckpt_note = ?1 WHERE device = 'dev-1'",
            hub::params![note],
        )
        .unwrap();
    });

    // One record removed (kept aside, to be put back).
    exec(
        &db,
        "CREATE TABLE kept_aside AS SELECT * FROM records WHERE device = 'dev-1' AND seq = 50",
    );
    exec(
        &db,
        "DELETE FROM records WHERE device = 'dev-1' AND seq = 50",
    );
    c.goto(&fx.url("/verify?device=dev-1")).await.unwrap();
    let v = verdict(c, "vérifié dans ce navigateur").await;
    let shown = v.text().await.unwrap();
    assert_eq!(attr(&v, "data-kind").await, "order", "{shown}");
    assert!(
        shown.contains("résultat n° 51 là où le n° 50 était attendu"),
        "{shown}"
    );
    shot(c, "verify-removed").await;
    exec(&db, "INSERT INTO records SELECT * FROM kept_aside");

    // 10,000 records, downloaded and verified in the page.
    c.goto(&fx.url("/verify?device=grand-1")).await.unwrap();
    let v = verdict(c, "vérifié dans ce navigateur").await;
    let shown = v.text().await.unwrap();
    assert_eq!(attr(&v, "data-ok").await, "true", "{shown}");
    assert!(
        shown.contains("10 000 (n° 0 à 9999)") || shown.contains("10\u{202f}000 (n° 0 à 9999)"),
        "{shown}"
    );
    eprintln!(
        "browser verifier: 10,000 records verified in {} ms (WebAssembly module: {} bytes)",
        attr(&v, "data-ms").await,
        hub::web::verifier::WASM.len()
    );

    // The hub's retention rule removes every month before this one: dev-2's export is now a
    // frontier line alone. This browser verified dev-2's first 40 records on an earlier
    // visit: the records no longer reach back to it, so the page asks the hub for a
    // consistency proof (from the removed records' leaves) and checks it against the two
    // signed roots.
    let rule = hub::db::retention::Rule {
        months: 1,
        export_dir: fx.dir.path().join("removed"),
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    sql(&db, |conn| {
        hub::db::retention::run(conn, &rule, now, &std::sync::atomic::AtomicBool::new(false))
            .expect("retention")
    });
    let dev2 = &fx.devs[1];
    let mut frontier = audit::Frontier::new();
    for i in 0..40 {
        frontier.append(audit::merkle::leaf_hash(&common::record(
            dev2,
            i,
            &card.sha256,
            &version,
        )));
    }
    c.execute(
        "localStorage.setItem('iat-verify:' + arguments[0], arguments[1]);",
        vec![
            serde_json::json!(dev2.origin()),
            serde_json::json!(
                serde_json::json!({"size": 40, "root": verify::hex(&frontier.root()), "at": "2026-03-02T09:00:00Z"})
                    .to_string()
            ),
        ],
    )
    .await
    .unwrap();
    c.goto(&fx.url("/verify?device=dev-2")).await.unwrap();
    let v = verdict(c, "vérifié dans ce navigateur").await;
    let shown = v.text().await.unwrap();
    assert_eq!(attr(&v, "data-ok").await, "true", "{shown}");
    assert_eq!(attr(&v, "data-previous").await, "by-proof", "{shown}");
    assert!(shown.contains("(preuve de cohérence)"), "{shown}");
    shot(c, "verify-by-proof").await;

    // The hub stopped: an altered copy of the saved files, chosen with the file chooser, does
    // not verify; the saved files, dropped on the open page, do.
    fx.web.take().expect("the web side runs").stop();
    assert!(
        ureq::get(&fx.url("/register")).call().is_err(),
        "the hub no longer answers"
    );
    let input = c.find(Locator::Css("#files")).await.expect("file input");
    let paths: Vec<String> = altered_files
        .iter()
        .map(|p| p.display().to_string())
        .collect();
    input
        .send_keys(&paths.join("\n"))
        .await
        .expect("choosing files");
    let v = verdict(c, "Fichiers").await;
    let shown = v.text().await.unwrap();
    assert_eq!(attr(&v, "data-kind").await, "signature", "{shown}");
    // The saved files dropped on the drop zone: a real `drop` event carrying them.
    let saved: Vec<serde_json::Value> = files
        .iter()
        .map(|p| {
            serde_json::json!({
                "name": p.file_name().unwrap().to_string_lossy(),
                "text": std::fs::read_to_string(p).unwrap(),
            })
        })
        .collect();
    c.execute(
        "document.getElementById('status').textContent = ''; \
         delete document.getElementById('verdict').dataset.ok; \
         const dt = new DataTransfer(); \
         for (const f of arguments[0]) dt.items.add(new File([f.text], f.name, {type: 'text/plain'})); \
         const zone = document.getElementById('drop'); \
         zone.dispatchEvent(new DragEvent('dragover', {dataTransfer: dt, bubbles: true, cancelable: true})); \
         zone.dispatchEvent(new DragEvent('drop', {dataTransfer: dt, bubbles: true, cancelable: true}));",
        vec![serde_json::json!(saved)],
    )
    .await
    .expect("dropping the files");
    let t = Instant::now();
    loop {
        let v = verdict(c, "Fichiers").await;
        if attr(&v, "data-ok").await == "true" {
            let shown = v.text().await.unwrap();
            assert!(shown.contains("288 (n° 0 à 287)"), "{shown}");
            assert_eq!(attr(&v, "data-previous").await, "by-records");
            break;
        }
        assert!(t.elapsed() < NAVIGATION, "the saved files did not verify");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    shot(c, "verify-files-offline").await;

    // The specification pack through the page's WebAssembly build, the hub still stopped.
    let dir = common::repo()
        .join("docs/spec/vectors")
        .canonicalize()
        .expect("docs/spec/vectors");
    let cases = verify::pack::read(&dir).expect("docs/spec/vectors");
    assert!(cases.len() >= 20);
    for case in &cases {
        let d = dir.join(&case.name);
        let keys =
            vec![audit::VerifierKey::parse(case.file("device.vkey").unwrap().trim()).expect("key")];
        // What this browser verified before: only the case's previous checkpoint, if any.
        let remembered = case.file("previous.txt").map(|n| {
            let p = verify::Previous::from_note(&keys, n).expect("previous.txt");
            serde_json::json!({"size": p.size, "root": verify::hex(&p.root), "at": "2026-03-01T00:00:00Z"})
                .to_string()
        });
        c.execute(
            "localStorage.clear(); \
             if (arguments[1] !== null) localStorage.setItem('iat-verify:' + arguments[0], arguments[1]); \
             document.getElementById('files').value = ''; \
             document.getElementById('status').textContent = ''; \
             delete document.getElementById('verdict').dataset.ok;",
            vec![
                serde_json::json!(keys[0].name()),
                serde_json::json!(remembered),
            ],
        )
        .await
        .unwrap();
        let paths: Vec<String> = ["device.vkey", "records.jsonl", "checkpoint.txt"]
            .iter()
            .map(|f| d.join(f).display().to_string())
            .collect();
        input
            .send_keys(&paths.join("\n"))
            .await
            .expect("choosing files");
        let v = verdict(c, "Fichiers").await;
        let shown = v.text().await.unwrap();
        match case.expected().expect("expected.json") {
            verify::pack::Expected::Ok { records } => {
                assert_eq!(attr(&v, "data-ok").await, "true", "{}: {shown}", case.name);
                let n = format!("{records} (n° ");
                assert!(shown.contains(&n), "{}: {n:?} in {shown}", case.name);
            }
            verify::pack::Expected::Problem { kind } => {
                assert_eq!(attr(&v, "data-ok").await, "false", "{}: {shown}", case.name);
                assert_eq!(attr(&v, "data-kind").await, kind, "{}: {shown}", case.name);
            }
        }
    }
    eprintln!(
        "browser verifier: the {} cases of the specification pack reach their verdicts",
        cases.len()
    );
}
