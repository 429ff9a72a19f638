//! Finds the cgroup v2 hierarchy (from /proc/self/mountinfo; never a hard-coded path), and
//! mounts one when the host has none.

use std::{
    fs, io,
    path::{Path, PathBuf},
};

use thiserror::Error;

#[derive(Debug, Error)]
pub enum Cgroup2Error {
    #[error("reading /proc/self/mountinfo")]
    MountInfo(#[source] io::Error),
    #[error(
        "no cgroup v2 hierarchy is mounted and mounting one at {path} failed ({source}); \
         fix: `mount -t cgroup2 none /sys/fs/cgroup/unified` (or boot with \
         systemd.unified_cgroup_hierarchy=1)"
    )]
    Mount {
        path: PathBuf,
        #[source]
        source: nix::Error,
    },
    #[error("opening the cgroup v2 root {path}")]
    Open {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// Where the cgroup v2 root was found, and whether the agent mounted it itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cgroup2Root {
    pub path: PathBuf,
    pub mounted_by_us: bool,
}

/// Returns the mount point of the first cgroup2 file system in `mountinfo` text.
pub fn find_in_mountinfo(mountinfo: &str) -> Option<PathBuf> {
    mountinfo.lines().find_map(|line| {
        // "36 25 0:31 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw": fields after " - ".
        let (pre, post) = line.split_once(" - ")?;
        let fstype = post.split_whitespace().next()?;
        if fstype != "cgroup2" {
            return None;
        }
        let root = pre.split_whitespace().nth(3)?;
        // A bind mount of a sub-cgroup is not the root of the hierarchy.
        if root != "/" {
            return None;
        }
        let mount_point = pre.split_whitespace().nth(4)?;
        Some(PathBuf::from(unescape_octal(mount_point)))
    })
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
fn unescape_octal(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\'
            && i + 3 < bytes.len() + 1
            && bytes
                .get(i + 1..i + 4)
                .is_some_and(|d| d.iter().all(|c| (b'0'..=b'7').contains(c)))
        {
            let v = (bytes[i + 1] - b'0') * 64 + (bytes[i + 2] - b'0') * 8 + (bytes[i + 3] - b'0');
            out.push(v);
            i += 4;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Finds the cgroup v2 root, mounting it under `fallback` if none is mounted.
pub fn find_or_mount(fallback: &Path) -> Result<Cgroup2Root, Cgroup2Error> {
    let mountinfo = fs::read_to_string("/proc/self/mountinfo").map_err(Cgroup2Error::MountInfo)?;
    if let Some(path) = find_in_mountinfo(&mountinfo) {
        return Ok(Cgroup2Root {
            path,
            mounted_by_us: false,
        });
    }
    let mount = || -> nix::Result<()> {
        fs::create_dir_all(fallback)
            .map_err(|e| nix::Error::from_raw(e.raw_os_error().unwrap_or(libc::EIO)))?;
        nix::mount::mount(
            Some("cgroup2"),
            fallback,
            Some("cgroup2"),
            nix::mount::MsFlags::MS_NOSUID
                | nix::mount::MsFlags::MS_NODEV
                | nix::mount::MsFlags::MS_NOEXEC,
            None::<&str>,
        )
    };
    mount().map_err(|source| Cgroup2Error::Mount {
        path: fallback.to_owned(),
        source,
    })?;
    Ok(Cgroup2Root {
        path: fallback.to_owned(),
        mounted_by_us: true,
    })
}

/// Only looks: the mount point, if any (for `doctor`).
pub fn find() -> Result<Option<PathBuf>, Cgroup2Error> {
    let mountinfo = fs::read_to_string("/proc/self/mountinfo").map_err(Cgroup2Error::MountInfo)?;
    Ok(find_in_mountinfo(&mountinfo))
}

pub fn open(root: &Path) -> Result<fs::File, Cgroup2Error> {
    fs::File::open(root).map_err(|source| Cgroup2Error::Open {
        path: root.to_owned(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID: &str = "\
25 30 0:23 / /sys rw,nosuid,nodev,noexec,relatime shared:7 - sysfs sysfs rw
31 25 0:26 / /sys/fs/cgroup ro,nosuid,nodev,noexec shared:9 - tmpfs tmpfs ro,mode=755
32 31 0:27 / /sys/fs/cgroup/unified rw,nosuid,nodev,noexec,relatime shared:10 - cgroup2 cgroup2 rw,nsdelegate
33 31 0:28 / /sys/fs/cgroup/systemd rw,nosuid - cgroup cgroup rw,xattr,name=systemd
";

    #[test]
    fn finds_hybrid_layout() {
        assert_eq!(
            find_in_mountinfo(HYBRID),
            Some(PathBuf::from("/sys/fs/cgroup/unified"))
        );
    }

    #[test]
    fn finds_pure_v2_and_skips_sub_cgroup_bind_mounts() {
        let info = "\
40 30 0:35 /docker/abc /sys/fs/cgroup rw - cgroup2 cgroup2 rw
41 30 0:35 / /run/my\\040cgroup rw - cgroup2 cgroup2 rw
";
        assert_eq!(
            find_in_mountinfo(info),
            Some(PathBuf::from("/run/my cgroup"))
        );
    }

    #[test]
    fn none_when_only_v1() {
        let info = "33 31 0:28 / /sys/fs/cgroup/cpu rw - cgroup cgroup rw,cpu\n";
        assert_eq!(find_in_mountinfo(info), None);
    }
}
