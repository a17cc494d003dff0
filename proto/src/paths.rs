//! Checks on file names that come from metainfo.
//!
//! Invariant: a path that passes [`check_components`] joined under a
//! download directory stays inside it, on Unix and on Windows. Each
//! component is a single, plain name: not empty, not `.` or `..`, with no
//! separator, NUL, or drive prefix.

/// Why a file name from metainfo is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    /// A path with no components at all.
    #[error("empty path")]
    Empty,
    /// An empty component, as in `a//b`.
    #[error("empty path component")]
    EmptyComponent,
    /// `.` or `..`, which could climb out of the download directory.
    #[error("path component {0:?} is not allowed")]
    DotComponent(String),
    /// A `/` or `\` inside one component, which would make it absolute or
    /// let it climb out.
    #[error("path component {0:?} contains a path separator")]
    Separator(String),
    /// A NUL byte, which truncates names in the OS.
    #[error("path component {0:?} contains a NUL byte")]
    Nul(String),
    /// A Windows drive prefix such as `C:`.
    #[error("path component {0:?} contains a drive prefix")]
    Drive(String),
}

/// Checks one path component.
pub fn check_component(c: &str) -> Result<(), PathError> {
    if c.is_empty() {
        return Err(PathError::EmptyComponent);
    }
    if c == "." || c == ".." {
        return Err(PathError::DotComponent(c.to_owned()));
    }
    if c.contains('\0') {
        return Err(PathError::Nul(c.escape_default().to_string()));
    }
    if c.contains('/') || c.contains('\\') {
        return Err(PathError::Separator(c.to_owned()));
    }
    if c.contains(':') && c.len() >= 2 && c.as_bytes()[1] == b':' {
        return Err(PathError::Drive(c.to_owned()));
    }
    Ok(())
}

/// Checks every component of a relative path.
pub fn check_components<S: AsRef<str>>(components: &[S]) -> Result<(), PathError> {
    if components.is_empty() {
        return Err(PathError::Empty);
    }
    components
        .iter()
        .try_for_each(|c| check_component(c.as_ref()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_plain_names() {
        assert!(check_components(&["dir", "sub dir", "file.img"]).is_ok());
        assert!(check_components(&["..hidden", "a..b"]).is_ok());
    }

    #[test]
    fn refuses_escapes() {
        let bad: &[&[&str]] = &[
            &[],
            &[""],
            &["a", ""],
            &[".."],
            &["a", "..", "b"],
            &["."],
            &["/etc/passwd"],
            &["a/b"],
            &["a\\..\\b"],
            &["a\0b"],
            &["C:evil"],
        ];
        for p in bad {
            assert!(check_components(p).is_err(), "accepted {p:?}");
        }
    }
}
