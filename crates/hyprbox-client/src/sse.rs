//! Reading server-sent event streams, and following one across breaks with `Last-Event-ID`.

use std::time::Duration;

use futures_util::StreamExt;
use futures_util::stream::BoxStream;

use crate::{Client, Error};

/// One server-sent event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SseEvent {
    /// The `event:` field; `message` when absent.
    pub name: String,
    pub id: Option<String>,
    /// The `data:` lines joined with `\n`.
    pub data: String,
}

impl SseEvent {
    /// The data as JSON of type `T`.
    pub fn json<T: serde::de::DeserializeOwned>(&self) -> Result<T, Error> {
        serde_json::from_str(&self.data).map_err(Error::decode)
    }
}

/// Splits complete events off the front of `buffer`. Lines end with CRLF, LF or CR, as the SSE
/// format allows (the server breaks a lone CR in output into a new `data:` line).
pub fn take_events(buffer: &mut String) -> Vec<SseEvent> {
    // A CR at the very end may be the first half of a CRLF still on its way.
    let trailing_cr = buffer.ends_with('\r');
    if trailing_cr {
        buffer.pop();
    }
    if buffer.contains('\r') {
        *buffer = buffer.replace("\r\n", "\n").replace('\r', "\n");
    }
    let mut events = Vec::new();
    while let Some(end) = buffer.find("\n\n") {
        let block: String = buffer.drain(..end + 2).collect();
        let mut name = String::from("message");
        let mut id = None;
        let mut data: Vec<&str> = Vec::new();
        for line in block.split('\n') {
            if let Some(value) = line.strip_prefix("event:") {
                name = value.trim_start().to_string();
            } else if let Some(value) = line.strip_prefix("id:") {
                id = Some(value.trim_start().to_string());
            } else if let Some(value) = line.strip_prefix("data:") {
                data.push(value.strip_prefix(' ').unwrap_or(value));
            }
        }
        if !data.is_empty() {
            events.push(SseEvent {
                name,
                id,
                data: data.join("\n"),
            });
        }
    }
    if trailing_cr {
        buffer.push('\r');
    }
    events
}

/// The events of one open response, in order.
pub struct EventStream {
    body: BoxStream<'static, reqwest::Result<bytes::Bytes>>,
    buffer: String,
    /// An incomplete UTF-8 sequence waiting for the next piece.
    pending: Vec<u8>,
    ready: std::collections::VecDeque<SseEvent>,
}

impl EventStream {
    pub fn new(response: reqwest::Response) -> EventStream {
        EventStream {
            body: response.bytes_stream().boxed(),
            buffer: String::new(),
            pending: Vec::new(),
            ready: std::collections::VecDeque::new(),
        }
    }

    /// The next event; `Err` with a reason when the stream broke or ended.
    pub async fn next(&mut self) -> Result<SseEvent, String> {
        loop {
            if let Some(event) = self.ready.pop_front() {
                return Ok(event);
            }
            match self.body.next().await {
                Some(Ok(piece)) => {
                    self.pending.extend_from_slice(&piece);
                    let valid = match std::str::from_utf8(&self.pending) {
                        Ok(text) => text.len(),
                        Err(err) => err.valid_up_to(),
                    };
                    self.buffer
                        .push_str(&String::from_utf8_lossy(&self.pending[..valid]));
                    self.pending.drain(..valid);
                    self.ready.extend(take_events(&mut self.buffer));
                }
                Some(Err(e)) => return Err(format!("the stream broke off: {e}")),
                None => return Err("the server closed the stream".into()),
            }
        }
    }
}

/// Openings in a row without a single event with an id before a subscription gives up
/// (about 45 s of backoff).
pub const RETRIES: u32 = 8;

/// Told the reason and the wait before each reconnection.
type Notify = Box<dyn Fn(&str, Duration) + Send + Sync>;

/// A stream followed across breaks: reopened with `Last-Event-ID` after a passing failure (the
/// connection dropped, the server restarting, a 502–504 from a proxy) so no event is delivered
/// twice or lost; a refusal (401, 404…) ends it at once.
pub struct Subscription {
    client: Client,
    path: String,
    last_event_id: Option<String>,
    stream: Option<EventStream>,
    failures: u32,
    on_reconnect: Notify,
}

impl Subscription {
    pub(crate) fn new(client: Client, path: String) -> Subscription {
        Subscription {
            client,
            path,
            last_event_id: None,
            stream: None,
            failures: 0,
            on_reconnect: Box::new(|_, _| {}),
        }
    }

    /// Called with the reason and the wait before each reconnection (to tell a person).
    pub fn on_reconnect(mut self, notify: impl Fn(&str, Duration) + Send + Sync + 'static) -> Self {
        self.on_reconnect = Box::new(notify);
        self
    }

    /// The id of the last event received: what a reconnection resumes after.
    pub fn last_event_id(&self) -> Option<&str> {
        self.last_event_id.as_deref()
    }

    /// The next event, reconnecting as needed. `Err(StreamBroke)` after [`RETRIES`] failed
    /// openings in a row; other errors are the server's refusal.
    pub async fn next(&mut self) -> Result<SseEvent, Error> {
        loop {
            let stream = match &mut self.stream {
                Some(stream) => stream,
                None => match self.open().await? {
                    Ok(stream) => self.stream.insert(stream),
                    Err(reason) => {
                        self.back_off(reason).await?;
                        continue;
                    }
                },
            };
            match stream.next().await {
                Ok(event) => {
                    // Only events with an id count as progress: every opening replays the rest.
                    if event.id.is_some() {
                        self.failures = 0;
                        self.last_event_id.clone_from(&event.id);
                    }
                    return Ok(event);
                }
                Err(reason) => {
                    self.stream = None;
                    self.back_off(reason).await?;
                }
            }
        }
    }

    /// Opens the stream: `Ok(Err(reason))` for a failure worth retrying.
    async fn open(&self) -> Result<Result<EventStream, String>, Error> {
        let mut request = self.client.authed(reqwest::Method::GET, &self.path)?;
        if let Some(last) = &self.last_event_id {
            request = request.header(hyprbox_proto::headers::LAST_EVENT_ID, last);
        }
        let response = match request.send().await {
            Ok(response) => response,
            Err(e) => {
                return Ok(Err(Error::unreachable(self.client.base(), e).to_string()));
            }
        };
        if matches!(response.status().as_u16(), 502..=504) {
            return Ok(Err(format!("the server answered {}", response.status())));
        }
        if !response.status().is_success() {
            return Err(Error::from_response(response).await);
        }
        Ok(Ok(EventStream::new(response)))
    }

    async fn back_off(&mut self, reason: String) -> Result<(), Error> {
        self.failures += 1;
        if self.failures > RETRIES {
            return Err(Error::StreamBroke { reason });
        }
        let wait = Duration::from_secs(1 << (self.failures - 1).min(3));
        (self.on_reconnect)(&reason, wait);
        tokio::time::sleep(wait).await;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_sent_events_are_split_and_multi_line_data_joined() {
        let mut buffer =
            String::from("event: stdout\nid: 0\ndata: one\ndata: two\n\n: ping\n\nevent: done\ndata: {}");
        let events = take_events(&mut buffer);
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].name, "stdout");
        assert_eq!(events[0].data, "one\ntwo");
        assert_eq!(buffer, "event: done\ndata: {}");
        buffer.push_str("\n\n");
        assert_eq!(take_events(&mut buffer)[0].name, "done");
    }

    #[test]
    fn cr_and_crlf_end_lines_too_even_split_across_pieces() {
        let mut buffer = String::from("event: stdout\r\nid: 3\r\ndata: 10%\rdata: 20%\r");
        assert!(take_events(&mut buffer).is_empty());
        assert!(buffer.ends_with('\r'), "a trailing CR waits for its LF");
        buffer.push_str("\n\r\n");
        let events = take_events(&mut buffer);
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].name, "stdout");
        assert_eq!(events[0].id.as_deref(), Some("3"));
        assert_eq!(events[0].data, "10%\n20%");
        assert_eq!(buffer, "");
        // CR alone ends lines too (the event is complete once the next byte shows it was no CRLF).
        let mut cr_only = String::from("event: done\rdata: {}\r\r: ping");
        assert_eq!(take_events(&mut cr_only)[0].name, "done");
    }
}
