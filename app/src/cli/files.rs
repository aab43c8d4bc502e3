//! Local files, handled so that no data is lost to a typo: outputs are
//! checked against the input and each other before anything is read, are
//! written atomically (a temporary file beside the target, renamed into
//! place), and every error names the user's path and what was being done.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use super::exit::{Exit, Failed};

/// `dir/name.csv` -> `dir/name.<suffix>`.
pub fn sibling(path: &Path, suffix: &str) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let stem = name.strip_suffix(".csv").unwrap_or(&name);
    path.with_file_name(format!("{stem}.{suffix}"))
}

pub fn temp_beside(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.{:08x}.tmp", rand::random::<u32>()))
}

/// Where `path` is, resolved: symlinks followed, `.` and `..` gone; for a
/// file that does not exist yet, its directory resolved plus its name.
fn resolved(path: &Path) -> Option<PathBuf> {
    if let Ok(p) = std::fs::canonicalize(path) {
        return Some(p);
    }
    let name = path.file_name()?;
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    std::fs::canonicalize(parent).ok().map(|p| p.join(name))
}

/// Whether two paths name the same file (also through hard links).
fn same_file(a: &Path, b: &Path) -> bool {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        if let (Ok(x), Ok(y)) = (std::fs::metadata(a), std::fs::metadata(b)) {
            return x.dev() == y.dev() && x.ino() == y.ino();
        }
    }
    match (resolved(a), resolved(b)) {
        (Some(x), Some(y)) => x == y,
        _ => false,
    }
}

/// Refuses, before anything is read, an output that is the input or
/// another output of the same run (also through a symlink or another
/// spelling of the path).
pub fn check_outputs(input: Option<(&str, &Path)>, outputs: &[(&str, &Path)]) -> Result<(), Failed> {
    for (i, (flag, out)) in outputs.iter().enumerate() {
        if let Some((input_flag, input)) = input
            && same_file(out, input)
        {
            return Err(Failed::usage(format!(
                "{flag} {} is the input ({input_flag} {}): refusing to overwrite it",
                out.display(),
                input.display()
            )));
        }
        for (other_flag, other) in &outputs[..i] {
            if same_file(out, other) {
                return Err(Failed::usage(format!(
                    "{flag} {} and {other_flag} {} are the same file: give each output its own path",
                    out.display(),
                    other.display()
                )));
            }
        }
    }
    Ok(())
}

/// Opens an input file; the error names it and what it is.
pub fn open_input(path: &Path, what: &str) -> Result<File, Failed> {
    File::open(path).map_err(|e| {
        Failed::new(
            Exit::Failure,
            anyhow::anyhow!("cannot open the {what} {}: {e}", path.display()),
        )
    })
}

/// Why writing `path` failed, in the user's terms.
pub fn write_error(path: &Path, what: &str, e: std::io::Error) -> Failed {
    let hint = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() && !dir.is_dir() => {
            format!(" (the directory {} does not exist)", dir.display())
        }
        _ => String::new(),
    };
    Failed::new(
        Exit::Failure,
        anyhow::anyhow!("cannot write the {what} to {}: {e}{hint}", path.display()),
    )
}

/// Writes `bytes` to `path` atomically.
pub fn write_atomically(path: &Path, bytes: &[u8], what: &str) -> Result<(), Failed> {
    let tmp = temp_beside(path);
    let written = (|| {
        let mut f = File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    written.map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        write_error(path, what, e)
    })
}
