//! `/api/openapi.json`: the API described by the routes themselves
//! (`utoipa`), so the document cannot drift from the code.

use axum::Json;
use utoipa::{
    openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme},
    Modify, OpenApi as _,
};

use super::{auth::SESSION_COOKIE, routes::ApiDoc};

/// The two ways in: a bearer token or the session cookie.
pub(super) struct Security;

impl Modify for Security {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
        components.add_security_scheme(
            "session",
            SecurityScheme::ApiKey(ApiKey::Cookie(ApiKeyValue::with_description(
                SESSION_COOKIE,
                "set by POST /api/v1/login; changes also need the X-CSRF-Token header",
            ))),
        );
    }
}

/// The document, built once.
pub(super) async fn document() -> Json<utoipa::openapi::OpenApi> {
    static DOCUMENT: std::sync::OnceLock<utoipa::openapi::OpenApi> = std::sync::OnceLock::new();
    Json(DOCUMENT.get_or_init(ApiDoc::openapi).clone())
}
