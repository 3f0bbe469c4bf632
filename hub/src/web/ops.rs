//! For operators' tools rather than people: `GET /metrics` (Prometheus, OpenMetrics text) and
//! `GET /healthz` (a load balancer's or a supervisor's probe).

use std::collections::HashMap;

use axum::Json;
use axum::extract::{Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::{App, WebError, WebResult, params};

/// The ingest loop goes round at least every 200 ms; this long without a round, it is stuck.
const LOOP_STALLED_MS: i64 = 30_000;

/// `GET /metrics`: the hub's metrics ([`crate::metrics`]).
pub async fn metrics(
    State(app): State<App>,
    Query(q): Query<HashMap<String, String>>,
) -> WebResult<Response> {
    params::only(&q, &[])?;
    let text = app
        .db(|conn, enrolment| Ok(crate::metrics::global().scrape(conn, enrolment.devices.len())?))
        .await?;
    Ok((
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        text,
    )
        .into_response())
}

/// `GET /healthz`: 200 when the database answers and the ingest loop (when this process runs
/// one) goes round; 503 otherwise, saying which. The broker connection is reported, not judged:
/// the hub reconnects by itself, and a restart would not bring a broker back.
pub async fn healthz(
    State(app): State<App>,
    Query(q): Query<HashMap<String, String>>,
) -> WebResult<Response> {
    params::only(&q, &[])?;
    let database = app
        .db(|conn, _| {
            conn.query_row("SELECT 1", crate::params![], |r| r.get::<_, i64>(0))
                .map_err(|e| WebError::Internal(e.to_string()))
        })
        .await;
    let m = crate::metrics::global();
    let now = crate::mqtt::now_ms();
    let ingest = match m.last_tick_ms() {
        None => "not in this process",
        Some(t) if now.saturating_sub(t) > LOOP_STALLED_MS => "stalled",
        Some(_) => "running",
    };
    let broker = match (m.last_tick_ms(), m.connected.get()) {
        (None, _) => "not in this process",
        (Some(_), 1) => "connected",
        _ => "reconnecting",
    };
    let ok = database.is_ok() && ingest != "stalled";
    let body = json!({
        "status": if ok { "ok" } else { "failing" },
        "database": match &database { Ok(_) => "ok".to_owned(), Err(e) => format!("{e:?}") },
        "ingest": ingest,
        "broker": broker,
    });
    let code = if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    Ok((code, Json(body)).into_response())
}
