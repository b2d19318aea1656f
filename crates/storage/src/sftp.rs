//! SFTP over SSH (russh): the server's host key pinned, password or key
//! authentication, each file written as `<name>.partial`, renamed, then
//! read back.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use russh::client;
use russh::keys::{HashAlg, PrivateKeyWithHashAlg, PublicKey};
use russh_sftp::client::SftpSession;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::{already_there, confirm, join, read_local, sha256_hex, StorageError, Upload};

#[derive(Clone)]
pub enum Auth {
    Password(String),
    /// An OpenSSH private key file (ed25519 or ECDSA), unencrypted or with
    /// its passphrase.
    KeyFile {
        path: PathBuf,
        passphrase: Option<String>,
    },
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Auth::Password(_) => f.write_str("Password(***)"),
            Auth::KeyFile { path, .. } => write!(f, "KeyFile({})", path.display()),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Sftp {
    pub host: String,
    pub port: u16,
    pub user: String,
    pub auth: Auth,
    /// The server's key: an OpenSSH public key line (`ssh-ed25519 AAAA…`,
    /// as in `/etc/ssh/ssh_host_ed25519_key.pub`) or its fingerprint
    /// (`SHA256:…`, as `ssh-keygen -lf` prints it).
    pub host_key: String,
    /// The directory on the server files go below.
    pub root: String,
    pub timeout: Duration,
}

/// Accepts only the pinned key; remembers what it saw for the error.
struct PinnedKey {
    pinned: String,
    seen: Arc<Mutex<Option<String>>>,
}

impl client::Handler for PinnedKey {
    type Error = russh::Error;

    async fn check_server_key(
        &mut self,
        server_key: &russh::keys::PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        let russh::keys::PublicKeyOrCertificate::PublicKey { key, .. } = server_key else {
            *self.seen.lock().unwrap_or_else(|p| p.into_inner()) =
                Some("a certificate (not supported: pin the host key)".into());
            return Ok(false);
        };
        let fingerprint = key.fingerprint(HashAlg::Sha256).to_string();
        let matches = matches_pin(&self.pinned, key, &fingerprint);
        *self.seen.lock().unwrap_or_else(|p| p.into_inner()) = Some(fingerprint);
        Ok(matches)
    }
}

fn matches_pin(pinned: &str, key: &PublicKey, fingerprint: &str) -> bool {
    let pinned = pinned.trim();
    if pinned.starts_with("SHA256:") {
        return pinned == fingerprint;
    }
    PublicKey::from_openssh(pinned).is_ok_and(|pin| pin.key_data() == key.key_data())
}

impl Sftp {
    pub fn label(&self) -> String {
        format!(
            "sftp://{}@{}:{}/{}",
            self.user,
            self.host,
            self.port,
            self.root.trim_start_matches('/')
        )
    }

    fn connect_error(&self, detail: impl std::fmt::Display) -> StorageError {
        StorageError::Connect {
            target: self.label(),
            detail: detail.to_string(),
        }
    }

    /// Checks the pin's syntax (for configuration errors before any
    /// connection).
    pub fn check_host_key(text: &str) -> Result<(), String> {
        let text = text.trim();
        if let Some(rest) = text.strip_prefix("SHA256:") {
            if rest.len() >= 40 {
                return Ok(());
            }
            return Err("a SHA256: fingerprint has 43 characters after the prefix".into());
        }
        PublicKey::from_openssh(text)
            .map(drop)
            .map_err(|e| format!("not an OpenSSH public key line or SHA256: fingerprint ({e})"))
    }

    async fn session(&self) -> Result<(client::Handle<PinnedKey>, SftpSession), StorageError> {
        let seen = Arc::new(Mutex::new(None));
        let handler = PinnedKey {
            pinned: self.host_key.clone(),
            seen: seen.clone(),
        };
        let config = Arc::new(client::Config {
            inactivity_timeout: Some(self.timeout),
            ..client::Config::default()
        });
        let connected = tokio::time::timeout(
            self.timeout,
            client::connect(config, (self.host.as_str(), self.port), handler),
        )
        .await
        .map_err(|_| self.connect_error("no answer in time"))?;
        let mut handle = match connected {
            Ok(handle) => handle,
            Err(russh::Error::UnknownKey) => {
                return Err(StorageError::HostKey {
                    target: self.label(),
                    pinned: self.host_key.trim().to_string(),
                    seen: seen
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .clone()
                        .unwrap_or_default(),
                })
            }
            Err(error) => return Err(self.connect_error(error)),
        };
        let authenticated = match &self.auth {
            Auth::Password(password) => handle
                .authenticate_password(self.user.clone(), password.clone())
                .await
                .map_err(|e| self.connect_error(e))?,
            Auth::KeyFile { path, passphrase } => {
                let key = russh::keys::load_secret_key(path, passphrase.as_deref())
                    .map_err(|e| self.connect_error(format!("{}: {e}", path.display())))?;
                let hash = handle
                    .best_supported_rsa_hash()
                    .await
                    .map_err(|e| self.connect_error(e))?
                    .flatten();
                handle
                    .authenticate_publickey(
                        self.user.clone(),
                        PrivateKeyWithHashAlg::new(Arc::new(key), hash),
                    )
                    .await
                    .map_err(|e| self.connect_error(e))?
            }
        };
        if !authenticated.success() {
            return Err(StorageError::Refused {
                target: self.label(),
                file: String::new(),
                detail: format!("user {} not accepted", self.user),
            });
        }
        let channel = handle
            .channel_open_session()
            .await
            .map_err(|e| self.connect_error(e))?;
        channel
            .request_subsystem(true, "sftp")
            .await
            .map_err(|e| self.connect_error(e))?;
        let sftp = SftpSession::new(channel.into_stream())
            .await
            .map_err(|e| self.connect_error(e))?;
        sftp.set_timeout(self.timeout.as_secs().max(1));
        Ok((handle, sftp))
    }

    pub async fn store(&self, uploads: &[Upload]) -> Result<(), StorageError> {
        let (handle, sftp) = self.session().await?;
        let result = async {
            for upload in uploads {
                self.put(&sftp, upload).await?;
            }
            Ok(())
        }
        .await;
        let _ = sftp.close().await;
        let _ = handle
            .disconnect(russh::Disconnect::ByApplication, "", "en")
            .await;
        result
    }

    pub async fn delete(&self, remote: &[String]) -> Result<(), StorageError> {
        let (handle, sftp) = self.session().await?;
        let mut result = Ok(());
        for relative in remote {
            let path = join(&self.root, relative);
            let exists = sftp.try_exists(path.clone()).await.unwrap_or(true);
            if exists {
                if let Err(error) = sftp.remove_file(path.clone()).await {
                    result = Err(StorageError::Transfer {
                        target: self.label(),
                        file: path,
                        detail: format!("cannot delete: {error}"),
                    });
                    break;
                }
            }
        }
        let _ = sftp.close().await;
        let _ = handle
            .disconnect(russh::Disconnect::ByApplication, "", "en")
            .await;
        result
    }

    async fn put(&self, sftp: &SftpSession, upload: &Upload) -> Result<(), StorageError> {
        let path = join(&self.root, &upload.remote);
        let transfer = |detail: String| StorageError::Transfer {
            target: self.label(),
            file: path.clone(),
            detail,
        };
        let found = self.remote_sha256(sftp, &path).await?;
        if already_there(&self.label(), &path, upload, found)? {
            return Ok(()); // an earlier attempt got it there
        }
        self.make_parents(sftp, &path).await?;
        let bytes = read_local(&upload.local).await?;
        let staging = format!("{path}.partial");
        let mut file = sftp
            .create(staging.clone())
            .await
            .map_err(|e| transfer(format!("cannot create {staging}: {e}")))?;
        file.write_all(&bytes)
            .await
            .map_err(|e| transfer(format!("writing {staging}: {e}")))?;
        file.shutdown()
            .await
            .map_err(|e| transfer(format!("closing {staging}: {e}")))?;
        if upload.replace && sftp.try_exists(path.clone()).await.unwrap_or(false) {
            let _ = sftp.remove_file(path.clone()).await;
        }
        sftp.rename(staging.clone(), path.clone())
            .await
            .map_err(|e| transfer(format!("renaming {staging}: {e}")))?;
        let found = self.remote_sha256(sftp, &path).await?;
        confirm(&self.label(), &path, upload, found)
    }

    /// The remote file's SHA-256, read back whole; `None` if it is not
    /// there.
    async fn remote_sha256(
        &self,
        sftp: &SftpSession,
        path: &str,
    ) -> Result<Option<String>, StorageError> {
        if !sftp
            .try_exists(path.to_string())
            .await
            .map_err(|e| StorageError::Transfer {
                target: self.label(),
                file: path.to_string(),
                detail: e.to_string(),
            })?
        {
            return Ok(None);
        }
        let mut file = sftp
            .open(path.to_string())
            .await
            .map_err(|e| StorageError::Transfer {
                target: self.label(),
                file: path.to_string(),
                detail: format!("cannot read back: {e}"),
            })?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)
            .await
            .map_err(|e| StorageError::Transfer {
                target: self.label(),
                file: path.to_string(),
                detail: format!("reading back: {e}"),
            })?;
        Ok(Some(sha256_hex(&bytes)))
    }

    async fn make_parents(&self, sftp: &SftpSession, path: &str) -> Result<(), StorageError> {
        let Some((parent, _)) = path.rsplit_once('/') else {
            return Ok(());
        };
        let mut current = String::new();
        for (index, part) in parent.split('/').enumerate() {
            if index > 0 || parent.starts_with('/') {
                current.push('/');
            }
            current.push_str(part);
            if part.is_empty() {
                continue;
            }
            if !sftp.try_exists(current.clone()).await.unwrap_or(false) {
                sftp.create_dir(current.clone())
                    .await
                    .map_err(|e| StorageError::Transfer {
                        target: self.label(),
                        file: path.to_string(),
                        detail: format!("cannot create directory {current}: {e}"),
                    })?;
            }
        }
        Ok(())
    }
}
