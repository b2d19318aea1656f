//! Mail to the administrators when something needs a person (CR17): a
//! recording that failed, an upload that failed, a disk filling up. The
//! first notice goes out at once; what follows within `min_interval` is
//! collected and sent as one mail when the interval is over, so a target
//! that is down for a day sends a mail an hour, not one per call.
//!
//! Nobody waits for the mail: notices are queued (bounded; overflow is
//! counted and said in the next mail) and sent by a task of the instance.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use callhost_plugin_sdk::tracing;
use lettre::message::Mailbox;
use lettre::transport::smtp::authentication::Credentials;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use tokio::sync::mpsc;

use crate::config::{MailConfig, MailSecurity};

/// Notices waiting for the task; more are counted, not kept.
const QUEUE: usize = 256;
/// Notices one mail lists; more are counted.
const PER_MAIL: usize = 100;

#[derive(Debug, Clone)]
struct Notice {
    at: String,
    subject: String,
    text: String,
}

/// Where notices go. Until [`Notifier::start`] (an active instance with
/// mail configured) they are dropped: an action run from the CLI mails
/// nobody.
#[derive(Clone, Default)]
pub struct Notifier {
    sender: Arc<OnceLock<mpsc::Sender<Notice>>>,
    overflow: Arc<AtomicU64>,
}

impl Notifier {
    /// Starts sending: returns the mail task for the caller to spawn (the
    /// instance's service spawner), `None` if it was started already.
    pub fn start(
        &self,
        config: &MailConfig,
        instance: &str,
    ) -> Option<impl std::future::Future<Output = ()> + Send + 'static> {
        let (sender, receiver) = mpsc::channel(QUEUE);
        self.sender.set(sender).ok()?;
        let mailer = Mailer {
            config: config.clone(),
            instance: instance.to_string(),
            overflow: self.overflow.clone(),
        };
        Some(mailer.run(receiver))
    }

    /// Queues a notice; never waits.
    pub fn notify(&self, subject: impl Into<String>, text: impl Into<String>) {
        let Some(sender) = self.sender.get() else {
            return;
        };
        let notice = Notice {
            at: humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
            subject: subject.into(),
            text: text.into(),
        };
        if sender.try_send(notice).is_err() {
            self.overflow.fetch_add(1, Ordering::Relaxed);
        }
    }
}

struct Mailer {
    config: MailConfig,
    instance: String,
    overflow: Arc<AtomicU64>,
}

impl Mailer {
    async fn run(self, mut receiver: mpsc::Receiver<Notice>) {
        let interval = self.config.min_interval();
        let mut pending: Vec<Notice> = Vec::new();
        let mut last_sent: Option<Instant> = None;
        loop {
            if pending.is_empty() {
                match receiver.recv().await {
                    Some(notice) => pending.push(notice),
                    None => return,
                }
            }
            // Wait out the interval since the last mail, collecting.
            let ready_at = last_sent.map_or_else(Instant::now, |at| at + interval);
            let mut closed = false;
            while Instant::now() < ready_at {
                match tokio::time::timeout_at(ready_at.into(), receiver.recv()).await {
                    Ok(Some(notice)) => pending.push(notice),
                    Ok(None) => {
                        closed = true;
                        break;
                    }
                    Err(_) => break,
                }
            }
            while let Ok(notice) = receiver.try_recv() {
                pending.push(notice);
            }
            let overflow = self.overflow.swap(0, Ordering::Relaxed);
            match self.send(&pending, overflow).await {
                Ok(()) => {
                    tracing::info!(notices = pending.len(), "notice mail sent");
                    pending.clear();
                }
                Err(error) => {
                    // Kept for the next mail, not forever.
                    tracing::error!("notice mail not sent: {error}");
                    self.overflow.fetch_add(overflow, Ordering::Relaxed);
                    if pending.len() > PER_MAIL {
                        let extra = pending.len() - PER_MAIL;
                        pending.drain(..extra);
                        self.overflow.fetch_add(extra as u64, Ordering::Relaxed);
                    }
                }
            }
            last_sent = Some(Instant::now());
            if closed {
                return;
            }
        }
    }

    async fn send(&self, notices: &[Notice], overflow: u64) -> Result<(), String> {
        let config = &self.config;
        let from: Mailbox = config.from.parse().map_err(|e| format!("from: {e}"))?;
        let mut message = Message::builder().from(from);
        for to in &config.to {
            message = message.to(to.parse().map_err(|e| format!("to {to}: {e}"))?);
        }
        let first = &notices[0].subject;
        let subject = match notices.len() {
            1 => format!("[callhost] call recording {}: {first}", self.instance),
            n => format!(
                "[callhost] call recording {}: {first} (and {} more)",
                self.instance,
                n - 1
            ),
        };
        let mut body = String::new();
        for notice in notices.iter().take(PER_MAIL) {
            body.push_str(&format!(
                "{}  {}\n{}\n\n",
                notice.at, notice.subject, notice.text
            ));
        }
        let untold = overflow + notices.len().saturating_sub(PER_MAIL) as u64;
        if untold > 0 {
            body.push_str(&format!(
                "{untold} more notices are not listed; the instance log has them.\n"
            ));
        }
        body.push_str(&format!(
            "\nAt most one mail per {} is sent; `callhost instance action {} recordings` lists every recording and failure.\n",
            humantime::format_duration(config.min_interval()),
            self.instance
        ));
        let message = message
            .subject(subject)
            .body(body)
            .map_err(|e| e.to_string())?;
        let mut transport = match config.security {
            MailSecurity::Tls => AsyncSmtpTransport::<Tokio1Executor>::relay(&config.server),
            MailSecurity::Starttls => {
                AsyncSmtpTransport::<Tokio1Executor>::starttls_relay(&config.server)
            }
            MailSecurity::None => Ok(AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(
                &config.server,
            )),
        }
        .map_err(|e| e.to_string())?
        .timeout(Some(Duration::from_secs(30)));
        if let Some(port) = config.port {
            transport = transport.port(port);
        }
        if let (Some(user), Some(password)) = (&config.user, &config.password) {
            transport = transport.credentials(Credentials::new(
                user.clone(),
                password.expose().to_string(),
            ));
        }
        transport
            .build()
            .send(message)
            .await
            .map(drop)
            .map_err(|e| e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::MailSecurity;

    fn sink_config(smtp: &callhost_test_services::Smtp, interval: &str) -> MailConfig {
        MailConfig {
            server: "127.0.0.1".into(),
            port: Some(smtp.port()),
            security: MailSecurity::None,
            user: None,
            password: None,
            from: "PBX <pbx@example.com>".into(),
            to: vec!["admin@example.com".into()],
            min_interval: interval.into(),
        }
    }

    async fn wait_for_mails(smtp: &callhost_test_services::Smtp, count: usize) -> Vec<String> {
        for _ in 0..100 {
            let messages = smtp.messages();
            if messages.len() >= count {
                return messages;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        smtp.messages()
    }

    #[tokio::test]
    async fn the_first_notice_goes_at_once_the_rest_together_after_the_interval() {
        let smtp = callhost_test_services::Smtp::start().unwrap();
        let notifier = Notifier::default();
        notifier.notify("before start", "dropped: nobody to mail yet");
        let task = notifier
            .start(&sink_config(&smtp, "2s"), "rec")
            .expect("first start");
        assert!(notifier.start(&sink_config(&smtp, "2s"), "rec").is_none());
        tokio::spawn(task);

        notifier.notify("upload failed", "r1 to sftp://x: cannot connect");
        let first = wait_for_mails(&smtp, 1).await;
        assert_eq!(first.len(), 1);
        assert!(
            first[0].contains("Subject: [callhost] call recording rec: upload failed"),
            "{}",
            first[0]
        );
        assert!(first[0].contains("r1 to sftp://x"), "{}", first[0]);
        assert!(!first[0].contains("before start"), "{}", first[0]);

        let sent = Instant::now();
        notifier.notify("upload failed", "r2");
        notifier.notify("recording failed", "r3");
        let both = wait_for_mails(&smtp, 2).await;
        assert_eq!(both.len(), 2, "one mail for the two notices");
        assert!(
            sent.elapsed() >= Duration::from_millis(1500),
            "sent before the interval"
        );
        assert!(both[1].contains("(and 1 more)"), "{}", both[1]);
        assert!(
            both[1].contains("r2") && both[1].contains("r3"),
            "{}",
            both[1]
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(smtp.messages().len(), 2, "nothing more was sent");
    }
}
