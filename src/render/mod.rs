//! Turning fetched values into the files of a mount and their versions:
//! one file per object (alias or translated name), plus one per JMESPath
//! entry, each with its own mode; `object_version` ids are the file names.

pub mod jmes;
pub mod write;

use crate::fetch::Fetched;
use crate::secret::SecretBytes;
use crate::spec::ObjectSpec;

pub use jmes::RenderError;

/// One file of the mount.
#[derive(Debug, Clone)]
pub struct FileOut {
    pub path: String,
    pub mode: u32,
    pub contents: SecretBytes,
}

/// The version of one file, as reported to the driver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Version {
    pub id: String,
    pub version: String,
}

/// The whole content of a mount.
#[derive(Debug, Default)]
pub struct Rendered {
    pub files: Vec<FileOut>,
    pub versions: Vec<Version>,
}

impl Rendered {
    /// Total payload size in bytes.
    pub fn total_bytes(&self) -> usize {
        self.files.iter().map(|f| f.contents.len()).sum()
    }
}

/// Renders fetched values (in object order) into files and versions.
pub fn render(objects: &[ObjectSpec], values: Vec<Fetched>) -> Result<Rendered, RenderError> {
    let mut out = Rendered::default();
    for (object, fetched) in objects.iter().zip(values) {
        for j in &object.jmes {
            let contents = jmes::extract(object, j, &fetched.value)?;
            out.versions.push(Version {
                id: j.file.clone(),
                version: fetched.version.clone(),
            });
            out.files.push(FileOut {
                path: j.file.clone(),
                mode: j.mode,
                contents,
            });
        }
        out.versions.push(Version {
            id: object.file.clone(),
            version: fetched.version.clone(),
        });
        out.files.push(FileOut {
            path: object.file.clone(),
            mode: object.mode,
            contents: fetched.value,
        });
    }
    Ok(out)
}
