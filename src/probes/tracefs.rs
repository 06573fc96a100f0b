//! tracefs: where tracepoints are described. The programs read syscall tracepoint records at
//! fixed offsets (arguments from byte 16, 8 bytes each; the return value at 16); this module
//! checks each record's published format against that before a program is attached to it.

use std::{
    ffi::CString,
    fs,
    path::{Path, PathBuf},
};

#[derive(Debug, thiserror::Error)]
pub enum TracefsError {
    #[error("tracefs is not mounted and mounting it at {path} failed")]
    Mount {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("tracepoint {category}/{name} does not exist on this kernel")]
    Missing { category: String, name: String },
    #[error("cannot read the format of tracepoint {category}/{name}")]
    Format {
        category: String,
        name: String,
        #[source]
        source: std::io::Error,
    },
}

/// Mount points tried, in order.
const CANDIDATES: [&str; 2] = ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"];

/// Finds tracefs, mounting it at /sys/kernel/tracing when it is not mounted anywhere (as root
/// that just works; in a container the directory must be mounted from the host).
pub fn ensure_mounted() -> Result<PathBuf, TracefsError> {
    if let Some(found) = CANDIDATES
        .iter()
        .map(Path::new)
        .find(|p| p.join("events").is_dir())
    {
        return Ok(found.to_path_buf());
    }
    let target = Path::new(CANDIDATES[0]);
    let path = target.display().to_string();
    let c = |s: &str| CString::new(s).expect("no NUL in constant");
    let (source, fstype, dir) = (c("tracefs"), c("tracefs"), c(&path));
    // SAFETY: valid NUL-terminated strings; no data argument.
    let rc = unsafe {
        libc::mount(
            source.as_ptr(),
            dir.as_ptr(),
            fstype.as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if rc != 0 {
        return Err(TracefsError::Mount {
            path,
            source: std::io::Error::last_os_error(),
        });
    }
    tracing::info!("mounted tracefs at {path}");
    Ok(target.to_path_buf())
}

/// One field of a tracepoint format.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FormatField {
    pub name: String,
    pub offset: usize,
    pub size: usize,
}

/// The `format` file of tracepoint `category/name`.
pub fn read_format(tracefs: &Path, category: &str, name: &str) -> Result<String, TracefsError> {
    let dir = tracefs.join("events").join(category).join(name);
    if !dir.is_dir() {
        return Err(TracefsError::Missing {
            category: category.into(),
            name: name.into(),
        });
    }
    fs::read_to_string(dir.join("format")).map_err(|source| TracefsError::Format {
        category: category.into(),
        name: name.into(),
        source,
    })
}

/// Parses the `field:` lines of a tracepoint `format` file.
pub fn parse_format(text: &str) -> Vec<FormatField> {
    text.lines()
        .filter_map(|line| {
            let line = line.trim();
            let decl = line.strip_prefix("field:")?;
            let mut parts = decl.split(';').map(str::trim);
            let declaration = parts.next()?;
            // "unsigned int fd" / "const char * buf" / "char comm[16]": the name is the last
            // word, without an array suffix.
            let name = declaration
                .rsplit([' ', '*'])
                .next()?
                .split('[')
                .next()?
                .to_string();
            let mut offset = None;
            let mut size = None;
            for part in parts {
                if let Some(v) = part.strip_prefix("offset:") {
                    offset = v.parse().ok();
                } else if let Some(v) = part.strip_prefix("size:") {
                    size = v.parse().ok();
                }
            }
            Some(FormatField {
                name,
                offset: offset?,
                size: size?,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const SYS_ENTER_SENDTO: &str = "name: sys_enter_sendto
ID: 1530
format:
\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;
\tfield:unsigned char common_flags;\toffset:2;\tsize:1;\tsigned:0;
\tfield:unsigned char common_preempt_count;\toffset:3;\tsize:1;\tsigned:0;
\tfield:int common_pid;\toffset:4;\tsize:4;\tsigned:1;

\tfield:int __syscall_nr;\toffset:8;\tsize:4;\tsigned:1;
\tfield:int fd;\toffset:16;\tsize:8;\tsigned:0;
\tfield:void * buff;\toffset:24;\tsize:8;\tsigned:0;
\tfield:size_t len;\toffset:32;\tsize:8;\tsigned:0;
\tfield:unsigned int flags;\toffset:40;\tsize:8;\tsigned:0;
\tfield:struct sockaddr * addr;\toffset:48;\tsize:8;\tsigned:0;
\tfield:int addr_len;\toffset:56;\tsize:8;\tsigned:0;

print fmt: \"fd: 0x%08lx, buff: 0x%08lx\", ((unsigned long)(REC->fd)), ((unsigned long)(REC->buff))
";

    #[test]
    fn parses_a_recorded_format() {
        let fields = parse_format(SYS_ENTER_SENDTO);
        let names: Vec<&str> = fields.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "common_type",
                "common_flags",
                "common_preempt_count",
                "common_pid",
                "__syscall_nr",
                "fd",
                "buff",
                "len",
                "flags",
                "addr",
                "addr_len"
            ]
        );
        assert_eq!(
            fields[6],
            FormatField {
                name: "buff".into(),
                offset: 24,
                size: 8
            }
        );
    }
}
