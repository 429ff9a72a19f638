//! Kernel modules for the initramfs: the `.ko` files the tests need (veth, virtio, TC BPF)
//! and their dependencies, in load order. Debian's image package ships no `modules.dep`, so
//! dependencies come from each module's own `.modinfo` ELF section (`depends=a,b`), which is
//! what depmod reads too. Compressed modules (`.ko.xz`, `.ko.zst`) are decompressed here so
//! the init can hand them to `finit_module` without asking the kernel to decompress.

use std::{
    collections::{BTreeMap, BTreeSet},
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, Result, bail};

/// What the tests need that the Debian 6.1 kernel builds as modules: veth pairs and dummy
/// links for network namespaces, TC BPF (`clsact` + `cls_bpf` / `act_bpf`), `sock_diag` for
/// TCP and UDP (the agent attributes sockets that existed before it started through it: no
/// module, no socket, no error), and virtio for devices a later session may attach.
pub const WANTED: [&str; 10] = [
    "inet_diag",
    "tcp_diag",
    "udp_diag",
    "veth",
    "dummy",
    "sch_ingress",
    "cls_bpf",
    "act_bpf",
    "virtio_pci",
    "virtio_net",
];

/// A module ready for the initramfs.
pub struct Module {
    pub name: String,
    /// Uncompressed ELF.
    pub data: Vec<u8>,
}

/// Module name as the kernel spells it: file stem without `.ko*`, `-` as `_`.
pub fn module_name(file_name: &str) -> Option<String> {
    let stem = file_name
        .strip_suffix(".ko")
        .or_else(|| file_name.strip_suffix(".ko.xz"))
        .or_else(|| file_name.strip_suffix(".ko.zst"))?;
    Some(stem.replace('-', "_"))
}

/// The `.modinfo` section of a little-endian ELF64 object, as `key=value` strings.
pub fn modinfo(elf: &[u8]) -> Result<Vec<String>> {
    let u16_at = |o: usize| -> Option<usize> {
        Some(u16::from_le_bytes(elf.get(o..o + 2)?.try_into().ok()?) as usize)
    };
    let u32_at = |o: usize| -> Option<usize> {
        Some(u32::from_le_bytes(elf.get(o..o + 4)?.try_into().ok()?) as usize)
    };
    let u64_at = |o: usize| -> Option<usize> {
        usize::try_from(u64::from_le_bytes(elf.get(o..o + 8)?.try_into().ok()?)).ok()
    };
    if elf.get(..6) != Some(b"\x7fELF\x02\x01") {
        bail!("not a little-endian ELF64 object");
    }
    let parse = || -> Option<Vec<String>> {
        let (shoff, shentsize) = (u64_at(0x28)?, u16_at(0x3A)?);
        let (shnum, shstrndx) = (u16_at(0x3C)?, u16_at(0x3E)?);
        let section = |i: usize| -> Option<(usize, usize, usize)> {
            let h = shoff + i * shentsize;
            Some((u32_at(h)?, u64_at(h + 24)?, u64_at(h + 32)?))
        };
        let (_, stroff, strsize) = section(shstrndx)?;
        let names = elf.get(stroff..stroff + strsize)?;
        (0..shnum).find_map(|i| {
            let (name, off, size) = section(i)?;
            let name = names.get(name..)?.split(|b| *b == 0).next()?;
            (name == b".modinfo").then(|| {
                elf.get(off..off + size).map(|data| {
                    data.split(|b| *b == 0)
                        .filter(|s| !s.is_empty())
                        .map(|s| String::from_utf8_lossy(s).into_owned())
                        .collect()
                })
            })?
        })
    };
    parse().context("malformed ELF or no .modinfo section")
}

fn depends(elf: &[u8]) -> Result<Vec<String>> {
    Ok(modinfo(elf)?
        .iter()
        .filter_map(|kv| kv.strip_prefix("depends="))
        .flat_map(|d| d.split(','))
        .filter(|d| !d.is_empty())
        .map(str::to_owned)
        .collect())
}

fn index(dir: &Path, into: &mut BTreeMap<String, PathBuf>) -> Result<()> {
    for entry in fs::read_dir(dir).with_context(|| format!("listing {}", dir.display()))? {
        let entry = entry?;
        let path = entry.path();
        if entry.file_type()?.is_dir() {
            index(&path, into)?;
        } else if let Some(name) = module_name(&entry.file_name().to_string_lossy()) {
            into.insert(name, path);
        }
    }
    Ok(())
}

fn read_module(path: &Path) -> Result<Vec<u8>> {
    let name = path.to_string_lossy();
    let tool = if name.ends_with(".xz") {
        "xz"
    } else if name.ends_with(".zst") {
        "zstd"
    } else {
        return fs::read(path).with_context(|| format!("reading {}", path.display()));
    };
    let out = Command::new(tool)
        .arg("-dc")
        .arg(path)
        .output()
        .with_context(|| format!("{tool} -dc {}", path.display()))?;
    if !out.status.success() {
        bail!("{tool} -dc {} exited with {}", path.display(), out.status);
    }
    Ok(out.stdout)
}

/// `wanted` and their dependencies, dependencies first, from `modules_dir`
/// (`lib/modules/<release>`). Modules built into the kernel (`modules.builtin`) are skipped;
/// a module that is neither built in nor present is an error.
pub fn resolve(modules_dir: &Path, wanted: &[&str]) -> Result<Vec<Module>> {
    let mut files = BTreeMap::new();
    index(&modules_dir.join("kernel"), &mut files)?;
    let builtin: BTreeSet<String> = fs::read_to_string(modules_dir.join("modules.builtin"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| module_name(l.rsplit('/').next()?))
        .collect();
    let mut order = Vec::new();
    let mut seen = BTreeSet::new();
    for name in wanted {
        visit(name, &files, &builtin, &mut seen, &mut order, 0)?;
    }
    Ok(order)
}

fn visit(
    name: &str,
    files: &BTreeMap<String, PathBuf>,
    builtin: &BTreeSet<String>,
    seen: &mut BTreeSet<String>,
    order: &mut Vec<Module>,
    depth: usize,
) -> Result<()> {
    let name = name.replace('-', "_");
    if depth > 32 {
        bail!("module dependencies nest deeper than 32 at {name}: a cycle?");
    }
    if builtin.contains(&name) || !seen.insert(name.clone()) {
        return Ok(());
    }
    let Some(path) = files.get(&name) else {
        bail!("kernel module {name} is neither built in nor in the package");
    };
    let data = read_module(path)?;
    for dep in depends(&data).with_context(|| format!("reading {}", path.display()))? {
        visit(&dep, files, builtin, seen, order, depth + 1)?;
    }
    order.push(Module { name, data });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal ELF64 with sections: null, .shstrtab, .modinfo.
    fn elf_with_modinfo(modinfo: &[u8]) -> Vec<u8> {
        let shstrtab = b"\0.shstrtab\0.modinfo\0";
        let mut elf = vec![0u8; 64];
        elf[..6].copy_from_slice(b"\x7fELF\x02\x01");
        let strtab_off = elf.len();
        elf.extend_from_slice(shstrtab);
        let modinfo_off = elf.len();
        elf.extend_from_slice(modinfo);
        let shoff = elf.len();
        let mut section = |name: u32, off: usize, size: usize| {
            let mut h = [0u8; 64];
            h[..4].copy_from_slice(&name.to_le_bytes());
            h[24..32].copy_from_slice(&(off as u64).to_le_bytes());
            h[32..40].copy_from_slice(&(size as u64).to_le_bytes());
            elf.extend_from_slice(&h);
        };
        section(0, 0, 0);
        section(1, strtab_off, shstrtab.len());
        section(11, modinfo_off, modinfo.len());
        elf[0x28..0x30].copy_from_slice(&(shoff as u64).to_le_bytes());
        elf[0x3A..0x3C].copy_from_slice(&64u16.to_le_bytes());
        elf[0x3C..0x3E].copy_from_slice(&3u16.to_le_bytes());
        elf[0x3E..0x40].copy_from_slice(&1u16.to_le_bytes());
        elf
    }

    #[test]
    fn depends_from_modinfo() {
        let elf = elf_with_modinfo(b"license=GPL\0depends=virtio,virtio_ring\0name=virtio_net\0");
        assert_eq!(depends(&elf).unwrap(), ["virtio", "virtio_ring"]);
        let none = elf_with_modinfo(b"depends=\0name=virtio_ring\0");
        assert_eq!(depends(&none).unwrap(), Vec::<String>::new());
        assert!(modinfo(b"\x7fELF\x01\x01 not 64-bit").is_err());
        assert!(modinfo(&elf[..70]).is_err(), "truncated");
    }

    #[test]
    fn names_as_the_kernel_spells_them() {
        assert_eq!(module_name("virtio_pci.ko").as_deref(), Some("virtio_pci"));
        assert_eq!(module_name("nf-nat.ko.xz").as_deref(), Some("nf_nat"));
        assert_eq!(module_name("veth.ko.zst").as_deref(), Some("veth"));
        assert_eq!(module_name("modules.order"), None);
    }

    #[test]
    fn dependencies_load_first_and_builtins_are_skipped() {
        let dir = std::env::temp_dir().join(format!("xtask-modules-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let kdir = dir.join("kernel/drivers");
        fs::create_dir_all(&kdir).unwrap();
        let module = |name: &str, deps: &str| {
            let info = format!("depends={deps}\0name={name}\0");
            fs::write(
                kdir.join(format!("{name}.ko")),
                elf_with_modinfo(info.as_bytes()),
            )
            .unwrap();
        };
        module("virtio_ring", "");
        module("virtio", "virtio_ring");
        module("virtio_net", "virtio,virtio_ring,net_failover");
        module("veth", "");
        fs::write(
            dir.join("modules.builtin"),
            "kernel/net/core/net_failover.ko\n",
        )
        .unwrap();
        let names: Vec<String> = resolve(&dir, &["virtio_net", "veth", "virtio"])
            .unwrap()
            .into_iter()
            .map(|m| m.name)
            .collect();
        assert_eq!(names, ["virtio_ring", "virtio", "virtio_net", "veth"]);
        let err = resolve(&dir, &["nope"]).err().unwrap();
        assert!(err.to_string().contains("nope"), "{err}");
        fs::remove_dir_all(&dir).unwrap();
    }
}
