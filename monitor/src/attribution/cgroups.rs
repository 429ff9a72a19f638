//! cgroup id -> path, by walking the cgroup v2 tree (a cgroup's id is its directory's inode
//! number). Rebuilt at most once per `min_refresh` when an unknown id shows up.

use std::{
    collections::HashMap,
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

pub struct CgroupPaths {
    root: PathBuf,
    by_id: HashMap<u64, String>,
    last_walk: Option<Instant>,
    min_refresh: Duration,
}

/// Deepest level walked: real hierarchies are far shallower; this bounds a hostile one.
const MAX_DEPTH: usize = 32;

impl CgroupPaths {
    pub fn new(root: PathBuf) -> Self {
        Self {
            root,
            by_id: HashMap::new(),
            last_walk: None,
            min_refresh: Duration::from_secs(1),
        }
    }

    /// The path (relative to the cgroup2 root, starting with `/`) of cgroup `id`.
    pub fn path(&mut self, id: u64) -> Option<String> {
        if id == 0 {
            return None;
        }
        if let Some(p) = self.by_id.get(&id) {
            return Some(p.clone());
        }
        if self
            .last_walk
            .is_none_or(|t| t.elapsed() >= self.min_refresh)
        {
            self.walk();
        }
        self.by_id.get(&id).cloned()
    }

    fn walk(&mut self) {
        self.last_walk = Some(Instant::now());
        let mut by_id = HashMap::with_capacity(self.by_id.len().max(64));
        let mut stack = vec![(self.root.clone(), 0usize)];
        while let Some((dir, depth)) = stack.pop() {
            let Ok(meta) = std::fs::metadata(&dir) else {
                continue;
            };
            by_id.insert(meta.ino(), relative(&self.root, &dir));
            if depth >= MAX_DEPTH {
                continue;
            }
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            for entry in entries.flatten() {
                if entry.file_type().is_ok_and(|t| t.is_dir()) {
                    stack.push((entry.path(), depth + 1));
                }
            }
        }
        self.by_id = by_id;
    }
}

fn relative(root: &Path, dir: &Path) -> String {
    match dir.strip_prefix(root) {
        Ok(rel) if rel.as_os_str().is_empty() => "/".to_owned(),
        Ok(rel) => format!("/{}", rel.display()),
        Err(_) => dir.display().to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_directory_inodes_to_relative_paths() {
        let tmp = std::env::temp_dir().join(format!("em-cgroups-{}", std::process::id()));
        let unit = tmp.join("system.slice/nginx.service");
        std::fs::create_dir_all(&unit).unwrap();
        let ino = std::fs::metadata(&unit).unwrap().ino();
        let root_ino = std::fs::metadata(&tmp).unwrap().ino();
        let mut paths = CgroupPaths::new(tmp.clone());
        assert_eq!(
            paths.path(ino).as_deref(),
            Some("/system.slice/nginx.service")
        );
        assert_eq!(paths.path(root_ino).as_deref(), Some("/"));
        assert_eq!(paths.path(0), None);
        std::fs::remove_dir_all(&tmp).unwrap();
    }
}
