//! A local server answering like Microsoft Graph and the identity
//! platform for what a OneDrive target uses: the client-credentials token,
//! `PUT …/root:/{path}:/content`, `POST …/root:/{path}:/createUploadSession`
//! with chunked `PUT`s to the session URL (Content-Range, 320 KiB
//! multiples, 202 with `nextExpectedRanges` until the last), and
//! `GET …/content` answered with a 302 to a pre-authenticated URL, and
//! `DELETE …/root:/{path}`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post, put};
use axum::{Form, Json, Router};
use serde_json::json;

pub const SECRET: &str = "graph-test-secret";
const TOKEN: &str = "eyJ0eXAi.test-token";

#[derive(Default)]
struct Drive {
    files: HashMap<String, Vec<u8>>,
    sessions: HashMap<String, (String, Vec<u8>)>,
    completed: usize,
    next: usize,
}

#[derive(Clone)]
struct Shared {
    drive: Arc<Mutex<Drive>>,
    base: String,
}

pub struct Graph {
    shared: Shared,
}

fn graph_error(status: StatusCode, code: &str, message: &str) -> Response {
    (
        status,
        Json(json!({ "error": { "code": code, "message": message } })),
    )
        .into_response()
}

fn authorised(headers: &HeaderMap) -> bool {
    headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v == format!("Bearer {TOKEN}"))
}

async fn token(Path(_tenant): Path<String>, Form(form): Form<HashMap<String, String>>) -> Response {
    if form.get("grant_type").map(String::as_str) != Some("client_credentials")
        || form.get("client_secret").map(String::as_str) != Some(SECRET)
    {
        return (
            StatusCode::UNAUTHORIZED,
            Json(json!({
                "error": "invalid_client",
                "error_description": "AADSTS7000215: Invalid client secret provided."
            })),
        )
            .into_response();
    }
    Json(json!({ "token_type": "Bearer", "expires_in": 3599, "access_token": TOKEN }))
        .into_response()
}

/// `root:/{path}:/content` or `root:/{path}:/createUploadSession`.
fn split_item(rest: &str) -> Option<(String, &str)> {
    let inner = rest.strip_prefix("root:/")?;
    let (path, action) = inner.rsplit_once(":/")?;
    Some((path.to_string(), action))
}

fn item(path: &str, size: usize) -> serde_json::Value {
    json!({ "id": format!("item-{path}"), "name": path.rsplit('/').next(), "size": size })
}

async fn drive_item(
    State(shared): State<Shared>,
    Path((_drive, rest)): Path<(String, String)>,
    method: axum::http::Method,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if !authorised(&headers) {
        return graph_error(
            StatusCode::UNAUTHORIZED,
            "InvalidAuthenticationToken",
            "Access token is empty.",
        );
    }
    if method == axum::http::Method::DELETE {
        let Some(path) = rest.strip_prefix("root:/") else {
            return graph_error(StatusCode::BAD_REQUEST, "invalidRequest", "Invalid request");
        };
        return match shared.drive.lock().unwrap().files.remove(path) {
            Some(_) => StatusCode::NO_CONTENT.into_response(),
            None => graph_error(
                StatusCode::NOT_FOUND,
                "itemNotFound",
                "The resource could not be found.",
            ),
        };
    }
    let Some((path, action)) = split_item(&rest) else {
        return graph_error(StatusCode::BAD_REQUEST, "invalidRequest", "Invalid request");
    };
    let mut drive = shared.drive.lock().unwrap();
    match (method.as_str(), action) {
        ("PUT", "content") => {
            let size = body.len();
            let created = drive.files.insert(path.clone(), body.to_vec()).is_none();
            let status = if created {
                StatusCode::CREATED
            } else {
                StatusCode::OK
            };
            (status, Json(item(&path, size))).into_response()
        }
        ("GET", "content") => {
            if !drive.files.contains_key(&path) {
                return graph_error(
                    StatusCode::NOT_FOUND,
                    "itemNotFound",
                    "The resource could not be found.",
                );
            }
            let location = format!("{}/download/{}", shared.base, path);
            (StatusCode::FOUND, [("location", location)]).into_response()
        }
        ("POST", "createUploadSession") => {
            drive.next += 1;
            let id = format!("s{}", drive.next);
            drive.sessions.insert(id.clone(), (path, Vec::new()));
            Json(json!({
                "uploadUrl": format!("{}/upload/{id}", shared.base),
                "expirationDateTime": "2030-01-01T00:00:00Z"
            }))
            .into_response()
        }
        _ => graph_error(StatusCode::BAD_REQUEST, "invalidRequest", "Invalid request"),
    }
}

async fn upload_chunk(
    State(shared): State<Shared>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    // The session URL is pre-authorised: a token sent with it is refused,
    // as Graph does.
    if headers.contains_key("authorization") {
        return graph_error(
            StatusCode::UNAUTHORIZED,
            "unauthenticated",
            "no token expected",
        );
    }
    let range = headers
        .get("content-range")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("bytes "))
        .and_then(|v| {
            let (span, total) = v.split_once('/')?;
            let (start, end) = span.split_once('-')?;
            Some((
                start.parse::<usize>().ok()?,
                end.parse::<usize>().ok()?,
                total.parse::<usize>().ok()?,
            ))
        });
    let Some((start, end, total)) = range else {
        return graph_error(
            StatusCode::BAD_REQUEST,
            "invalidRange",
            "Content-Range is required",
        );
    };
    let mut drive = shared.drive.lock().unwrap();
    let Some((_, received)) = drive.sessions.get_mut(&id) else {
        return graph_error(
            StatusCode::NOT_FOUND,
            "itemNotFound",
            "upload session not found",
        );
    };
    let is_last = end + 1 == total;
    if start != received.len()
        || end + 1 - start != body.len()
        || (!is_last && !body.len().is_multiple_of(320 * 1024))
    {
        return graph_error(
            StatusCode::RANGE_NOT_SATISFIABLE,
            "invalidRange",
            "The uploaded fragment overlaps, skips or is not a multiple of 320 KiB",
        );
    }
    received.extend_from_slice(&body);
    if !is_last {
        let next = format!("{}-", received.len());
        return (
            StatusCode::ACCEPTED,
            Json(json!({ "expirationDateTime": "2030-01-01T00:00:00Z", "nextExpectedRanges": [next] })),
        )
            .into_response();
    }
    let (path, bytes) = drive.sessions.remove(&id).unwrap();
    let size = bytes.len();
    drive.files.insert(path.clone(), bytes);
    drive.completed += 1;
    (StatusCode::CREATED, Json(item(&path, size))).into_response()
}

async fn download(State(shared): State<Shared>, Path(path): Path<String>) -> Response {
    match shared.drive.lock().unwrap().files.get(&path) {
        Some(bytes) => bytes.clone().into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

impl Graph {
    pub async fn start() -> Graph {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let shared = Shared {
            drive: Arc::default(),
            base,
        };
        let app = Router::new()
            .route("/{tenant}/oauth2/v2.0/token", post(token))
            .route("/v1.0/drives/{drive}/{*rest}", any(drive_item))
            .route("/upload/{id}", put(upload_chunk))
            .route("/download/{*path}", get(download))
            // Graph takes fragments up to 60 MiB.
            .layer(axum::extract::DefaultBodyLimit::max(60 * 1024 * 1024))
            .with_state(shared.clone());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Graph { shared }
    }

    pub fn url(&self) -> String {
        self.shared.base.clone()
    }

    pub fn file(&self, path: &str) -> Option<Vec<u8>> {
        self.shared.drive.lock().unwrap().files.get(path).cloned()
    }

    pub fn sessions_completed(&self) -> usize {
        self.shared.drive.lock().unwrap().completed
    }
}
