//! Each target against a real server: OpenSSH's sshd, moto (S3 with
//! Object Lock), and a local server answering like Microsoft Graph.

mod graph;

use std::path::Path;
use std::time::{Duration, SystemTime};

use callhost_storage::{onedrive::OneDrive, s3::S3, sftp, StorageError, Target, Upload};
use callhost_test_services::{Moto, Sshd, MOTO_ACCESS_KEY_ID, MOTO_REGION, MOTO_SECRET_ACCESS_KEY};

fn write(dir: &Path, name: &str, bytes: &[u8]) -> std::path::PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

fn upload(local: &Path, remote: &str) -> Upload {
    Upload::of_file(local, remote.into()).unwrap()
}

fn sftp_target(sshd: &Sshd, host_key: String) -> Target {
    Target::Sftp(sftp::Sftp {
        host: "127.0.0.1".into(),
        port: sshd.port(),
        user: sshd.user(),
        auth: sftp::Auth::KeyFile {
            path: sshd.client_key(),
            passphrase: None,
        },
        host_key,
        root: sshd.remote_root().join("rec").display().to_string(),
        timeout: Duration::from_secs(10),
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sftp_puts_confirms_and_refuses_what_it_must() {
    let mut sshd = Sshd::prepare().unwrap();
    let local = tempfile::tempdir().unwrap();
    let audio = write(local.path(), "a.wav", &vec![0xD5; 100_000]);
    let info = write(local.path(), "a_info.txt", b"Recording: a\n");
    let target = sftp_target(&sshd, sshd.host_key());

    // Down: a connection error, worth retrying.
    let error = target
        .store(&[upload(&audio, "2026/12/03/a.wav")])
        .await
        .unwrap_err();
    assert!(matches!(error, StorageError::Connect { .. }), "{error}");
    assert!(error.is_retryable());

    sshd.start().unwrap();
    let uploads = [
        upload(&audio, "2026/12/03/a.wav"),
        upload(&info, "2026/12/03/a_info.txt"),
    ];
    target.store(&uploads).await.unwrap();
    let remote = sshd.remote_root().join("rec/2026/12/03");
    assert_eq!(
        std::fs::read(remote.join("a.wav")).unwrap(),
        vec![0xD5; 100_000]
    );
    assert_eq!(
        std::fs::read(remote.join("a_info.txt")).unwrap(),
        b"Recording: a\n"
    );
    assert!(!remote.join("a.wav.partial").exists());
    // Again: found there already, nothing changes.
    target.store(&uploads).await.unwrap();

    // Another file under the same name is not overwritten…
    let other = write(local.path(), "other", b"not the recording");
    let error = target
        .store(&[upload(&other, "2026/12/03/a.wav")])
        .await
        .unwrap_err();
    assert!(matches!(error, StorageError::Exists { .. }), "{error}");
    assert!(!error.is_retryable());
    assert_eq!(std::fs::read(remote.join("a.wav")).unwrap().len(), 100_000);
    // …unless it is to be replaced (the chain's head).
    let mut head = upload(&other, "chain-head.txt");
    target.store(std::slice::from_ref(&head)).await.unwrap();
    let newer = write(local.path(), "head2", b"seq: 2\n");
    head = Upload {
        replace: true,
        ..upload(&newer, "chain-head.txt")
    };
    target.store(&[head]).await.unwrap();
    assert_eq!(
        std::fs::read(sshd.remote_root().join("rec/chain-head.txt")).unwrap(),
        b"seq: 2\n"
    );

    // Deleted (retention); one that is not there counts as deleted.
    target
        .delete(&[
            "2026/12/03/a_info.txt".into(),
            "2026/12/03/never.txt".into(),
        ])
        .await
        .unwrap();
    assert!(!remote.join("a_info.txt").exists());
    assert!(remote.join("a.wav").exists());

    // A server whose key is not the pinned one gets nothing.
    let wrong_pin = Sshd::prepare().unwrap().host_key();
    let error = sftp_target(&sshd, wrong_pin)
        .store(&[upload(&info, "x/b_info.txt")])
        .await
        .unwrap_err();
    assert!(matches!(error, StorageError::HostKey { .. }), "{error}");
    assert!(error.to_string().contains("SHA256:"), "{error}");
    assert!(!sshd.remote_root().join("rec/x").exists());

    // A path that climbs out of the root is refused before connecting.
    let error = target
        .store(&[upload(&info, "../escape")])
        .await
        .unwrap_err();
    assert!(matches!(error, StorageError::Refused { .. }), "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_puts_under_object_lock_and_confirms() {
    let moto = Moto::start().unwrap();
    moto.create_bucket("recordings", true).unwrap();
    let local = tempfile::tempdir().unwrap();
    let audio = write(local.path(), "a.wav", &vec![0xFF; 50_000]);
    let target = Target::S3(S3 {
        endpoint: Some(moto.url()),
        region: MOTO_REGION.into(),
        bucket: "recordings".into(),
        prefix: "pbx1/".into(),
        access_key_id: MOTO_ACCESS_KEY_ID.into(),
        secret_access_key: MOTO_SECRET_ACCESS_KEY.into(),
        timeout: Duration::from_secs(10),
    });
    let until = SystemTime::now() + Duration::from_secs(10 * 365 * 86_400);
    let locked = Upload {
        retain_until: Some(until),
        ..upload(&audio, "2026/12/03/a.wav")
    };
    target.store(std::slice::from_ref(&locked)).await.unwrap();
    target.store(&[locked]).await.unwrap(); // already there: fine

    let objects = moto.objects("recordings").unwrap();
    let object = objects
        .iter()
        .find(|o| o.key == "pbx1/2026/12/03/a.wav")
        .unwrap_or_else(|| panic!("{objects:?}"));
    assert_eq!(
        object.sha256,
        callhost_storage::sha256_of_file(&audio).unwrap()
    );
    assert_eq!(object.lock_mode, "COMPLIANCE");
    let year = humantime::format_rfc3339_seconds(until).to_string()[..4].to_string();
    assert!(object.retain_until.starts_with(&year), "{object:?}");
    let answer = moto
        .try_delete_locked("recordings", "pbx1/2026/12/03/a.wav")
        .unwrap();
    assert!(answer.starts_with("refused"), "{answer}");

    // A bucket that does not exist: a clear refusal naming it.
    let missing = Target::S3(S3 {
        bucket: "nope".into(),
        ..match &target {
            Target::S3(s3) => s3.clone(),
            _ => unreachable!(),
        }
    });
    let error = missing.store(&[upload(&audio, "a.wav")]).await.unwrap_err();
    assert!(error.to_string().contains("NoSuchBucket"), "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn onedrive_uploads_small_and_large_files_and_reads_them_back() {
    let graph = graph::Graph::start().await;
    let local = tempfile::tempdir().unwrap();
    let small = write(local.path(), "a_info.txt", b"Recording: a\n");
    // Above the simple-upload limit: an upload session in chunks.
    let large_bytes: Vec<u8> = (0..5 * 1024 * 1024 + 123)
        .map(|i| (i % 251) as u8)
        .collect();
    let large = write(local.path(), "a.wav", &large_bytes);
    let target = |secret: &str| {
        Target::OneDrive(OneDrive::new(
            graph.url(),
            format!("{}/v1.0", graph.url()),
            "tenant-1".into(),
            "client-1".into(),
            secret.into(),
            "drive-1".into(),
            "Recordings".into(),
            Duration::from_secs(10),
        ))
    };
    let uploads = [
        upload(&small, "2026/12/03/a_info.txt"),
        upload(&large, "2026/12/03/a.wav"),
    ];
    target(graph::SECRET).store(&uploads).await.unwrap();
    assert_eq!(
        graph.file("Recordings/2026/12/03/a.wav").unwrap(),
        large_bytes
    );
    assert_eq!(
        graph.file("Recordings/2026/12/03/a_info.txt").unwrap(),
        b"Recording: a\n"
    );
    assert!(graph.sessions_completed() >= 1);
    target(graph::SECRET).store(&uploads).await.unwrap();

    target(graph::SECRET)
        .delete(&["2026/12/03/a_info.txt".into(), "2026/12/03/never".into()])
        .await
        .unwrap();
    assert!(graph.file("Recordings/2026/12/03/a_info.txt").is_none());

    let error = target("wrong").store(&uploads).await.unwrap_err();
    assert!(matches!(error, StorageError::Refused { .. }), "{error}");
    assert!(error.to_string().contains("invalid_client"), "{error}");
    assert!(
        !error.to_string().contains("wrong"),
        "the secret is not in {error}"
    );
}
