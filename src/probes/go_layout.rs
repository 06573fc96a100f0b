//! Where a Go program keeps a TLS connection's socket: the struct field offsets the eBPF
//! programs follow from a `*tls.Conn` to its fd (`ebpf/probes/src/go_tls.rs`).
//!
//! They are read from the program's DWARF when it has it (a `go build` without `-w`). A
//! program without DWARF (stripped, as most release builds are) gets Go's known layout,
//! [`KNOWN`]: the same in Go's sources from Go 1.9 to Go 1.27, and checked against the DWARF
//! of Go 1.26 and 1.27 by tests/go_tls.rs. Go releases older than 1.18 are not probed at all
//! (`go.rs`); a release newer than [`KNOWN_UP_TO`] without DWARF gets the known layout, and
//! `netsonde probes` says it was not checked there.

use std::borrow::Cow;

use gimli::{DebugAbbrev, DebugInfo, DebugStr, EndianSlice, LittleEndian};
use netsonde_common::GoConnLayout;
use object::{
    CompressedFileRange, CompressionFormat,
    elf::{ELFCOMPRESS_ZLIB, ELFCOMPRESS_ZSTD, SectionHeader64},
    read::elf::{CompressionHeader as _, SectionHeader as _},
};

use super::libs::Elf;

/// The struct fields followed from a `*tls.Conn` to its fd, as (type, field) in Go's DWARF.
const FIELDS: [(&str, &str); 6] = [
    ("crypto/tls.Conn", "conn"),
    // A `net.Conn` interface value: its type word, then `data`, the `*net.TCPConn`.
    ("runtime.iface", "data"),
    ("net.TCPConn", "conn"),
    ("net.conn", "fd"),
    ("net.netFD", "pfd"),
    ("internal/poll.FD", "Sysfd"),
];

/// Go's layout of [`FIELDS`] for a program without DWARF: `tls.Conn.conn` first (its data
/// word at 8), `TCPConn.conn.fd` first, `netFD.pfd` first and `Sysfd` after `fdmu` (a
/// `fdMutex`: uint64 and two uint32).
pub const KNOWN: GoConnLayout = GoConnLayout {
    conn_data: 8,
    net_fd: 0,
    sysfd: 16,
};

/// The newest Go release (its minor number) whose layout is known to be [`KNOWN`].
pub const KNOWN_UP_TO: u32 = 27;

/// Most bytes of one DWARF section decompressed: a bound for a malformed size.
const MAX_SECTION_BYTES: u64 = 512 << 20;

/// Why a program's DWARF gave no layout.
#[derive(Debug, thiserror::Error)]
pub enum LayoutError {
    #[error("its DWARF section {section} cannot be read")]
    Section {
        section: &'static str,
        #[source]
        source: object::read::Error,
    },
    #[error("its DWARF section {section} is compressed in an unknown format ({format})")]
    Compression { section: &'static str, format: u32 },
    #[error("its DWARF section {section} claims {bytes} bytes uncompressed")]
    TooLarge { section: &'static str, bytes: u64 },
    #[error("its DWARF is malformed")]
    Dwarf(#[source] gimli::Error),
    #[error("its DWARF does not describe {0}")]
    Missing(String),
}

/// Where [`Layout::offsets`] come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LayoutSource {
    /// The program's DWARF.
    Dwarf,
    /// [`KNOWN`]: the program has no DWARF, or why its DWARF was not used.
    Known { why: String },
}

/// A Go program's layout from `*tls.Conn` to fd, and where it comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    pub offsets: GoConnLayout,
    pub source: LayoutSource,
}

impl Layout {
    /// Where the offsets come from, for `netsonde probes` and the hook's log line.
    pub fn describe(&self) -> String {
        match &self.source {
            LayoutSource::Dwarf => "struct offsets from its DWARF".into(),
            LayoutSource::Known { why } => format!("Go's known struct offsets ({why})"),
        }
    }
}

/// The layout of the Go program in `elf`, built by Go `version` (`go1.26.8`).
pub fn of(elf: &Elf<'_>, version: &str) -> Layout {
    choose(fields_from_dwarf(elf), version)
}

/// The rule: the DWARF's offsets when it has all of [`FIELDS`] (and they fit), else
/// [`KNOWN`], saying why and whether `version` is one it was checked on.
fn choose(dwarf: Result<Option<[u64; 6]>, LayoutError>, version: &str) -> Layout {
    let why = match dwarf {
        Ok(Some(f)) => {
            let sum = |a: u64, b: u64| u16::try_from(a.checked_add(b)?).ok();
            match (sum(f[0], f[1]), sum(f[2], f[3]), sum(f[4], f[5])) {
                (Some(conn_data), Some(net_fd), Some(sysfd)) => {
                    return Layout {
                        offsets: GoConnLayout {
                            conn_data,
                            net_fd,
                            sysfd,
                        },
                        source: LayoutSource::Dwarf,
                    };
                }
                _ => "its DWARF gives offsets beyond 64 KiB".to_string(),
            }
        }
        Ok(None) => "no DWARF".to_string(),
        Err(e) => e.to_string(),
    };
    let why = match minor_version(version) {
        Some(minor) if minor <= KNOWN_UP_TO => why,
        _ => format!("{why}; not checked on {version}, newer than go1.{KNOWN_UP_TO}"),
    };
    Layout {
        offsets: KNOWN,
        source: LayoutSource::Known { why },
    }
}

/// 26 for `go1.26.8`, `go1.26` or `go1.26rc1`.
fn minor_version(version: &str) -> Option<u32> {
    let rest = version.strip_prefix("go1.")?;
    let digits = rest
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(rest.len());
    rest[..digits].parse().ok()
}

/// The offsets of [`FIELDS`] in the program's DWARF, in that order; `None` without DWARF.
fn fields_from_dwarf(elf: &Elf<'_>) -> Result<Option<[u64; 6]>, LayoutError> {
    let Some(info) = section(elf, ".debug_info")? else {
        return Ok(None);
    };
    let abbrev = section(elf, ".debug_abbrev")?.unwrap_or_default();
    let strings = section(elf, ".debug_str")?.unwrap_or_default();
    let debug_info = DebugInfo::new(&info, LittleEndian);
    let debug_abbrev = DebugAbbrev::new(&abbrev, LittleEndian);
    let debug_str = DebugStr::new(&strings, LittleEndian);
    let name = |value| name_in(value, &debug_str);
    let mut found = [None; FIELDS.len()];
    let mut units = debug_info.units();
    while let Some(header) = units.next().map_err(LayoutError::Dwarf)? {
        let abbreviations = header
            .abbreviations(&debug_abbrev)
            .map_err(LayoutError::Dwarf)?;
        let mut entries = header.entries(&abbreviations);
        // The struct whose members are being read (top-level types are the unit's children).
        let mut in_struct: Option<&[u8]> = None;
        while let Some(entry) = entries.next_dfs().map_err(LayoutError::Dwarf)? {
            match entry.depth() {
                1 => {
                    in_struct = (entry.tag() == gimli::DW_TAG_structure_type)
                        .then(|| entry.attr_value(gimli::DW_AT_name).and_then(name))
                        .flatten()
                        .filter(|n| FIELDS.iter().any(|(s, _)| s.as_bytes() == *n));
                }
                2 if entry.tag() == gimli::DW_TAG_member => {
                    let Some(owner) = in_struct else { continue };
                    let Some(member) = entry.attr_value(gimli::DW_AT_name).and_then(name) else {
                        continue;
                    };
                    let Some(i) = FIELDS
                        .iter()
                        .position(|(s, f)| s.as_bytes() == owner && f.as_bytes() == member)
                    else {
                        continue;
                    };
                    let offset = entry
                        .attr_value(gimli::DW_AT_data_member_location)
                        .and_then(|v| v.udata_value());
                    found[i] = found[i].or(offset);
                }
                _ => {}
            }
        }
        if found.iter().all(Option::is_some) {
            break;
        }
    }
    let mut offsets = [0; FIELDS.len()];
    for (i, offset) in found.into_iter().enumerate() {
        let (owner, field) = FIELDS[i];
        offsets[i] = offset.ok_or_else(|| LayoutError::Missing(format!("{owner}.{field}")))?;
    }
    Ok(Some(offsets))
}

type Reader<'a> = EndianSlice<'a, LittleEndian>;

/// The string an attribute holds, inline or in `.debug_str`.
fn name_in<'a>(
    value: gimli::AttributeValue<Reader<'a>>,
    strings: &DebugStr<Reader<'a>>,
) -> Option<&'a [u8]> {
    match value {
        gimli::AttributeValue::String(s) => Some(s.slice()),
        gimli::AttributeValue::DebugStrRef(at) => strings.get_str(at).ok().map(|s| s.slice()),
        _ => None,
    }
}

/// A section's bytes, decompressed when the linker compressed it (Go does); `None` when the
/// file has no such section.
fn section<'d>(elf: &Elf<'d>, name: &'static str) -> Result<Option<Cow<'d, [u8]>>, LayoutError> {
    let (endian, data) = (elf.endian, elf.data);
    let Some((_, header)) = elf.sections.section_by_name(endian, name.as_bytes()) else {
        return Ok(None);
    };
    let header: &SectionHeader64<_> = header;
    let failed = |source| LayoutError::Section {
        section: name,
        source,
    };
    let Some((compression, offset, compressed_size)) =
        header.compression(endian, data).map_err(failed)?
    else {
        return header
            .data(endian, data)
            .map(|bytes| Some(Cow::Borrowed(bytes)))
            .map_err(failed);
    };
    let format = match compression.ch_type(endian) {
        ELFCOMPRESS_ZLIB => CompressionFormat::Zlib,
        ELFCOMPRESS_ZSTD => CompressionFormat::Zstandard,
        other => {
            return Err(LayoutError::Compression {
                section: name,
                format: other,
            });
        }
    };
    let uncompressed_size = compression.ch_size(endian);
    if uncompressed_size > MAX_SECTION_BYTES {
        return Err(LayoutError::TooLarge {
            section: name,
            bytes: uncompressed_size,
        });
    }
    let range = CompressedFileRange {
        format,
        offset,
        compressed_size,
        uncompressed_size,
    };
    range
        .data(data)
        .and_then(|compressed| compressed.decompress())
        .map(Some)
        .map_err(failed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_layout_goes_through_the_attach_cookie_whole() {
        let layout = GoConnLayout {
            conn_data: 0xfff8,
            net_fd: 0x1234,
            sysfd: 16,
        };
        assert_eq!(GoConnLayout::from_cookie(layout.to_cookie()), Some(layout));
        assert_eq!(GoConnLayout::from_cookie(KNOWN.to_cookie()), Some(KNOWN));
        // An attachment without a cookie reads 0: no layout, not offsets of 0.
        assert_eq!(GoConnLayout::from_cookie(0), None);
    }

    #[test]
    fn dwarf_wins_else_the_known_layout_says_why() {
        // (DWARF's answer, version) → (offsets, source).
        let known = |why: &str| LayoutSource::Known { why: why.into() };
        let dwarf = |f: [u64; 6]| -> Result<Option<[u64; 6]>, LayoutError> { Ok(Some(f)) };
        let cases = [
            (
                dwarf([0, 8, 0, 0, 0, 16]),
                "go1.26.8",
                KNOWN,
                LayoutSource::Dwarf,
            ),
            (
                dwarf([24, 8, 8, 0, 0, 24]),
                "go1.30.1",
                GoConnLayout {
                    conn_data: 32,
                    net_fd: 8,
                    sysfd: 24,
                },
                LayoutSource::Dwarf,
            ),
            (Ok(None), "go1.18", KNOWN, known("no DWARF")),
            (Ok(None), "go1.27.3", KNOWN, known("no DWARF")),
            (
                Ok(None),
                "go1.28rc1",
                KNOWN,
                known("no DWARF; not checked on go1.28rc1, newer than go1.27"),
            ),
            (
                Err(LayoutError::Missing("net.netFD.pfd".into())),
                "go1.26.8",
                KNOWN,
                known("its DWARF does not describe net.netFD.pfd"),
            ),
            (
                dwarf([u64::MAX, 8, 0, 0, 0, 16]),
                "go1.26.8",
                KNOWN,
                known("its DWARF gives offsets beyond 64 KiB"),
            ),
            (
                dwarf([0, 8, 0, 0, 65_530, 16]),
                "go1.26.8",
                KNOWN,
                known("its DWARF gives offsets beyond 64 KiB"),
            ),
        ];
        for (dwarf, version, offsets, source) in cases {
            assert_eq!(
                choose(dwarf, version),
                Layout { offsets, source },
                "{version}"
            );
        }
    }

    #[test]
    fn minor_versions() {
        for (version, minor) in [
            ("go1.26.8", Some(26)),
            ("go1.27", Some(27)),
            ("go1.28rc1", Some(28)),
            ("go2.0", None),
            ("devel", None),
        ] {
            assert_eq!(minor_version(version), minor, "{version}");
        }
    }

    /// A program without DWARF for Go (this test binary is Rust's): the types are missing.
    #[test]
    fn dwarf_without_go_types_is_named() {
        let exe = std::fs::read_link("/proc/self/exe").unwrap();
        let result = super::super::libs::read_elf(&exe, |elf| Ok(fields_from_dwarf(&elf)))
            .expect("readable");
        match result {
            Err(LayoutError::Missing(what)) => assert_eq!(what, "crypto/tls.Conn.conn"),
            // A test binary built without debug information.
            Ok(None) => {}
            other => panic!("{other:?}"),
        }
    }
}
