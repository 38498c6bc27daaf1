//! The audit record: one line per mount under the log target
//! `csi_provider_aws::audit`, saying which pod (node, namespace, name, UID,
//! ServiceAccount) read which version of which object (full ARN, or an SSM
//! parameter's name), as which role, from which region, and where the value
//! came from (AWS, the value cache, the last good value during a brownout),
//! or how its mount failed. Never a value, a token or an external id.
//!
//! The record is filled in as the mount goes ([`Audit`]) and written once
//! it has answered, or when it is dropped unanswered (the driver went away:
//! outcome `cancelled`). In the text log format its lists are JSON text; the
//! JSON log format ([`AuditJson`]) writes them as JSON arrays, so a log
//! pipeline indexes `fields.read[].arn` without parsing a string. Every
//! string in a record is escaped as in every log line (control and
//! direction characters), and at most `--audit-max-objects` objects are
//! listed: past that the record counts the rest.

use std::fmt;
use std::sync::Arc;

use serde::Serialize;
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::time::FormatTime;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

use crate::fetched::Fetched;
use crate::identity::{IdentityKey, Signers};
use crate::limits::escaped;
use crate::spec::{MountSpec, ObjectKind, ObjectSpec};
use crate::telemetry::Metrics;

/// The log target of audit records.
pub const TARGET: &str = "csi_provider_aws::audit";

/// Default `--audit-max-objects`.
pub const DEFAULT_MAX_OBJECTS: usize = 100;

/// How mounts are audited.
#[derive(Debug, Clone)]
pub struct AuditSettings {
    /// Write a record per mount (`--audit-log`).
    pub enabled: bool,
    /// Objects listed in one record (`--audit-max-objects`).
    pub max_objects: usize,
    /// This node (`NODE_NAME`).
    pub node: Option<String>,
    /// The cluster (`--cluster-name`).
    pub cluster: Option<String>,
}

impl Default for AuditSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            max_objects: DEFAULT_MAX_OBJECTS,
            node: None,
            cluster: None,
        }
    }
}

/// One object as a record lists it.
#[derive(Debug, Clone, Serialize)]
struct Read {
    service: &'static str,
    /// The full ARN (an SSM parameter's name when AWS gave no ARN).
    arn: String,
    /// `VersionId`, the parameter's version number, or the certificate's
    /// serial.
    version: String,
    region: String,
    /// `aws`, `cache` or `last-good`.
    source: &'static str,
    /// The role the object was read as, when it is not the pod's own.
    #[serde(skip_serializing_if = "Option::is_none")]
    role: Option<String>,
}

/// An object a failed mount asked for.
#[derive(Debug, Clone, Serialize)]
struct Requested {
    service: &'static str,
    name: String,
}

/// What one mount's record says, filled in step by step; written by
/// [`Audit::finish`], or as it drops if the mount never finished.
pub struct Audit {
    settings: Arc<AuditSettings>,
    metrics: Arc<Metrics>,
    written: bool,
    namespace: Option<String>,
    pod: Option<String>,
    pod_uid: Option<String>,
    service_account: Option<String>,
    identity: Option<&'static str>,
    roles: Vec<String>,
    requested: Vec<Requested>,
    read: Vec<Read>,
    /// Objects of the class (asked) and values read (matches included).
    asked: usize,
    values: usize,
    /// Values read by service and source, for the metric.
    tally: Vec<((&'static str, &'static str), u64)>,
}

/// The service label of an object.
fn service(kind: ObjectKind) -> &'static str {
    match kind {
        ObjectKind::SecretsManager => "secretsmanager",
        ObjectKind::Ssm => "ssm",
        ObjectKind::Acm => "acm",
    }
}

impl Audit {
    /// The record of a mount starting now.
    pub fn new(settings: &Arc<AuditSettings>, metrics: Arc<Metrics>) -> Self {
        Self {
            settings: settings.clone(),
            metrics,
            written: false,
            namespace: None,
            pod: None,
            pod_uid: None,
            service_account: None,
            identity: None,
            roles: Vec::new(),
            requested: Vec::new(),
            read: Vec::new(),
            asked: 0,
            values: 0,
            tally: Vec::new(),
        }
    }

    /// The pod as the driver names it, before the request is parsed (a
    /// mount refused while parsing is still attributed).
    pub fn pod(&mut self, namespace: &str, name: &str, uid: &str) {
        self.namespace = Some(escaped(namespace));
        self.pod = Some(escaped(name));
        self.pod_uid = Some(escaped(uid));
    }

    /// The pod (where the driver's names were not read before) and the
    /// objects it asks for, once the request is parsed.
    pub fn requested(&mut self, spec: &MountSpec) {
        if self.pod.is_none() {
            self.namespace = spec.pod.namespace.as_deref().map(escaped);
            self.pod = spec.pod.name.as_deref().map(escaped);
            self.pod_uid = spec.pod.uid.as_deref().map(escaped);
        }
        self.service_account = spec.pod.service_account.as_deref().map(escaped);
        self.asked = spec.objects.len();
        self.requested = spec
            .objects
            .iter()
            .take(self.settings.max_objects)
            .map(|o| Requested {
                service: service(o.kind),
                name: escaped(&o.name),
            })
            .collect();
    }

    /// The identity and every role the mount uses.
    pub fn signers(&mut self, signers: &Signers) {
        let (identity, role) = match &signers.pod.0 {
            IdentityKey::Irsa { role, .. } => ("irsa", Some(role)),
            IdentityKey::PodIdentity { .. } => ("pod-identity", None),
            IdentityKey::Chained { role, .. } => ("chained", Some(role)),
        };
        self.identity = Some(identity);
        self.roles = role
            .into_iter()
            .chain(signers.chained.iter().map(|(r, _)| &r.arn))
            .map(|r| escaped(r))
            .fold(Vec::new(), |mut roles, r| {
                if !roles.contains(&r) {
                    roles.push(r);
                }
                roles
            });
    }

    /// What was read for each object (each match of an object that selects
    /// many), in object order; counted in `metrics` once the mount's outcome
    /// is known.
    pub fn read(&mut self, objects: &[ObjectSpec], values: &[Fetched]) {
        let max = self.settings.max_objects;
        for (o, v) in objects.iter().zip(values) {
            let role = o.assume_role.as_ref().map(|r| escaped(&r.arn));
            let one = |v: &Fetched| Read {
                service: service(o.kind),
                arn: escaped(&v.origin.arn),
                version: escaped(&v.version),
                region: escaped(&v.origin.region),
                source: v.origin.source.as_str(),
                role: role.clone(),
            };
            let values: Vec<&Fetched> = if o.bulk.is_some() {
                v.members.iter().map(|(_, m)| m).collect()
            } else {
                vec![v]
            };
            for v in values {
                self.values += 1;
                let key = (service(o.kind), v.origin.source.as_str());
                match self.tally.iter_mut().find(|(k, _)| *k == key) {
                    Some((_, n)) => *n += 1,
                    None => self.tally.push((key, 1)),
                }
                if self.read.len() < max {
                    self.read.push(one(v));
                }
            }
        }
    }

    /// Writes the record of a mount that answered `outcome` (`Ok`, or the
    /// error code), and counts what it read.
    pub fn finish(mut self, outcome: Result<(), &'static str>) {
        let label = if outcome.is_ok() { "success" } else { "error" };
        self.write(label, outcome.err().unwrap_or_default());
    }

    fn write(&mut self, label: &'static str, code: &'static str) {
        self.written = true;
        for &((service, source), n) in &self.tally {
            self.metrics.objects_read(service, source, label, n);
        }
        let settings = &self.settings;
        if !settings.enabled {
            return;
        }
        let requested = match label {
            "success" => String::new(),
            _ => json(&self.requested),
        };
        let text = |v: &Option<String>| v.as_deref().map(escaped).unwrap_or_default();
        tracing::info!(
            target: TARGET,
            parent: None,
            node = %text(&settings.node),
            cluster = %text(&settings.cluster),
            namespace = %self.namespace.as_deref().unwrap_or_default(),
            pod = %self.pod.as_deref().unwrap_or_default(),
            pod_uid = %self.pod_uid.as_deref().unwrap_or_default(),
            service_account = %self.service_account.as_deref().unwrap_or_default(),
            identity = %self.identity.unwrap_or_default(),
            roles = %json(&self.roles),
            outcome = %label,
            code = %code,
            objects = self.asked as u64,
            values = self.values as u64,
            omitted = (self.values - self.read.len()) as u64,
            read = %json(&self.read),
            requested = %requested,
            "mount"
        );
    }
}

/// A mount dropped before it answered (the driver cancelled the call or
/// went away) still leaves its record.
impl Drop for Audit {
    fn drop(&mut self) {
        if !self.written {
            self.write("cancelled", "Cancelled");
        }
    }
}

/// A list as JSON text (the record's list fields).
fn json<T: Serialize>(list: &[T]) -> String {
    serde_json::to_string(list).unwrap_or_default()
}

/// The fields of a record whose values are JSON text.
const LIST_FIELDS: [&str; 3] = ["roles", "read", "requested"];

/// The JSON log format, with audit records written as JSON objects whose
/// lists are arrays; every other event as `inner` writes it.
pub struct AuditJson<F>(pub F);

impl<S, N, F> FormatEvent<S, N> for AuditJson<F>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(&self, ctx: &FmtContext<'_, S, N>, mut writer: Writer<'_>, event: &Event<'_>) -> fmt::Result {
        if event.metadata().target() != TARGET {
            return self.0.format_event(ctx, writer, event);
        }
        // The fields in the event's order, as the JSON format writes them.
        let mut fields = Vec::new();
        event.record(&mut Fields(&mut fields));
        for (name, value) in &mut fields {
            if !LIST_FIELDS.contains(&name.as_str()) {
                continue;
            }
            let list = match &*value {
                serde_json::Value::String(t) if t.is_empty() => serde_json::Value::Array(Vec::new()),
                serde_json::Value::String(t) => serde_json::from_str(t).unwrap_or(serde_json::Value::Null),
                _ => continue,
            };
            *value = list;
        }
        let mut timestamp = String::new();
        tracing_subscriber::fmt::time::SystemTime.format_time(&mut Writer::new(&mut timestamp))?;
        let fields: Vec<String> = fields
            .iter()
            .map(|(name, value)| format!("{}:{value}", serde_json::Value::from(name.as_str())))
            .collect();
        writeln!(
            writer,
            "{{\"timestamp\":{},\"level\":{},\"fields\":{{{}}},\"target\":{}}}",
            serde_json::Value::from(timestamp),
            serde_json::Value::from(event.metadata().level().to_string()),
            fields.join(","),
            serde_json::Value::from(TARGET)
        )
    }
}

/// Collects an event's fields as JSON values, in order.
struct Fields<'a>(&'a mut Vec<(String, serde_json::Value)>);

impl tracing::field::Visit for Fields<'_> {
    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        self.0.push((field.name().to_string(), value.into()));
    }

    fn record_u64(&mut self, field: &tracing::field::Field, value: u64) {
        self.0.push((field.name().to_string(), value.into()));
    }

    fn record_i64(&mut self, field: &tracing::field::Field, value: i64) {
        self.0.push((field.name().to_string(), value.into()));
    }

    fn record_bool(&mut self, field: &tracing::field::Field, value: bool) {
        self.0.push((field.name().to_string(), value.into()));
    }

    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn fmt::Debug) {
        self.0.push((field.name().to_string(), format!("{value:?}").into()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    /// A log writer the test reads back.
    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Buffer {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn json_records_keep_their_field_order_and_carry_lists_as_arrays() {
        let buffer = Buffer::default();
        let writer = buffer.clone();
        let subscriber = tracing_subscriber::fmt()
            .json()
            .event_format(AuditJson(tracing_subscriber::fmt::format().json()))
            .with_writer(move || writer.clone())
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            let settings = AuditSettings {
                node: Some("node\u{1b}[2J".to_string()),
                ..AuditSettings::default()
            };
            let mut audit = Audit::new(&Arc::new(settings), Arc::new(Metrics::default()));
            audit.roles = vec!["arn:aws:iam::111122223333:role/orders".to_string()];
            audit.finish(Err("ObjectNotFound"));
            tracing::info!(other = 1, "an ordinary event");
        });
        let text = String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2, "{text}");
        let record: serde_json::Value = serde_json::from_str(lines[0]).unwrap();
        assert_eq!(record["target"], TARGET);
        assert_eq!(record["level"], "INFO");
        let fields = &record["fields"];
        assert_eq!(
            fields["roles"],
            serde_json::json!(["arn:aws:iam::111122223333:role/orders"])
        );
        assert_eq!(
            (&fields["read"], &fields["requested"]),
            (&serde_json::json!([]), &serde_json::json!([]))
        );
        assert_eq!(
            (&fields["outcome"], &fields["code"]),
            (&"error".into(), &"ObjectNotFound".into())
        );
        assert_eq!(fields["node"], "node\\u{1b}[2J", "escaped as in every log line");
        assert!(!lines[0].contains('\u{1b}'));
        // The order of the event, as in the README's example.
        let at = |key: &str| lines[0].find(&format!("\"{key}\":")).unwrap();
        assert!(at("timestamp") < at("level") && at("level") < at("fields") && at("fields") < at("target"));
        let order = [
            "message",
            "node",
            "cluster",
            "namespace",
            "pod",
            "pod_uid",
            "service_account",
            "identity",
        ];
        assert!(order.windows(2).all(|w| at(w[0]) < at(w[1])), "{}", lines[0]);
        let order = [
            "roles",
            "outcome",
            "code",
            "objects",
            "values",
            "omitted",
            "read",
            "requested",
        ];
        assert!(order.windows(2).all(|w| at(w[0]) < at(w[1])), "{}", lines[0]);
        // Other events are the JSON format's own.
        let other: serde_json::Value = serde_json::from_str(lines[1]).unwrap();
        assert_eq!(other["fields"]["message"], "an ordinary event");
        assert_ne!(other["target"], TARGET);
    }
}
