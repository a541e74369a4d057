//! The OpenAPI document (`GET /openapi.json`), generated from the handlers'
//! annotations and refined with the bounds the domain validates, and the readable
//! `/docs` page built from it.

use axum::http::{header, HeaderMap};
use axum::response::{Html, IntoResponse, Response};
use utoipa::OpenApi;

use super::alerts::{self, AlertSeverity};
use super::routes;
use super::thresholds;
use super::zones::{self, LatestSource};
use crate::domain::Thresholds;

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        openapi
            .components
            .get_or_insert_with(Default::default)
            .add_security_scheme(
                "bearer",
                SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
            );
    }
}

#[derive(OpenApi)]
#[openapi(
    info(title = "arng API", description = "Warehouse readings, thresholds and alerts (entrepot)."),
    paths(routes::dashboard, routes::health, routes::ready, routes::metrics, routes::events, zones::zones, zones::zone_latest,
        zones::zone_history, thresholds::get_thresholds, thresholds::put_thresholds, alerts::post_alert, alerts::list_alerts),
    components(schemas(LatestSource, AlertSeverity)),
    modifiers(&BearerAuth)
)]
pub struct ApiDoc;

/// Zone names as [`Zone::new`] accepts them, for the OpenAPI document. utoipa wants a
/// literal in its attributes, so the same text is written there too; a unit test
/// checks that every zone parameter of the document carries exactly this one.
const ZONE_PATTERN: &str =
    r"^(?!(heartbeat|alerts|status|config|deadletter)$)[a-z0-9][a-z0-9_-]{0,31}$";

/// The OpenAPI 3.1 document: [`ApiDoc`], plus the bounds that `Thresholds::validate`
/// enforces on the shared domain types (whose derives describe only their shape), so
/// that a client generating documents from the schema is told what is accepted.
/// The nesting of a band's bounds (`critical_low < warning_low < warning_high <
/// critical_high`, hysteresis under half the normal band) cannot be said in JSON
/// Schema; the descriptions say it and the API answers 400 naming the field.
pub fn openapi_document() -> serde_json::Value {
    let mut doc = serde_json::to_value(ApiDoc::openapi()).unwrap_or_default();
    let mut refine = |pointer: &str, extra: serde_json::Value| {
        if let (Some(serde_json::Value::Object(target)), serde_json::Value::Object(extra)) =
            (doc.pointer_mut(pointer), extra)
        {
            target.extend(extra);
        }
    };
    let thresholds = "/components/schemas/Thresholds/properties";
    refine(
        &format!("{thresholds}/debounce"),
        serde_json::json!({"minimum": 1, "maximum": 1000}),
    );
    refine(
        &format!("{thresholds}/silence_after_s"),
        serde_json::json!({"minimum": 1, "maximum": 7 * 24 * 3600}),
    );
    refine(
        &format!("{thresholds}/zones/propertyNames"),
        serde_json::json!({"pattern": ZONE_PATTERN}),
    );
    // A valid document to start from (the built-in defaults).
    refine(
        "/components/schemas/Thresholds",
        serde_json::json!({"examples": [Thresholds::default()]}),
    );
    refine(
        "/components/schemas/Band",
        serde_json::json!({"description": "The four bounds of one metric, finite and strictly increasing \
            (critical_low < warning_low < warning_high < critical_high), each within the values a \
            reading may have (temp: -60 to 100 °C, hum: 0 to 100 %), and the hysteresis \
            applied when clearing (0 <= hysteresis < (warning_high - warning_low) / 2)."}),
    );
    let (lo, hi) = (
        crate::domain::payload::TEMP_RANGE
            .0
            .min(crate::domain::payload::HUM_RANGE.0),
        crate::domain::payload::TEMP_RANGE
            .1
            .max(crate::domain::payload::HUM_RANGE.1),
    );
    for bound in [
        "critical_low",
        "warning_low",
        "warning_high",
        "critical_high",
    ] {
        refine(
            &format!("/components/schemas/Band/properties/{bound}"),
            serde_json::json!({"minimum": lo, "maximum": hi}),
        );
    }
    doc
}

/// The OpenAPI 3.1 document of this API, generated from the code.
pub(super) async fn openapi_json() -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        serde_json::to_string_pretty(&openapi_document()).unwrap_or_default(),
    )
        .into_response()
}

/// A readable page listing the routes, built from the OpenAPI document.
pub(super) async fn docs_page(headers: HeaderMap) -> Html<String> {
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("localhost:8000");
    Html(render_docs(&ApiDoc::openapi(), host))
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn render_docs(doc: &utoipa::openapi::OpenApi, host: &str) -> String {
    let mut rows = String::new();
    for (path, item) in &doc.paths.paths {
        let ops = [("GET", &item.get), ("PUT", &item.put), ("POST", &item.post)];
        for (method, op) in ops {
            let Some(op) = op else { continue };
            let params: Vec<String> = op
                .parameters
                .iter()
                .flatten()
                .map(|p| {
                    format!(
                        "<code>{}</code> {}",
                        esc(&p.name),
                        esc(p.description.as_deref().unwrap_or(""))
                    )
                })
                .collect();
            let secured = op.security.is_some();
            rows += &format!(
                "<tr><td><b>{method}</b></td><td><code>{}</code></td><td>{}{}</td><td>{}</td></tr>\n",
                esc(path),
                esc(op.description.as_deref().or(op.summary.as_deref()).unwrap_or("")),
                if secured { " <em>(bearer token)</em>" } else { "" },
                params.join("<br>")
            );
        }
    }
    format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>arng API</title>\
         <style>body{{font-family:system-ui,sans-serif;margin:2em;max-width:70em}}td{{vertical-align:top;padding:.4em;border-bottom:1px solid #ddd}}code{{background:#f4f4f4}}</style>\
         </head><body><h1>arng API</h1><p>Machine-readable: <a href=\"/openapi.json\">/openapi.json</a>. \
         Base URL: <code>http://{}</code>. Errors are JSON: <code>{{\"error\": \"...\", \"field\": \"...\"}}</code>.</p>\
         <table><tr><th>method</th><th>path</th><th>description</th><th>parameters</th></tr>{rows}</table></body></html>",
        esc(host)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn openapi_lists_every_contract_route() {
        let doc = ApiDoc::openapi();
        for p in [
            "/zones/{zone}/latest",
            "/alerts",
            "/thresholds",
            "/zones",
            "/zones/{zone}/history",
            "/health",
            "/ready",
            "/metrics",
            "/events",
            "/",
        ] {
            assert!(doc.paths.paths.contains_key(p), "{p} missing");
        }
        let html = render_docs(&doc, "localhost:8000");
        assert!(html.contains("/zones/{zone}/latest") && html.contains("bearer token"));
    }

    /// utoipa takes the zone pattern as a literal in each attribute: every copy must be
    /// [`ZONE_PATTERN`], whose reserved words and length must be the domain's.
    #[test]
    fn every_zone_in_the_document_has_the_zone_pattern() {
        let doc = openapi_document();
        let mut zone_params = 0;
        for (path, item) in doc["paths"].as_object().unwrap() {
            for op in item.as_object().unwrap().values() {
                for p in op["parameters"].as_array().into_iter().flatten() {
                    if p["name"] == "zone" {
                        assert_eq!(p["schema"]["pattern"], ZONE_PATTERN, "{path}");
                        zone_params += 1;
                    }
                }
            }
        }
        assert_eq!(zone_params, 3, "latest, history and GET /alerts");
        let schemas = &doc["components"]["schemas"];
        assert_eq!(
            schemas["NewAlert"]["properties"]["zone"]["pattern"],
            ZONE_PATTERN
        );
        assert_eq!(
            schemas["Thresholds"]["properties"]["zones"]["propertyNames"]["pattern"],
            ZONE_PATTERN
        );
        let reserved = ZONE_PATTERN
            .split_once("(?!(")
            .and_then(|(_, rest)| rest.split_once(")$)"))
            .unwrap()
            .0;
        assert_eq!(
            reserved.split('|').collect::<Vec<_>>(),
            crate::domain::names::RESERVED_ZONES
        );
        let max = format!("{{0,{}}}$", crate::domain::names::MAX_NAME_LEN - 1);
        assert!(ZONE_PATTERN.ends_with(&max), "{ZONE_PATTERN} vs {max}");
    }
}
