//! A test SMTP server (shared with the `hyprbox` crate's tests through `#[path]`).

/// A one-session-at-a-time SMTP server that hands each received message (headers and body) to
/// the test. Just enough of RFC 5321 for lettre's client.
pub async fn smtp_listener() -> (String, tokio::sync::mpsc::UnboundedReceiver<String>) {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("smtp://{}", listener.local_addr().unwrap());
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let tx = tx.clone();
            tokio::spawn(async move {
                let (read, mut write) = stream.into_split();
                let mut lines = BufReader::new(read).lines();
                write.write_all(b"220 test ESMTP\r\n").await.ok()?;
                let mut in_data = false;
                let mut message = String::new();
                while let Some(line) = lines.next_line().await.ok()? {
                    if in_data {
                        if line == "." {
                            in_data = false;
                            tx.send(std::mem::take(&mut message)).ok()?;
                            write.write_all(b"250 OK queued\r\n").await.ok()?;
                        } else {
                            message.push_str(line.strip_prefix('.').unwrap_or(&line));
                            message.push('\n');
                        }
                        continue;
                    }
                    let verb = line.get(..4).unwrap_or("").to_ascii_uppercase();
                    let reply: &[u8] = match verb.as_str() {
                        "EHLO" | "HELO" => b"250-test\r\n250 8BITMIME\r\n",
                        "DATA" => {
                            in_data = true;
                            b"354 go ahead\r\n"
                        }
                        "QUIT" => {
                            write.write_all(b"221 bye\r\n").await.ok()?;
                            return Some(());
                        }
                        _ => b"250 OK\r\n",
                    };
                    write.write_all(reply).await.ok()?;
                }
                Some(())
            });
        }
    });
    (url, rx)
}

/// A received mail's text with quoted-printable soft breaks and `=3D` undone (lettre may send the
/// body quoted-printable).
pub fn unwrap_mail(mail: &str) -> String {
    mail.replace("=\r\n", "").replace("=\n", "").replace("=3D", "=")
}

/// The password-reset token in a received mail's link.
pub fn reset_token_in(mail: &str) -> String {
    let mail = unwrap_mail(mail);
    let start = mail.find("token=").expect("a link with a token") + "token=".len();
    mail[start..]
        .chars()
        .take_while(char::is_ascii_hexdigit)
        .collect()
}
