//! The hub's web side, for local authorities and citizens: a server-rendered dashboard
//! (devices by territory, charts of each series), a JSON API and CSV exports (one of them in
//! the national open-data counting schema), the public register of devices and models, and
//! an admin area behind a login.
//!
//! It runs on its own small tokio runtime in its own thread beside the MQTT loop (`hub run`
//! with an `[http]` section); SQLite work happens on blocking threads with a small pool of
//! connections to the same WAL database. Every page is read-only except the admin routes,
//! which require a session (see [`crate::auth`]) and a CSRF token on every POST.
//!
//! Code map: [`pages`] (public HTML), [`api`] (JSON, CSV, open data), [`health`] (device
//! health on the pages and its API, in French), [`admin`] (login and actions), [`chart`]
//! (SVG), [`params`] (query validation).

pub mod admin;
pub mod api;
pub mod chart;
pub mod export;
pub mod health;
pub mod i18n;
pub mod limits;
pub mod ops;
pub mod pages;
pub mod params;
pub mod server;
pub mod stream;
pub mod throttle;
pub mod verifier;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};

use crate::db::sql::Connection;
use axum::Router;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};

use crate::config::Config;
use crate::db::store;
use crate::enrolment::Enrolment;

/// The enrolment, shared with the MQTT loop: the admin area replaces it after an enrolment or
/// a key rotation, and ingest reads the new one from its next batch on.
pub type SharedEnrolment = Arc<RwLock<Enrolment>>;

/// What the web side needs from the hub's config.
#[derive(Debug, Clone)]
pub struct WebConfig {
    pub listen: SocketAddr,
    pub db: crate::db::sql::Database,
    pub devices: PathBuf,
    pub cards: Option<PathBuf>,
    pub hub_name: String,
    /// `[http] public_origin`, normalised: where admin POSTs must come from.
    pub public_origin: Option<String>,
    /// `[http] trusted_proxies`: whose `X-Forwarded-For` names the client.
    pub trusted_proxies: Vec<std::net::IpAddr>,
    /// `[http.limits]`.
    pub limits: limits::Limits,
    /// The time zone of the dates on the pages (`[http] time_zone`).
    pub time_zone: i18n::Zone,
    /// A production hub refuses incomplete enrolments (`mode`).
    pub mode: crate::config::Mode,
}

impl WebConfig {
    /// From a config with an `[http]` section.
    pub fn from_config(c: &Config) -> Option<WebConfig> {
        let h = c.http.as_ref()?;
        Some(WebConfig {
            listen: h.listen,
            db: c.db.clone(),
            devices: c.devices.clone(),
            cards: h.cards.clone(),
            hub_name: c.name.clone(),
            public_origin: h.public_origin.clone(),
            trusted_proxies: h.trusted_proxies.clone(),
            limits: h.limits.clone(),
            time_zone: h.time_zone.clone(),
            mode: c.mode,
        })
    }
}

/// An error as the browser or API client sees it: a status and a one-line message.
#[derive(Debug)]
pub enum WebError {
    BadRequest(String),
    NotFound(String),
    /// No valid session on an admin POST.
    Unauthorized,
    /// No valid session on an admin page: go and log in.
    Login,
    Forbidden(String),
    /// Too much at once (heavy queries, password checks): try again in that many seconds.
    Busy(String, u64),
    Internal(String),
}

impl From<crate::db::sql::Error> for WebError {
    fn from(e: crate::db::sql::Error) -> Self {
        WebError::Internal(format!("database: {e}"))
    }
}

impl IntoResponse for WebError {
    fn into_response(self) -> Response {
        let (status, msg) = match self {
            WebError::BadRequest(m) => (StatusCode::BAD_REQUEST, m),
            WebError::NotFound(m) => (StatusCode::NOT_FOUND, m),
            WebError::Unauthorized => (
                StatusCode::UNAUTHORIZED,
                "log in first: /admin/login".to_owned(),
            ),
            WebError::Login => {
                return (
                    StatusCode::SEE_OTHER,
                    [(header::LOCATION, HeaderValue::from_static("/admin/login"))],
                )
                    .into_response();
            }
            WebError::Forbidden(m) => (StatusCode::FORBIDDEN, m),
            WebError::Busy(m, retry) => {
                return (
                    StatusCode::SERVICE_UNAVAILABLE,
                    [
                        (header::CONTENT_TYPE, "text/plain; charset=utf-8".to_owned()),
                        (header::RETRY_AFTER, retry.to_string()),
                    ],
                    format!("503 Service Unavailable: {m}\n"),
                )
                    .into_response();
            }
            WebError::Internal(m) => {
                tracing::error!("hub web: {m}");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal error".to_owned(),
                )
            }
        };
        (
            status,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            format!(
                "{} {}: {msg}\n",
                status.as_u16(),
                status.canonical_reason().unwrap_or("")
            ),
        )
            .into_response()
    }
}

pub type WebResult<T> = Result<T, WebError>;

struct Inner {
    cfg: WebConfig,
    enrolment: SharedEnrolment,
    pool: Mutex<Vec<Connection>>,
    /// Serialises changes to the enrolment file.
    enrol_lock: Mutex<()>,
    /// Argon2 checks at once (19 MiB each).
    password_checks: Arc<tokio::sync::Semaphore>,
    /// Heavy queries at once (series API, exports).
    heavy: Arc<tokio::sync::Semaphore>,
    throttle: Mutex<throttle::Throttle>,
}

/// The shared state of every handler.
#[derive(Clone)]
pub struct App(Arc<Inner>);

impl App {
    pub fn new(cfg: WebConfig, enrolment: SharedEnrolment) -> App {
        App(Arc::new(Inner {
            enrolment,
            pool: Mutex::new(Vec::new()),
            enrol_lock: Mutex::new(()),
            password_checks: Arc::new(tokio::sync::Semaphore::new(cfg.limits.password_checks)),
            heavy: Arc::new(tokio::sync::Semaphore::new(cfg.limits.heavy_queries)),
            throttle: Mutex::new(throttle::Throttle::default()),
            cfg,
        }))
    }

    pub fn cfg(&self) -> &WebConfig {
        &self.0.cfg
    }

    /// The login throttle (a poisoned lock is taken over: the tables stay consistent).
    pub fn throttle(&self) -> std::sync::MutexGuard<'_, throttle::Throttle> {
        self.0.throttle.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A place to check a password, or a 503 after [`limits::Limits::queue_wait`].
    pub async fn password_slot(&self) -> WebResult<tokio::sync::OwnedSemaphorePermit> {
        self.slot(
            &self.0.password_checks,
            "too many logins at once; try again in a few seconds (trop de connexions en même temps : réessayez dans quelques secondes)",
        )
        .await
    }

    /// A place for a heavy query (series, export), or a 503 after the wait.
    pub async fn heavy_slot(&self) -> WebResult<tokio::sync::OwnedSemaphorePermit> {
        self.slot(
            &self.0.heavy,
            "too many series and exports at once; try again in a few seconds (trop de séries et d'exports en même temps : réessayez dans quelques secondes)",
        )
        .await
    }

    async fn slot(
        &self,
        s: &Arc<tokio::sync::Semaphore>,
        busy: &str,
    ) -> WebResult<tokio::sync::OwnedSemaphorePermit> {
        let wait = self.0.cfg.limits.queue_wait;
        match tokio::time::timeout(wait, s.clone().acquire_owned()).await {
            Ok(Ok(p)) => Ok(p),
            Ok(Err(_)) => Err(WebError::Internal("semaphore closed".into())),
            Err(_) => Err(WebError::Busy(busy.to_owned(), wait.as_secs().max(1))),
        }
    }

    /// Runs `f` with a database connection and the current enrolment on a blocking thread.
    pub async fn db<T, F>(&self, f: F) -> WebResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection, &Enrolment) -> WebResult<T> + Send + 'static,
    {
        let app = self.clone();
        tokio::task::spawn_blocking(move || app.db_here(f))
            .await
            .map_err(|e| WebError::Internal(format!("blocking task: {e}")))?
    }

    /// [`App::db`] on the calling (blocking) thread.
    pub fn db_here<T>(
        &self,
        f: impl FnOnce(&Connection, &Enrolment) -> WebResult<T>,
    ) -> WebResult<T> {
        let pooled = self.0.pool.lock().map(|mut p| p.pop()).unwrap_or(None);
        let conn = match pooled {
            Some(c) => c,
            None => store::open_existing(&self.0.cfg.db)?,
        };
        let out = {
            let enrolment = self
                .0
                .enrolment
                .read()
                .map_err(|_| WebError::Internal("enrolment lock poisoned".into()))?;
            f(&conn, &enrolment)
        };
        // A connection PostgreSQL closed (a restart, a failover) is not kept: the next request
        // opens a new one.
        if let Ok(mut p) = self.0.pool.lock()
            && p.len() < 8
            && !conn.is_closed()
        {
            p.push(conn);
        }
        out
    }

    /// Changes the enrolment file with `f`, then reloads it for ingest and the web side.
    pub async fn change_enrolment<F>(&self, f: F) -> WebResult<()>
    where
        F: FnOnce(&std::path::Path) -> Result<(), crate::config::ConfigError> + Send + 'static,
    {
        let app = self.clone();
        tokio::task::spawn_blocking(move || {
            let _guard = app
                .0
                .enrol_lock
                .lock()
                .map_err(|_| WebError::Internal("enrolment lock poisoned".into()))?;
            let path = app.0.cfg.devices.clone();
            f(&path).map_err(|e| WebError::BadRequest(e.to_string()))?;
            let fresh = Enrolment::load(&path).map_err(|e| WebError::Internal(e.to_string()))?;
            *app.0
                .enrolment
                .write()
                .map_err(|_| WebError::Internal("enrolment lock poisoned".into()))? = fresh;
            Ok(())
        })
        .await
        .map_err(|e| WebError::Internal(format!("blocking task: {e}")))?
    }
}

/// Every route.
pub fn router(app: App) -> Router {
    let limits = app.cfg().limits.clone();
    Router::new()
        .route("/", get(pages::dashboard))
        .route("/device/{id}", get(pages::device))
        .route("/register", get(pages::register))
        .route("/verify", get(verifier::page))
        .route("/verify.js", get(verifier::script))
        .route("/verify.wasm", get(verifier::wasm))
        .route("/alarms", get(pages::alarms))
        .route("/style.css", get(pages::style))
        .route("/metrics", get(ops::metrics))
        .route("/healthz", get(ops::healthz))
        .route("/api/devices", get(api::devices))
        .route("/api/devices/{id}", get(api::device))
        .route("/api/devices/{id}/series", get(api::series))
        .route("/api/devices/{id}/health", get(health::api))
        .route("/api/devices/{id}/consistency", get(api::consistency))
        .route("/api/register", get(api::register))
        .route("/api/alarms", get(api::alarms))
        .route("/export/{id}/series.csv", get(export::series_csv))
        .route("/export/{id}/records.jsonl", get(export::records))
        .route("/export/{id}/checkpoint.txt", get(export::checkpoint))
        .route("/export/{id}/device.vkey", get(export::vkey))
        .route("/export/{id}/keys.txt", get(export::keys))
        .route("/export/comptage/sites.csv", get(export::comptage_sites))
        .route(
            "/export/comptage/channels.csv",
            get(export::comptage_channels),
        )
        .route(
            "/export/comptage/measures.csv",
            get(export::comptage_measures),
        )
        .route("/admin", get(admin::home))
        .route("/admin/login", get(admin::login_page).post(admin::login))
        .route("/admin/logout", post(admin::logout))
        .route("/admin/enrol", post(admin::enrol))
        .route("/admin/rotate", post(admin::rotate))
        .route("/admin/alarms", get(admin::alarms))
        .route("/admin/alarms/{id}/ack", post(admin::ack))
        .fallback(|| async { WebError::NotFound("no such page".into()) })
        .layer(tower_http::limit::RequestBodyLimitLayer::new(
            limits.max_body_bytes,
        ))
        .layer(tower_http::timeout::RequestBodyTimeoutLayer::new(
            limits.stall_timeout,
        ))
        .layer(tower_http::timeout::TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            limits.request_timeout,
        ))
        .layer(axum::middleware::map_response(explain_limits))
        .layer(axum::middleware::from_fn(i18n::language))
        .layer(axum::middleware::map_response(security_headers))
        .with_state(app)
}

/// The layers' own answers (408, 413: no handler answers them) come without a word, or with a
/// bare "length limit exceeded": say what happened and what to do.
async fn explain_limits(r: Response) -> Response {
    let msg = match r.status() {
        StatusCode::REQUEST_TIMEOUT => {
            "the request took too long (sent too slowly, or the answer took too long to prepare); try a shorter period"
        }
        StatusCode::PAYLOAD_TOO_LARGE => {
            "the request body is too large (the admin forms need a few hundred bytes; `max_body_bytes` in [http.limits])"
        }
        _ => return r,
    };
    let status = r.status();
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        format!(
            "{} {}: {msg}\n",
            status.as_u16(),
            status.canonical_reason().unwrap_or("")
        ),
    )
        .into_response()
}

/// Headers on every response: no framing, no sniffing, no third-party anything.
async fn security_headers(mut r: Response) -> Response {
    let h = r.headers_mut();
    // A page that needs more (the browser's verifier runs a script) states its own policy.
    if !h.contains_key(header::CONTENT_SECURITY_POLICY) {
        h.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(
                "default-src 'none'; style-src 'self'; img-src 'self' data:; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
            ),
        );
    }
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    r
}

/// The web side, running in its own thread.
pub struct Running {
    pub addr: SocketAddr,
    stop: Option<tokio::sync::watch::Sender<bool>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// How long an orderly stop waits for requests in progress.
const STOP_GRACE: std::time::Duration = std::time::Duration::from_secs(3);

impl Running {
    /// Stops serving in order (no new connection; the requests in progress finish, for
    /// 3 s at most) and waits for the thread.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(true);
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Binds `cfg.listen` (port 0: any free port) and serves in a new thread. The database is
/// opened (and migrated) first, so that a bad path fails here, not on the first request.
pub fn start(cfg: WebConfig, enrolment: SharedEnrolment) -> anyhow::Result<Running> {
    use anyhow::Context;
    drop(store::open(&cfg.db).with_context(|| format!("opening {}", cfg.db))?);
    let listener = std::net::TcpListener::bind(cfg.listen)
        .with_context(|| format!("http: binding {}", cfg.listen))?;
    listener.set_nonblocking(true)?;
    let addr = listener.local_addr()?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        // Database work waits for one of these threads rather than opening a connection (and
        // its page cache) per request in flight.
        .max_blocking_threads(16)
        .thread_name("hub-web")
        .enable_all()
        .build()
        .context("starting the web runtime")?;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let limits = cfg.limits.clone();
    let trusted = cfg.trusted_proxies.clone();
    let app = App::new(cfg, enrolment);
    let thread = std::thread::Builder::new()
        .name("hub-web".into())
        .spawn(move || {
            rt.block_on(async move {
                let listener = match tokio::net::TcpListener::from_std(listener) {
                    Ok(l) => l,
                    Err(e) => {
                        tracing::error!("hub web: {e}");
                        return;
                    }
                };
                let mut rx = stop_rx;
                let stopped = async move {
                    let _ = rx.wait_for(|s| *s).await;
                };
                // Graceful: idle keep-alive connections close, requests in progress finish
                // within STOP_GRACE.
                server::serve(listener, router(app), &limits, trusted, stopped, STOP_GRACE).await;
            });
            rt.shutdown_timeout(std::time::Duration::from_secs(2));
        })
        .context("spawning the web thread")?;
    Ok(Running {
        addr,
        stop: Some(stop_tx),
        thread: Some(thread),
    })
}

/// The value of the request's cookie `name`, from any of its `Cookie` headers.
/// `path?k=v&…` with every value form-encoded: labels come from model cards and filters from
/// readers, and a `&`, `#` or space in one must not change the link.
pub(crate) fn link<K: AsRef<str>, V: AsRef<str>>(
    path: &str,
    pairs: impl IntoIterator<Item = (K, V)>,
) -> String {
    let mut q = form_urlencoded::Serializer::new(String::new());
    q.extend_pairs(pairs);
    let q = q.finish();
    if q.is_empty() {
        path.to_owned()
    } else {
        format!("{path}?{q}")
    }
}

fn cookie<'h>(headers: &'h axum::http::HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get_all(axum::http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use axum::extract::Query;
    use axum::http::Uri;

    /// A label with `&`, `#`, `=`, a space and an accent comes back whole through the query
    /// parser the routes use, and does not add or cut a parameter.
    #[test]
    fn link_values_come_back_whole() {
        let class = "voix & bruit #2 = élevé";
        let href = super::link(
            "/export/dev-1/series.csv",
            [("class", class), ("from", "2026-03-01T00:00:00Z")],
        );
        assert!(!href.contains(' ') && !href.contains('#'), "{href}");
        let uri: Uri = href.parse().unwrap();
        let Query(q): Query<BTreeMap<String, String>> = Query::try_from_uri(&uri).unwrap();
        assert_eq!(q.len(), 2, "{q:?}");
        assert_eq!(q["class"], class);
        assert_eq!(q["from"], "2026-03-01T00:00:00Z");
        assert_eq!(super::link("/alarms", [("", ""); 0]), "/alarms");
    }
}
