//! A private S3 server (moto), and boto3 to look at what arrived.

use std::process::{Child, Command};

use tempfile::TempDir;

use crate::{io_error, start_child, stop, tail, with_hint, Error};

const SERVER: &str = "moto";
/// moto accepts any credentials; these are what the tests configure.
pub const ACCESS_KEY_ID: &str = "callhost-test";
pub const SECRET_ACCESS_KEY: &str = "callhost-test-secret";
pub const REGION: &str = "eu-central-1";

/// `moto_server` on `http://127.0.0.1:<free port>`, in memory, killed when
/// dropped.
pub struct Moto {
    child: Child,
    port: u16,
    dir: TempDir,
}

/// An object as S3 describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectInfo {
    pub key: String,
    pub sha256: String,
    /// `COMPLIANCE`, `GOVERNANCE` or empty.
    pub lock_mode: String,
    /// ISO 8601, or empty.
    pub retain_until: String,
}

impl Moto {
    pub fn start() -> Result<Moto, Error> {
        let dir = tempfile::Builder::new()
            .prefix("callhost-moto-")
            .tempdir()
            .map_err(io_error(SERVER, "create a temporary directory"))?;
        let (child, port) = start_child(SERVER, &dir.path().join("moto.log"), |port| {
            let mut c = Command::new("python3");
            c.args(["-m", "moto.server", "-H", "127.0.0.1", "-p"])
                .arg(port.to_string())
                .env("PYTHONDONTWRITEBYTECODE", "1");
            c
        })
        .map_err(|e| with_hint(e, "install python3, then `pip install 'moto[server]'`"))?;
        Ok(Moto { child, port, dir })
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Runs a boto3 snippet with `s3` bound to a client of this server;
    /// what it prints is returned.
    pub fn boto3(&self, snippet: &str) -> Result<String, Error> {
        let script = format!(
            "import boto3, hashlib, json\n\
             s3 = boto3.client('s3', endpoint_url='{}', region_name='{REGION}', \
             aws_access_key_id='{ACCESS_KEY_ID}', aws_secret_access_key='{SECRET_ACCESS_KEY}')\n{snippet}\n",
            self.url()
        );
        let log = self.dir.path().join("boto3.log");
        let output = Command::new("python3")
            .args(["-c", &script])
            .output()
            .map_err(io_error(SERVER, "run python3 with boto3"))?;
        if !output.status.success() {
            std::fs::write(&log, &output.stderr).ok();
            return Err(Error::Command {
                server: SERVER,
                command: format!("boto3: {snippet}"),
                status: output.status.to_string(),
                output: tail(&log),
            });
        }
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    }

    /// A bucket, with Object Lock (and so versioning) when asked.
    pub fn create_bucket(&self, name: &str, object_lock: bool) -> Result<(), Error> {
        self.boto3(&format!(
            "s3.create_bucket(Bucket='{name}', ObjectLockEnabledForBucket={}, \
             CreateBucketConfiguration={{'LocationConstraint': '{REGION}'}})",
            if object_lock { "True" } else { "False" }
        ))
        .map(drop)
    }

    /// Every object's newest version: key, SHA-256 of its content, lock.
    pub fn objects(&self, bucket: &str) -> Result<Vec<ObjectInfo>, Error> {
        let printed = self.boto3(&format!(
            "out = []\n\
             for o in s3.list_objects_v2(Bucket='{bucket}').get('Contents', []):\n\
             \x20   h = s3.get_object(Bucket='{bucket}', Key=o['Key'])\n\
             \x20   body = h['Body'].read()\n\
             \x20   out.append([o['Key'], hashlib.sha256(body).hexdigest(), h.get('ObjectLockMode', ''), \
             str(h.get('ObjectLockRetainUntilDate', ''))])\n\
             print(json.dumps(out))"
        ))?;
        let rows: Vec<Vec<String>> = parse_rows(&printed).ok_or_else(|| Error::Invalid {
            server: SERVER,
            reason: format!("unexpected listing: {printed}"),
        })?;
        Ok(rows
            .into_iter()
            .map(|row| ObjectInfo {
                key: row[0].clone(),
                sha256: row[1].clone(),
                lock_mode: row[2].clone(),
                retain_until: row[3].clone(),
            })
            .collect())
    }

    /// Tries to delete an object version that is locked; the server's
    /// answer (an error text when Object Lock holds).
    pub fn try_delete_locked(&self, bucket: &str, key: &str) -> Result<String, Error> {
        self.boto3(&format!(
            "v = s3.list_object_versions(Bucket='{bucket}', Prefix='{key}')['Versions'][0]['VersionId']\n\
             try:\n\
             \x20   s3.delete_object(Bucket='{bucket}', Key='{key}', VersionId=v)\n\
             \x20   print('deleted')\n\
             except Exception as e:\n\
             \x20   print('refused:', e)"
        ))
    }
}

/// `[["a","b",...],...]` as printed by `json.dumps` (strings only).
fn parse_rows(text: &str) -> Option<Vec<Vec<String>>> {
    let text = text.trim();
    let inner = text.strip_prefix('[')?.strip_suffix(']')?.trim();
    if inner.is_empty() {
        return Some(Vec::new());
    }
    let mut rows = Vec::new();
    for row in inner.split("], [") {
        let row = row.trim_start_matches('[').trim_end_matches(']');
        let fields: Vec<String> = row
            .split("\", \"")
            .map(|f| f.trim_matches('"').to_string())
            .collect();
        if fields.len() != 4 {
            return None;
        }
        rows.push(fields);
    }
    Some(rows)
}

impl Drop for Moto {
    fn drop(&mut self) {
        stop(&mut self.child);
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn listings_parse() {
        let rows = super::parse_rows(
            r#"[["a/b", "ff", "COMPLIANCE", "2036-01-01 00:00:00+00:00"], ["c", "00", "", ""]]"#,
        )
        .unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0][2], "COMPLIANCE");
        assert_eq!(rows[1][3], "");
        assert_eq!(super::parse_rows("[]").unwrap().len(), 0);
    }
}
