//! Checks shared by the fuzz targets: what every accepted request, object
//! list and error message must satisfy, whatever the input.

use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::HashSet;
use std::path::{Component, Path};
use std::sync::atomic::{AtomicUsize, Ordering};

use csi_provider_aws::limits::Limits;
use csi_provider_aws::spec::objects::parse_file_permission;
use csi_provider_aws::spec::paths::{MAX_COMPONENT_LEN, MAX_PATH_LEN, check_relative_path};
use csi_provider_aws::spec::{MountSpec, ObjectKind, ObjectSpec, PathTranslation, arn, keys, yaml};
use csi_provider_aws::{jmes, region};

/// Longest error message any parser may return (bytes). User input is
/// echoed truncated (`limits::ECHO_MAX`), so a message is its fixed text
/// plus a few short echoes, whatever the size of the input.
pub const MAX_MESSAGE: usize = 2048;

/// The token the seeds carry. No error message and no `Debug` output of a
/// parsed request may show it, unless the input also has it somewhere that
/// is echoed (an object name, a region, the target path).
pub const TOKEN_CANARY: &str = "tok-canary-5e8b";
/// The secret value the seeds carry: a render error never shows it.
pub const VALUE_CANARY: &str = "val-canary-3c1d";

/// The target path of the targets that do not fuzz it.
pub const TARGET_PATH: &str = "/var/lib/kubelet/pods/0d1e/volumes/kubernetes.io~csi/secrets/mount";

/// An error message: bounded, whatever the input.
pub fn check_message(what: &str, message: &str) {
    assert!(
        message.len() <= MAX_MESSAGE,
        "{what}: an error message of {} bytes (more than {MAX_MESSAGE}): {:?}",
        message.len(),
        message.chars().take(400).collect::<String>()
    );
}

/// A relative path the writer accepts: no way out of the mount, nothing the
/// driver would refuse. Checked independently of `check_relative_path`.
pub fn check_safe_path(file: &str) {
    assert!(check_relative_path(file).is_ok(), "{file:?}");
    assert!(!file.is_empty() && file.len() <= MAX_PATH_LEN, "{file:?}");
    assert!(!file.contains('\0'), "{file:?}");
    assert!(!file.starts_with('/'), "{file:?}");
    assert!(!file.starts_with(".."), "{file:?}: the writer's reserved prefix");
    for c in file.split('/') {
        assert!(
            !c.is_empty() && c != "." && c != ".." && c.len() <= MAX_COMPONENT_LEN,
            "{file:?}"
        );
    }
    for c in Path::new(file).components() {
        assert!(matches!(c, Component::Normal(_)), "{file:?}: {c:?}");
    }
    let mount = Path::new("/mnt/secrets");
    assert!(mount.join(file).starts_with(mount), "{file:?}");
}

/// An accepted object list: within the limits, every file safe, distinct
/// and never both a file and a directory, names and types consistent.
pub fn check_objects(objects: &[ObjectSpec], translation: PathTranslation, limits: &Limits) {
    assert!(!objects.is_empty());
    let files: usize = objects.iter().map(|o| 1 + o.jmes.len()).sum();
    assert!(files <= limits.max_files, "{files} files");
    let mut seen = HashSet::new();
    for o in objects {
        assert!(!o.name.is_empty());
        // An object that selects many is named by a description of its
        // selection (bounded by the fields it is made of).
        let name = o.bulk.is_none().then_some(&o.name);
        for field in [name, o.alias.as_ref(), o.version.as_ref(), o.version_label.as_ref()]
            .into_iter()
            .flatten()
        {
            assert!(
                !field.is_empty() && field.len() <= limits.max_name_length,
                "{} bytes",
                field.len()
            );
        }
        assert!(o.mode <= 0o777, "{:o}", o.mode);
        match &o.bulk {
            None => assert_eq!(o.file, translation.file_name(o.alias.as_deref().unwrap_or(&o.name))),
            Some(_) => assert_eq!(
                o.file,
                o.alias.as_deref().map(|a| translation.file_name(a)).unwrap_or_default()
            ),
        }
        if let Some(a) = arn::parse(&o.name) {
            assert_eq!(arn::kind_of_service(a.service), Some(o.kind), "{}", o.name);
        } else {
            assert!(!arn::is_arn(&o.name), "{}: an ARN that does not parse", o.name);
        }
        if o.kind == ObjectKind::Ssm {
            assert!(o.version.is_none() || o.version_label.is_none());
        }
        if let Some(f) = &o.failover {
            assert!(o.alias.is_some());
            assert!(!f.name.is_empty() && f.name.len() <= limits.max_name_length);
            assert_eq!(f.version, o.version);
            if let Some(a) = arn::parse(&f.name) {
                assert_eq!(arn::kind_of_service(a.service), Some(o.kind), "{}", f.name);
            }
        }
        for j in &o.jmes {
            assert!(j.mode <= 0o777);
            assert!(!j.alias.is_empty() && j.alias.len() <= limits.max_name_length);
            assert_eq!(j.file, translation.file_name(&j.alias));
            let text = j.path.as_str();
            assert!(text.len() <= limits.max_jmespath_length);
            assert!(jmes::nesting(text) <= limits.max_jmespath_depth);
        }
        // The files known before fetching: a bulk object's are its matches,
        // a jsonKeysAsFiles object's own file is a directory of keys (both
        // checked by render).
        let own = (o.bulk.is_none() && !o.json_keys).then_some(&o.file);
        for file in own.into_iter().chain(o.jmes.iter().map(|j| &j.file)) {
            check_safe_path(file);
            if let PathTranslation::Replace(c) = translation
                && c != '/'
            {
                assert!(!file.contains('/'), "{file:?} under {translation:?}");
            }
            assert!(seen.insert(file.clone()), "{file:?} written twice");
        }
    }
    // No file sits where another needs a directory.
    for file in &seen {
        let mut prefix = String::new();
        let parts: Vec<&str> = file.split('/').collect();
        for part in &parts[..parts.len() - 1] {
            if !prefix.is_empty() {
                prefix.push('/');
            }
            prefix.push_str(part);
            assert!(
                !seen.contains(&prefix),
                "{prefix:?} is a file and a directory of {file:?}"
            );
        }
    }
}

/// An accepted request.
pub fn check_spec(spec: &MountSpec, limits: &Limits) {
    assert!(spec.target_path.is_absolute());
    assert!(spec.default_mode <= 0o777);
    assert!(!spec.token.is_empty());
    for r in [&spec.region, &spec.failover_region].into_iter().flatten() {
        assert!(region::is_region_name(r), "{r:?}");
    }
    check_objects(&spec.objects, spec.translation, limits);
}

/// Whether the token canary may show in what a request echoes: only if it
/// is in the request outside the token map.
pub fn canary_elsewhere(attributes: &str, secrets: &str, others: &[&str]) -> bool {
    let outside_tokens = |text: &str| -> bool {
        if !text.contains("canary-5e8b") {
            return false;
        }
        match serde_json::from_str::<std::collections::HashMap<String, String>>(text) {
            Ok(map) => map
                .iter()
                .any(|(k, v)| k.contains("canary-5e8b") || (k != keys::TOKENS && v.contains("canary-5e8b"))),
            // Not a map of strings: the parse error carries a position only.
            Err(_) => false,
        }
    };
    outside_tokens(attributes) || outside_tokens(secrets) || others.iter().any(|o| o.contains("canary-5e8b"))
}

/// Checks that neither an error nor the parsed request shows the token.
pub fn check_no_token(result: &Result<MountSpec, csi_provider_aws::spec::SpecError>) {
    let shown = match result {
        Ok(spec) => format!("{spec:?}"),
        Err(e) => e.to_string(),
    };
    assert!(!shown.contains("canary-5e8b"), "the token shows: {shown:?}");
}

/// What the YAML pre-scan promises for the parser that builds values: once
/// a text passes it, the value built from it has no more nodes than the
/// text allows without aliases (no expansion), and nests no deeper than
/// the scan allows.
pub fn check_yaml_is_bounded(text: &str) {
    let bounds = yaml::Bounds::of("objects", &csi_provider_aws::limits::Limits::default());
    // What a reader holds while it scans was bounded beforehand, whether it
    // accepts the text or not (measured when the target counts
    // allocations).
    let base = LIVE.load(Ordering::Relaxed);
    PEAK.store(base, Ordering::Relaxed);
    let scanned = yaml::prescan(text, &bounds);
    let held = PEAK.load(Ordering::Relaxed).saturating_sub(base) as u64;
    assert!(
        held <= yaml::scan_bytes(text),
        "scanning {} bytes held {held} bytes, {} announced",
        text.len(),
        yaml::scan_bytes(text)
    );
    let Ok(scan) = scanned else {
        return;
    };
    // So was what building values from it holds.
    let base = LIVE.load(Ordering::Relaxed);
    PEAK.store(base, Ordering::Relaxed);
    let loaded = yaml::load(text);
    let held = PEAK.load(Ordering::Relaxed).saturating_sub(base) as u64;
    assert!(
        held <= scan.parse_bytes(),
        "building values from {} bytes held {held} bytes, {} announced",
        text.len(),
        scan.parse_bytes()
    );
    let Ok(value) = loaded else {
        return;
    };
    let mut nodes = 0usize;
    let mut max_depth = 0usize;
    let mut stack = vec![(&value, 0usize)];
    while let Some((v, depth)) = stack.pop() {
        // A tag (`!custom x`) wraps its node: one node, as the scan counts.
        if let serde_yaml::Value::Tagged(t) = v {
            stack.push((&t.value, depth));
            continue;
        }
        nodes += 1;
        max_depth = max_depth.max(depth);
        match v {
            serde_yaml::Value::Sequence(items) => stack.extend(items.iter().map(|i| (i, depth + 1))),
            serde_yaml::Value::Mapping(m) => {
                for (k, v) in m {
                    stack.push((k, depth + 1));
                    stack.push((v, depth + 1));
                }
            }
            _ => {}
        }
    }
    // Aliases expand, within what the pre-scan counted (merge keys move
    // nodes, they do not add any).
    assert!(
        nodes as u64 <= scan.nodes.max(1) && scan.nodes <= bounds.nodes,
        "{nodes} YAML nodes, {} counted by the pre-scan (at most {})",
        scan.nodes,
        bounds.nodes
    );
    assert!(
        max_depth <= yaml::MAX_DEPTH,
        "YAML nesting {max_depth} passed the pre-scan (limit {})",
        yaml::MAX_DEPTH
    );
}

/// `filePermission` accepted: exactly four octal digits, a plain mode.
pub fn check_file_permission(p: &str) {
    match parse_file_permission(p) {
        Ok(mode) => {
            assert!(mode <= 0o777);
            assert_eq!(format!("{mode:04o}"), p);
        }
        Err(e) => check_message("filePermission", &e.to_string()),
    }
}

/// Runs `f(data)` on a thread with the smallest stack the provider parses
/// and renders on (2 MiB: tokio's worker and blocking threads), so deep
/// recursion fails here as it would in the provider. The thread is kept
/// for the whole run.
pub fn on_small_stack(f: fn(&[u8]), data: &[u8]) {
    use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
    use std::sync::{Mutex, OnceLock};
    type Job = (fn(&[u8]), Vec<u8>);
    static WORKER: OnceLock<Mutex<(SyncSender<Job>, Receiver<()>)>> = OnceLock::new();
    let worker = WORKER.get_or_init(|| {
        let (job_tx, job_rx) = sync_channel::<Job>(0);
        let (done_tx, done_rx) = sync_channel::<()>(0);
        std::thread::Builder::new()
            .name("small-stack".into())
            .stack_size(SMALL_STACK)
            .spawn(move || {
                while let Ok((f, data)) = job_rx.recv() {
                    f(&data);
                    if done_tx.send(()).is_err() {
                        return;
                    }
                }
            })
            .unwrap_or_else(|e| panic!("spawn: {e}"));
        Mutex::new((job_tx, done_rx))
    });
    let guard = worker.lock().unwrap_or_else(|e| e.into_inner());
    guard.0.send((f, data.to_vec())).unwrap_or_else(|e| panic!("send: {e}"));
    guard.1.recv().unwrap_or_else(|e| panic!("the worker died: {e}"));
}

/// The stack of [`on_small_stack`].
pub const SMALL_STACK: usize = 2 << 20;

/// Counts the bytes the process holds, and the most it held since the last
/// reset (a target installs it as its `#[global_allocator]`).
pub struct Counting;

pub static LIVE: AtomicUsize = AtomicUsize::new(0);
pub static PEAK: AtomicUsize = AtomicUsize::new(0);

fn grew(n: usize) {
    let now = LIVE.fetch_add(n, Ordering::Relaxed) + n;
    PEAK.fetch_max(now, Ordering::Relaxed);
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            grew(layout.size());
        }
        p
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            grew(layout.size());
        }
        p
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) };
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            // Both blocks may be live while the bytes move.
            grew(new_size);
            LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        }
        p
    }
}
