//! The admin actions' way into the running connector.
//!
//! An action runs in whichever process asks (the CLI, the web API), on an
//! instance value of its own. In the process that serves the instance it
//! finds the server in this library's registry; from any other process it
//! asks over a Unix socket in the instance's directory (`control.sock`,
//! mode 0600: only the host's own user can reach it): one JSON request
//! line, one JSON answer line.
//!
//! The mode is not left to the umask: the socket is bound in a private
//! directory (0700), made 0600 there and only then moved into place, so
//! it is never reachable with looser permissions. And every peer's user
//! is checked as well: a connection from any other user is refused
//! unanswered.

use std::os::unix::fs::{DirBuilderExt as _, MetadataExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use callhost_plugin_sdk::tracing;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tracing::instrument::WithSubscriber as _;

use crate::limits::LogThrottle;
use crate::server::Server;

pub const SOCKET: &str = "control.sock";
/// A request line is small; a longer one is refused.
const MAX_REQUEST: u64 = 4096;
const ANSWER_TIME: Duration = Duration::from_secs(5);

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum ControlRequest {
    Seats,
    Revoke { user: String, reason: String },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ControlAnswer {
    Ok(Value),
    Err(String),
}

/// Why the running connector could not be asked.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// No connector serves the instance (nothing listens on the socket).
    #[error("no running connector answers at {path}")]
    NotRunning { path: PathBuf },
    #[error("the running connector did not answer properly: {0}")]
    Broken(String),
}

/// Answers a request in the serving process.
pub fn answer(server: &Server, request: ControlRequest) -> ControlAnswer {
    match request {
        ControlRequest::Seats => ControlAnswer::Ok(server.seats_report()),
        ControlRequest::Revoke { user, reason } => match server.revoke(&user, &reason) {
            Ok(value) => ControlAnswer::Ok(value),
            Err(message) => ControlAnswer::Err(message),
        },
    }
}

/// Binds the socket at `path` with mode 0600 from the moment it can be
/// reached (see the module documentation); the listener and the user
/// that owns it (this process's).
fn bind_private(path: &Path) -> std::io::Result<(UnixListener, u32)> {
    let parent = path.parent().unwrap_or_else(|| Path::new("."));
    let private = parent.join(format!(".{SOCKET}.{}.tmp", std::process::id()));
    let _ = std::fs::remove_dir_all(&private);
    std::fs::DirBuilder::new().mode(0o700).create(&private)?;
    let bound = (|| {
        let staged = private.join(SOCKET);
        let listener = UnixListener::bind(&staged)?;
        std::fs::set_permissions(&staged, std::fs::Permissions::from_mode(0o600))?;
        let owner = std::fs::metadata(&staged)?.uid();
        std::fs::rename(&staged, path)?;
        Ok((listener, owner))
    })();
    let _ = std::fs::remove_dir_all(&private);
    bound
}

/// Serves the control socket until the server stops.
pub async fn serve(server: Arc<Server>) {
    let path = server.data_dir.join(SOCKET);
    // Only the lock holder gets here, so a socket file left is stale.
    let _ = std::fs::remove_file(&path);
    let (listener, owner) = match bind_private(&path) {
        Ok(bound) => bound,
        Err(error) => {
            tracing::warn!(
                "no control socket at {} ({error}): `seats` and `revoke` work only in this process",
                path.display()
            );
            return;
        }
    };
    // Other users' attempts, logged at most once per 10 s.
    let mut strangers = LogThrottle::default();
    loop {
        let accepted = tokio::select! {
            _ = server.stop.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        let Ok((stream, _)) = accepted else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let peer = stream.peer_cred().map(|cred| cred.uid());
        if peer.as_ref().ok() != Some(&owner) {
            if let Some(refused) = strangers.due(Instant::now()) {
                tracing::warn!(
                    refused,
                    "control socket: a connection from another user ({peer:?}, not {owner}) refused"
                );
            }
            continue;
        }
        let server = server.clone();
        tokio::spawn(
            async move {
                let _ = tokio::time::timeout(ANSWER_TIME, handle(&server, stream)).await;
            }
            .with_current_subscriber(),
        );
    }
}

async fn handle(server: &Server, stream: UnixStream) -> std::io::Result<()> {
    let (reader, mut writer) = stream.into_split();
    let mut line = String::new();
    BufReader::new(reader.take(MAX_REQUEST))
        .read_line(&mut line)
        .await?;
    let answer = match serde_json::from_str::<ControlRequest>(&line) {
        Ok(request) => answer(server, request),
        Err(error) => ControlAnswer::Err(format!("not a control request: {error}")),
    };
    let mut text = serde_json::to_string(&answer).map_err(std::io::Error::other)?;
    text.push('\n');
    writer.write_all(text.as_bytes()).await?;
    writer.shutdown().await
}

/// Asks the connector serving the instance in `data_dir` (another process).
pub async fn ask(data_dir: &Path, request: &ControlRequest) -> Result<ControlAnswer, ControlError> {
    let path = data_dir.join(SOCKET);
    let not_running = || ControlError::NotRunning { path: path.clone() };
    let mut stream = match tokio::time::timeout(ANSWER_TIME, UnixStream::connect(&path)).await {
        Ok(Ok(stream)) => stream,
        _ => return Err(not_running()),
    };
    let exchange = async {
        let mut text = serde_json::to_string(request).map_err(std::io::Error::other)?;
        text.push('\n');
        stream.write_all(text.as_bytes()).await?;
        let mut answer = String::new();
        BufReader::new(&mut stream)
            .take(1 << 20)
            .read_to_string(&mut answer)
            .await?;
        Ok::<_, std::io::Error>(answer)
    };
    let answer = tokio::time::timeout(ANSWER_TIME, exchange)
        .await
        .map_err(|_| ControlError::Broken("no answer within 5 s".into()))?
        .map_err(|error| ControlError::Broken(error.to_string()))?;
    serde_json::from_str(answer.trim()).map_err(|error| ControlError::Broken(error.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_and_answers_are_one_json_line_each() {
        let request = ControlRequest::Revoke {
            user: "anna".into(),
            reason: "left".into(),
        };
        let text = serde_json::to_string(&request).unwrap();
        assert_eq!(text, r#"{"action":"revoke","user":"anna","reason":"left"}"#);
        assert_eq!(
            serde_json::from_str::<ControlRequest>(&text).unwrap(),
            request
        );
        let answer = ControlAnswer::Err("anna holds no seat".into());
        let text = serde_json::to_string(&answer).unwrap();
        assert_eq!(
            serde_json::from_str::<ControlAnswer>(&text).unwrap(),
            answer
        );
    }

    #[tokio::test]
    async fn asking_where_nobody_serves_says_so() {
        let dir = tempfile::tempdir().unwrap();
        let error = ask(dir.path(), &ControlRequest::Seats).await.unwrap_err();
        assert!(matches!(error, ControlError::NotRunning { .. }), "{error}");
    }
}
