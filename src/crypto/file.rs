//! Files that hold key material: reading the keyring file only when no one but its
//! owner can access it, and replacing a file atomically with mode 0600.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use zeroize::Zeroizing;

use super::{CryptoError, fill_random};

fn io_err(path: &Path) -> impl Fn(io::Error) -> CryptoError + '_ {
    move |source| CryptoError::Io { path: path.to_path_buf(), source }
}

pub(super) fn key_file_err(path: &Path, reason: String) -> CryptoError {
    CryptoError::KeyFile { path: path.to_path_buf(), reason }
}

pub(super) fn read_private(path: &Path) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
    let mut file = File::open(path).map_err(io_err(path))?;
    let meta = file.metadata().map_err(io_err(path))?;
    if !meta.is_file() {
        return Err(key_file_err(path, "not a regular file".into()));
    }
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        let reason = format!(
            "mode is {mode:04o}, so group or others can access the master keys; \
             run `chmod 600 {}` and try again",
            path.display()
        );
        return Err(key_file_err(path, reason));
    }
    let mut buf = Zeroizing::new(Vec::with_capacity(meta.len() as usize + 1));
    file.read_to_end(&mut buf).map_err(io_err(path))?;
    Ok(buf)
}

fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// Replaces the file at `path` atomically (temp file in the same dir, fsync, rename, fsync
/// of the dir), mode 0600: a reader sees the old file or the new one, never a torn one.
pub fn replace_file(path: &Path, bytes: &[u8]) -> Result<(), CryptoError> {
    write_atomic(path, bytes, true)
}

/// Write to a temp file in the same dir, fsync, then rename (or hard-link
/// when `overwrite` is false, which fails atomically if `path` exists).
pub(super) fn write_atomic(path: &Path, bytes: &[u8], overwrite: bool) -> Result<(), CryptoError> {
    let mut suffix = [0u8; 8];
    fill_random(&mut suffix);
    let name = path.file_name().map_or("keyring".into(), |n| n.to_string_lossy());
    let tmp = parent_dir(path).join(format!(".{name}.tmp-{}", hex::encode(suffix)));
    let res = write_new(&tmp, bytes).and_then(|()| publish(&tmp, path, overwrite));
    if res.is_err() || !overwrite {
        let _ = fs::remove_file(&tmp);
    }
    res?;
    let dir = parent_dir(path);
    File::open(dir).and_then(|d| d.sync_all()).map_err(io_err(dir))
}

fn write_new(tmp: &Path, bytes: &[u8]) -> Result<(), CryptoError> {
    let opts = OpenOptions::new().write(true).create_new(true).mode(0o600).clone();
    let mut f = opts.open(tmp).map_err(io_err(tmp))?;
    f.set_permissions(fs::Permissions::from_mode(0o600))
        .and_then(|()| f.write_all(bytes))
        .and_then(|()| f.sync_all())
        .map_err(io_err(tmp))
}

fn publish(tmp: &Path, path: &Path, overwrite: bool) -> Result<(), CryptoError> {
    if overwrite {
        return fs::rename(tmp, path).map_err(io_err(path));
    }
    fs::hard_link(tmp, path).map_err(|e| match e.kind() {
        io::ErrorKind::AlreadyExists => CryptoError::AlreadyExists(path.to_path_buf()),
        _ => io_err(path)(e),
    })
}
