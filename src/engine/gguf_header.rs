//! A bounded walk over a GGUF file's header before any parser that trusts it reads it.
//!
//! candle's GGUF reader allocates whatever a header declares: a 28-byte file declaring a
//! 2^46-byte key aborts the process, and a sparse file declaring 2^60 entries keeps a thread
//! busy for ever. [`check`] walks the same header (GGUF versions 1 to 3: the magic, the
//! key-value pairs, the tensor descriptions) reading nothing it has not bounded first: every
//! length and count against the bytes left in the file and a sane maximum, the header's whole
//! size against [`MAX_HEADER_BYTES`], every tensor's data against the file's size. A file that
//! passes can be handed to candle without an allocation larger than the file.
//!
//! The walk keeps what fixes the model's architecture ([`Architecture`]: the keys
//! `general.architecture` and `<architecture>.block_count`, `.embedding_length`,
//! `.feed_forward_length`, `.attention.head_count`, `.attention.head_count_kv`), so a weight
//! update can be compared with the served model before a tensor is read.

use std::collections::BTreeMap;
use std::io::{BufReader, Read, Seek};
use std::path::Path;

/// The largest header walked (the vocabularies of today's models take a few megabytes).
pub const MAX_HEADER_BYTES: u64 = 256 << 20;
/// The most key-value pairs, tensors, or elements of one array.
const MAX_COUNT: u64 = 1 << 26;
/// The most dimensions of a tensor (GGML_MAX_DIMS).
const MAX_DIMS: u32 = 4;
/// How deep arrays may nest (an array of arrays of scalars).
const MAX_DEPTH: u32 = 2;

/// The longest string value kept (an architecture's name).
const MAX_KEPT_STRING: u64 = 256;
/// The most pairs kept (a real header has six of them).
const MAX_KEPT: usize = 64;
/// The key suffixes whose integer values the walk keeps, after `<architecture>.`.
pub const ARCHITECTURE_KEYS: [&str; 5] = [
    "block_count",
    "embedding_length",
    "feed_forward_length",
    "attention.head_count",
    "attention.head_count_kv",
];

/// What a GGUF header says of the model's architecture: its name (`general.architecture`) and
/// the integer values of [`ARCHITECTURE_KEYS`] under that name (absent keys left out).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Architecture {
    /// `general.architecture`: `llama`, `qwen2`, ...
    pub name: Option<String>,
    /// Each of [`ARCHITECTURE_KEYS`] the header holds, with its value.
    pub sizes: BTreeMap<&'static str, u64>,
}

/// Why a file is not a well-formed GGUF header.
#[derive(Debug, thiserror::Error)]
#[error("not a well-formed GGUF file: {0}")]
pub struct GgufError(String);

fn bad(why: impl Into<String>) -> GgufError {
    GgufError(why.into())
}

/// The element and block sizes of the GGML tensor types candle reads (GGUF specification):
/// `(elements per block, bytes per block)`.
fn block(ggml_type: u32) -> Option<(u64, u64)> {
    Some(match ggml_type {
        0 => (1, 4),      // F32
        1 => (1, 2),      // F16
        2 => (32, 18),    // Q4_0
        3 => (32, 20),    // Q4_1
        6 => (32, 22),    // Q5_0
        7 => (32, 24),    // Q5_1
        8 => (32, 34),    // Q8_0
        9 => (32, 36),    // Q8_1
        10 => (256, 84),  // Q2_K
        11 => (256, 110), // Q3_K
        12 => (256, 144), // Q4_K
        13 => (256, 176), // Q5_K
        14 => (256, 210), // Q6_K
        15 => (256, 292), // Q8_K
        24 => (1, 1),     // I8
        25 => (1, 2),     // I16
        26 => (1, 4),     // I32
        27 => (1, 8),     // I64
        28 => (1, 8),     // F64
        30 => (1, 2),     // BF16
        _ => return None,
    })
}

/// The size of a scalar value type (u8, i8, bool; u16, i16; u32, i32, f32; u64, i64, f64);
/// `None` for strings, arrays and unknown types.
fn scalar_bytes(value_type: u32) -> Option<u64> {
    match value_type {
        0 | 1 | 7 => Some(1),
        2 | 3 => Some(2),
        4..=6 => Some(4),
        10..=12 => Some(8),
        _ => None,
    }
}

/// The header's reader: where it is, how large the file is, and whether it reads v1 sizes.
struct Walk<R> {
    input: R,
    at: u64,
    len: u64,
    v1: bool,
}

impl<R: Read + Seek> Walk<R> {
    fn left(&self) -> u64 {
        self.len - self.at
    }

    /// Claims `n` more bytes of the header: within the file and the header's maximum.
    fn claim(&mut self, n: u64, what: &str) -> Result<(), GgufError> {
        if n > self.left() {
            return Err(bad(format!(
                "{what} declares {n} bytes, {} remain in the file",
                self.left()
            )));
        }
        if self.at + n > MAX_HEADER_BYTES {
            return Err(bad(format!(
                "the header exceeds {MAX_HEADER_BYTES} bytes at {what}"
            )));
        }
        self.at += n;
        Ok(())
    }

    fn bytes<const N: usize>(&mut self, what: &str) -> Result<[u8; N], GgufError> {
        self.claim(N as u64, what)?;
        let mut b = [0u8; N];
        self.input
            .read_exact(&mut b)
            .map_err(|e| bad(format!("{what}: {e}")))?;
        Ok(b)
    }

    fn u32(&mut self, what: &str) -> Result<u32, GgufError> {
        Ok(u32::from_le_bytes(self.bytes(what)?))
    }

    fn u64(&mut self, what: &str) -> Result<u64, GgufError> {
        Ok(u64::from_le_bytes(self.bytes(what)?))
    }

    /// A length or count: u32 in version 1, u64 after.
    fn size(&mut self, what: &str) -> Result<u64, GgufError> {
        if self.v1 {
            self.u32(what).map(u64::from)
        } else {
            self.u64(what)
        }
    }

    fn skip(&mut self, n: u64, what: &str) -> Result<(), GgufError> {
        self.claim(n, what)?;
        self.input
            .seek_relative(n as i64)
            .map_err(|e| bad(format!("{what}: {e}")))
    }

    fn string(&mut self, what: &str) -> Result<(), GgufError> {
        let n = self.size(what)?;
        self.skip(n, what)
    }

    /// A string of at most `max` bytes, read (lossily as UTF-8); a longer one is skipped and
    /// `None`.
    fn short_string(&mut self, max: u64, what: &str) -> Result<Option<String>, GgufError> {
        let n = self.size(what)?;
        if n > max {
            return self.skip(n, what).map(|()| None);
        }
        self.claim(n, what)?;
        let mut b = vec![0u8; n as usize];
        self.input
            .read_exact(&mut b)
            .map_err(|e| bad(format!("{what}: {e}")))?;
        Ok(Some(String::from_utf8_lossy(&b).into_owned()))
    }

    /// One key-value pair: the value's integer, or its string when short, is returned when the
    /// key is one the walk keeps (`keep`); every other value is walked and skipped.
    fn pair(&mut self, keep: impl Fn(&str) -> bool) -> Result<Option<(String, Kept)>, GgufError> {
        // Keys are short in every model; a long one is walked, never kept.
        let key = self.short_string(MAX_KEPT_STRING, "a key")?;
        let t = self.u32("a value type")?;
        let Some(key) = key.filter(|k| keep(k)) else {
            return self.value(t, 0, "a value").map(|()| None);
        };
        let kept = match t {
            0 => Kept::Int(u64::from(self.bytes::<1>("a value")?[0])),
            2 => Kept::Int(u64::from(u16::from_le_bytes(self.bytes("a value")?))),
            4 => Kept::Int(u64::from(self.u32("a value")?)),
            5 => Kept::Int(i32::from_le_bytes(self.bytes("a value")?).max(0) as u64),
            10 => Kept::Int(self.u64("a value")?),
            11 => Kept::Int(i64::from_le_bytes(self.bytes("a value")?).max(0) as u64),
            8 => match self.short_string(MAX_KEPT_STRING, "a value")? {
                Some(text) => Kept::Text(text),
                None => return Ok(None),
            },
            other => return self.value(other, 0, "a value").map(|()| None),
        };
        Ok(Some((key, kept)))
    }

    fn count(&mut self, what: &str, min_bytes: u64) -> Result<u64, GgufError> {
        let n = self.size(what)?;
        if n > MAX_COUNT || n.saturating_mul(min_bytes) > self.left() {
            return Err(bad(format!(
                "{what} declares {n} entries, more than the file can hold"
            )));
        }
        Ok(n)
    }

    /// One value of type `t`; arrays nest at most [`MAX_DEPTH`] deep.
    fn value(&mut self, t: u32, depth: u32, what: &str) -> Result<(), GgufError> {
        match (t, scalar_bytes(t)) {
            (_, Some(n)) => self.skip(n, what),
            (8, _) => self.string(what),
            (9, _) if depth < MAX_DEPTH => {
                let element = self.u32(what)?;
                // The fewest bytes one element takes: a scalar's size, a string's length field,
                // an array's type and count.
                let size = match (element, scalar_bytes(element)) {
                    (_, Some(n)) => n,
                    (8, _) if self.v1 => 4,
                    (8, _) => 8,
                    (9, _) => 12,
                    (other, _) => return Err(bad(format!("{what}: unknown value type {other}"))),
                };
                let n = self.count(what, size)?;
                if matches!(element, 8 | 9) {
                    for _ in 0..n {
                        self.value(element, depth + 1, what)?;
                    }
                    Ok(())
                } else {
                    self.skip(n * size, what)
                }
            }
            (9, _) => Err(bad(format!("{what}: arrays nest deeper than {MAX_DEPTH}"))),
            (other, _) => Err(bad(format!("{what}: unknown value type {other}"))),
        }
    }
}

/// A value the walk keeps.
enum Kept {
    Int(u64),
    Text(String),
}

/// Whether the walk keeps `key`'s value: `general.architecture`, and any key ending in one of
/// [`ARCHITECTURE_KEYS`] (the architecture's name is not known until its key is read).
fn kept_key(key: &str) -> bool {
    key == "general.architecture"
        || ARCHITECTURE_KEYS
            .iter()
            .any(|k| key.strip_suffix(k).is_some_and(|head| head.ends_with('.')))
}

/// Walks the GGUF header of `input` (`len` bytes long), as [`check`] does for a file, and
/// returns its [`Architecture`].
pub fn check_reader<R: Read + Seek>(input: R, len: u64) -> Result<Architecture, GgufError> {
    let mut w = Walk {
        input,
        at: 0,
        len,
        v1: false,
    };
    if &w.bytes::<4>("the magic")? != b"GGUF" {
        return Err(bad("the magic is not GGUF"));
    }
    let version = w.u32("the version")?;
    if !(1..=3).contains(&version) {
        return Err(bad(format!("version {version} (1 to 3 are known)")));
    }
    w.v1 = version == 1;
    let tensors = w.count("the tensor count", 16)?;
    let pairs = w.count("the key-value count", 12)?;
    let mut kept = BTreeMap::new();
    for _ in 0..pairs {
        // A crafted header may repeat kept keys by the million: a few dozen are kept at most.
        let room = kept.len() < MAX_KEPT;
        if let Some((key, value)) = w.pair(|k| room && kept_key(k))? {
            kept.insert(key, value);
        }
    }
    for _ in 0..tensors {
        w.string("a tensor name")?;
        let dims = w.u32("a tensor's dimension count")?;
        if dims == 0 || dims > MAX_DIMS {
            return Err(bad(format!(
                "a tensor has {dims} dimensions (1 to {MAX_DIMS})"
            )));
        }
        let mut elements: u64 = 1;
        for _ in 0..dims {
            let d = w.size("a tensor's dimension")?;
            elements = elements
                .checked_mul(d)
                .ok_or_else(|| bad("a tensor's element count overflows"))?;
        }
        let t = w.u32("a tensor's type")?;
        let (per_block, block_bytes) =
            block(t).ok_or_else(|| bad(format!("a tensor has the unknown type {t}")))?;
        let offset = w.u64("a tensor's offset")?;
        let bytes = elements.div_ceil(per_block).saturating_mul(block_bytes);
        if offset.saturating_add(bytes) > len {
            return Err(bad(format!(
                "a tensor of {bytes} bytes at offset {offset} lies beyond the file's {len} bytes"
            )));
        }
    }
    Ok(architecture(kept))
}

/// The architecture the kept pairs declare: the name, then its own sizes (another
/// architecture's keys are ignored).
fn architecture(kept: BTreeMap<String, Kept>) -> Architecture {
    let name = kept.iter().find_map(|(k, v)| match v {
        Kept::Text(text) if k == "general.architecture" => Some(text.clone()),
        _ => None,
    });
    let mut sizes = BTreeMap::new();
    if let Some(name) = &name {
        for (key, value) in &kept {
            let Kept::Int(n) = value else { continue };
            let Some(suffix) = key
                .strip_prefix(name.as_str())
                .and_then(|k| k.strip_prefix('.'))
            else {
                continue;
            };
            if let Some(&known) = ARCHITECTURE_KEYS.iter().find(|&&k| k == suffix) {
                sizes.insert(known, *n);
            }
        }
    }
    Architecture { name, sizes }
}

/// Checks the header of the GGUF file at `path` (see the module's documentation) and returns
/// the architecture it declares.
pub fn check(path: &Path) -> Result<Architecture, GgufError> {
    let file = std::fs::File::open(path).map_err(|e| bad(e.to_string()))?;
    let meta = file.metadata().map_err(|e| bad(e.to_string()))?;
    if !meta.is_file() {
        return Err(bad("not a regular file"));
    }
    check_reader(BufReader::new(file), meta.len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    /// A GGUF v3 header: `pairs` and `tensors` as given, then `extra` bytes of data.
    fn header(
        pairs: &[(&str, Vec<u8>)],
        tensors: &[(&str, &[u64], u32, u64)],
        extra: usize,
    ) -> Vec<u8> {
        let mut b = b"GGUF".to_vec();
        b.extend(3u32.to_le_bytes());
        b.extend((tensors.len() as u64).to_le_bytes());
        b.extend((pairs.len() as u64).to_le_bytes());
        let string = |b: &mut Vec<u8>, s: &str| {
            b.extend((s.len() as u64).to_le_bytes());
            b.extend(s.as_bytes());
        };
        for (k, v) in pairs {
            string(&mut b, k);
            b.extend(v);
        }
        for (name, dims, t, offset) in tensors {
            string(&mut b, name);
            b.extend((dims.len() as u32).to_le_bytes());
            for d in *dims {
                b.extend(d.to_le_bytes());
            }
            b.extend(t.to_le_bytes());
            b.extend(offset.to_le_bytes());
        }
        b.extend(vec![0u8; extra]);
        b
    }

    fn run(b: &[u8]) -> Result<Architecture, GgufError> {
        check_reader(Cursor::new(b), b.len() as u64)
    }

    fn string_value(s: &str) -> Vec<u8> {
        let mut b = 8u32.to_le_bytes().to_vec();
        b.extend((s.len() as u64).to_le_bytes());
        b.extend(s.as_bytes());
        b
    }

    #[test]
    fn the_architecture_s_name_and_sizes_are_kept_and_nothing_else() {
        let b = header(
            &[
                ("qwen2.block_count", u32_value(28)),
                ("general.architecture", string_value("qwen2")),
                (
                    "qwen2.embedding_length",
                    [10u32.to_le_bytes().to_vec(), 1536u64.to_le_bytes().to_vec()].concat(),
                ),
                ("qwen2.attention.head_count_kv", u32_value(2)),
                ("llama.block_count", u32_value(99)),
                ("qwen2.context_length", u32_value(32768)),
                ("tokenizer.ggml.tokens", string_array(&["a", "b"])),
            ],
            &[],
            0,
        );
        let arch = run(&b).unwrap();
        assert_eq!(arch.name.as_deref(), Some("qwen2"));
        let sizes: Vec<_> = arch.sizes.into_iter().collect();
        assert_eq!(
            sizes,
            vec![
                ("attention.head_count_kv", 2),
                ("block_count", 28),
                ("embedding_length", 1536)
            ]
        );
        // No name: nothing is known.
        let nameless = header(&[("llama.block_count", u32_value(30))], &[], 0);
        assert_eq!(run(&nameless).unwrap(), Architecture::default());
    }

    fn u32_value(v: u32) -> Vec<u8> {
        [4u32.to_le_bytes(), v.to_le_bytes()].concat()
    }

    fn string_array(items: &[&str]) -> Vec<u8> {
        let mut b = 9u32.to_le_bytes().to_vec();
        b.extend(8u32.to_le_bytes());
        b.extend((items.len() as u64).to_le_bytes());
        for s in items {
            b.extend((s.len() as u64).to_le_bytes());
            b.extend(s.as_bytes());
        }
        b
    }

    #[test]
    fn a_well_formed_header_passes() {
        let b = header(
            &[
                ("general.alignment", u32_value(32)),
                ("tokenizer.ggml.tokens", string_array(&["a", "b", "<s>"])),
            ],
            &[("w", &[64, 2], 0, 0), ("q", &[64], 3, 512)],
            1024,
        );
        run(&b).unwrap();
    }

    #[test]
    fn declared_sizes_beyond_the_file_are_refused_before_anything_is_read() {
        // The probe's 28 bytes: one key declaring 2^46 bytes.
        let mut b = b"GGUF".to_vec();
        b.extend(3u32.to_le_bytes());
        b.extend(0u64.to_le_bytes());
        b.extend(1u64.to_le_bytes());
        b.extend((1u64 << 46).to_le_bytes());
        assert_eq!(b.len(), 32);
        assert!(run(&b[..28]).is_err());
        // Room for the pair's smallest form, not for its key.
        let mut roomy = b.clone();
        roomy.extend([0u8; 16]);
        let err = run(&roomy).unwrap_err();
        assert!(err.to_string().contains("remain in the file"), "{err}");
        // A 2^63-byte key, 2^60 pairs, a 2^60-element array.
        let mut huge_key = b[..24].to_vec();
        huge_key.extend((1u64 << 63).to_le_bytes());
        assert!(run(&huge_key).is_err());
        let mut many = b"GGUF".to_vec();
        many.extend(3u32.to_le_bytes());
        many.extend(0u64.to_le_bytes());
        many.extend((1u64 << 60).to_le_bytes());
        assert!(run(&many).unwrap_err().to_string().contains("entries"));
        let mut array = 9u32.to_le_bytes().to_vec();
        array.extend(4u32.to_le_bytes());
        array.extend((1u64 << 60).to_le_bytes());
        assert!(run(&header(&[("a", array)], &[], 64)).is_err());
    }

    /// `b` as a file of `len` bytes, all but `b` a hole.
    fn sparse(name: &str, b: &[u8], len: u64) -> std::path::PathBuf {
        let path = std::env::temp_dir().join(format!("entroll-{name}-{}.gguf", std::process::id()));
        std::fs::write(&path, b).unwrap();
        let file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        file.set_len(len).unwrap();
        path
    }

    #[test]
    fn a_sparse_file_declaring_billions_of_entries_is_refused_at_once() {
        // 20 GB long, almost all of it a hole: the counts are bounded, not walked.
        let mut b = b"GGUF".to_vec();
        b.extend(3u32.to_le_bytes());
        b.extend(0u64.to_le_bytes());
        b.extend((1u64 << 60).to_le_bytes());
        let path = sparse("sparse-pairs", &b, 20 << 30);
        assert!(check(&path).unwrap_err().to_string().contains("entries"));
        std::fs::remove_file(&path).unwrap();
        // Within the counts' bound, the hole read as empty strings: refused at the header's
        // bound, not after 2^26 of them.
        let mut b = b"GGUF".to_vec();
        b.extend(3u32.to_le_bytes());
        b.extend(0u64.to_le_bytes());
        b.extend(1u64.to_le_bytes());
        b.extend(1u64.to_le_bytes());
        b.extend(b"k");
        b.extend(9u32.to_le_bytes());
        b.extend(8u32.to_le_bytes());
        b.extend(MAX_COUNT.to_le_bytes());
        let path = sparse("sparse-strings", &b, 20 << 30);
        let err = check(&path).unwrap_err();
        std::fs::remove_file(&path).unwrap();
        assert!(err.to_string().contains("header exceeds"), "{err}");
    }

    #[test]
    fn tensors_must_fit_the_file() {
        let over = header(&[], &[("w", &[1 << 20, 1 << 20], 0, 0)], 64);
        assert!(run(&over)
            .unwrap_err()
            .to_string()
            .contains("beyond the file"));
        let overflow = header(&[], &[("w", &[u64::MAX, 3], 0, 0)], 64);
        assert!(run(&overflow)
            .unwrap_err()
            .to_string()
            .contains("overflows"));
        let five = header(&[], &[("w", &[1, 1, 1, 1, 1], 0, 0)], 64);
        assert!(run(&five).is_err());
        let unknown = header(&[], &[("w", &[4], 99, 0)], 64);
        assert!(run(&unknown).is_err());
        assert!(run(b"GGML\x03\0\0\0").is_err());
        assert!(run(b"").is_err());
    }
}
