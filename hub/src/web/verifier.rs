//! The browser's verifier: the page `/verify`, its script `/verify.js` and the WebAssembly
//! module `/verify.wasm` (crate `verify-web`, built by `build.rs`: the same verification code
//! as `hub verify` and ingest). The page downloads a device's records, key and checkpoint from
//! this hub, or reads files the visitor saved, and verifies them in the browser: nothing is
//! sent back. It keeps the last checkpoint it verified per device (local storage) and checks
//! that the next one extends it (`/api/devices/{id}/consistency`).

use std::collections::HashMap;
use std::sync::OnceLock;

use axum::extract::{Query, State};
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use maud::html;
use sha2::{Digest, Sha256};

use super::i18n::Locale;
use super::pages::layout;
use super::{App, WebResult, params};

/// The module, as built for this hub.
pub const WASM: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/verify_web.wasm"));
const SCRIPT: &str = include_str!("../../assets/verify.js");

/// Exactly what the page needs: its own script, compiling the WebAssembly module
/// (`'wasm-unsafe-eval'`), fetching from this hub, its style sheet.
pub const PAGE_CSP: &str = "default-src 'none'; script-src 'self' 'wasm-unsafe-eval'; connect-src 'self'; style-src 'self'; img-src 'self' data:; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// The module's SHA-256, shown on the page.
pub fn wasm_sha256() -> &'static str {
    static H: OnceLock<String> = OnceLock::new();
    H.get_or_init(|| verify::hex(&Sha256::digest(WASM)))
}

pub async fn page(
    State(app): State<App>,
    l: Locale,
    Query(q): Query<HashMap<String, String>>,
) -> WebResult<Response> {
    params::only(&q, &["device"])?;
    let chosen = params::opt(&q, "device").map(str::to_owned);
    let mut devices: Vec<(String, String)> = app
        .db(|_, e| {
            Ok(e.devices
                .values()
                .map(|d| (d.territory.clone(), d.id.clone()))
                .collect())
        })
        .await?;
    devices.sort();
    let body = html! {
        h1 { (l.t("Vérifier l'historique d'un appareil dans votre navigateur", "Verify a device's history in your browser")) }
        p.intro {
            (l.t("Cette page télécharge les résultats publiés par un appareil, sa clé publique et son dernier point de contrôle signé, puis les vérifie ici, dans votre navigateur : chaque signature, le contenu de chaque résultat, et l'arbre de hachage que l'appareil a signé. Rien n'est renvoyé au hub.",
                 "This page downloads the results a device published, its public key and its latest signed checkpoint, then verifies them here, in your browser: every signature, every result's contents, and the hash tree the device signed. Nothing is sent back to the hub."))
        }
        div #verifier data-tz=(l.zone.name) data-device=[chosen.as_deref()] {
            section aria-labelledby="from-hub" {
                h2 #from-hub { (l.t("Un appareil de ce hub", "A device of this hub")) }
                form #by-device method="get" action="/verify" {
                    label for="device" { (l.t("Appareil", "Device")) }
                    " "
                    select #device name="device" {
                        @for (t, d) in &devices {
                            option value=(d) selected[chosen.as_deref() == Some(d.as_str())] { (t) " / " (d) }
                        }
                    }
                    " "
                    button type="submit" { (l.t("Vérifier", "Verify")) }
                }
                @if devices.is_empty() { p { (l.t("Aucun appareil n'est inscrit.", "No device is enrolled.")) } }
            }
            section aria-labelledby="from-files" {
                h2 #from-files { (l.t("Des fichiers enregistrés", "Saved files")) }
                p { (l.t("Déposez ici la clé publique (", "Drop here the public key (")) code { "device.vkey" }
                    (l.t("), les résultats (", "), the records (")) code { "records.jsonl" }
                    (l.t(", un ou plusieurs fichiers) et le point de contrôle (", ", one file or several) and the checkpoint (")) code { "checkpoint.txt" }
                    (l.t(") enregistrés depuis le registre, ou choisissez-les. Une fois cette page ouverte, cela marche même si le hub ne répond plus.",
                         ") saved from the register, or choose them. Once this page is open, this works even if the hub no longer answers.")) }
                div #drop {
                    label for="files" { (l.t("Choisir les fichiers", "Choose the files")) }
                    " "
                    input #files type="file" multiple;
                }
            }
            section #verdict aria-live="polite" aria-labelledby="verdict-title" {
                h2 #verdict-title { (l.t("Résultat de la vérification", "Verification result")) }
                p #status { (l.t("Chargement du vérificateur…", "Loading the verifier…")) }
            }
            noscript {
                p { (l.t("Cette page a besoin de JavaScript et de WebAssembly. Sans eux, vérifiez avec ", "This page needs JavaScript and WebAssembly. Without them, verify with ")) code { "hub verify" } (l.t(" (voir le registre public).", " (see the public register).")) }
            }
        }
        p.small {
            (l.t("Le vérificateur est le code de vérification du hub compilé en WebAssembly (", "The verifier is the hub's own verification code compiled to WebAssembly ("))
            a href="/verify.wasm" { "verify.wasm" }
            (l.t(", ", ", ")) (WASM.len() / 1024) (l.t(" Kio, SHA-256 ", " KiB, SHA-256 ")) code { (wasm_sha256()) }
            (l.t(") ; la même vérification se fait hors ligne avec ", "); the same verification runs offline with ")) code { "hub verify" } "."
        }
        script src="/verify.js" defer {}
    };
    let mut r = layout(
        &l,
        l.t("Vérifier dans le navigateur", "Verify in the browser"),
        "register",
        body,
    )
    .into_response();
    r.headers_mut().insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(PAGE_CSP),
    );
    Ok(r)
}

pub async fn script() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        SCRIPT,
    )
}

pub async fn wasm() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "application/wasm"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        WASM,
    )
}
