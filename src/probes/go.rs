//! Go programs' `crypto/tls`: which functions to probe in an executable, and where.
//!
//! A Go program carries its TLS in its own machine code. The functions are found by name in
//! the symbol table (`.symtab`); Go cannot take return probes (its goroutine stacks move), so
//! the code is decoded: each `RET` of `Read` gets an ordinary uprobe, and `Write` one after
//! its stack check (its plaintext is emitted at the call). The
//! register ABI the eBPF programs read (`go_tls.rs`) exists since Go 1.17; the version comes
//! from the `.go.buildinfo` section, inline there since Go 1.18.
//!
//! A stripped executable (no `.symtab`) still has Go's own function table (`.gopclntab`, which
//! the runtime needs for stack traces): the functions are found there instead.
//!
//! The struct offsets from a `*tls.Conn` to its socket's fd come from `go_layout.rs`.
//!
//! Not handled: architectures other than x86-64.

use std::path::Path;

use iced_x86::{Decoder, DecoderOptions, Mnemonic};
use object::{
    ReadRef as _,
    elf::SHT_SYMTAB,
    read::elf::{FileHeader as _, SectionHeader as _, Sym as _},
};

use super::{
    go_layout::{self, Layout},
    libs::{Elf, LibsError, file_offset, for_each_symbol, read_elf},
};

/// The functions probed, by their symbol names.
pub const WRITE: &str = "crypto/tls.(*Conn).Write";
pub const READ: &str = "crypto/tls.(*Conn).Read";

/// Most bytes of one function decoded: a bound for a malformed symbol size.
const MAX_FUNCTION_BYTES: u64 = 1 << 20;

/// A function's uprobe offsets in its file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Function {
    pub entry: u64,
    /// The first instruction after the stack check, which runs once per call: when the stack
    /// must grow first, the entry runs twice (`morestack` starts the function over). The
    /// entry when there is no check.
    pub body: u64,
    pub returns: Vec<u64>,
}

/// Where `crypto/tls` of one Go executable is probed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GoTls {
    /// The Go release that built it (`go1.26.8`).
    pub version: String,
    pub write: Function,
    pub read: Function,
    /// Where its `*tls.Conn` leads to the socket's fd.
    pub layout: Layout,
}

/// What an executable is to the Go TLS hooks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GoTlsFinding {
    /// Not a Go program.
    NotGo,
    /// A Go program without `crypto/tls` in it.
    NoTls,
    /// A Go program whose TLS cannot be probed, and why (one line).
    Unsupported(String),
    Found(GoTls),
}

/// Looks for Go's `crypto/tls` in the executable at `path`.
pub fn find(path: &Path) -> Result<GoTlsFinding, LibsError> {
    read_elf(path, |elf| find_in(&elf))
}

fn find_in(elf: &Elf<'_>) -> Result<GoTlsFinding, object::read::Error> {
    let Elf {
        data,
        header,
        endian,
        sections,
    } = elf;
    let (data, endian) = (*data, *endian);
    let Some(buildinfo) = sections
        .section_by_name(endian, b".go.buildinfo")
        .map(|(_, s)| s.data(endian, data))
        .transpose()?
    else {
        return Ok(GoTlsFinding::NotGo);
    };
    let Some(version) = go_version(buildinfo) else {
        return Ok(GoTlsFinding::Unsupported(
            "a Go program built before Go 1.18: its calling convention is not read".into(),
        ));
    };
    if !is_x86_64(header.e_machine(endian)) {
        return Ok(GoTlsFinding::Unsupported(format!(
            "a Go program ({version}) for another architecture than x86-64"
        )));
    }
    let mut listed = [None; 2];
    let has_symtab = for_each_symbol(elf, SHT_SYMTAB, |name, symbol| {
        if let Some(i) = [WRITE, READ].iter().position(|w| w.as_bytes() == name) {
            listed[i] = Some((symbol.st_value(endian), symbol.st_size(endian)));
        }
    })?;
    let [write, read] = match has_symtab {
        true => listed,
        false => {
            // Stripped: Go's own function table, which the runtime needs and keeps.
            let section = |name: &[u8]| sections.section_by_name(endian, name).map(|(_, s)| s);
            let (Some(pclntab), Some(text)) = (section(b".gopclntab"), section(b".text")) else {
                return Ok(GoTlsFinding::Unsupported(format!(
                    "a stripped Go program ({version}) without the function table .gopclntab"
                )));
            };
            let table = pclntab.data(endian, data)?;
            match from_function_table(table, text.sh_addr(endian)) {
                Ok(found) => found,
                Err(why) => {
                    return Ok(GoTlsFinding::Unsupported(format!(
                        "a stripped Go program ({version}): its function table {why}"
                    )));
                }
            }
        }
    };
    let (Some(write), Some(read)) = (write, read) else {
        return Ok(GoTlsFinding::NoTls);
    };
    let segments = header.program_headers(endian, data)?;
    let function = |(address, size): (u64, u64)| -> Result<Function, String> {
        let entry = file_offset(segments, endian, address)
            .ok_or_else(|| format!("{address:#x} is in no loaded segment"))?;
        let code = data
            .read_bytes_at(entry, size.min(MAX_FUNCTION_BYTES))
            .map_err(|()| format!("cannot read the code at {address:#x}"))?;
        let (body, returns) = layout_of(code, address);
        let returns = returns
            .into_iter()
            .map(|ip| entry + (ip - address))
            .collect::<Vec<_>>();
        if returns.is_empty() {
            return Err(format!("no RET found in the function at {address:#x}"));
        }
        Ok(Function {
            entry,
            body: entry + (body - address),
            returns,
        })
    };
    let found = function(write).and_then(|write| Ok((write, function(read)?)));
    Ok(match found {
        Ok((write, read)) => GoTlsFinding::Found(GoTls {
            layout: go_layout::of(elf, &version),
            version,
            write,
            read,
        }),
        Err(why) => GoTlsFinding::Unsupported(format!("a Go program ({version}): {why}")),
    })
}

/// Address and size of [`WRITE`] and [`READ`] in Go's function table (`.gopclntab`, the
/// layout of Go 1.18 and later), for a program whose code starts at `text` (the table's own
/// `textStart` may be left for the loader to fill).
///
/// The header: magic (`0xfffffff0` for Go 1.18–1.19, `0xfffffff1` since 1.20), two pad bytes,
/// the instruction size quantum, the pointer size, then pointer-sized words: the number of
/// functions, of files, `textStart`, and the offsets of the function names, the compilation
/// units, the file names, the pc tables and the function table. The function table holds, per
/// function and one more for the end, the code offset and the offset of its `_func` record,
/// whose second word is the offset of its name. Go's `debug/gosym` reads it the same way.
fn from_function_table(table: &[u8], text: u64) -> Result<[Option<(u64, u64)>; 2], String> {
    let u32_at = |at: usize| -> Option<u32> {
        Some(u32::from_le_bytes(table.get(at..at + 4)?.try_into().ok()?))
    };
    let word_at = |at: usize| -> Option<usize> {
        usize::try_from(u64::from_le_bytes(table.get(at..at + 8)?.try_into().ok()?)).ok()
    };
    match u32_at(0) {
        Some(0xffff_fff0 | 0xffff_fff1) => {}
        _ => return Err("is of a layout older than Go 1.18".into()),
    }
    if table.get(7) != Some(&8) {
        return Err("is not of a 64-bit program".into());
    }
    let malformed = || "is malformed".to_string();
    let functions = word_at(8).ok_or_else(malformed)?;
    let names = word_at(8 + 3 * 8).ok_or_else(malformed)?;
    let functab = word_at(8 + 7 * 8).ok_or_else(malformed)?;
    let mut found = [None; 2];
    for i in 0..functions {
        let entry = functab + i * 8;
        let (Some(start), Some(record), Some(end)) =
            (u32_at(entry), u32_at(entry + 4), u32_at(entry + 8))
        else {
            return Err(malformed());
        };
        let name_offset = u32_at(functab + record as usize + 4).ok_or_else(malformed)?;
        let name_start = names + name_offset as usize;
        let Some(name) = table
            .get(name_start..)
            .and_then(|rest| rest.split(|&b| b == 0).next())
        else {
            continue;
        };
        if let Some(i) = [WRITE, READ].iter().position(|w| w.as_bytes() == name) {
            found[i] = Some((text + start as u64, end.saturating_sub(start) as u64));
        }
    }
    Ok(found)
}

fn is_x86_64(machine: u16) -> bool {
    machine == object::elf::EM_X86_64
}

/// Instructions of a Go function's stack check at most: `CMP RSP, 16(R14)` or `LEA -n(RSP),
/// R12; CMP R12, 16(R14)`, then `JBE` to the code that grows the stack.
const STACK_CHECK_INSTRUCTIONS: usize = 3;

/// Where the body of the function in `code` (starting at `address`) begins, after its stack
/// check (`address` when it has none), and the addresses of its `RET` instructions.
fn layout_of(code: &[u8], address: u64) -> (u64, Vec<u64>) {
    let mut decoder = Decoder::with_ip(64, code, address, DecoderOptions::NONE);
    let (mut body, mut returns, mut decoded) = (address, Vec::new(), 0);
    while decoder.can_decode() {
        let instruction = decoder.decode();
        decoded += 1;
        if decoded <= STACK_CHECK_INSTRUCTIONS
            && body == address
            && instruction.mnemonic() == Mnemonic::Jbe
        {
            body = instruction.next_ip();
        }
        if instruction.mnemonic() == Mnemonic::Ret {
            returns.push(instruction.ip());
        }
    }
    (body, returns)
}

/// The Go version written in a `.go.buildinfo` section, when it is inline there (Go 1.18 and
/// later): a 14-byte magic, the pointer size, a flags byte (bit 2: inline strings), padding to
/// 32 bytes, then the version as a length-prefixed (unsigned varint) string.
fn go_version(buildinfo: &[u8]) -> Option<String> {
    const MAGIC: &[u8] = b"\xff Go buildinf:";
    const INLINE: u8 = 0x2;
    if !buildinfo.starts_with(MAGIC) || buildinfo.get(15)? & INLINE == 0 {
        return None;
    }
    let rest = buildinfo.get(32..)?;
    let (mut length, mut shift, mut used) = (0usize, 0u32, 0usize);
    for &byte in rest.iter().take(5) {
        length |= ((byte & 0x7f) as usize) << shift;
        used += 1;
        if byte & 0x80 == 0 {
            break;
        }
        shift += 7;
    }
    let text = rest.get(used..used.checked_add(length)?)?;
    let version = std::str::from_utf8(text).ok()?;
    version.starts_with("go").then(|| version.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_version_of_a_go_1_18_buildinfo() {
        let mut section = b"\xff Go buildinf:\x08\x02".to_vec();
        section.resize(32, 0);
        section.push(9);
        section.extend_from_slice(b"go1.26.8X");
        assert_eq!(go_version(&section[..42]), Some("go1.26.8X".into()));
        // Older layouts (pointers to the strings, flag clear) and other bytes are not read.
        section[15] = 0;
        assert_eq!(go_version(&section), None);
        assert_eq!(go_version(b"\xff Go buildinf:"), None);
        assert_eq!(
            go_version(b"anything else at all, long enough to pass 32 bytes"),
            None
        );
    }

    #[test]
    fn finds_each_ret_and_only_rets() {
        // mov eax, 1; ret; xor eax, eax; ret 8; nop
        let code = [0xb8, 1, 0, 0, 0, 0xc3, 0x31, 0xc0, 0xc2, 8, 0, 0x90];
        assert_eq!(layout_of(&code, 0x1000), (0x1000, vec![0x1005, 0x1008]));
        // A 0xc3 byte inside another instruction is not a RET.
        assert_eq!(layout_of(&[0xb8, 0xc3, 0xc3, 0xc3, 0xc3], 0), (0, vec![]));
    }

    /// The prologue Go 1.26 compiles for `crypto/tls.(*Conn).Write`: the body starts after
    /// the stack check's `JBE`.
    #[test]
    fn the_body_starts_after_the_stack_check() {
        let code = [
            0x4c, 0x8d, 0x64, 0x24, 0xb8, // lea r12, [rsp-0x48]
            0x4d, 0x3b, 0x66, 0x10, // cmp r12, [r14+0x10]
            0x0f, 0x86, 0x10, 0, 0, 0,    // jbe +0x10
            0x55, // push rbp
            0xc3, // ret
        ];
        assert_eq!(layout_of(&code, 0x100), (0x10f, vec![0x110]));
        // A JBE later in the body is not the stack check.
        let code = [0x55, 0x90, 0x90, 0x76, 0x00, 0xc3];
        assert_eq!(layout_of(&code, 0), (0, vec![5]));
    }

    /// A table too old, or cut short, is an error, not a panic or a guess. (A whole table is
    /// read in tests/go_tls.rs: the stripped program's functions against its symbol table.)
    #[test]
    fn a_function_table_it_cannot_read_is_said_so() {
        let mut old = 0xffff_fffa_u32.to_le_bytes().to_vec();
        old.extend_from_slice(&[0, 0, 1, 8]);
        assert!(from_function_table(&old, 0).unwrap_err().contains("older"));
        let mut cut = 0xffff_fff1_u32.to_le_bytes().to_vec();
        cut.extend_from_slice(&[0, 0, 1, 8, 5]);
        assert_eq!(from_function_table(&cut, 0).unwrap_err(), "is malformed");
        let mut header = 0xffff_fff1_u32.to_le_bytes().to_vec();
        header.extend_from_slice(&[0, 0, 1, 8]);
        for word in [1000u64, 0, 0, 72, 0, 0, 0, 72] {
            header.extend_from_slice(&word.to_le_bytes());
        }
        // A thousand functions announced, none there.
        assert_eq!(from_function_table(&header, 0).unwrap_err(), "is malformed");
        assert!(from_function_table(&[], 0).is_err());
    }

    #[test]
    fn a_program_that_is_not_go_is_said_so() {
        let exe = std::fs::read_link("/proc/self/exe").unwrap();
        assert_eq!(find(&exe).unwrap(), GoTlsFinding::NotGo);
    }
}
