//! Resource limits of one call: wall-clock deadline and memory.

use std::time::Duration;

use wasmtime::ResourceLimiter;

/// Defaults used when neither the step nor the plugin declaration says otherwise.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
/// Rust plugins start at about 1 MiB of linear memory; 64 MiB leaves room for large responses.
pub const DEFAULT_MEMORY: u64 = 64 << 20;
/// The pooling allocator reserves this much address space per memory slot; no limit may
/// exceed it.
pub const MAX_MEMORY: u64 = 4 << 30;

/// The most a plugin may hand the engine in one transfer (a host call's arguments, or its
/// outcome): wasmtime's hostcall fuel. A plugin cannot make Medic allocate more per call.
pub const MAX_TRANSFER_BYTES: usize = 4 << 20;

/// The error a call traps with when it tries to grow memory past its limit.
#[derive(Debug)]
pub struct MemoryLimitExceeded {
    pub limit: u64,
    pub requested: u64,
}

impl std::fmt::Display for MemoryLimitExceeded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "memory limit of {} bytes exceeded", self.limit)
    }
}

impl std::error::Error for MemoryLimitExceeded {}

/// Counts memory across all of a component's memories, so a plugin cannot get around the
/// limit by declaring several.
pub(crate) struct Limiter {
    pub limit: u64,
    pub in_use: u64,
}

impl ResourceLimiter for Limiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let after = self.in_use + (desired - current) as u64;
        if after > self.limit {
            return Err(wasmtime::Error::new(MemoryLimitExceeded {
                limit: self.limit,
                requested: after,
            }));
        }
        self.in_use = after;
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= 1 << 20)
    }

    fn instances(&self) -> usize {
        64
    }

    fn tables(&self) -> usize {
        64
    }

    fn memories(&self) -> usize {
        8
    }
}

/// Parses `64MiB`, `512KiB`, `1GiB`, `1000000` (bytes). Decimal units (`MB`) are accepted too.
pub fn parse_bytes(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("`{text}` is not a size like 64MiB"))?;
    let mult: u64 = match unit.trim() {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        "KB" | "kB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        other => {
            return Err(format!(
                "unknown size unit `{other}` in `{text}` (use KiB, MiB or GiB)"
            ));
        }
    };
    n.checked_mul(mult)
        .ok_or_else(|| format!("`{text}` is too large"))
}

pub fn format_bytes(n: u64) -> String {
    if n >= 1 << 30 && n.is_multiple_of(1 << 30) {
        format!("{} GiB", n >> 30)
    } else if n >= 1 << 20 {
        format!("{:.1} MiB", n as f64 / (1u64 << 20) as f64)
    } else if n >= 1 << 10 {
        format!("{:.1} KiB", n as f64 / 1024.0)
    } else {
        format!("{n} B")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_bytes("64MiB").unwrap(), 64 << 20);
        assert_eq!(parse_bytes("1 GiB").unwrap(), 1 << 30);
        assert_eq!(parse_bytes("1000").unwrap(), 1000);
        assert_eq!(parse_bytes("2MB").unwrap(), 2_000_000);
        assert!(
            parse_bytes("64mb")
                .unwrap_err()
                .contains("unknown size unit `mb`")
        );
        assert!(parse_bytes("lots").is_err());
        assert_eq!(format_bytes(64 << 20), "64.0 MiB");
        assert_eq!(format_bytes(2 << 30), "2 GiB");
    }
}
