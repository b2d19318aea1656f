//! Error answers: `{"error": "...", "field": "..."}` with a status.

use axum::{
    http::StatusCode,
    response::{IntoResponse, Response},
    Json,
};
use serde_json::json;

use crate::instances::{ActionError, Refusal};

/// An error answer. `field` names the configuration field a module refused
/// (the form shows the message next to it); `error_id` is set for the
/// host's own failures, whose detail is in the log under that id.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
    pub field: Option<String>,
    pub error_id: Option<String>,
}

/// The body of every error answer.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    pub error: String,
    /// The configuration field the refusal is about (dotted path).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// For a 500: where the server's log has the details.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_id: Option<String>,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            message: message.into(),
            field: None,
            error_id: None,
        }
    }

    pub fn not_found(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, message)
    }

    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, message)
    }

    pub fn refused(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, message)
    }

    /// The host itself failed: the client learns only that and an id; the
    /// log has the detail under the same id.
    pub fn internal(error: anyhow::Error) -> ApiError {
        let id = format!("{:016x}", rand::random::<u64>());
        tracing::error!(error_id = %id, "HTTP request failed: {error:#}");
        ApiError {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            message: format!("internal error {id}: the server's log has the details"),
            field: None,
            error_id: Some(id),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: self.message,
            field: self.field,
            error_id: self.error_id,
        };
        (self.status, Json(json!(body))).into_response()
    }
}

/// Refusals (by a module, of the input, of a name that does not exist) are
/// 4xx with their message; anything else is the host's own failure.
impl From<anyhow::Error> for ApiError {
    fn from(error: anyhow::Error) -> ApiError {
        if let Some(refusal) = error.downcast_ref::<Refusal>() {
            let mut answer = ApiError::refused(refusal.to_string());
            match refusal {
                Refusal::Config { field, message, .. }
                | Refusal::ConfigFile { field, message, .. } => {
                    answer.message = message.clone();
                    answer.field = Some(field.clone());
                }
                Refusal::NotInstalled { .. } => answer.status = StatusCode::NOT_FOUND,
                _ => {}
            }
            return answer;
        }
        if let Some(missing) = error.downcast_ref::<crate::db::NotFound>() {
            return ApiError::not_found(missing.to_string());
        }
        if let Some(refused) = error.downcast_ref::<crate::db::Conflict>() {
            return ApiError::new(StatusCode::CONFLICT, refused.to_string());
        }
        if let Some(invalid) = error.downcast_ref::<crate::db::Invalid>() {
            return ApiError::refused(invalid.to_string());
        }
        // A package that does not verify is the upload's fault.
        if error
            .downcast_ref::<callhost_package::PackageError>()
            .is_some()
        {
            return ApiError::refused(format!("{error:#}"));
        }
        ApiError::internal(error)
    }
}

impl From<ActionError> for ApiError {
    fn from(error: ActionError) -> ApiError {
        match error {
            ActionError::Unknown(message) => ApiError::not_found(message),
            ActionError::Failed(message) => ApiError::refused(message),
        }
    }
}

/// Runs `work` on a blocking thread.
pub async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|error| ApiError::internal(anyhow::anyhow!("a blocking task failed: {error}")))?
}
