//! Files written beside their final name, then renamed into place (Parquet files, the metrics
//! file), created so that nothing planted in the directory can redirect the write.
//!
//! A temporary file is created new (`O_CREAT|O_EXCL`, and `O_NOFOLLOW`) under a name with a
//! random part: a symlink or file planted at a name we will use makes the creation pick
//! another name, never write through the link. The final rename replaces whatever sits at the
//! final name (a planted link is replaced, its target untouched). An unfinished temporary file
//! is removed when dropped; one left by a killed process is the repair's to sweep.

use std::fs::{File, OpenOptions};
use std::io;
use std::path::Path;
use tempfile::NamedTempFile;

/// Random characters in a temporary name: 62^10 names, so one cannot be planted in advance.
pub const RANDOM_CHARS: usize = 10;

/// Creates `<dir>/<prefix><random><suffix>`, new, never through a link. The mode is the usual
/// `0666` less the umask, as `File::create` would give: analysts read the files.
pub fn create_beside(dir: &Path, prefix: &str, suffix: &str) -> io::Result<NamedTempFile> {
    tempfile::Builder::new()
        .prefix(prefix)
        .suffix(suffix)
        .rand_bytes(RANDOM_CHARS)
        .make_in(dir, open_new)
}

/// Opens a file that must not exist yet; a link at `path` is an error, never followed.
fn open_new(path: &Path) -> io::Result<File> {
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(target_os = "linux")]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32);
    }
    options.open(path)
}

/// How a spool directory's name starts: then the owner's pid, `.`, a random part.
const SPOOL_PREFIX: &str = "receipt-exporter-spool.";

/// A new directory of this process's own under the system's temporary directory (`TMPDIR`),
/// `receipt-exporter-spool.<pid>.<random>`, where files for an object store are written before
/// their upload; removed when dropped. Spool directories left by processes that no longer
/// exist (a SIGKILL) are removed first.
pub fn spool_dir() -> io::Result<tempfile::TempDir> {
    let tmp = std::env::temp_dir();
    if let Ok(entries) = std::fs::read_dir(&tmp) {
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(pid) = name
                .to_str()
                .and_then(|n| n.strip_prefix(SPOOL_PREFIX))
                .and_then(|rest| rest.split_once('.'))
                .and_then(|(pid, _)| pid.parse::<u32>().ok())
            else {
                continue;
            };
            if !Path::new(&format!("/proc/{pid}")).exists() {
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
    }
    tempfile::Builder::new()
        .prefix(&format!("{SPOOL_PREFIX}{}.", std::process::id()))
        .rand_bytes(RANDOM_CHARS)
        .tempdir_in(&tmp)
}

/// Whether `part` looks like the random part of a name made by [`create_beside`].
pub fn is_random_part(part: &str) -> bool {
    part.len() == RANDOM_CHARS && part.bytes().all(|b| b.is_ascii_alphanumeric())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_planted_link_is_never_written_through() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        std::fs::write(&victim, b"precious").unwrap();
        // A link at the exact name is refused by O_EXCL|O_NOFOLLOW, whatever it points at.
        let planted = dir.path().join(".x.tmp");
        std::os::unix::fs::symlink(&victim, &planted).unwrap();
        let err = open_new(&planted).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AlreadyExists);
        // Names carry a random part and never reuse an existing one.
        let mut file = create_beside(dir.path(), ".x.", ".tmp").unwrap();
        io::Write::write_all(&mut file, b"new").unwrap();
        let name = file
            .path()
            .file_name()
            .unwrap()
            .to_str()
            .unwrap()
            .to_string();
        let random = name
            .strip_prefix(".x.")
            .unwrap()
            .strip_suffix(".tmp")
            .unwrap();
        assert!(is_random_part(random), "{name}");
        assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
        // Dropped unfinished, the temporary file goes away.
        let path = file.path().to_path_buf();
        drop(file);
        assert!(!path.exists());
    }
}
