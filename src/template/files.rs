//! The files of a mount as templates read them: the `files` object,
//! which records what each template read.

use super::*;

/// The files of a mount, as templates read them.
#[derive(Debug, Default)]
pub struct Files {
    pub(super) entries: BTreeMap<String, Entry>,
}

pub(super) struct Entry {
    pub(super) contents: SecretBytes,
    pub(super) version: String,
    /// The value as the template language sees it, made on first use.
    pub(super) value: Mutex<Option<Value>>,
}

impl Files {
    pub fn new(files: impl IntoIterator<Item = (String, SecretBytes, String)>) -> Self {
        Self {
            entries: files
                .into_iter()
                .map(|(path, contents, version)| {
                    (
                        path,
                        Entry {
                            contents,
                            version,
                            value: Mutex::new(None),
                        },
                    )
                })
                .collect(),
        }
    }

    pub fn contains(&self, name: &str) -> bool {
        self.entries.contains_key(name)
    }
}

impl std::fmt::Debug for Entry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Entry")
            .field("contents", &self.contents)
            .field("version", &self.version)
            .finish_non_exhaustive()
    }
}

/// One template's view of the files: which it read, and the names it asked
/// for that do not exist (constants of the template: an index is always
/// one).
#[derive(Debug)]
pub(super) struct View {
    pub(super) files: Arc<Files>,
    pub(super) read: Mutex<BTreeSet<String>>,
    pub(super) missing: Mutex<BTreeSet<String>>,
}

impl Object for View {
    fn repr(self: &Arc<Self>) -> ObjectRepr {
        ObjectRepr::Map
    }

    fn get_value(self: &Arc<Self>, key: &Value) -> Option<Value> {
        let name = key.as_str()?;
        let Some(entry) = self.files.entries.get(name) else {
            if let Ok(mut m) = self.missing.lock() {
                m.insert(name.to_string());
            }
            return None;
        };
        if let Ok(mut read) = self.read.lock() {
            read.insert(name.to_string());
        }
        let mut value = entry.value.lock().ok()?;
        Some(
            value
                .get_or_insert_with(|| {
                    let bytes = entry.contents.expose();
                    match std::str::from_utf8(bytes) {
                        Ok(s) => Value::from(s),
                        Err(_) => Value::from_bytes(bytes.to_vec()),
                    }
                })
                .clone(),
        )
    }

    fn enumerate(self: &Arc<Self>) -> Enumerator {
        Enumerator::Values(self.files.entries.keys().map(|k| Value::from(k.as_str())).collect())
    }

    fn enumerator_len(self: &Arc<Self>) -> Option<usize> {
        Some(self.files.entries.len())
    }
}
