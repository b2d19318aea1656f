//! The web UI's files, embedded in the binary: nothing is fetched from
//! anywhere else, and there is no build step (plain HTML, CSS and one
//! JavaScript module; see ARCHITECTURE "Web UI").

use axum::{
    extract::Path,
    http::header,
    response::{IntoResponse, Response},
};

use super::error::ApiError;

/// Name, content type and content of every file the UI has.
const FILES: &[(&str, &str, &str)] = &[
    (
        "app.js",
        "text/javascript; charset=utf-8",
        include_str!("ui/app.js"),
    ),
    (
        "forms.js",
        "text/javascript; charset=utf-8",
        include_str!("ui/forms.js"),
    ),
    (
        "app.css",
        "text/css; charset=utf-8",
        include_str!("ui/app.css"),
    ),
];

const INDEX: &str = include_str!("ui/index.html");

fn file(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            // Always asked again (cheap, and an upgrade shows at once).
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

pub(super) async fn index() -> Response {
    file("text/html; charset=utf-8", INDEX)
}

pub(super) async fn asset(Path(name): Path<String>) -> Response {
    match FILES.iter().find(|(file_name, _, _)| *file_name == name) {
        Some((_, content_type, body)) => file(content_type, body),
        None => ApiError::not_found("no such file").into_response(),
    }
}
