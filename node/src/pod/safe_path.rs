//! Paths the agent builds from object fields (namespace, pod, container and volume names, item paths,
//! subPaths, working directories). The apiserver validates them, but the agent checks them again, so that an
//! object written before that validation, or straight into the store, cannot reach outside its pod's
//! directory: a name is exactly one path segment, a relative path only descends, and a directory inside a
//! volume the guest can write (where it may have planted symlinks) must resolve inside that volume.

use std::path::{Component, Path, PathBuf};

/// A path that would leave the directory it belongs in.
#[derive(Debug, thiserror::Error)]
pub enum UnsafePath {
    /// A name that is not one plain path segment.
    #[error(
        "{what} {name:?} is not a valid name: it must be one path segment, not empty, \".\" or \"..\""
    )]
    Name {
        /// What the name is of (`volume`, `container`...).
        what: &'static str,
        /// The name.
        name: String,
    },
    /// A relative path that is absolute or climbs with `..`.
    #[error("{what} {path:?} must be a relative path that does not contain '..'")]
    Relative {
        /// What the path is (`subPath`, `items path`...).
        what: &'static str,
        /// The path.
        path: String,
    },
    /// A path that resolves (through symlinks) outside its volume.
    #[error("{what} {path:?} resolves outside its volume")]
    Escapes {
        /// What the path is.
        what: &'static str,
        /// The path.
        path: String,
    },
    /// The file system refused.
    #[error("{what} {path:?}: {source}")]
    Io {
        /// What the path is.
        what: &'static str,
        /// The path.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// `name` if it is one plain path segment: not empty, not `.` or `..`, without `/`, `\` or NUL.
pub fn segment<'a>(what: &'static str, name: &'a str) -> Result<&'a str, UnsafePath> {
    let plain =
        !name.is_empty() && name != "." && name != ".." && !name.contains(['/', '\\', '\0']);
    if plain {
        Ok(name)
    } else {
        Err(UnsafePath::Name {
            what,
            name: name.to_owned(),
        })
    }
}

/// `base` joined with `relative`, which must only descend (no root, no `..`, no empty or NUL).
pub fn descend(base: &Path, what: &'static str, relative: &str) -> Result<PathBuf, UnsafePath> {
    let bad = || UnsafePath::Relative {
        what,
        path: relative.to_owned(),
    };
    if relative.is_empty() || relative.contains('\0') {
        return Err(bad());
    }
    let mut path = base.to_path_buf();
    for component in Path::new(relative).components() {
        match component {
            Component::Normal(part) => path.push(part),
            Component::CurDir => {}
            Component::ParentDir | Component::RootDir | Component::Prefix(_) => return Err(bad()),
        }
    }
    Ok(path)
}

/// Creates `relative` as a directory inside `root` (a volume a guest may have written symlinks into) and
/// returns its resolved path, refusing one that leads outside `root`. The directories are made through a
/// handle on `root` that cannot be walked out of, so a planted symlink never makes the agent create anything
/// outside.
pub fn directory_within(
    root: &Path,
    what: &'static str,
    relative: &str,
    create: bool,
) -> Result<PathBuf, UnsafePath> {
    let io = |source: std::io::Error| UnsafePath::Io {
        what,
        path: relative.to_owned(),
        source,
    };
    let joined = descend(root, what, relative)?;
    if create {
        // The volume's own directory is the agent's (under the pod's directory); what is inside is the guest's.
        std::fs::create_dir_all(root).map_err(io)?;
        let dir =
            cap_std::fs::Dir::open_ambient_dir(root, cap_std::ambient_authority()).map_err(io)?;
        let inside = joined.strip_prefix(root).unwrap_or(Path::new(""));
        dir.create_dir_all(inside).map_err(|e| {
            if e.kind() == std::io::ErrorKind::PermissionDenied {
                UnsafePath::Escapes {
                    what,
                    path: relative.to_owned(),
                }
            } else {
                io(e)
            }
        })?;
    }
    let resolved = joined.canonicalize().map_err(io)?;
    let root = root.canonicalize().map_err(io)?;
    if resolved.starts_with(&root) {
        Ok(resolved)
    } else {
        Err(UnsafePath::Escapes {
            what,
            path: relative.to_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_name_is_one_plain_segment() {
        assert_eq!(segment("volume", "data").ok(), Some("data"));
        for bad in ["", ".", "..", "../../../../tmp/x", "a/b", "a\\b", "a\0"] {
            assert!(segment("volume", bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_relative_path_only_descends() {
        let base = Path::new("/data/pod");
        assert_eq!(
            descend(base, "subPath", "a/./b").unwrap(),
            Path::new("/data/pod/a/b")
        );
        for bad in ["", "/etc", "../x", "a/../../x", "a/.."] {
            assert!(descend(base, "subPath", bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_planted_symlink_cannot_lead_the_agent_out_of_a_volume() {
        let scratch = tempfile::tempdir().unwrap();
        let volume = scratch.path().join("volume");
        let outside = scratch.path().join("outside");
        std::fs::create_dir_all(&volume).unwrap();
        std::fs::create_dir_all(&outside).unwrap();
        std::os::unix::fs::symlink(&outside, volume.join("link")).unwrap();
        let made = directory_within(&volume, "workingDir", "link/made", true);
        assert!(made.is_err(), "{made:?}");
        assert!(!outside.join("made").exists());
        let existing = directory_within(&volume, "subPath", "link", false);
        assert!(
            matches!(existing, Err(UnsafePath::Escapes { .. })),
            "{existing:?}"
        );
        let fine = directory_within(&volume, "workingDir", "work/dir", true).unwrap();
        assert!(fine.ends_with("volume/work/dir") && fine.is_dir());
    }
}
