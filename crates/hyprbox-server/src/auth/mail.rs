//! Outgoing mail (password-reset links) over SMTP with lettre, or the log when no SMTP is set.

use lettre::message::Mailbox;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

use crate::config::Settings;

pub enum Mailer {
    Smtp {
        transport: Box<AsyncSmtpTransport<Tokio1Executor>>,
        from: Box<Mailbox>,
    },
    /// Outside production without SMTP the link goes to the log, so a developer can use it.
    Log,
    /// In production without SMTP nothing is sent and the token is never written anywhere.
    Disabled,
}

impl Mailer {
    pub fn from_settings(settings: &Settings) -> anyhow::Result<Mailer> {
        let Some(url) = &settings.smtp_url else {
            if settings.is_production() {
                tracing::warn!("HYPRBOX_SMTP_URL is not set: password-reset mails cannot be sent");
                return Ok(Mailer::Disabled);
            }
            return Ok(Mailer::Log);
        };
        let transport = AsyncSmtpTransport::<Tokio1Executor>::from_url(url.expose())
            .map_err(|e| anyhow::anyhow!("HYPRBOX_SMTP_URL is not a valid SMTP URL: {e}"))?
            .build();
        let from: Mailbox = settings
            .mail_from
            .parse()
            .map_err(|e| anyhow::anyhow!("HYPRBOX_MAIL_FROM is not a valid address: {e}"))?;
        Ok(Mailer::Smtp {
            transport: Box::new(transport),
            from: Box::new(from),
        })
    }

    /// Sends the reset link; failures are logged, never returned (the caller has already answered).
    pub async fn send_password_reset(&self, to: &str, link: &str) {
        match self {
            Mailer::Log => {
                tracing::info!(
                    to,
                    link,
                    "password reset requested (no SMTP configured; link logged)"
                );
            }
            Mailer::Disabled => {
                tracing::warn!("password reset requested but no SMTP is configured; no mail sent");
            }
            Mailer::Smtp { transport, from } => {
                let Ok(recipient) = to.parse::<Mailbox>() else {
                    tracing::warn!("password reset: recipient address is not deliverable");
                    return;
                };
                let body = format!(
                    "Someone asked to reset the password of your HyprBox account.\n\n\
                     Open this link within one hour to choose a new password:\n\n{link}\n\n\
                     If it was not you, ignore this mail: your password stays as it is.\n"
                );
                let message = Message::builder()
                    .from(Mailbox::clone(from))
                    .to(recipient)
                    .subject("Reset your HyprBox password")
                    .body(body);
                match message {
                    Ok(message) => {
                        if let Err(err) = transport.send(message).await {
                            tracing::warn!(error = %err, "password reset mail could not be sent");
                        }
                    }
                    Err(err) => tracing::warn!(error = %err, "password reset mail could not be built"),
                }
            }
        }
    }
}
