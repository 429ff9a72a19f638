//! The uncompressed kernel inside a bzImage. Under TCG, decompressing Debian's XZ payload is
//! most of the boot (measured: about 7 s from the bzImage, about 3.3 s from the ELF
//! `vmlinux`, which QEMU boots directly through the PVH entry point), so the payload is
//! decompressed once on the host and cached next to the kernel.

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, Result, bail};

/// Where the compressed payload lies in a bzImage, from its setup header
/// (`Documentation/arch/x86/boot.rst`): `setup_sects` at 0x1F1 (0 means 4), then
/// `payload_offset` and `payload_length` at 0x248 and 0x24C, relative to the protected-mode
/// code that starts after the `setup_sects + 1` sectors of 512 bytes.
pub fn payload_range(image: &[u8]) -> Option<std::ops::Range<usize>> {
    if image.get(0x202..0x206) != Some(b"HdrS") {
        return None;
    }
    let setup_sects = match *image.get(0x1F1)? {
        0 => 4,
        n => usize::from(n),
    };
    let u32_at = |o: usize| -> Option<usize> {
        Some(u32::from_le_bytes(image.get(o..o + 4)?.try_into().ok()?) as usize)
    };
    let start = (setup_sects + 1) * 512 + u32_at(0x248)?;
    let end = start.checked_add(u32_at(0x24C)?)?;
    (end <= image.len()).then_some(start..end)
}

/// The decompressor for a payload, from its magic bytes, and the bytes to leave out at the
/// end: the kernel build appends the uncompressed size (4 bytes, `size_append`) after the
/// stream, which `zstd` refuses ("unsupported format") and `gzip` calls trailing garbage;
/// `xz --single-stream` stops before it by itself.
fn decompressor(payload: &[u8]) -> Option<(&'static [&'static str], usize)> {
    if payload.starts_with(b"\xFD7zXZ\x00") {
        Some((&["xz", "-dc", "--single-stream"], 0))
    } else if payload.starts_with(b"\x28\xB5\x2F\xFD") {
        Some((&["zstd", "-dcq"], 4))
    } else if payload.starts_with(b"\x1F\x8B") {
        Some((&["gzip", "-dc"], 4))
    } else {
        None
    }
}

/// The cached `vmlinux` for `image` in `dir`, made on first use; `None` (boot the bzImage
/// then) when the image is not a bzImage with a payload this knows how to decompress.
pub fn extract(image: &Path, dir: &Path) -> Result<Option<PathBuf>> {
    let out = dir.join("vmlinux");
    if out.is_file() {
        return Ok(Some(out));
    }
    let data = fs::read(image).with_context(|| format!("reading {}", image.display()))?;
    let Some(range) = payload_range(&data) else {
        return Ok(None);
    };
    let payload = &data[range];
    let Some((argv, size_suffix)) = decompressor(payload) else {
        return Ok(None);
    };
    let payload = &payload[..payload.len().saturating_sub(size_suffix)];
    let tmp = dir.join("vmlinux.partial");
    fs::create_dir_all(dir)?;
    let mut child = Command::new(argv[0])
        .args(&argv[1..])
        .stdin(std::process::Stdio::piped())
        .stdout(fs::File::create(&tmp)?)
        .spawn()
        .with_context(|| format!("starting {}", argv[0]))?;
    let mut stdin = child.stdin.take().context("decompressor stdin")?;
    std::io::Write::write_all(&mut stdin, payload)?;
    drop(stdin);
    let status = child.wait()?;
    if !status.success() {
        bail!(
            "{} on {}'s payload exited with {status}",
            argv.join(" "),
            image.display()
        );
    }
    if !fs::read(&tmp).is_ok_and(|d| d.starts_with(b"\x7fELF")) {
        let _ = fs::remove_file(&tmp);
        return Ok(None);
    }
    fs::rename(&tmp, &out)?;
    Ok(Some(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bzimage(setup_sects: u8, offset: u32, payload: &[u8]) -> Vec<u8> {
        let sects = if setup_sects == 0 {
            4
        } else {
            usize::from(setup_sects)
        };
        let mut img = vec![0u8; (sects + 1) * 512 + offset as usize];
        img[0x1F1] = setup_sects;
        img[0x202..0x206].copy_from_slice(b"HdrS");
        img[0x248..0x24C].copy_from_slice(&offset.to_le_bytes());
        img[0x24C..0x250].copy_from_slice(&(payload.len() as u32).to_le_bytes());
        img.extend_from_slice(payload);
        img.extend_from_slice(b"trailer");
        img
    }

    #[test]
    fn payload_is_found_from_the_setup_header() {
        let img = bzimage(3, 100, b"\xFD7zXZ\x00rest");
        let r = payload_range(&img).unwrap();
        assert_eq!(r.start, 4 * 512 + 100);
        assert_eq!(&img[r.clone()], b"\xFD7zXZ\x00rest");
        assert_eq!(decompressor(&img[r]).unwrap().0[0], "xz");
        let legacy = bzimage(0, 0, b"\x1F\x8Bgz");
        assert_eq!(payload_range(&legacy).unwrap().start, 5 * 512);
    }

    #[test]
    fn not_a_bzimage_or_truncated() {
        assert_eq!(payload_range(b"\x7fELF not a bzImage"), None);
        let mut img = bzimage(1, 0, b"\x1F\x8Bpayload");
        img.truncate(1030);
        assert_eq!(payload_range(&img), None);
        assert_eq!(decompressor(b"LZ4?"), None);
    }

    /// A payload as the kernel build leaves it: compressed by `tool`, then the uncompressed
    /// size appended (`size_append`).
    fn kernel_payload(tool: &str, plain: &[u8]) -> Vec<u8> {
        let mut c = Command::new(tool)
            .arg("-c")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("{tool} (installed by vm-test's prerequisites): {e}"));
        std::io::Write::write_all(&mut c.stdin.take().unwrap(), plain).unwrap();
        let mut payload = c.wait_with_output().unwrap().stdout;
        payload.extend_from_slice(&u32::try_from(plain.len()).unwrap().to_le_bytes());
        payload
    }

    #[test]
    fn gzip_and_zstd_payloads_are_decompressed_and_cached() {
        for tool in ["gzip", "zstd"] {
            let dir =
                std::env::temp_dir().join(format!("xtask-vmlinux-{tool}-{}", std::process::id()));
            let _ = fs::remove_dir_all(&dir);
            fs::create_dir_all(&dir).unwrap();
            let image = dir.join("bzImage");
            let kernel = b"\x7fELF kernel".repeat(100);
            fs::write(&image, bzimage(1, 16, &kernel_payload(tool, &kernel))).unwrap();
            let out = extract(&image, &dir).unwrap().unwrap();
            assert_eq!(fs::read(&out).unwrap(), kernel, "{tool}");
            fs::remove_file(&image).unwrap();
            assert_eq!(extract(&image, &dir).unwrap(), Some(out), "cached");
            fs::remove_dir_all(&dir).unwrap();
        }
    }
}
