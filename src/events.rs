//! Visible rotation failures. The driver masks a failed remount (a rotation
//! republish): the pod keeps its old files and nothing but a driver log
//! line says so, until the pod restarts and cannot start. The provider
//! records such a failure as a Warning event on the pod (events.k8s.io/v1,
//! reason `SecretRotationFailed`, the mount's error message as the note).
//!
//! A mount is a remount when the driver passed the current object versions
//! (drivers up to v1.5), when this process mounted the same target before,
//! or when the target directory already holds files.
//!
//! Events are aggregated and rate-limited so that a class failing for
//! hundreds of pods cannot flood the API server: one event per volume of a
//! pod and error, created on the first failure; further failures with the
//! same error are counted, and the event's `series` is patched with the
//! count at most once per `--rotation-event-interval`; a different error
//! after that interval starts a new event; a successful mount of the volume
//! ends the series. The pods of one namespace write at most
//! [`NAMESPACE_BURST`] events at once and one per [`NAMESPACE_PERIOD`]
//! after that, and all pods together at most [`BURST`] at once and one per
//! second, so one failing class neither floods the API server nor starves
//! the events of other namespaces. Writing happens after the mount has
//! answered, and its failure (RBAC, the API server down) is logged and
//! counted, never fails a mount.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;

use governor::{DefaultDirectRateLimiter, DefaultKeyedRateLimiter, Quota, RateLimiter};
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use serde::Deserialize;

use crate::kube::KubeClient;
use crate::limits::{Escaped, cap_message};
use crate::proto::v1alpha1::MountRequest;
use crate::telemetry::Metrics;

/// The event's reason.
pub const REASON: &str = "SecretRotationFailed";
/// The event's `reportingController`.
pub const CONTROLLER: &str = "csi-provider-aws";
/// The event's `action`.
pub const ACTION: &str = "Mount";
/// Longest note the API server accepts (bytes).
pub const MAX_NOTE: usize = 1024;
/// Events all pods may write at once; one per second refills it.
pub const BURST: u32 = 30;
/// Events the pods of one namespace may write at once.
pub const NAMESPACE_BURST: u32 = 10;
/// One more event of a namespace per this long.
pub const NAMESPACE_PERIOD: Duration = Duration::from_secs(6);
/// Targets and pods tracked at most (far more than a node runs).
const MAX_TRACKED: usize = 10_000;
/// A target not mounted, or a series without a failure, for this long is
/// forgotten.
const FORGET_AFTER: Duration = Duration::from_secs(3600);

/// How rotation failures are reported.
#[derive(Debug, Clone)]
pub struct EventSettings {
    /// `--rotation-failure-events`.
    pub enabled: bool,
    /// `--rotation-event-interval`: least time between two writes of one
    /// pod's event.
    pub interval: Duration,
    /// The event's `reportingInstance` (this node's provider).
    pub instance: String,
}

impl Default for EventSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            interval: Duration::from_secs(300),
            instance: format!("{CONTROLLER}-unknown-node"),
        }
    }
}

/// The pod a mount is for, as the driver names it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Deserialize)]
struct PodRef {
    #[serde(rename = "csi.storage.k8s.io/pod.namespace")]
    namespace: String,
    #[serde(rename = "csi.storage.k8s.io/pod.name")]
    name: String,
    #[serde(rename = "csi.storage.k8s.io/pod.uid", default)]
    uid: String,
}

/// What the rotation record needs of a `Mount` request, taken before the
/// request is parsed (and dropped once it is): the target, the pod, and
/// whether the driver passed the versions of what is mounted.
#[derive(Debug, Clone, Default)]
pub struct Volume {
    target: String,
    pod: Option<PodRef>,
    remount: bool,
}

impl Volume {
    /// The pod's namespace, name and UID, as the driver named them.
    pub fn pod(&self) -> Option<(&str, &str, &str)> {
        self.pod
            .as_ref()
            .map(|p| (p.namespace.as_str(), p.name.as_str(), p.uid.as_str()))
    }

    /// The volume of `req`. Only the pod's fields are read (the rest is
    /// skipped); a request whose attributes are not JSON names no pod.
    pub fn of(req: &MountRequest) -> Self {
        Self {
            target: req.target_path.clone(),
            pod: serde_json::from_str::<PodRef>(&req.attributes).ok(),
            remount: !req.current_object_version.is_empty(),
        }
    }
}

/// A volume of a pod.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct VolumeKey {
    pod: PodRef,
    target: String,
}

/// One volume's failures since its last successful mount.
#[derive(Debug)]
struct Series {
    /// Tells this series' writes from those of one it replaced.
    generation: u64,
    note: String,
    /// The event, once created.
    event: Option<String>,
    /// Failures with this note, counted into the event's series.
    count: i32,
    last_failure: Instant,
    last_write: Option<Instant>,
    /// A write is in flight.
    writing: bool,
}

impl Series {
    /// A series that has counted nothing and written nothing yet.
    fn new(generation: u64, note: String, now: Instant) -> Self {
        Self {
            generation,
            note,
            event: None,
            count: 0,
            last_failure: now,
            last_write: None,
            writing: false,
        }
    }
}

#[derive(Debug, Default)]
struct State {
    /// Targets mounted successfully, and when.
    mounted: HashMap<String, Instant>,
    series: HashMap<VolumeKey, Series>,
    generations: u64,
}

/// What to write for a failure, for the series of `generation`.
struct Write {
    generation: u64,
    action: Action,
}

enum Action {
    Create(Box<Event>),
    Patch { name: String, count: i32 },
}

/// Records rotation failures as pod events.
pub struct RotationEvents {
    settings: EventSettings,
    kube: KubeClient,
    metrics: Arc<Metrics>,
    limiter: DefaultDirectRateLimiter,
    namespaces: DefaultKeyedRateLimiter<String>,
    state: Mutex<State>,
}

impl RotationEvents {
    pub fn new(settings: EventSettings, kube: KubeClient, metrics: Arc<Metrics>) -> Self {
        let burst = |n: u32| NonZeroU32::new(n).unwrap_or(NonZeroU32::MIN);
        let quota = Quota::per_second(NonZeroU32::MIN).allow_burst(burst(BURST));
        let per_namespace = Quota::with_period(NAMESPACE_PERIOD)
            .unwrap_or_else(|| Quota::per_second(NonZeroU32::MIN))
            .allow_burst(burst(NAMESPACE_BURST));
        Self {
            settings,
            kube,
            metrics,
            limiter: RateLimiter::direct(quota),
            namespaces: RateLimiter::keyed(per_namespace),
            state: Mutex::new(State::default()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The mount of `volume` succeeded: its target is mounted, and its
    /// pod's failure series (if any) is over.
    pub fn mounted(&self, volume: &Volume) {
        let mut st = self.lock();
        if st.mounted.len() >= MAX_TRACKED && !st.mounted.contains_key(&volume.target) {
            forget_oldest(&mut st.mounted, |t| *t);
        }
        st.mounted.insert(volume.target.clone(), Instant::now());
        if !st.series.is_empty()
            && let Some(pod) = volume.pod.clone()
        {
            st.series.remove(&VolumeKey {
                pod,
                target: volume.target.clone(),
            });
        }
    }

    /// The mount of `volume` failed with `message` (the status users read)
    /// and error `code`. If it was a remount, the failure is counted and,
    /// within the rate limits, written as an event on the pod.
    pub async fn failed(self: &Arc<Self>, volume: &Volume, code: &'static str, message: &str) {
        let known = volume.remount || self.lock().mounted.contains_key(&volume.target);
        if !known && !has_files(&volume.target).await {
            return;
        }
        self.metrics.rotation_failure(code);
        tracing::warn!(
            code,
            "a rotation (remount of a mounted volume) failed; the pod keeps its previous files"
        );
        if !self.settings.enabled {
            return;
        }
        let Some(pod) = volume.pod.clone() else { return };
        let key = VolumeKey {
            pod,
            target: volume.target.clone(),
        };
        let note = cap_message(message.to_string(), MAX_NOTE);
        let Some(write) = self.decide(&key, note) else { return };
        let this = self.clone();
        tokio::spawn(async move { this.write(key, write).await });
    }

    /// Counts a failure into the volume's series and says what to write
    /// now, if anything.
    fn decide(&self, key: &VolumeKey, note: String) -> Option<Write> {
        let now = Instant::now();
        let mut st = self.lock();
        if st.series.len() >= MAX_TRACKED && !st.series.contains_key(key) {
            forget_oldest(&mut st.series, |s| s.last_failure);
        }
        st.generations += 1;
        let generation = st.generations;
        let series = st
            .series
            .entry(key.clone())
            .or_insert_with(|| Series::new(generation, note.clone(), now));
        let due = !series.writing
            && series
                .last_write
                .is_none_or(|t| now.duration_since(t) >= self.settings.interval);
        if series.note != note {
            if !due {
                // Another error before this volume's event may be written
                // again: it will show once the interval has passed.
                self.metrics.rotation_event("aggregated");
                return None;
            }
            *series = Series::new(generation, note, now);
        }
        series.count = series.count.saturating_add(1);
        series.last_failure = now;
        if !due {
            self.metrics.rotation_event("aggregated");
            return None;
        }
        if self.namespaces.check_key(&key.pod.namespace).is_err() || self.limiter.check().is_err() {
            self.metrics.rotation_event("rate_limited");
            return None;
        }
        series.writing = true;
        series.last_write = Some(now);
        let action = match &series.event {
            Some(name) => Action::Patch {
                name: name.clone(),
                count: series.count,
            },
            None => Action::Create(Box::new(self.event(&key.pod, &series.note))),
        };
        Some(Write {
            generation: series.generation,
            action,
        })
    }

    /// The event of a first failure.
    fn event(&self, pod: &PodRef, note: &str) -> Event {
        // A DNS subdomain of at most 253 bytes: the pod's name, cut, and a
        // random suffix.
        let mut base: String = pod.name.chars().take(200).collect();
        base.make_ascii_lowercase();
        Event {
            metadata: ObjectMeta {
                name: Some(format!("{base}.{:016x}", rand::random::<u64>())),
                namespace: Some(pod.namespace.clone()),
                ..ObjectMeta::default()
            },
            event_time: Some(MicroTime(k8s_openapi::jiff::Timestamp::now())),
            reporting_controller: Some(CONTROLLER.to_string()),
            reporting_instance: Some(self.settings.instance.chars().take(128).collect()),
            action: Some(ACTION.to_string()),
            reason: Some(REASON.to_string()),
            type_: Some("Warning".to_string()),
            note: Some(note.to_string()),
            regarding: Some(ObjectReference {
                api_version: Some("v1".to_string()),
                kind: Some("Pod".to_string()),
                namespace: Some(pod.namespace.clone()),
                name: Some(pod.name.clone()),
                uid: (!pod.uid.is_empty()).then(|| pod.uid.clone()),
                ..ObjectReference::default()
            }),
            ..Event::default()
        }
    }

    /// Writes an event, then records the outcome in the volume's series
    /// (unless the series was replaced meanwhile).
    async fn write(&self, key: VolumeKey, write: Write) {
        let namespace = &key.pod.namespace;
        let (result, created) = match write.action {
            Action::Create(event) => match self.kube.create_event(namespace, &event).await {
                Ok(name) => (Ok("created"), Some(name)),
                Err(e) => (Err(e), None),
            },
            Action::Patch { name, count } => {
                let patch = serde_json::json!({
                    "series": {
                        "count": count,
                        "lastObservedTime": MicroTime(k8s_openapi::jiff::Timestamp::now()),
                    }
                });
                match self.kube.patch_event(namespace, &name, patch).await {
                    Ok(()) => (Ok("updated"), None),
                    Err(e) => (Err(e), None),
                }
            }
        };
        let mut st = self.lock();
        let series = st.series.get_mut(&key).filter(|s| s.generation == write.generation);
        match result {
            Ok(outcome) => {
                self.metrics.rotation_event(outcome);
                if let Some(s) = series {
                    s.writing = false;
                    if created.is_some() {
                        s.event = created;
                    }
                }
            }
            Err(e) => {
                self.metrics.rotation_event("failed");
                tracing::warn!(
                    namespace = %Escaped(&key.pod.namespace),
                    pod = %Escaped(&key.pod.name),
                    error = %Escaped(&e),
                    "could not record the SecretRotationFailed event (check the events create/patch RBAC)"
                );
                // The next failure that is due creates the event anew,
                // with the failures counted so far.
                if let Some(s) = series {
                    s.writing = false;
                    s.event = None;
                }
            }
        }
    }

    /// Forgets targets not mounted and series without a failure for an
    /// hour; returns how many.
    pub fn sweep(&self) -> usize {
        let now = Instant::now();
        let mut st = self.lock();
        let before = st.mounted.len() + st.series.len();
        st.mounted.retain(|_, t| now.duration_since(*t) < FORGET_AFTER);
        st.series
            .retain(|_, s| s.writing || now.duration_since(s.last_failure) < FORGET_AFTER);
        let after = st.mounted.len() + st.series.len();
        drop(st);
        self.namespaces.retain_recent();
        self.namespaces.shrink_to_fit();
        before - after
    }
}

/// Removes the entry of `map` with the oldest time.
fn forget_oldest<K: Clone + Eq + std::hash::Hash, V>(map: &mut HashMap<K, V>, time: impl Fn(&V) -> Instant) {
    if let Some(k) = map.iter().min_by_key(|(_, v)| time(v)).map(|(k, _)| k.clone()) {
        map.remove(&k);
    }
}

/// Whether `target` is a directory with an entry (a mounted volume).
async fn has_files(target: &str) -> bool {
    if target.is_empty() || !Path::new(target).is_absolute() {
        return false;
    }
    match tokio::fs::read_dir(target).await {
        Ok(mut entries) => matches!(entries.next_entry().await, Ok(Some(_))),
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::keys;

    #[tokio::test]
    async fn the_pod_is_read_from_the_driver_attributes() {
        let attrs = serde_json::json!({
            keys::POD_NAMESPACE: "shop",
            keys::POD_NAME: "orders-7d9f",
            keys::POD_UID: "0d1e",
            keys::OBJECTS: "- objectName: x",
        });
        let req = MountRequest {
            attributes: attrs.to_string(),
            target_path: "/var/lib/kubelet/pods/0d1e/volumes/x/mount".into(),
            ..MountRequest::default()
        };
        let metrics = Arc::new(Metrics::default());
        let kube = kube::Client::try_from(kube::Config::new("http://127.0.0.1:1".parse().expect("uri")))
            .map(|c| {
                KubeClient::new(
                    c,
                    crate::kube::KubeSettings {
                        qps: 5.0,
                        burst: 10,
                        timeout: std::time::Duration::from_secs(1),
                    },
                    metrics.clone(),
                )
            })
            .expect("client");
        let events = RotationEvents::new(EventSettings::default(), kube, metrics);
        let pod = Volume::of(&req).pod;
        assert_eq!(
            pod,
            Some(PodRef {
                namespace: "shop".into(),
                name: "orders-7d9f".into(),
                uid: "0d1e".into()
            })
        );
        let event = events.event(pod.as_ref().expect("pod"), "note");
        let name = event.metadata.name.expect("name");
        assert!(
            name.starts_with("orders-7d9f.") && name.len() == "orders-7d9f.".len() + 16,
            "{name}"
        );
        let long = PodRef {
            name: "P".repeat(253),
            ..PodRef::clone(pod.as_ref().expect("pod"))
        };
        let name = events.event(&long, "note").metadata.name.expect("name");
        assert!(name.len() <= 253 && name.starts_with("ppp"), "{name}");
        let req = MountRequest {
            attributes: "not json".into(),
            ..req
        };
        assert_eq!(Volume::of(&req).pod, None);
    }
}
