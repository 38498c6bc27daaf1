//! The atomic whole-mount writer: content appears all at once, a failure
//! changes nothing, removed objects disappear, symlinks in the target are
//! never followed, and an unchanged payload is not rewritten.

use std::fs;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::Path;
use std::time::{Duration, SystemTime};

use csi_provider_aws::render::FileOut;
use csi_provider_aws::render::write::{WriteError, WriteOptions, WriteOutcome, write_atomic};
use csi_provider_aws::secret::SecretBytes;

fn file(path: &str, mode: u32, contents: &str) -> FileOut {
    FileOut {
        path: path.into(),
        mode,
        contents: SecretBytes::from(contents.to_string()),
    }
}

fn read(dir: &Path, rel: &str) -> String {
    fs::read_to_string(dir.join(rel)).unwrap()
}

fn version_dirs(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("..2"))
        .collect();
    v.sort();
    v
}

#[test]
fn files_are_published_through_the_data_link_with_their_modes() {
    let t = tempfile::tempdir().unwrap();
    let out = write_atomic(
        t.path(),
        &[file("a", 0o600, "A"), file("dir/b", 0o644, "B")],
        WriteOptions::default(),
    )
    .unwrap();
    assert_eq!(out, WriteOutcome::Written);
    assert_eq!(read(t.path(), "a"), "A");
    assert_eq!(read(t.path(), "dir/b"), "B");
    assert_eq!(
        fs::metadata(t.path().join("a")).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert_eq!(fs::read_link(t.path().join("a")).unwrap(), Path::new("..data/a"));
    assert_eq!(fs::read_link(t.path().join("dir")).unwrap(), Path::new("..data/dir"));
    assert_eq!(version_dirs(t.path()).len(), 1);
}

#[test]
fn a_failed_write_leaves_the_previous_content_untouched() {
    let t = tempfile::tempdir().unwrap();
    write_atomic(t.path(), &[file("a", 0o644, "old")], WriteOptions::default()).unwrap();
    let before = version_dirs(t.path());
    // "x" as a file and "x/y" needing "x" as a directory cannot both exist.
    let err = write_atomic(
        t.path(),
        &[file("a", 0o644, "new"), file("x", 0o644, "1"), file("x/y", 0o644, "2")],
        WriteOptions::default(),
    )
    .unwrap_err();
    assert!(matches!(err, WriteError::File { .. }), "{err}");
    assert_eq!(read(t.path(), "a"), "old");
    assert!(!t.path().join("x").exists());
    assert_eq!(version_dirs(t.path()), before, "the half-written version is removed");
}

#[test]
fn files_no_longer_in_the_payload_are_removed() {
    let t = tempfile::tempdir().unwrap();
    write_atomic(
        t.path(),
        &[file("keep", 0o644, "k"), file("gone", 0o644, "g")],
        WriteOptions::default(),
    )
    .unwrap();
    write_atomic(t.path(), &[file("keep", 0o644, "k2")], WriteOptions::default()).unwrap();
    assert!(fs::symlink_metadata(t.path().join("gone")).is_err());
    assert_eq!(read(t.path(), "keep"), "k2");
    assert_eq!(version_dirs(t.path()).len(), 1, "the previous version is deleted");
}

#[test]
fn symlinks_in_the_target_are_replaced_not_followed() {
    let t = tempfile::tempdir().unwrap();
    let outside = tempfile::tempdir().unwrap();
    let victim = outside.path().join("victim");
    fs::write(&victim, "untouched").unwrap();
    symlink(&victim, t.path().join("secret")).unwrap();
    symlink(outside.path(), t.path().join("dir")).unwrap();
    write_atomic(
        t.path(),
        &[file("secret", 0o644, "value"), file("dir/inner", 0o644, "v")],
        WriteOptions::default(),
    )
    .unwrap();
    assert_eq!(fs::read_to_string(&victim).unwrap(), "untouched");
    assert!(!outside.path().join("inner").exists());
    assert_eq!(read(t.path(), "secret"), "value");
    assert_eq!(
        fs::read_link(t.path().join("secret")).unwrap(),
        Path::new("..data/secret")
    );
}

#[test]
fn regular_files_and_directories_from_an_older_writer_are_taken_over() {
    let t = tempfile::tempdir().unwrap();
    fs::write(t.path().join("legacy"), "from-the-old-provider").unwrap();
    fs::create_dir(t.path().join("legacydir")).unwrap();
    fs::write(t.path().join("legacydir/f"), "x").unwrap();
    fs::write(t.path().join("unrelated"), "stays").unwrap();
    write_atomic(
        t.path(),
        &[file("legacy", 0o644, "new"), file("legacydir/f", 0o644, "y")],
        WriteOptions::default(),
    )
    .unwrap();
    assert_eq!(read(t.path(), "legacy"), "new");
    assert_eq!(read(t.path(), "legacydir/f"), "y");
    assert_eq!(
        read(t.path(), "unrelated"),
        "stays",
        "entries not ours and not in the payload stay"
    );
}

#[test]
fn an_unchanged_payload_is_not_rewritten_but_can_bump_the_mtime() {
    let t = tempfile::tempdir().unwrap();
    let files = [file("a", 0o644, "same")];
    write_atomic(t.path(), &files, WriteOptions::default()).unwrap();
    let data = fs::read_link(t.path().join("..data")).unwrap();
    let old = SystemTime::now() - Duration::from_secs(3600);
    fs::File::open(t.path()).unwrap().set_modified(old).unwrap();

    assert_eq!(
        write_atomic(t.path(), &files, WriteOptions::default()).unwrap(),
        WriteOutcome::Unchanged
    );
    assert_eq!(fs::read_link(t.path().join("..data")).unwrap(), data);
    let mtime = fs::metadata(t.path()).unwrap().modified().unwrap();
    assert!(
        mtime < SystemTime::now() - Duration::from_secs(1800),
        "driver behaviour: mtime untouched"
    );

    let touch = WriteOptions {
        touch_when_unchanged: true,
    };
    assert_eq!(write_atomic(t.path(), &files, touch).unwrap(), WriteOutcome::Unchanged);
    let mtime = fs::metadata(t.path()).unwrap().modified().unwrap();
    assert!(
        mtime > SystemTime::now() - Duration::from_secs(60),
        "provider-writes: mtime bumped for the rotation gate"
    );

    // A mode change alone is a change.
    assert_eq!(
        write_atomic(t.path(), &[file("a", 0o600, "same")], WriteOptions::default()).unwrap(),
        WriteOutcome::Written
    );
}

#[test]
fn payload_paths_the_driver_would_reject_are_refused() {
    let t = tempfile::tempdir().unwrap();
    for bad in ["../x", "/abs", "a/../b", "..data", "a//b", "./a", ""] {
        let err = write_atomic(t.path(), &[file(bad, 0o644, "x")], WriteOptions::default()).unwrap_err();
        assert!(matches!(err, WriteError::InvalidPath { .. }), "{bad}: {err}");
    }
    assert_eq!(fs::read_dir(t.path()).unwrap().count(), 0);
}

#[test]
fn a_target_that_is_not_a_directory_is_refused() {
    let t = tempfile::tempdir().unwrap();
    let f = t.path().join("file");
    fs::write(&f, "x").unwrap();
    assert!(matches!(
        write_atomic(&f, &[file("a", 0o644, "x")], WriteOptions::default()),
        Err(WriteError::NotADirectory(_))
    ));
    let link = t.path().join("link");
    symlink(t.path(), &link).unwrap();
    assert!(matches!(
        write_atomic(&link, &[file("a", 0o644, "x")], WriteOptions::default()),
        Err(WriteError::NotADirectory(_))
    ));
}

#[test]
fn leftovers_of_an_interrupted_write_are_cleaned_up() {
    let t = tempfile::tempdir().unwrap();
    fs::create_dir(t.path().join("..2020_01_01_00_00_00.123")).unwrap();
    write_atomic(t.path(), &[file("a", 0o644, "x")], WriteOptions::default()).unwrap();
    assert_eq!(version_dirs(t.path()).len(), 1);
}

// === concurrent mounts of one target ===

#[test]
fn concurrent_writes_to_one_target_are_serialized_and_leave_a_consistent_volume() {
    use csi_provider_aws::render::write::WriteGates;
    use std::sync::Arc;
    let dir = tempfile::tempdir().unwrap();
    let gates = Arc::new(WriteGates::default());
    let threads: Vec<_> = (0..8)
        .map(|i| {
            let (gates, target) = (gates.clone(), dir.path().to_path_buf());
            std::thread::spawn(move || {
                for round in 0..20 {
                    let ticket = gates.enter(&target);
                    let v = format!("writer-{i}-round-{round}");
                    let files = [file("a", 0o644, &v), file("b/c", 0o600, &v)];
                    ticket.write(&files, WriteOptions::default()).unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    // Whatever write came last, both files hold the same mount's content,
    // exactly one version directory is left, and no gate is kept.
    assert_eq!(read(dir.path(), "a"), read(dir.path(), "b/c"));
    assert_eq!(version_dirs(dir.path()).len(), 1);
    assert!(gates.is_empty());
}

#[test]
fn a_mount_that_started_earlier_does_not_overwrite_a_later_one() {
    use csi_provider_aws::render::write::WriteGates;
    let dir = tempfile::tempdir().unwrap();
    let gates = WriteGates::default();
    // A cancelled mount (entered first) finishes after its retry.
    let cancelled = gates.enter(dir.path());
    let retry = gates.enter(dir.path());
    assert_eq!(
        retry
            .write(&[file("s", 0o644, "new")], WriteOptions::default())
            .unwrap(),
        WriteOutcome::Written
    );
    assert_eq!(
        cancelled
            .write(&[file("s", 0o644, "old")], WriteOptions::default())
            .unwrap(),
        WriteOutcome::Superseded
    );
    assert_eq!(read(dir.path(), "s"), "new");
    drop((cancelled, retry));
    assert!(gates.is_empty(), "the gate goes with the last mount of the target");
    // A new mount of the target writes again.
    let next = gates.enter(dir.path());
    next.write(&[file("s", 0o644, "newer")], WriteOptions::default())
        .unwrap();
    assert_eq!(read(dir.path(), "s"), "newer");
}
