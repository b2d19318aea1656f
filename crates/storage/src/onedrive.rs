//! OneDrive for Business / SharePoint through Microsoft Graph: an app
//! registration's client credentials (no user signs in), small files with
//! one `PUT …/content`, larger ones through an upload session in chunks,
//! each file read back through `…/content`.

use std::time::{Duration, Instant};

use serde::Deserialize;
use tokio::sync::Mutex;

use crate::{already_there, confirm, join, read_local, sha256_hex, StorageError, Upload};

/// Graph takes a simple upload up to 4 MB; above that an upload session.
const SIMPLE_UPLOAD_LIMIT: usize = 4 * 1024 * 1024;
/// Upload session chunks must be multiples of 320 KiB.
const CHUNK: usize = 320 * 1024 * 10;

pub struct OneDrive {
    /// `https://login.microsoftonline.com` (another for a national cloud
    /// or a test server).
    pub login_url: String,
    /// `https://graph.microsoft.com/v1.0`.
    pub graph_url: String,
    pub tenant: String,
    pub client_id: String,
    pub client_secret: String,
    /// The drive's id (`GET /users/{upn}/drive` or `/sites/{id}/drive`).
    pub drive: String,
    /// The folder in the drive files go below.
    pub root: String,
    pub timeout: Duration,
    token: Mutex<Option<(String, Instant)>>,
}

impl Clone for OneDrive {
    fn clone(&self) -> OneDrive {
        OneDrive::new(
            self.login_url.clone(),
            self.graph_url.clone(),
            self.tenant.clone(),
            self.client_id.clone(),
            self.client_secret.clone(),
            self.drive.clone(),
            self.root.clone(),
            self.timeout,
        )
    }
}

impl std::fmt::Debug for OneDrive {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OneDrive")
            .field("graph_url", &self.graph_url)
            .field("tenant", &self.tenant)
            .field("client_id", &self.client_id)
            .field("drive", &self.drive)
            .field("root", &self.root)
            .finish_non_exhaustive()
    }
}

#[derive(Deserialize)]
struct Token {
    access_token: String,
    #[serde(default)]
    expires_in: u64,
}

#[derive(Deserialize)]
struct Session {
    #[serde(rename = "uploadUrl")]
    upload_url: String,
}

impl OneDrive {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        login_url: String,
        graph_url: String,
        tenant: String,
        client_id: String,
        client_secret: String,
        drive: String,
        root: String,
        timeout: Duration,
    ) -> OneDrive {
        OneDrive {
            login_url,
            graph_url,
            tenant,
            client_id,
            client_secret,
            drive,
            root,
            timeout,
            token: Mutex::new(None),
        }
    }

    pub fn label(&self) -> String {
        format!("onedrive:{}/{}", self.drive, self.root.trim_matches('/'))
    }

    fn connect_error(&self, detail: impl std::fmt::Display) -> StorageError {
        StorageError::Connect {
            target: self.label(),
            detail: detail.to_string(),
        }
    }

    fn refused(&self, file: &str, status: reqwest::StatusCode, body: &str) -> StorageError {
        // Graph's error body is JSON with a code and a message; no secret
        // is in it (tokens travel in headers only).
        let detail: String = body.chars().take(300).collect();
        StorageError::Refused {
            target: self.label(),
            file: file.to_string(),
            detail: format!("HTTP {status}: {detail}"),
        }
    }

    async fn token(&self, http: &reqwest::Client) -> Result<String, StorageError> {
        let mut cached = self.token.lock().await;
        if let Some((token, until)) = cached.as_ref() {
            if Instant::now() < *until {
                return Ok(token.clone());
            }
        }
        let url = format!(
            "{}/{}/oauth2/v2.0/token",
            self.login_url.trim_end_matches('/'),
            self.tenant
        );
        let answer = http
            .post(&url)
            .form(&[
                ("grant_type", "client_credentials"),
                ("client_id", self.client_id.as_str()),
                ("client_secret", self.client_secret.as_str()),
                ("scope", "https://graph.microsoft.com/.default"),
            ])
            .send()
            .await
            .map_err(|e| self.connect_error(format!("sign-in: {e}")))?;
        let status = answer.status();
        let body = answer.text().await.unwrap_or_default();
        if !status.is_success() {
            return Err(self.refused("(sign-in)", status, &body));
        }
        let token: Token = serde_json::from_str(&body)
            .map_err(|e| self.connect_error(format!("sign-in answer: {e}")))?;
        // Renewed a minute early: a long upload must not run past it.
        let lifetime = Duration::from_secs(token.expires_in.saturating_sub(60).max(1));
        *cached = Some((token.access_token.clone(), Instant::now() + lifetime));
        Ok(token.access_token)
    }

    fn item_url(&self, path: &str) -> String {
        format!(
            "{}/drives/{}/root:/{}:",
            self.graph_url.trim_end_matches('/'),
            self.drive,
            path
        )
    }

    pub async fn store(&self, uploads: &[Upload]) -> Result<(), StorageError> {
        let http = reqwest::Client::builder()
            .timeout(self.timeout)
            .build()
            .map_err(|e| self.connect_error(e))?;
        for upload in uploads {
            self.put(&http, upload).await?;
        }
        Ok(())
    }

    async fn put(&self, http: &reqwest::Client, upload: &Upload) -> Result<(), StorageError> {
        let path = join(self.root.trim_matches('/'), &upload.remote);
        let found = self.remote_sha256(http, &path).await?;
        if already_there(&self.label(), &path, upload, found)? {
            return Ok(()); // an earlier attempt got it there
        }
        let bytes = read_local(&upload.local).await?;
        if bytes.len() <= SIMPLE_UPLOAD_LIMIT {
            let token = self.token(http).await?;
            let answer = http
                .put(format!("{}/content", self.item_url(&path)))
                .bearer_auth(token)
                .body(bytes)
                .send()
                .await
                .map_err(|e| self.transfer(&path, e))?;
            let status = answer.status();
            if !status.is_success() {
                let body = answer.text().await.unwrap_or_default();
                return Err(self.refused(&path, status, &body));
            }
        } else {
            self.upload_session(http, &path, &bytes).await?;
        }
        let found = self.remote_sha256(http, &path).await?;
        confirm(&self.label(), &path, upload, found)
    }

    pub async fn delete(&self, remote: &[String]) -> Result<(), StorageError> {
        let http = reqwest::Client::builder()
            .timeout(self.timeout)
            .build()
            .map_err(|e| self.connect_error(e))?;
        for relative in remote {
            let path = join(self.root.trim_matches('/'), relative);
            let token = self.token(&http).await?;
            let url = format!(
                "{}/drives/{}/root:/{}",
                self.graph_url.trim_end_matches('/'),
                self.drive,
                path
            );
            let answer = http
                .delete(url)
                .bearer_auth(token)
                .send()
                .await
                .map_err(|e| self.transfer(&path, e))?;
            let status = answer.status();
            if !status.is_success() && status != reqwest::StatusCode::NOT_FOUND {
                let body = answer.text().await.unwrap_or_default();
                return Err(self.refused(&path, status, &body));
            }
        }
        Ok(())
    }

    fn transfer(&self, path: &str, error: impl std::fmt::Display) -> StorageError {
        StorageError::Transfer {
            target: self.label(),
            file: path.to_string(),
            detail: error.to_string(),
        }
    }

    async fn upload_session(
        &self,
        http: &reqwest::Client,
        path: &str,
        bytes: &[u8],
    ) -> Result<(), StorageError> {
        let token = self.token(http).await?;
        let answer = http
            .post(format!("{}/createUploadSession", self.item_url(path)))
            .bearer_auth(token)
            .json(&serde_json::json!({
                "item": { "@microsoft.graph.conflictBehavior": "replace" }
            }))
            .send()
            .await
            .map_err(|e| self.transfer(path, e))?;
        let status = answer.status();
        let body = answer.text().await.unwrap_or_default();
        if !status.is_success() {
            return Err(self.refused(path, status, &body));
        }
        let session: Session = serde_json::from_str(&body)
            .map_err(|e| self.transfer(path, format!("upload session answer: {e}")))?;
        let total = bytes.len();
        let mut start = 0;
        while start < total {
            let end = (start + CHUNK).min(total);
            // The upload URL is pre-authorised: no token goes with it.
            let answer = http
                .put(&session.upload_url)
                .header(
                    reqwest::header::CONTENT_RANGE,
                    format!("bytes {start}-{}/{total}", end - 1),
                )
                .body(bytes[start..end].to_vec())
                .send()
                .await
                .map_err(|e| self.transfer(path, e))?;
            let status = answer.status();
            if !status.is_success() {
                let body = answer.text().await.unwrap_or_default();
                return Err(self.refused(path, status, &body));
            }
            start = end;
        }
        Ok(())
    }

    async fn remote_sha256(
        &self,
        http: &reqwest::Client,
        path: &str,
    ) -> Result<Option<String>, StorageError> {
        let token = self.token(http).await?;
        let answer = http
            .get(format!("{}/content", self.item_url(path)))
            .bearer_auth(token)
            .send()
            .await
            .map_err(|e| self.transfer(path, e))?;
        let status = answer.status();
        if status == reqwest::StatusCode::NOT_FOUND {
            return Ok(None);
        }
        if !status.is_success() {
            let body = answer.text().await.unwrap_or_default();
            return Err(self.refused(path, status, &body));
        }
        let body = answer.bytes().await.map_err(|e| self.transfer(path, e))?;
        Ok(Some(sha256_hex(&body)))
    }
}
