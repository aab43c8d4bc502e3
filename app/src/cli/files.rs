//! Local files, handled so that no data is lost to a typo: outputs are
//! checked against the input and each other before anything is read, are
//! written atomically (a temporary file beside the target, renamed into
//! place), and every error names the user's path and what was being done.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use super::ending;
use super::failed::{Exit, Failed};

/// Whether a path argument is `-`: standard input for an input, standard
/// output for the one primary output.
pub fn is_dash(path: &Path) -> bool {
    path.as_os_str() == "-"
}

/// Refuses `-` for an argument where it means nothing (anything but the
/// input and the primary output): a file named `-` is never what was meant.
pub fn refuse_dash(flag: &str, path: &Path, why: &str) -> Result<(), Failed> {
    if is_dash(path) {
        return Err(Failed::usage(format!(
            "{flag} -: `-` is standard input or output only for the input and --out; {why}"
        )));
    }
    Ok(())
}

/// Refuses an output path that is a directory (or is spelt as one, with a
/// trailing `/`), before anything is read: the rename into place would fail
/// at the end with an OS error instead.
pub fn refuse_directory_output(flag: &str, path: &Path) -> Result<(), Failed> {
    let text = path.as_os_str().to_string_lossy();
    if path.is_dir() || text.ends_with('/') {
        return Err(Failed::usage(format!(
            "{flag} {} is a directory: give the path of a file",
            path.display()
        )));
    }
    Ok(())
}

/// Refuses, before anything is read, standard input or output that is the
/// same file as an output or input named by path (`score - --out f < f`,
/// `score f --out - > f`), as `cat` refuses "input file is output file":
/// device and inode compared, so any spelling of the path is caught.
/// `inputs`/`outputs` are the named files; the flags say which of them is
/// standard input (`-` input) or standard output (`-` output).
pub fn check_std_streams(
    stdin_read: bool,
    stdout_written: bool,
    inputs: &[(&str, &Path)],
    outputs: &[(&str, &Path)],
) -> Result<(), Failed> {
    let stdin = stdin_read.then(|| std_file_id(StdStream::In)).flatten();
    let stdout = stdout_written.then(|| std_file_id(StdStream::Out)).flatten();
    let refuse = |what: String| {
        Err(Failed::usage(format!(
            "{what}: input file is output file, refusing to overwrite it"
        )))
    };
    if let Some(id) = stdin {
        if stdout == Some(id) {
            return refuse("standard input and standard output are the same file".to_owned());
        }
        for (flag, path) in outputs {
            if file_id(path) == Some(id) {
                return refuse(format!("{flag} {} is standard input, the input", path.display()));
            }
        }
    }
    if let Some(id) = stdout {
        for (flag, path) in inputs {
            if file_id(path) == Some(id) {
                return refuse(format!("standard output (--out -) is {flag} {}", path.display()));
            }
        }
        for (flag, path) in outputs {
            if file_id(path) == Some(id) {
                return Err(Failed::usage(format!(
                    "standard output (--out -) and {flag} {} are the same file: give each output its own path",
                    path.display()
                )));
            }
        }
    }
    Ok(())
}

#[derive(Clone, Copy)]
enum StdStream {
    In,
    Out,
}

/// Device and inode of a regular file (pipes and terminals are never one of
/// our named files).
type FileId = (u64, u64);

#[cfg(unix)]
fn std_file_id(stream: StdStream) -> Option<FileId> {
    use std::os::fd::AsFd;
    use std::os::unix::fs::MetadataExt;
    // A duplicate of the descriptor, closed when dropped: fstat without libc.
    let fd = match stream {
        StdStream::In => std::io::stdin().as_fd().try_clone_to_owned(),
        StdStream::Out => std::io::stdout().as_fd().try_clone_to_owned(),
    }
    .ok()?;
    let meta = File::from(fd).metadata().ok()?;
    meta.is_file().then(|| (meta.dev(), meta.ino()))
}

#[cfg(unix)]
fn file_id(path: &Path) -> Option<FileId> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(path).ok()?;
    meta.is_file().then(|| (meta.dev(), meta.ino()))
}

#[cfg(not(unix))]
fn std_file_id(_: StdStream) -> Option<FileId> {
    None
}

#[cfg(not(unix))]
fn file_id(_: &Path) -> Option<FileId> {
    None
}

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

/// Opens an input file; the error names it and what it is. A directory is
/// a wrong argument (status 2), not a file that failed to read.
pub fn open_input(path: &Path, what: &str) -> Result<File, Failed> {
    let file = File::open(path).map_err(|e| {
        Failed::new(
            Exit::Failure,
            anyhow::anyhow!("cannot open the {what} {}: {e}", path.display()),
        )
    })?;
    if file.metadata().is_ok_and(|m| m.is_dir()) {
        return Err(Failed::usage(format!(
            "the {what} {} is a directory: give the path of a file",
            path.display()
        )));
    }
    Ok(file)
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
        let mut f = ending::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        ending::rename(&tmp, path)
    })();
    written.map_err(|e| {
        ending::remove(&tmp);
        write_error(path, what, e)
    })
}
