//! The atomic whole-mount writer, used by the provider in provider-writes
//! mode and by the `mount` debug client the way the driver uses its own.
//!
//! The layout is the kubelet/driver atomic-writer layout, so either writer
//! can take over a volume the other wrote:
//!
//! ```text
//! target/..2026_11_23_10_00_00.123456789/   the payload (a fresh directory)
//! target/..data -> ..2026_11_23_...          swapped atomically by rename
//! target/<name> -> ..data/<name>             one link per top-level entry
//! ```
//!
//! Nothing is visible until every file is written; a failure removes the new
//! directory and leaves the volume as it was; links of files no longer in
//! the payload are removed. Symlinks found in the target are never followed:
//! they are replaced or removed. Entries starting with `..` are reserved for
//! the writer (the driver rejects payload paths that start with `..`).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use rand::Rng;

use super::FileOut;
use crate::spec::paths::{PathRule, check_relative_path};

const DATA: &str = "..data";
const DATA_TMP: &str = "..data_tmp";
const LINK_TMP: &str = "..link_tmp";

/// Whether the writer changed anything.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteOutcome {
    Written,
    Unchanged,
    /// A mount that started later already wrote this target: this older
    /// content was not written over it.
    Superseded,
}

/// Serializes the writes to each target directory. A mount enters the gate
/// of its target when it starts; writes to one target run one at a time,
/// and a mount whose write comes after that of a mount that started later
/// (a cancelled mount finishing after its retry) does not overwrite it.
#[derive(Default)]
pub struct WriteGates {
    gates: Arc<Mutex<HashMap<PathBuf, Arc<Gate>>>>,
    tickets: AtomicU64,
}

#[derive(Default)]
struct Gate {
    /// The ticket of the last write, held while writing.
    last_written: Mutex<u64>,
}

/// A mount's place at its target's gate (held from the start of the mount
/// to the end of its write).
pub struct GateTicket {
    gates: Arc<Mutex<HashMap<PathBuf, Arc<Gate>>>>,
    target: PathBuf,
    gate: Option<Arc<Gate>>,
    ticket: u64,
}

impl WriteGates {
    /// Enters the gate of `target`.
    pub fn enter(&self, target: &Path) -> GateTicket {
        let ticket = self.tickets.fetch_add(1, Ordering::Relaxed) + 1;
        let gate = self
            .gates
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(target.to_path_buf())
            .or_default()
            .clone();
        GateTicket {
            gates: self.gates.clone(),
            target: target.to_path_buf(),
            gate: Some(gate),
            ticket,
        }
    }

    /// Targets with a mount in flight.
    pub fn len(&self) -> usize {
        self.gates.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl GateTicket {
    /// Writes `files` into the target, after any write in progress there,
    /// unless a later mount already wrote it. Blocking.
    pub fn write(&self, files: &[FileOut], opts: WriteOptions) -> Result<WriteOutcome, WriteError> {
        let Some(gate) = &self.gate else {
            return write_atomic(&self.target, files, opts);
        };
        let mut last = gate.last_written.lock().unwrap_or_else(|e| e.into_inner());
        if *last > self.ticket {
            return Ok(WriteOutcome::Superseded);
        }
        let outcome = write_atomic(&self.target, files, opts)?;
        *last = self.ticket;
        Ok(outcome)
    }
}

impl Drop for GateTicket {
    fn drop(&mut self) {
        let Some(gate) = self.gate.take() else { return };
        let mut gates = self.gates.lock().unwrap_or_else(|e| e.into_inner());
        // The map's reference and ours: no other mount of this target is in
        // flight, so its gate can go.
        if Arc::strong_count(&gate) == 2 {
            gates.remove(&self.target);
        }
    }
}

/// Writer options.
#[derive(Debug, Clone, Copy, Default)]
pub struct WriteOptions {
    /// On an unchanged payload, still bump the target directory's mtime (the
    /// driver's rotation gate keys on it, as it does for a rewrite).
    pub touch_when_unchanged: bool,
}

/// A failed write. The volume is unchanged unless `Swap` says otherwise.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error("target path {0} is not a directory")]
    NotADirectory(PathBuf),
    #[error("target path {path}: {source}")]
    Target {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("invalid file path {path:?}: {rule}")]
    InvalidPath { path: String, rule: PathRule },
    #[error("failed to write {path} in {target}: {source}")]
    File {
        target: PathBuf,
        path: String,
        #[source]
        source: io::Error,
    },
    #[error("failed to publish the new content of {target}: {source}")]
    Swap {
        target: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// Writes `files` into `target` atomically. Duplicate paths collapse, the
/// last one wins (as in the driver).
pub fn write_atomic(target: &Path, files: &[FileOut], opts: WriteOptions) -> Result<WriteOutcome, WriteError> {
    let target_err = |source| WriteError::Target {
        path: target.to_path_buf(),
        source,
    };
    let meta = fs::symlink_metadata(target).map_err(target_err)?;
    if !meta.is_dir() {
        return Err(WriteError::NotADirectory(target.to_path_buf()));
    }
    let mut payload: BTreeMap<&str, &FileOut> = BTreeMap::new();
    for f in files {
        check_relative_path(&f.path).map_err(|rule| WriteError::InvalidPath {
            path: f.path.clone(),
            rule,
        })?;
        payload.insert(f.path.as_str(), f);
    }
    let tops: BTreeSet<&str> = payload.keys().map(|p| top_component(p)).collect();

    let old_dir = current_data_dir(target);
    if let Some(old) = &old_dir
        && is_unchanged(target, old, &payload, &tops)
    {
        if opts.touch_when_unchanged {
            File::open(target)
                .and_then(|f| f.set_modified(SystemTime::now()))
                .map_err(target_err)?;
        }
        return Ok(WriteOutcome::Unchanged);
    }

    let (new_name, new_path) = create_version_dir(target).map_err(target_err)?;
    if let Err(e) = fill(target, &new_path, &payload) {
        let _ = fs::remove_dir_all(&new_path);
        return Err(e);
    }

    let swap_err = |source| WriteError::Swap {
        target: target.to_path_buf(),
        source,
    };
    // A real directory in the way of a top-level link (from an older
    // per-file writer) must go; regular files are replaced by rename below.
    for t in &tops {
        let p = target.join(t);
        if let Ok(m) = fs::symlink_metadata(&p)
            && m.is_dir()
        {
            fs::remove_dir_all(&p).map_err(swap_err)?;
        }
    }
    let data_tmp = target.join(DATA_TMP);
    let _ = fs::remove_file(&data_tmp);
    symlink(&new_name, &data_tmp).map_err(swap_err)?;
    fs::rename(&data_tmp, target.join(DATA)).map_err(swap_err)?;

    for t in &tops {
        let link = target.join(t);
        let want = PathBuf::from(format!("{DATA}/{t}"));
        if fs::read_link(&link).is_ok_and(|cur| cur == want) {
            continue;
        }
        let tmp = target.join(LINK_TMP);
        let _ = fs::remove_file(&tmp);
        symlink(&want, &tmp).map_err(swap_err)?;
        fs::rename(&tmp, &link).map_err(swap_err)?;
    }

    for name in stale_links(target, &tops) {
        let _ = fs::remove_file(target.join(name));
    }
    remove_old_versions(target, &new_name);
    Ok(WriteOutcome::Written)
}

fn top_component(path: &str) -> &str {
    path.split('/').next().unwrap_or(path)
}

/// The version directory `..data` points at, if it is one of ours.
fn current_data_dir(target: &Path) -> Option<String> {
    let link = fs::read_link(target.join(DATA)).ok()?;
    let name = link.to_str()?;
    (name.starts_with("..") && !name.contains('/') && name != DATA).then(|| name.to_string())
}

fn create_version_dir(target: &Path) -> io::Result<(String, PathBuf)> {
    let stamp = humantime::format_rfc3339_seconds(SystemTime::now())
        .to_string()
        .trim_end_matches('Z')
        .replace(['-', 'T', ':'], "_");
    let mut rng = rand::rng();
    for _ in 0..16 {
        let name = format!("..{stamp}.{:09}", rng.random_range(0..1_000_000_000u32));
        let path = target.join(&name);
        match fs::create_dir(&path) {
            Ok(()) => {
                fs::set_permissions(&path, fs::Permissions::from_mode(0o755))?;
                return Ok((name, path));
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
    Err(io::Error::new(
        io::ErrorKind::AlreadyExists,
        "no free version directory name",
    ))
}

fn fill(target: &Path, dir: &Path, payload: &BTreeMap<&str, &FileOut>) -> Result<(), WriteError> {
    for (path, f) in payload {
        let err = |source| WriteError::File {
            target: target.to_path_buf(),
            path: path.to_string(),
            source,
        };
        let full = dir.join(path);
        if let Some(parent) = full.parent()
            && parent != dir
        {
            fs::create_dir_all(parent).map_err(err)?;
        }
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(f.mode)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&full)
            .map_err(err)?;
        file.write_all(f.contents.expose()).map_err(err)?;
        file.set_permissions(fs::Permissions::from_mode(f.mode)).map_err(err)?;
        file.sync_all().map_err(err)?;
    }
    Ok(())
}

/// Whether the current version holds exactly this payload (paths, modes,
/// bytes) and every top-level link is in place.
fn is_unchanged(target: &Path, old: &str, payload: &BTreeMap<&str, &FileOut>, tops: &BTreeSet<&str>) -> bool {
    let old_dir = target.join(old);
    let mut existing = Vec::new();
    if list_files(&old_dir, &mut existing).is_err() {
        return false;
    }
    if existing.len() != payload.len() {
        return false;
    }
    for rel in &existing {
        let Some(f) = payload.get(rel.as_str()) else {
            return false;
        };
        let full = old_dir.join(rel);
        let Ok(meta) = fs::symlink_metadata(&full) else {
            return false;
        };
        if meta.permissions().mode() & 0o7777 != f.mode || meta.len() != f.contents.len() as u64 {
            return false;
        }
        let mut current = Vec::with_capacity(f.contents.len());
        let read = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&full)
            .and_then(|mut h| h.read_to_end(&mut current));
        let same = read.is_ok() && current == f.contents.expose();
        zeroize::Zeroize::zeroize(&mut current);
        if !same {
            return false;
        }
    }
    let links_ok = tops
        .iter()
        .all(|t| fs::read_link(target.join(t)).is_ok_and(|cur| cur == Path::new(&format!("{DATA}/{t}"))));
    links_ok && stale_links(target, tops).is_empty()
}

/// Regular files below `dir`, as relative paths; symlinks are not followed.
/// Walks with an explicit stack (no recursion, however deep the tree).
fn list_files(dir: &Path, out: &mut Vec<String>) -> io::Result<()> {
    let mut pending = vec![(dir.to_path_buf(), String::new())];
    while let Some((dir, prefix)) = pending.pop() {
        for entry in fs::read_dir(&dir)? {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let rel = if prefix.is_empty() {
                name
            } else {
                format!("{prefix}/{name}")
            };
            let ty = entry.file_type()?;
            if ty.is_dir() {
                pending.push((entry.path(), rel));
            } else if ty.is_file() {
                out.push(rel);
            } else {
                return Err(io::Error::other("unexpected entry"));
            }
        }
    }
    Ok(())
}

/// Top-level links into `..data` whose names are not in the payload.
fn stale_links(target: &Path, tops: &BTreeSet<&str>) -> Vec<String> {
    let Ok(entries) = fs::read_dir(target) else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        .filter_map(|e| {
            let name = e.file_name().to_str()?.to_string();
            if name.starts_with("..") || tops.contains(name.as_str()) {
                return None;
            }
            let link = fs::read_link(e.path()).ok()?;
            link.to_str()?.starts_with("..data/").then_some(name)
        })
        .collect()
}

/// Removes version directories other than `keep` (the previous version, and
/// any left behind by an interrupted write).
fn remove_old_versions(target: &Path, keep: &str) {
    let Ok(entries) = fs::read_dir(target) else { return };
    for e in entries.filter_map(Result::ok) {
        let Some(name) = e.file_name().to_str().map(str::to_string) else {
            continue;
        };
        let is_version = name.starts_with("..") && name[2..].starts_with(|c: char| c.is_ascii_digit());
        if is_version && name != keep && e.file_type().is_ok_and(|t| t.is_dir()) {
            let _ = fs::remove_dir_all(e.path());
        }
    }
}
