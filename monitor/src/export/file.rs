//! File sink: one event per line, appended; rotated by size (`alerts.jsonl` becomes
//! `alerts.jsonl.1`, `.1` becomes `.2`, ..., beyond `keep` deleted). With `fsync = "batch"`
//! the file is synced after each batch, before the delivery cursor moves: an event marked
//! delivered is on disk. A failed write leaves the cursor where it was, so the batch is
//! written again (at least once).

use std::{
    fs::{self, File, OpenOptions},
    io::{self, Write as _},
    path::{Path, PathBuf},
};

use super::{
    Format, Reporter,
    settings::Fsync,
    transport::{Sent, Transport, TransportError},
};
use crate::store::Pending;

pub struct FileSink {
    path: PathBuf,
    max_size: u64,
    keep: u32,
    fsync: Fsync,
    file: Option<File>,
    size: u64,
}

impl FileSink {
    pub fn new(path: PathBuf, max_size: u64, keep: u32, fsync: Fsync) -> Self {
        Self {
            path,
            max_size,
            keep,
            fsync,
            file: None,
            size: 0,
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn open(&mut self) -> io::Result<&mut File> {
        if self.file.is_none() {
            if let Some(dir) = self.path.parent() {
                fs::create_dir_all(dir)?;
            }
            let file = OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.path)?;
            self.size = file.metadata()?.len();
            self.file = Some(file);
        }
        self.file
            .as_mut()
            .ok_or_else(|| io::Error::other("file sink not open"))
    }

    /// Appends `lines` (each without its newline), rotating first when they would not fit.
    pub fn write(&mut self, lines: &[String]) -> io::Result<()> {
        let mut buf = Vec::with_capacity(lines.iter().map(|l| l.len() + 1).sum());
        for line in lines {
            buf.extend_from_slice(line.as_bytes());
            buf.push(b'\n');
        }
        self.open()?;
        if self.size > 0 && self.size + buf.len() as u64 > self.max_size {
            self.rotate()?;
        }
        let sync = self.fsync == Fsync::Batch;
        let file = self.open()?;
        file.write_all(&buf)?;
        if sync {
            file.sync_data()?;
        }
        self.size += buf.len() as u64;
        Ok(())
    }

    fn rotated(&self, n: u32) -> PathBuf {
        let mut name = self.path.as_os_str().to_owned();
        name.push(format!(".{n}"));
        PathBuf::from(name)
    }

    fn rotate(&mut self) -> io::Result<()> {
        self.file = None;
        if self.keep == 0 {
            return fs::remove_file(&self.path);
        }
        let oldest = self.rotated(self.keep);
        if oldest.exists() {
            fs::remove_file(&oldest)?;
        }
        for n in (1..self.keep).rev() {
            let from = self.rotated(n);
            if from.exists() {
                fs::rename(&from, self.rotated(n + 1))?;
            }
        }
        fs::rename(&self.path, self.rotated(1))?;
        tracing::info!(path = %self.path.display(), "alert file rotated");
        Ok(())
    }
}

/// A file sink with its format.
pub struct FileTransport {
    pub file: FileSink,
    pub format: Format,
    pub network_activity: bool,
}

impl Transport for FileTransport {
    fn target(&self) -> String {
        self.file.path().display().to_string()
    }

    fn send(&mut self, batch: &[Pending], reporter: &Reporter) -> Result<Sent, TransportError> {
        let lines: Vec<String> = batch
            .iter()
            .flat_map(|p| {
                p.event
                    .records(self.format, self.network_activity, reporter)
            })
            .collect();
        self.file.write(&lines)?;
        Ok(Sent::all(batch))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(name: &str) -> PathBuf {
        let d =
            std::env::temp_dir().join(format!("egress-file-sink-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        d
    }

    #[test]
    fn appends_lines_and_rotates_by_size_keeping_n() {
        let d = dir("rotate");
        let path = d.join("alerts.jsonl");
        let mut sink = FileSink::new(path.clone(), 100, 2, Fsync::Batch);
        let line = "x".repeat(39); // 40 bytes with its newline
        for i in 0..7 {
            sink.write(&[format!("{line}{i}")[1..].to_owned()]).unwrap();
        }
        // 2 lines per file: 6,  4 5,  2 3 (0 1 deleted beyond keep = 2).
        let read = |p: &Path| fs::read_to_string(p).unwrap();
        assert_eq!(read(&path).lines().count(), 1);
        assert!(read(&path).ends_with("6\n"));
        assert!(read(&sink.rotated(1)).ends_with("5\n"));
        assert!(
            read(&sink.rotated(2)).starts_with(&line[1..])
                && read(&sink.rotated(2)).contains("2\n")
        );
        assert!(!sink.rotated(3).exists());
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn reopening_appends_to_what_is_there() {
        let d = dir("reopen");
        let path = d.join("a.jsonl");
        FileSink::new(path.clone(), 1 << 20, 1, Fsync::Never)
            .write(&["one".into()])
            .unwrap();
        FileSink::new(path.clone(), 1 << 20, 1, Fsync::Never)
            .write(&["two".into(), "three".into()])
            .unwrap();
        assert_eq!(fs::read_to_string(&path).unwrap(), "one\ntwo\nthree\n");
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn ocsf_with_network_activity_writes_the_finding_then_its_evidence() {
        let d = dir("ocsf-network");
        let mut t = FileTransport {
            file: FileSink::new(d.join("a.ocsf"), 1 << 20, 1, Fsync::Never),
            format: Format::Ocsf,
            network_activity: true,
        };
        let batch = [Pending {
            seq: 1,
            event: crate::export::fixtures::opened().into(),
        }];
        let sent = t
            .send(&batch, &crate::export::fixtures::reporter())
            .unwrap();
        assert_eq!(sent, Sent::all(&batch));
        let text = fs::read_to_string(d.join("a.ocsf")).unwrap();
        let docs: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(docs.len(), 2);
        assert_eq!(docs[0]["class_uid"], 2004);
        assert_eq!(docs[1]["class_uid"], 4001);
        assert_eq!(
            docs[1]["metadata"]["correlation_uid"],
            docs[0]["finding_info"]["uid"]
        );
        for doc in &docs {
            crate::schema_check::validate_ocsf(doc).unwrap();
        }
        fs::remove_dir_all(&d).unwrap();
    }
}
