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
                "--disable-dev-shm-usage", "--window-size=1280,1600",
                format!("--user-data-dir={}", profile.display()),
            ],
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
        row.contains("288") && row.contains("verified") && row.contains("online"),
        "{row}"
    );
    let cam = text(c, "tr[data-device='cam-9']").await;
    assert!(cam.contains("FORK"), "{cam}");
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
            Some(v) => assert_eq!(value, v.to_string(), "point {i}"),
            None => {
                assert_eq!(value, format!("< {K}"), "point {i}");
                let class = attr(p, "class").await;
                assert!(class.contains("suppressed"), "point {i}: {class}");
            }
        }
    }
    // The latest windows table: the newest window first, "< k" where suppressed.
    let first = text(c, "table#windows-0 tbody tr td.value").await;
    let expect = total(287)
        .map(|v| v.to_string())
        .unwrap_or(format!("< {K}"));
    assert_eq!(first, expect);
    let privacy = text(c, "section.series p.privacy").await;
    assert!(
        privacy.contains("k = 3") && privacy.contains("ε = 1.000"),
        "{privacy}"
    );
    shot(c, "device").await;

    // Zoom on the last day: 15-minute points from the day before the last window.
    click_link(c, "last day").await;
    let points = face_count_points(c).await;
    assert_eq!(points.len(), 97);
    let start: i64 = attr(&points[0], "data-start").await.parse().unwrap();
    assert_eq!(start, T0 + 191 * WINDOW_MS);
    shot(c, "device-zoomed").await;

    // The register: the card's metadata and the signed checkpoint, verbatim.
    c.goto(&fx.url("/register")).await.unwrap();
    let licence = text(c, "article#dev-dev-1 td.licence").await;
    assert_eq!(licence, "MIT");
    let since = text(c, "article#dev-dev-1 td.since").await;
    assert_eq!(since, "2026-03-01T00:00:00Z");
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
    assert!(err.contains("Wrong"), "{err}");
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
    assert!(acked.ends_with(&format!("by {ADMIN}")), "{acked}");
    c.goto(&fx.url("/")).await.unwrap();
    let cam = text(c, "tr[data-device='cam-9']").await;
    assert!(!cam.contains("FORK"), "acknowledged: {cam}");
}
