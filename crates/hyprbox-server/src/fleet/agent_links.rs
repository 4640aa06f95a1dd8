//! The agents' WebSocket links, by node: how a queued job wakes its agent at once and how a cancel
//! reaches a running job. Each link has a small bounded queue; a wake-up that finds it full is
//! dropped, because one already waiting there does the same work. A cancel that finds it full
//! closes the link instead: the agent reconnects, and a new connection is sent every cancel
//! requested for its node's running jobs.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Messages queued for one agent connection are the protocol's own.
pub use hyprbox_proto::agent::AgentMessage;

struct Link {
    id: u64,
    token_id: String,
    sender: mpsc::Sender<AgentMessage>,
    closed: CancellationToken,
    stuck: CancellationToken,
}

/// Messages a link may hold before new ones are dropped (a healthy agent reads them at once).
const LINK_QUEUE: usize = 64;

#[derive(Default)]
pub struct Agents {
    links: Mutex<HashMap<String, Vec<Link>>>,
    next_id: AtomicU64,
}

/// A registered connection; dropping it unregisters the link.
pub struct Connection<'a> {
    agents: &'a Agents,
    node_id: String,
    id: u64,
    pub receiver: mpsc::Receiver<AgentMessage>,
    /// Cancelled when the connection's token is revoked.
    pub closed: CancellationToken,
    /// Cancelled when the connection fell so far behind that a cancel could not be queued.
    pub stuck: CancellationToken,
}

impl Drop for Connection<'_> {
    fn drop(&mut self) {
        let mut links = self.agents.links.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(list) = links.get_mut(&self.node_id) {
            list.retain(|link| link.id != self.id);
            if list.is_empty() {
                links.remove(&self.node_id);
            }
        }
    }
}

impl Agents {
    /// Registers a connection of `node_id`'s agent authenticated by `token_id`.
    pub fn connect(&self, node_id: &str, token_id: &str) -> Connection<'_> {
        let (sender, receiver) = mpsc::channel(LINK_QUEUE);
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let closed = CancellationToken::new();
        let stuck = CancellationToken::new();
        self.links
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(node_id.to_string())
            .or_default()
            .push(Link {
                id,
                token_id: token_id.to_string(),
                sender,
                closed: closed.clone(),
                stuck: stuck.clone(),
            });
        Connection {
            agents: self,
            node_id: node_id.to_string(),
            id,
            receiver,
            closed,
            stuck,
        }
    }

    /// Open connections of the node's agent (normally one; a restart may briefly leave two).
    pub fn link_count(&self, node_id: &str) -> usize {
        self.links
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(node_id)
            .map_or(0, Vec::len)
    }

    pub fn is_connected(&self, node_id: &str) -> bool {
        self.links
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(node_id)
            .is_some_and(|list| list.iter().any(|link| !link.sender.is_closed()))
    }

    /// Queues `message` for every connection of the node; whether at least one took it.
    pub fn send(&self, node_id: &str, message: &AgentMessage) -> bool {
        let links = self.links.lock().unwrap_or_else(|e| e.into_inner());
        let Some(list) = links.get(node_id) else {
            return false;
        };
        let mut delivered = false;
        for link in list {
            match link.sender.try_send(message.clone()) {
                Ok(()) => delivered = true,
                // A full queue already holds a message that makes the agent pull.
                Err(mpsc::error::TrySendError::Full(_)) if *message == AgentMessage::Wakeup => {
                    delivered = true
                }
                // A cancel must not be lost: the link is closed, and the agent's next connection
                // is sent every pending cancel.
                Err(mpsc::error::TrySendError::Full(_)) => {
                    tracing::warn!(
                        node_id,
                        "an agent link fell behind: closing it so the agent reconnects"
                    );
                    link.stuck.cancel();
                    delivered = true;
                }
                Err(mpsc::error::TrySendError::Closed(_)) => {}
            }
        }
        delivered
    }

    /// Closes every connection authenticated by `token_id` (it was revoked).
    pub fn close_token(&self, token_id: &str) {
        let links = self.links.lock().unwrap_or_else(|e| e.into_inner());
        for link in links.values().flatten().filter(|l| l.token_id == token_id) {
            link.closed.cancel();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_reaches_every_connection_of_the_node_and_only_while_connected() {
        let agents = Agents::default();
        assert!(!agents.send("a", &AgentMessage::Wakeup));
        let mut first = agents.connect("a", "t1");
        let mut second = agents.connect("a", "t2");
        assert!(agents.is_connected("a"));
        assert!(!agents.is_connected("b"));
        assert!(agents.send("a", &AgentMessage::Wakeup));
        assert_eq!(first.receiver.try_recv().unwrap(), AgentMessage::Wakeup);
        assert_eq!(second.receiver.try_recv().unwrap(), AgentMessage::Wakeup);
        agents.close_token("t2");
        assert!(second.closed.is_cancelled());
        assert!(!first.closed.is_cancelled());
        drop(first);
        drop(second);
        assert!(!agents.is_connected("a"));
        assert!(!agents.send("a", &AgentMessage::Wakeup));
    }

    #[test]
    fn a_cancel_that_finds_the_queue_full_closes_the_link_and_a_wakeup_does_not() {
        let agents = Agents::default();
        let link = agents.connect("a", "t1");
        for _ in 0..LINK_QUEUE {
            assert!(agents.send("a", &AgentMessage::Wakeup));
        }
        assert!(agents.send("a", &AgentMessage::Wakeup), "one is already waiting");
        assert!(!link.stuck.is_cancelled());
        let cancel = AgentMessage::Cancel { job_id: "j".into() };
        assert!(agents.send("a", &cancel));
        assert!(link.stuck.is_cancelled(), "the agent must reconnect to get it");
    }
}
