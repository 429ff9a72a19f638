//! A writer for the "newc" cpio format, the one the kernel unpacks as an initramfs
//! (`Documentation/driver-api/early-userspace/buffer-format.rst`):
//!
//! ```text
//! "070701" ino mode uid gid nlink mtime filesize devmajor devminor rdevmajor rdevminor
//!          namesize check         (13 fields, each 8 ASCII hex digits: 110 bytes in all)
//! name + NUL, padded with NULs to a multiple of 4 (counting from the header's start)
//! data, padded with NULs to a multiple of 4
//! ```
//!
//! and a final entry named `TRAILER!!!`. The kernel does not create missing parent
//! directories, so the writer adds them itself, in order, before any entry inside them.
//! Owners are root and mtimes 0, so the same inputs give the same archive.

use std::{collections::BTreeSet, fmt::Write as _, io::Write};

const MAGIC: &str = "070701";
const TRAILER: &str = "TRAILER!!!";
const S_IFDIR: u32 = 0o040_000;
const S_IFREG: u32 = 0o100_000;
const S_IFLNK: u32 = 0o120_000;
const S_IFCHR: u32 = 0o020_000;

pub struct Writer<W: Write> {
    out: W,
    written: usize,
    next_ino: u32,
    dirs: BTreeSet<String>,
}

impl<W: Write> Writer<W> {
    pub fn new(out: W) -> Self {
        Self {
            out,
            written: 0,
            next_ino: 1,
            dirs: BTreeSet::new(),
        }
    }

    /// A directory (`path` without a leading `/`; its parents are added as needed).
    pub fn dir(&mut self, path: &str, perm: u32) -> std::io::Result<()> {
        let path = path.trim_matches('/');
        if self.dirs.contains(path) {
            return Ok(());
        }
        self.parents(path)?;
        self.dirs.insert(path.to_owned());
        self.entry(path, S_IFDIR | perm, 2, (0, 0), &[])
    }

    pub fn file(&mut self, path: &str, perm: u32, data: &[u8]) -> std::io::Result<()> {
        self.parents(path)?;
        self.entry(
            path.trim_start_matches('/'),
            S_IFREG | perm,
            1,
            (0, 0),
            data,
        )
    }

    /// A symbolic link: the target is the entry's data.
    pub fn symlink(&mut self, path: &str, target: &str) -> std::io::Result<()> {
        self.parents(path)?;
        let path = path.trim_start_matches('/');
        self.entry(path, S_IFLNK | 0o777, 1, (0, 0), target.as_bytes())
    }

    /// A character device node, e.g. `dev/console` (5, 1): the kernel opens it as the init's
    /// stdin, stdout and stderr before devtmpfs is mounted.
    pub fn char_dev(
        &mut self,
        path: &str,
        perm: u32,
        major: u32,
        minor: u32,
    ) -> std::io::Result<()> {
        self.parents(path)?;
        let path = path.trim_start_matches('/');
        self.entry(path, S_IFCHR | perm, 1, (major, minor), &[])
    }

    /// Writes the trailer and returns the output.
    pub fn finish(mut self) -> std::io::Result<W> {
        self.header(TRAILER, 0, 0, 1, (0, 0), 0)?;
        self.out.flush()?;
        Ok(self.out)
    }

    fn parents(&mut self, path: &str) -> std::io::Result<()> {
        let path = path.trim_matches('/');
        if let Some((parent, _)) = path.rsplit_once('/') {
            self.dir(parent, 0o755)?;
        }
        Ok(())
    }

    fn entry(
        &mut self,
        name: &str,
        mode: u32,
        nlink: u32,
        rdev: (u32, u32),
        data: &[u8],
    ) -> std::io::Result<()> {
        let ino = self.next_ino;
        self.next_ino += 1;
        let size = u32::try_from(data.len()).map_err(|_| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("{name}: {} bytes is too large for cpio newc", data.len()),
            )
        })?;
        self.header(name, ino, mode, nlink, rdev, size)?;
        self.out.write_all(data)?;
        self.written += data.len();
        self.pad()
    }

    fn header(
        &mut self,
        name: &str,
        ino: u32,
        mode: u32,
        nlink: u32,
        (rdev_major, rdev_minor): (u32, u32),
        size: u32,
    ) -> std::io::Result<()> {
        let namesize = name.len() as u32 + 1;
        let fields = [
            ino, mode, 0, 0, nlink, 0, size, 0, 0, rdev_major, rdev_minor, namesize, 0,
        ];
        let mut h = String::with_capacity(110);
        h.push_str(MAGIC);
        for f in fields {
            // Writing to a String cannot fail.
            let _ = write!(h, "{f:08X}");
        }
        self.out.write_all(h.as_bytes())?;
        self.out.write_all(name.as_bytes())?;
        self.out.write_all(&[0])?;
        self.written += h.len() + name.len() + 1;
        self.pad()
    }

    fn pad(&mut self) -> std::io::Result<()> {
        let n = (4 - self.written % 4) % 4;
        self.out.write_all(&[0; 3][..n])?;
        self.written += n;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::process::{Command, Stdio};

    use super::*;

    fn archive(f: impl FnOnce(&mut Writer<Vec<u8>>) -> std::io::Result<()>) -> Vec<u8> {
        let mut w = Writer::new(Vec::new());
        f(&mut w).unwrap();
        w.finish().unwrap()
    }

    #[test]
    fn file_header_layout_byte_for_byte() {
        let out = archive(|w| w.file("init", 0o755, b"hello"));
        let header = format!(
            "070701{:08X}{:08X}{:08X}{:08X}{:08X}{:08X}{:08X}{:08X}{:08X}{:08X}{:08X}{:08X}{:08X}",
            1, 0o100_755, 0, 0, 1, 0, 5, 0, 0, 0, 0, 5, 0
        );
        assert_eq!(header.len(), 110);
        let mut want = header.into_bytes();
        // 110 + "init\0" = 115 -> one NUL to 116; 5 data bytes -> three NULs to 124.
        want.extend_from_slice(b"init\0\0hello\0\0\0");
        assert_eq!(&out[..want.len()], &want[..]);
        let trailer = &out[want.len()..];
        assert!(trailer.starts_with(b"070701"));
        assert_eq!(&trailer[94..102], b"0000000B", "namesize of TRAILER!!!");
        assert_eq!(&trailer[110..121], b"TRAILER!!!\0");
        assert_eq!(out.len() % 4, 0);
    }

    #[test]
    fn parents_come_first_and_once() {
        let out = archive(|w| {
            w.file("a/b/one", 0o644, b"1")?;
            w.file("a/b/two", 0o644, b"2")?;
            w.dir("a", 0o755)
        });
        let text = String::from_utf8_lossy(&out);
        let names: Vec<usize> = ["a\0", "a/b\0", "a/b/one\0", "a/b/two\0"]
            .iter()
            .map(|n| text.find(n).unwrap_or_else(|| panic!("{n:?} missing")))
            .collect();
        assert!(names.windows(2).all(|p| p[0] < p[1]), "{names:?}");
        assert_eq!(text.matches("a/b\0").count(), 1);
    }

    #[test]
    fn char_device_and_symlink_fields() {
        let out = archive(|w| {
            w.char_dev("dev/console", 0o600, 5, 1)?;
            w.symlink("bin/sh", "/init")
        });
        let text = String::from_utf8_lossy(&out);
        // The second entry (after dir "dev") is the console: mode, then rdevmajor/minor.
        let at = text.find("dev/console\0").unwrap() - 110;
        let h = &text[at..at + 110];
        assert_eq!(&h[14..22], "00002180", "S_IFCHR | 0600");
        assert_eq!(&h[78..86], "00000005");
        assert_eq!(&h[86..94], "00000001");
        let at = text.find("bin/sh\0").unwrap() - 110;
        let h = &text[at..at + 110];
        assert_eq!(&h[14..22], "0000A1FF", "S_IFLNK | 0777");
        assert_eq!(&h[54..62], "00000005", "size = len(\"/init\")");
        assert!(text.contains("bin/sh\0\0\0\0/init"));
    }

    /// GNU cpio reads the archive back (skipped, with a note, when `cpio` is not installed).
    #[test]
    fn gnu_cpio_lists_what_was_written() {
        let out = archive(|w| {
            w.char_dev("dev/console", 0o600, 5, 1)?;
            w.file("t/deps/x", 0o755, &[7; 1001])?;
            w.symlink("sbin/init", "/init")
        });
        let child = Command::new("cpio")
            .args(["-t", "-v", "--quiet"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn();
        let Ok(mut child) = child else {
            eprintln!("cpio not installed: skipping the cross-check");
            return;
        };
        child.stdin.take().unwrap().write_all(&out).unwrap();
        let listing = child.wait_with_output().unwrap();
        assert!(listing.status.success());
        let listing = String::from_utf8(listing.stdout).unwrap();
        let lines: Vec<&str> = listing.lines().collect();
        // dev, dev/console, t, t/deps, t/deps/x, sbin, sbin/init.
        assert_eq!(lines.len(), 7, "{listing}");
        assert!(lines[0].starts_with("drwxr-xr-x") && lines[0].ends_with(" dev"));
        assert!(lines[1].starts_with("crw-------") && lines[1].contains("5,"));
        assert!(lines[4].starts_with("-rwxr-xr-x") && lines[4].contains(" 1001 "));
        assert!(lines[6].starts_with("lrwxrwxrwx") && lines[6].ends_with("sbin/init -> /init"));
    }
}
