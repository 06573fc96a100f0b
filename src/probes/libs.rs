//! Which shared libraries a process uses or is about to load, found from /proc and the ELF
//! dynamic sections, so TLS libraries can be hooked before the process first calls them.
//!
//! A process that has just exec'd has mapped only its executable and the dynamic loader;
//! the libraries it needs are named by `DT_NEEDED` entries (transitively: curl needs libcurl,
//! which needs libssl). Resolving them the way the loader will (LD_LIBRARY_PATH, RUNPATH,
//! the default directories) finds libssl before the loader maps it. A library loaded later
//! with dlopen shows up in /proc/PID/maps instead. Paths are resolved under /proc/PID/root, so
//! a container's own files are found, not the host's.
//!
//! Not handled: the loader cache (/etc/ld.so.cache) for non-default directories, and
//! DT_NEEDED of 32-bit programs; both fall back on /proc/PID/maps once the library is mapped.

use std::{
    collections::{HashSet, VecDeque},
    path::{Path, PathBuf},
};

use object::{
    Endianness, ReadCache, ReadRef,
    elf::{
        DT_NEEDED, DT_RPATH, DT_RUNPATH, FileHeader64, PT_LOAD, ProgramHeader64, SHT_DYNSYM,
        SHT_SYMTAB, STT_FUNC, Sym64,
    },
    read::elf::{
        Dyn as _, FileHeader as _, ProgramHeader as _, SectionHeader as _, SectionTable, Sym as _,
    },
};

/// Directories the dynamic loader searches after LD_LIBRARY_PATH and RUNPATH.
const DEFAULT_DIRS: [&str; 6] = [
    "/lib/x86_64-linux-gnu",
    "/usr/lib/x86_64-linux-gnu",
    "/lib/aarch64-linux-gnu",
    "/usr/lib/aarch64-linux-gnu",
    "/lib64",
    "/usr/lib64",
];
const FALLBACK_DIRS: [&str; 3] = ["/lib", "/usr/lib", "/usr/local/lib"];
/// Most libraries followed per process: a bound on work for a pathological program.
const MAX_LIBRARIES: usize = 256;

#[derive(Debug, thiserror::Error)]
pub enum LibsError {
    #[error("cannot read {path}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not a 64-bit ELF file")]
    Elf {
        path: String,
        #[source]
        source: object::read::Error,
    },
}

/// What an ELF file's dynamic section asks of the loader.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DynamicInfo {
    /// `DT_NEEDED`: library names, in order.
    pub needed: Vec<String>,
    /// `DT_RUNPATH` (or `DT_RPATH` when there is no RUNPATH), split at ':'.
    pub runpath: Vec<String>,
}

/// A 64-bit ELF file opened for reading parts of it: only what is asked is read.
pub struct Elf<'a> {
    pub data: &'a ReadCache<std::fs::File>,
    pub header: &'a FileHeader64<Endianness>,
    pub endian: Endianness,
    pub sections: SectionTable<'a, FileHeader64<Endianness>, &'a ReadCache<std::fs::File>>,
}

/// Where the code at `address` is in the file: the offset in the loaded segment holding it.
pub fn file_offset(
    segments: &[ProgramHeader64<Endianness>],
    endian: Endianness,
    address: u64,
) -> Option<u64> {
    segments
        .iter()
        .filter(|s| s.p_type(endian) == PT_LOAD)
        .find(|s| (s.p_vaddr(endian)..s.p_vaddr(endian) + s.p_filesz(endian)).contains(&address))
        .map(|s| address - s.p_vaddr(endian) + s.p_offset(endian))
}

/// Opens the 64-bit ELF file at `path` and runs `read` on it; errors name the file.
pub fn read_elf<T>(
    path: &Path,
    read: impl FnOnce(Elf<'_>) -> Result<T, object::read::Error>,
) -> Result<T, LibsError> {
    let elf_err = |source| LibsError::Elf {
        path: path.display().to_string(),
        source,
    };
    let file = std::fs::File::open(path).map_err(|source| LibsError::Read {
        path: path.display().to_string(),
        source,
    })?;
    let cache = ReadCache::new(file);
    let data = &cache;
    let header = FileHeader64::<Endianness>::parse(data).map_err(elf_err)?;
    let endian = header.endian().map_err(elf_err)?;
    let sections = header.sections(endian, data).map_err(elf_err)?;
    read(Elf {
        data,
        header,
        endian,
        sections,
    })
    .map_err(elf_err)
}

/// Walks the first symbol table of type `table` (`SHT_DYNSYM` or `SHT_SYMTAB`) of `elf`, giving
/// `visit` each symbol and its name. The table and its names are read whole, one read each, and
/// searched in memory: through the cache, each name would be a read of its own (Node.js exports
/// 54 000 symbols: a quarter of a second). False when there is no such table.
pub fn for_each_symbol(
    elf: &Elf<'_>,
    table: u32,
    mut visit: impl FnMut(&[u8], &Sym64<Endianness>),
) -> Result<bool, object::read::Error> {
    let (data, endian) = (elf.data, elf.endian);
    let Some(header) = elf.sections.iter().find(|s| s.sh_type(endian) == table) else {
        return Ok(false);
    };
    let names = elf
        .sections
        .section(object::SectionIndex(header.sh_link(endian) as usize))?
        .data(endian, data)?;
    let bytes = header.data(endian, data)?;
    let count = bytes.len() / std::mem::size_of::<Sym64<Endianness>>();
    let symbols: &[Sym64<Endianness>] =
        object::pod::slice_from_bytes(bytes, count).map_or(&[], |(symbols, _)| symbols);
    let strings = object::read::StringTable::new(names, 0, names.len() as u64);
    for symbol in symbols {
        if let Ok(name) = symbol.name(endian, strings) {
            visit(name, symbol);
        }
    }
    Ok(true)
}

/// Reads the dynamic section of the 64-bit ELF file at `path`, reading only the parts it needs
/// (a libcrypto is megabytes; its dynamic section is a few hundred bytes).
pub fn dynamic_info_of(path: &Path) -> Result<DynamicInfo, LibsError> {
    read_elf(path, |elf| dynamic_info(elf.data))
}

/// File offsets of the symbols `names` in the ELF file at `path` (`None` for a name it does
/// not define): where a uprobe goes. Exported symbols (`.dynsym`) are looked up first, then the
/// full symbol table (`.symtab`) for the names still missing: an executable with OpenSSL
/// linked in statically may export the functions (Node.js does) or only list them. Resolved
/// once per file, here, rather than once per probe.
pub fn symbol_offsets(path: &Path, names: &[&str]) -> Result<Vec<Option<u64>>, LibsError> {
    read_elf(path, |elf| {
        let endian = elf.endian;
        let segments = elf.header.program_headers(endian, elf.data)?;
        let mut found = vec![None; names.len()];
        for table in [SHT_DYNSYM, SHT_SYMTAB] {
            if found.iter().all(Option::is_some) {
                break;
            }
            for_each_symbol(&elf, table, |name, symbol| {
                if symbol.is_undefined(endian)
                    || symbol.st_value(endian) == 0
                    || symbol.st_type() != STT_FUNC
                {
                    return;
                }
                if let Some(i) = names.iter().position(|n| n.as_bytes() == name)
                    && found[i].is_none()
                {
                    // The uprobe offset is the file offset.
                    found[i] = file_offset(segments, endian, symbol.st_value(endian));
                }
            })?;
        }
        Ok(found)
    })
}

/// Whether the ELF file at `path` has OpenSSL's (or BoringSSL's) TLS code linked in: the
/// source file names their errors carry (`ssl/ssl_lib.c`, `.cc` in BoringSSL) are among its
/// read-only data. A program that only calls a shared libssl does not carry them. For saying
/// why a stripped program is not read; its functions cannot be found this way.
pub fn links_openssl_statically(path: &Path) -> Result<bool, LibsError> {
    const MARKER: &[u8] = b"ssl/ssl_lib.c";
    read_elf(path, |elf| {
        let Some((_, rodata)) = elf.sections.section_by_name(elf.endian, b".rodata") else {
            return Ok(false);
        };
        let bytes = rodata.data(elf.endian, elf.data)?;
        Ok(bytes.windows(MARKER.len()).any(|w| w == MARKER))
    })
}

/// Reads the dynamic section of a 64-bit ELF file (empty for a static executable).
pub fn dynamic_info<'data, R: ReadRef<'data>>(data: R) -> Result<DynamicInfo, object::read::Error> {
    let header = FileHeader64::<Endianness>::parse(data)?;
    let endian = header.endian()?;
    let sections = header.sections(endian, data)?;
    let mut info = DynamicInfo::default();
    let Some((entries, link)) = sections.dynamic(endian, data)? else {
        return Ok(info);
    };
    let strings = sections.strings(endian, data, link)?;
    let (mut runpath, mut rpath) = (None, None);
    for entry in entries {
        let tag = entry.d_tag(endian);
        let Ok(offset) = u32::try_from(entry.d_val(endian)) else {
            continue;
        };
        let text = || {
            strings
                .get(offset)
                .map(|s| String::from_utf8_lossy(s).into_owned())
        };
        match tag {
            DT_NEEDED => info.needed.extend(text().ok()),
            DT_RUNPATH => runpath = text().ok(),
            DT_RPATH => rpath = text().ok(),
            _ => {}
        }
    }
    if let Some(path) = runpath.or(rpath) {
        info.runpath = path
            .split(':')
            .filter(|d| !d.is_empty())
            .map(String::from)
            .collect();
    }
    Ok(info)
}

/// Dynamic sections already read, by (device, inode): a library is parsed once, not at every
/// exec of every program that needs it. Bounded: cleared when full.
#[derive(Debug, Default)]
pub struct DynamicCache {
    entries: std::collections::HashMap<(u64, u64), Option<DynamicInfo>>,
}

impl DynamicCache {
    const MAX: usize = 4096;

    /// The dynamic section of the file at `path` (`None` if it is not a readable 64-bit ELF).
    fn get(&mut self, path: &Path) -> Option<DynamicInfo> {
        use std::os::unix::fs::MetadataExt as _;
        let meta = std::fs::metadata(path).ok()?;
        let key = (meta.dev(), meta.ino());
        if let Some(info) = self.entries.get(&key) {
            return info.clone();
        }
        if self.entries.len() >= Self::MAX {
            self.entries.clear();
        }
        let info = dynamic_info_of(path).ok();
        self.entries.insert(key, info.clone());
        info
    }
}

/// A process's view of the file system.
#[derive(Debug, Clone)]
pub struct ProcessFiles {
    pid: u32,
    root: PathBuf,
}

impl ProcessFiles {
    pub fn new(pid: u32) -> Self {
        ProcessFiles {
            pid,
            root: PathBuf::from(format!("/proc/{pid}/root")),
        }
    }

    /// Same, with another root (tests).
    pub fn with_root(pid: u32, root: PathBuf) -> Self {
        ProcessFiles { pid, root }
    }

    /// A path as the process sees it, made reachable from here.
    pub fn host_path(&self, path: &str) -> PathBuf {
        self.root.join(path.trim_start_matches('/'))
    }

    /// Shared libraries mapped by the process now (paths as the process sees them).
    pub fn mapped_libraries(&self) -> Vec<String> {
        let maps = std::fs::read_to_string(format!("/proc/{}/maps", self.pid)).unwrap_or_default();
        let mut seen = HashSet::new();
        maps.lines()
            .filter_map(|line| {
                // address perms offset dev inode pathname — the path may contain spaces.
                let path = line.splitn(6, char::is_whitespace).nth(5)?.trim_start();
                let path = path.strip_suffix(" (deleted)").unwrap_or(path);
                (path.starts_with('/') && path.contains(".so")).then(|| path.to_string())
            })
            .filter(|p| seen.insert(p.clone()))
            .collect()
    }

    /// The libraries the process's executable needs, transitively, resolved as the loader
    /// would. `exe` and `ld_library_path` are what the process runs and its environment's
    /// LD_LIBRARY_PATH.
    pub fn needed_libraries(
        &self,
        exe: &Path,
        ld_library_path: Option<&str>,
        cache: &mut DynamicCache,
    ) -> Result<Vec<String>, LibsError> {
        let info = dynamic_info_of(exe)?;
        let env_dirs: Vec<String> = ld_library_path
            .unwrap_or_default()
            .split(':')
            .filter(|d| d.starts_with('/'))
            .map(String::from)
            .collect();
        // The executable's own directory, as the process sees it, for $ORIGIN.
        let exe_dir = std::fs::read_link(format!("/proc/{}/exe", self.pid))
            .ok()
            .and_then(|p| p.parent().map(|d| d.display().to_string()))
            .unwrap_or_default();
        let mut found = Vec::new();
        let mut seen = HashSet::new();
        let mut queue: VecDeque<(String, DynamicInfo, String)> = VecDeque::new();
        queue.push_back((exe.display().to_string(), info, exe_dir));
        while let Some((_, info, origin)) = queue.pop_front() {
            for name in &info.needed {
                if found.len() >= MAX_LIBRARIES || !seen.insert(name.clone()) {
                    continue;
                }
                let runpath: Vec<String> = info
                    .runpath
                    .iter()
                    .map(|d| d.replace("$ORIGIN", &origin).replace("${ORIGIN}", &origin))
                    .collect();
                let Some(path) = self.resolve(name, &env_dirs, &runpath) else {
                    continue;
                };
                let dir = Path::new(&path)
                    .parent()
                    .map(|d| d.display().to_string())
                    .unwrap_or_default();
                if let Some(info) = cache.get(&self.host_path(&path)) {
                    queue.push_back((path.clone(), info, dir));
                }
                found.push(path);
            }
        }
        Ok(found)
    }

    /// Where the loader would find `name` (a path as the process sees it).
    fn resolve(&self, name: &str, env_dirs: &[String], runpath: &[String]) -> Option<String> {
        if name.contains('/') {
            return self.host_path(name).is_file().then(|| name.to_string());
        }
        env_dirs
            .iter()
            .map(String::as_str)
            .chain(runpath.iter().map(String::as_str))
            .chain(DEFAULT_DIRS)
            .chain(FALLBACK_DIRS)
            .map(|dir| format!("{}/{name}", dir.trim_end_matches('/')))
            .find(|candidate| self.host_path(candidate).is_file())
    }

    /// The process's LD_LIBRARY_PATH, if set.
    pub fn ld_library_path(&self) -> Option<String> {
        let environ = std::fs::read(format!("/proc/{}/environ", self.pid)).ok()?;
        environ
            .split(|&b| b == 0)
            .find_map(|var| var.strip_prefix(b"LD_LIBRARY_PATH="))
            .map(|v| String::from_utf8_lossy(v).into_owned())
    }

    /// The executable, reachable from here.
    pub fn exe(&self) -> PathBuf {
        PathBuf::from(format!("/proc/{}/exe", self.pid))
    }

    /// The process's executable file, by its path inside the process's root: a path a uprobe
    /// can be attached by (`/proc/PID/exe` is a link to a file, not a file's path).
    pub fn executable(&self) -> Option<PathBuf> {
        let target = std::fs::read_link(self.exe()).ok()?;
        let text = target.to_str()?;
        let text = text.strip_suffix(" (deleted)").unwrap_or(text);
        let path = self.host_path(text);
        path.is_file().then_some(path)
    }
}

/// Whether a library path names OpenSSL's libssl (`libssl.so`, `libssl.so.3`, `libssl.so.1.1`).
/// NSS's `libssl3.so` is another library.
pub fn is_openssl_libssl(path: &str) -> bool {
    let name = path.rsplit('/').next().unwrap_or(path);
    name == "libssl.so" || name.starts_with("libssl.so.")
}

/// The OpenSSL libssl files in this system's standard library directories.
pub fn system_openssl_libraries() -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = DEFAULT_DIRS
        .iter()
        .chain(FALLBACK_DIRS.iter())
        .filter_map(|dir| std::fs::read_dir(dir).ok())
        .flatten()
        .flatten()
        .map(|entry| entry.path())
        .filter(|p| p.to_str().is_some_and(is_openssl_libssl))
        // One name per file: /lib → /usr/lib, libssl.so → libssl.so.3.
        .filter_map(|p| std::fs::canonicalize(p).ok())
        .filter(|p| p.is_file())
        .collect();
    found.sort();
    found.dedup();
    found
}

/// Every OpenSSL libssl the process has mapped, and (with `cache`, for a process that has
/// just exec'd) will load, as host-reachable paths.
pub fn openssl_libraries(pid: u32, cache: Option<&mut DynamicCache>) -> Vec<PathBuf> {
    let files = ProcessFiles::new(pid);
    let mut libs: Vec<String> = files
        .mapped_libraries()
        .into_iter()
        .filter(|p| is_openssl_libssl(p))
        .collect();
    if let Some(cache) = cache {
        match files.needed_libraries(&files.exe(), files.ld_library_path().as_deref(), cache) {
            Ok(needed) => libs.extend(needed.into_iter().filter(|p| is_openssl_libssl(p))),
            Err(e) => tracing::debug!("libraries of pid {pid}: {e}"),
        }
    }
    libs.sort();
    libs.dedup();
    libs.into_iter().map(|p| files.host_path(&p)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tells_openssl_libssl_from_other_libraries() {
        assert!(is_openssl_libssl("/usr/lib/x86_64-linux-gnu/libssl.so.3"));
        assert!(is_openssl_libssl("/opt/lib/libssl.so.1.1"));
        assert!(is_openssl_libssl("libssl.so"));
        assert!(!is_openssl_libssl("/usr/lib/x86_64-linux-gnu/libssl3.so"));
        assert!(!is_openssl_libssl("/usr/lib/libcrypto.so.3"));
    }

    #[test]
    fn a_static_or_foreign_file_is_an_error_not_a_panic() {
        assert!(dynamic_info(&b"not an elf"[..]).is_err());
        assert!(dynamic_info(&[][..]).is_err());
    }

    /// The offsets match what the system's own tools say: `SSL_write`'s file offset in
    /// libssl, compared with the symbol's value and the segment table read independently.
    #[test]
    fn finds_the_file_offsets_of_libssl_functions() {
        let Some(ssl) = [
            "/usr/lib/x86_64-linux-gnu/libssl.so.3",
            "/usr/lib/aarch64-linux-gnu/libssl.so.3",
        ]
        .into_iter()
        .map(Path::new)
        .find(|p| p.is_file()) else {
            eprintln!("skipped: no system libssl.so.3");
            return;
        };
        let got = symbol_offsets(ssl, &["SSL_write", "SSL_read_ex", "no_such_function"]).unwrap();
        assert!(got[0].is_some() && got[1].is_some(), "{got:?}");
        assert_eq!(got[2], None);
        // Cross-check with the generic object API (section-based, another code path).
        use object::{Object as _, ObjectSegment as _, ObjectSymbol as _};
        let data = std::fs::read(ssl).unwrap();
        let file = object::File::parse(&*data).unwrap();
        let sym = file
            .dynamic_symbols()
            .find(|s| s.name() == Ok("SSL_write"))
            .unwrap();
        let seg = file
            .segments()
            .find(|s| (s.address()..s.address() + s.size()).contains(&sym.address()))
            .unwrap();
        assert_eq!(
            got[0],
            Some(sym.address() - seg.address() + seg.file_range().0)
        );
    }

    /// A function only the full symbol table lists (as in an executable with OpenSSL linked in
    /// that does not export it) is found there, at the offset the generic object API gives.
    #[test]
    fn finds_functions_only_the_full_symbol_table_lists() {
        use object::{Object as _, ObjectSegment as _, ObjectSymbol as _, SymbolKind};
        let exe = std::fs::read_link("/proc/self/exe").unwrap();
        let data = std::fs::read(&exe).unwrap();
        let file = object::File::parse(&*data).unwrap();
        let exported: HashSet<&str> = file
            .dynamic_symbols()
            .filter_map(|s| s.name().ok())
            .collect();
        let Some(local) = file.symbols().find(|s| {
            s.kind() == SymbolKind::Text
                && s.is_definition()
                && s.address() != 0
                && s.name()
                    .is_ok_and(|n| !n.is_empty() && !exported.contains(n))
        }) else {
            eprintln!("skipped: this test binary has no full symbol table");
            return;
        };
        let name = local.name().unwrap();
        let got = symbol_offsets(&exe, &[name]).unwrap();
        let seg = file
            .segments()
            .find(|s| (s.address()..s.address() + s.size()).contains(&local.address()))
            .unwrap();
        assert_eq!(
            got,
            vec![Some(local.address() - seg.address() + seg.file_range().0)],
            "{name}"
        );
    }

    /// This test binary is dynamically linked against libc: its DT_NEEDED says so.
    #[test]
    fn reads_needed_libraries_of_a_real_executable() {
        let info = dynamic_info_of(Path::new("/proc/self/exe")).expect("an ELF file");
        assert!(
            info.needed.iter().any(|n| n.starts_with("libc.so")),
            "{info:?}"
        );
    }

    /// curl needs libcurl, which needs libssl: the closure finds it before anything is mapped.
    #[test]
    fn finds_libssl_behind_curl_transitively() {
        let Some(curl) = ["/usr/bin/curl", "/bin/curl"]
            .into_iter()
            .map(Path::new)
            .find(|p| p.is_file())
        else {
            eprintln!("skipped: curl is not installed");
            return;
        };
        let direct = dynamic_info_of(curl).unwrap();
        assert!(!direct.needed.iter().any(|n| is_openssl_libssl(n)));
        let files = ProcessFiles::with_root(std::process::id(), PathBuf::from("/"));
        let libs = files
            .needed_libraries(curl, None, &mut DynamicCache::default())
            .unwrap();
        assert!(libs.iter().any(|l| is_openssl_libssl(l)), "{libs:?}");
    }

    #[test]
    fn ld_library_path_comes_first() {
        let dir = tempfile::tempdir().unwrap();
        let system = [
            "/usr/lib/x86_64-linux-gnu/libssl.so.3",
            "/usr/lib/aarch64-linux-gnu/libssl.so.3",
        ]
        .into_iter()
        .find(|p| Path::new(p).is_file());
        let (Some(system), Some(curl)) = (
            system,
            ["/usr/bin/curl"]
                .into_iter()
                .find(|p| Path::new(p).is_file()),
        ) else {
            eprintln!("skipped: needs curl and the system libssl.so.3");
            return;
        };
        std::fs::copy(system, dir.path().join("libssl.so.3")).unwrap();
        let files = ProcessFiles::with_root(std::process::id(), PathBuf::from("/"));
        let libs = files
            .needed_libraries(
                Path::new(curl),
                Some(dir.path().to_str().unwrap()),
                &mut DynamicCache::default(),
            )
            .unwrap();
        let ssl: Vec<_> = libs.iter().filter(|l| is_openssl_libssl(l)).collect();
        assert_eq!(
            ssl,
            vec![&format!("{}/libssl.so.3", dir.path().display())],
            "{libs:?}"
        );
    }
}
