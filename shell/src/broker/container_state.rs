//! What bastiond knows of users' containers between logins, so that a warm
//! login skips the Engine round trips of inspecting the image and the
//! container (two of a warm login's four API calls).
//!
//! It is kept current by the Engine's events stream ([`watch`]): an event
//! that can change a container (start, die, stop, destroy, rename, update,
//! …) drops that container, any image event (tag, untag, delete, pull,
//! load, import) drops every image reference, and while the stream is not
//! connected nothing is remembered or answered: logins then inspect, as
//! they would without it. What an inspect saw is remembered only when no
//! such event came in between ([`Ticket`]), so a change racing a login is
//! never hidden. Only a running container whose configuration is current
//! is remembered; anything else takes the full path of
//! [`super::container::ContainerManager::ensure`].

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use bollard::Docker;
use bollard::models::{EventMessage, EventMessageTypeEnum};
use tokio_util::sync::CancellationToken;

use crate::contract::docker::{EventFollower, follow_events};

use super::cgroup::CgroupFiles;

/// A running, current user container as an inspect showed it.
#[derive(Debug, Clone)]
pub struct KnownContainer {
    pub running: Running,
    /// Its `bastion.user` label.
    pub user: String,
    /// Its `bastion.spec` label (what it was created from).
    pub spec_hash: String,
}

/// What can make remembered state wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// A container changed (or went): by id and, when the event names it, name.
    Container { id: String, name: Option<String> },
    /// An image was tagged, untagged, deleted, pulled, loaded or imported:
    /// any reference may now name another image.
    Images,
}

/// The container actions that can change what is remembered. Exec and
/// attach events (every session makes three) change nothing.
const CONTAINER_ACTIONS: &[&str] = &[
    "create", "start", "restart", "die", "kill", "oom", "stop", "pause", "unpause", "destroy",
    "rename", "update",
];
const IMAGE_ACTIONS: &[&str] = &["tag", "untag", "delete", "import", "load", "pull"];

impl Change {
    /// The change an Engine event stands for, if any.
    pub fn of_event(event: &EventMessage) -> Option<Change> {
        let action = event.action.as_deref()?;
        match event.typ? {
            EventMessageTypeEnum::CONTAINER if CONTAINER_ACTIONS.contains(&action) => {
                let actor = event.actor.as_ref()?;
                Some(Change::Container {
                    id: actor.id.clone()?,
                    name: actor
                        .attributes
                        .as_ref()
                        .and_then(|a| a.get("name"))
                        .map(|n| n.trim_start_matches('/').to_owned()),
                })
            }
            EventMessageTypeEnum::IMAGE if IMAGE_ACTIONS.contains(&action) => Some(Change::Images),
            _ => None,
        }
    }
}

/// The state's generation when a login started inspecting: what it saw is
/// remembered only if no change came in since.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ticket(u64);

#[derive(Debug, Default)]
struct Inner {
    /// The events stream is connected: changes reach us.
    live: bool,
    /// Bumped by every change and every (dis)connection.
    generation: u64,
    /// By container name.
    containers: HashMap<String, KnownContainer>,
    /// Image reference → image id.
    images: HashMap<String, String>,
}

/// Users' containers and image references, as last seen (see the module).
#[derive(Debug, Default)]
pub struct ContainerState {
    inner: Mutex<Inner>,
}

impl ContainerState {
    fn inner(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().expect("container state poisoned")
    }

    /// Container `name` and the id of image reference `image`, when both
    /// are known and the stream is live.
    pub fn lookup(&self, name: &str, image: &str) -> Option<(KnownContainer, String)> {
        let inner = self.inner();
        if !inner.live {
            return None;
        }
        let image_id = inner.images.get(image)?.clone();
        Some((inner.containers.get(name)?.clone(), image_id))
    }

    /// Taken before inspecting; `None` while changes cannot reach us.
    pub fn ticket(&self) -> Option<Ticket> {
        let inner = self.inner();
        inner.live.then_some(Ticket(inner.generation))
    }

    /// Remembers what the inspects after `ticket` saw (the container, and
    /// that its configured image reference names `image_id`), unless
    /// something changed since. Returns whether it did.
    pub fn remember(&self, ticket: Ticket, container: KnownContainer, image_id: &str) -> bool {
        let mut inner = self.inner();
        if !inner.live || inner.generation != ticket.0 {
            return false;
        }
        let running = &container.running;
        inner
            .images
            .insert(running.image.clone(), image_id.to_owned());
        inner.containers.insert(running.name.clone(), container);
        true
    }

    /// Drops container `name` (an exec found it gone).
    pub fn forget(&self, name: &str) {
        let mut inner = self.inner();
        inner.containers.remove(name);
        inner.generation += 1;
    }

    pub fn apply(&self, change: &Change) {
        let mut inner = self.inner();
        inner.generation += 1;
        match change {
            Change::Container { id, name } => inner
                .containers
                .retain(|n, c| c.running.id != *id && Some(n) != name.as_ref()),
            Change::Images => inner.images.clear(),
        }
    }

    /// The events stream is (re)connected, asking for events since before
    /// this moment: from now on changes reach us.
    pub fn connected(&self) {
        let mut inner = self.inner();
        inner.live = true;
        inner.generation += 1;
    }

    /// The events stream is gone: what we knew may go stale unseen.
    pub fn disconnected(&self) {
        let mut inner = self.inner();
        inner.live = false;
        inner.generation += 1;
        inner.containers.clear();
        inner.images.clear();
    }
}

/// Follows the Engine's events into `state` until `shutdown`, reconnecting
/// with back-off. Each connection asks for events since a second before it
/// (the Engine replays them), so nothing between two connections, or
/// between asking and the Engine subscribing us, is missed.
pub async fn watch(state: Arc<ContainerState>, docker: Docker, shutdown: CancellationToken) {
    let actions = CONTAINER_ACTIONS.iter().chain(IMAGE_ACTIONS);
    let filters = HashMap::from([
        ("type".to_owned(), vec!["container".into(), "image".into()]),
        (
            "event".to_owned(),
            actions.map(|a| (*a).to_owned()).collect(),
        ),
    ]);
    follow_events(&docker, filters, &*state, None, &shutdown).await;
}

impl EventFollower for ContainerState {
    async fn connected(&self) -> Result<(), String> {
        ContainerState::connected(self);
        Ok(())
    }

    async fn event(&self, event: bollard::models::EventMessage) {
        if let Some(change) = Change::of_event(&event) {
            tracing::debug!(?change, "container state changed");
            self.apply(&change);
        }
    }

    fn disconnected(&self) {
        ContainerState::disconnected(self);
    }
}

/// A user's running container.
#[derive(Debug, Clone)]
pub struct Running {
    pub id: String,
    pub name: String,
    /// The image reference from the config.
    pub image: String,
    /// The image id (`sha256:…`) the container runs.
    pub image_id: String,
    pub role: Option<String>,
    /// The container's cgroup (its processes and limit counters), found
    /// from its init process when it was inspected.
    pub cgroup: Option<Arc<CgroupFiles>>,
    /// The locales its image lists (`None`: an image without the label).
    pub locales: Option<Arc<super::locale::ImageLocales>>,
    /// Known from the events-kept state, without asking the Engine.
    pub remembered: bool,
}

#[cfg(test)]
mod tests {
    use super::*;
    use bollard::models::EventActor;

    fn alice() -> KnownContainer {
        KnownContainer {
            running: Running {
                id: "c1".into(),
                name: "bastion-alice".into(),
                image: "user:1".into(),
                image_id: "sha256:i1".into(),
                role: Some("r".into()),
                cgroup: None,
                locales: None,
                remembered: false,
            },
            user: "alice".into(),
            spec_hash: "h".into(),
        }
    }

    fn live() -> ContainerState {
        let state = ContainerState::default();
        state.connected();
        state
    }

    fn remembered(state: &ContainerState) -> bool {
        let ticket = state.ticket().expect("live");
        state.remember(ticket, alice(), "sha256:i1")
    }

    #[test]
    fn nothing_is_known_or_remembered_while_the_stream_is_down() {
        let state = ContainerState::default();
        assert_eq!(state.ticket(), None);
        state.connected();
        assert!(remembered(&state));
        assert!(state.lookup("bastion-alice", "user:1").is_some());
        state.disconnected();
        assert!(state.lookup("bastion-alice", "user:1").is_none());
        state.connected();
        assert!(
            state.lookup("bastion-alice", "user:1").is_none(),
            "what was known before a gap is gone"
        );
    }

    #[test]
    fn a_remembered_container_answers_for_its_image_reference_only() {
        let state = live();
        assert!(remembered(&state));
        let (found, image_id) = state.lookup("bastion-alice", "user:1").unwrap();
        assert_eq!(found.running.id, "c1");
        assert_eq!(found.spec_hash, "h");
        assert_eq!(image_id, "sha256:i1");
        assert!(state.lookup("bastion-alice", "user:2").is_none());
        assert!(state.lookup("bastion-bob", "user:1").is_none());
    }

    #[test]
    fn a_change_between_ticket_and_remember_wins() {
        let state = live();
        let ticket = state.ticket().unwrap();
        state.apply(&Change::Container {
            id: "other".into(),
            name: None,
        });
        assert!(!state.remember(ticket, alice(), "sha256:i1"));
        assert!(state.lookup("bastion-alice", "user:1").is_none());
    }

    #[test]
    fn container_and_image_events_drop_what_they_touch() {
        let state = live();
        assert!(remembered(&state));
        state.apply(&Change::Container {
            id: "c2".into(),
            name: Some("bastion-bob".into()),
        });
        assert!(state.lookup("bastion-alice", "user:1").is_some());
        state.apply(&Change::Container {
            id: "c1".into(),
            name: None,
        });
        assert!(state.lookup("bastion-alice", "user:1").is_none());

        assert!(remembered(&state));
        state.apply(&Change::Container {
            id: "new".into(),
            name: Some("bastion-alice".into()),
        });
        assert!(state.lookup("bastion-alice", "user:1").is_none(), "by name");

        assert!(remembered(&state));
        state.apply(&Change::Images);
        assert!(state.lookup("bastion-alice", "user:1").is_none());

        assert!(remembered(&state));
        state.forget("bastion-alice");
        assert!(state.lookup("bastion-alice", "user:1").is_none());
    }

    fn event(
        typ: EventMessageTypeEnum,
        action: &str,
        id: &str,
        name: Option<&str>,
    ) -> EventMessage {
        EventMessage {
            typ: Some(typ),
            action: Some(action.into()),
            actor: Some(EventActor {
                id: Some(id.into()),
                attributes: name.map(|n| HashMap::from([("name".to_owned(), n.to_owned())])),
            }),
            ..Default::default()
        }
    }

    #[test]
    fn engine_events_map_to_changes() {
        use EventMessageTypeEnum::{CONTAINER, IMAGE, NETWORK};
        assert_eq!(
            Change::of_event(&event(CONTAINER, "die", "c1", Some("bastion-alice"))),
            Some(Change::Container {
                id: "c1".into(),
                name: Some("bastion-alice".into())
            })
        );
        for quiet in [
            "exec_create",
            "exec_start",
            "exec_die",
            "attach",
            "resize",
            "top",
        ] {
            assert_eq!(
                Change::of_event(&event(CONTAINER, quiet, "c1", None)),
                None,
                "{quiet}"
            );
        }
        for action in ["tag", "untag", "delete", "pull", "load", "import"] {
            assert_eq!(
                Change::of_event(&event(IMAGE, action, "sha256:x", None)),
                Some(Change::Images),
                "{action}"
            );
        }
        assert_eq!(
            Change::of_event(&event(NETWORK, "connect", "n", None)),
            None
        );
    }
}
