//! S3 (the AWS SDK): one object per file, under Object Lock in compliance
//! mode until the upload's retain-until date when it has one, read back
//! after the put.

use std::time::Duration;

use aws_sdk_s3::config::{timeout::TimeoutConfig, Credentials, Region};
use aws_sdk_s3::primitives::{ByteStream, DateTime};
use aws_sdk_s3::types::{ChecksumAlgorithm, ObjectLockMode};
use aws_sdk_s3::Client;

use crate::{already_there, confirm, join, read_local, sha256_hex, StorageError, Upload};

#[derive(Clone)]
pub struct S3 {
    /// `None`: AWS itself; otherwise an S3-compatible server's URL
    /// (MinIO, Ceph, a test server), addressed path-style.
    pub endpoint: Option<String>,
    pub region: String,
    pub bucket: String,
    /// Key prefix (a "directory" in the bucket); may be empty.
    pub prefix: String,
    pub access_key_id: String,
    pub secret_access_key: String,
    pub timeout: Duration,
}

impl std::fmt::Debug for S3 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3")
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .field("bucket", &self.bucket)
            .field("prefix", &self.prefix)
            .field("access_key_id", &self.access_key_id)
            .finish_non_exhaustive()
    }
}

impl S3 {
    pub fn label(&self) -> String {
        let prefix = self.prefix.trim_matches('/');
        let place = if prefix.is_empty() {
            self.bucket.clone()
        } else {
            join(&self.bucket, prefix)
        };
        match &self.endpoint {
            Some(endpoint) => format!("s3://{place} at {endpoint}"),
            None => format!("s3://{place}"),
        }
    }

    fn client(&self) -> Client {
        let credentials = Credentials::new(
            &self.access_key_id,
            &self.secret_access_key,
            None,
            None,
            "callhost configuration",
        );
        let mut config = aws_sdk_s3::Config::builder()
            .behavior_version_latest()
            .region(Region::new(self.region.clone()))
            .credentials_provider(credentials)
            .timeout_config(
                TimeoutConfig::builder()
                    .connect_timeout(self.timeout)
                    .operation_attempt_timeout(self.timeout)
                    .build(),
            );
        if let Some(endpoint) = &self.endpoint {
            config = config.endpoint_url(endpoint).force_path_style(true);
        }
        Client::from_conf(config.build())
    }

    fn key(&self, remote: &str) -> String {
        join(self.prefix.trim_matches('/'), remote)
    }

    pub async fn store(&self, uploads: &[Upload]) -> Result<(), StorageError> {
        let client = self.client();
        for upload in uploads {
            self.put(&client, upload).await?;
        }
        Ok(())
    }

    /// Deletes the current version (on a versioned bucket: a delete marker;
    /// versions under Object Lock stay until their date).
    pub async fn delete(&self, remote: &[String]) -> Result<(), StorageError> {
        let client = self.client();
        for relative in remote {
            let key = self.key(relative);
            client
                .delete_object()
                .bucket(&self.bucket)
                .key(&key)
                .send()
                .await
                .map_err(|e| self.failed(&key, e))?;
        }
        Ok(())
    }

    fn failed(&self, key: &str, error: impl std::error::Error) -> StorageError {
        // The SDK's Display says only "service error"; the source chain
        // has the server's code and message.
        let mut detail = error.to_string();
        let mut source = error.source();
        while let Some(cause) = source {
            detail.push_str(": ");
            detail.push_str(&cause.to_string());
            source = cause.source();
        }
        StorageError::Transfer {
            target: self.label(),
            file: key.to_string(),
            detail,
        }
    }

    async fn put(&self, client: &Client, upload: &Upload) -> Result<(), StorageError> {
        let key = self.key(&upload.remote);
        let found = self.remote_sha256(client, &key).await?;
        if already_there(&self.label(), &key, upload, found)? {
            return Ok(()); // an earlier attempt got it there
        }
        let bytes = read_local(&upload.local).await?;
        let mut put = client
            .put_object()
            .bucket(&self.bucket)
            .key(&key)
            .checksum_algorithm(ChecksumAlgorithm::Sha256)
            .body(ByteStream::from(bytes));
        if let Some(until) = upload.retain_until {
            put = put
                .object_lock_mode(ObjectLockMode::Compliance)
                .object_lock_retain_until_date(DateTime::from(until));
        }
        put.send().await.map_err(|e| self.failed(&key, e))?;
        let found = self.remote_sha256(client, &key).await?;
        confirm(&self.label(), &key, upload, found)
    }

    async fn remote_sha256(
        &self,
        client: &Client,
        key: &str,
    ) -> Result<Option<String>, StorageError> {
        let got = client
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await;
        let object = match got {
            Ok(object) => object,
            Err(error) => {
                if error.as_service_error().is_some_and(|e| e.is_no_such_key()) {
                    return Ok(None);
                }
                return Err(self.failed(key, error));
            }
        };
        let body = object
            .body
            .collect()
            .await
            .map_err(|e| self.failed(key, e))?;
        Ok(Some(sha256_hex(&body.into_bytes())))
    }
}
