//! A bounded read of a safetensors file's header, and the tensor table it declares, before
//! any loader that trusts the file maps it.
//!
//! A safetensors file is an 8-byte little-endian length `n`, `n` bytes of JSON naming each
//! tensor's `dtype`, `shape` and `data_offsets` (`[begin, end)` within the data that follows),
//! then the data. A weight update is compared with the served model by `config.json`; a
//! directory whose `config.json` is the served model's while its tensors have other shapes
//! would pass that, and candle loads each tensor whole before it compares its shape (a sparse
//! file declaring a terabyte-sized tensor is a terabyte allocation). [`check`] reads the header
//! alone, bounded by [`MAX_HEADER_BYTES`] and the file's size, checks every tensor (a known
//! dtype, at most [`MAX_DIMS`] dimensions, a size in whole bytes without overflow that equals
//! its offsets' span, inside the data, overlapping no other), and returns the [`TensorTable`] a
//! weight update must match name for name and shape for shape.

use std::collections::BTreeMap;
use std::io::{BufReader, Read};
use std::path::Path;

use serde::Deserialize;
use serde_json::Value;

/// The largest header read (the `safetensors` crate's own limit).
pub const MAX_HEADER_BYTES: u64 = 100_000_000;
/// The most dimensions of a tensor.
const MAX_DIMS: usize = 8;
/// The header's entry that holds free-form metadata, not a tensor.
const METADATA: &str = "__metadata__";

/// Every tensor of a checkpoint: its name and shape.
pub type TensorTable = BTreeMap<String, Vec<u64>>;

/// Why a file is not a well-formed safetensors header.
#[derive(Debug, thiserror::Error)]
#[error("not a well-formed safetensors file: {0}")]
pub struct SafetensorsError(String);

fn bad(why: impl Into<String>) -> SafetensorsError {
    SafetensorsError(why.into())
}

/// One tensor's entry in the header.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Entry {
    dtype: String,
    shape: Vec<u64>,
    data_offsets: (u64, u64),
}

/// The bits of one element of a safetensors dtype (the format's whole list, sub-byte floats
/// included).
fn element_bits(dtype: &str) -> Option<u64> {
    Some(match dtype {
        "F4" => 4,
        "F6_E2M3" | "F6_E3M2" => 6,
        "BOOL" | "U8" | "I8" | "F8_E5M2" | "F8_E4M3" | "F8_E8M0" => 8,
        "I16" | "U16" | "F16" | "BF16" => 16,
        "I32" | "U32" | "F32" => 32,
        "I64" | "U64" | "F64" | "C64" => 64,
        _ => return None,
    })
}

/// Reads the header of `input` (a file of `len` bytes) and returns its tensor table.
pub fn check_reader<R: Read>(mut input: R, len: u64) -> Result<TensorTable, SafetensorsError> {
    let mut n = [0u8; 8];
    input
        .read_exact(&mut n)
        .map_err(|_| bad(format!("{len} bytes hold no header length")))?;
    let n = u64::from_le_bytes(n);
    if n > MAX_HEADER_BYTES {
        return Err(bad(format!(
            "a header of {n} bytes (at most {MAX_HEADER_BYTES})"
        )));
    }
    let data_len = len
        .checked_sub(8)
        .and_then(|rest| rest.checked_sub(n))
        .ok_or_else(|| bad(format!("a header of {n} bytes in a file of {len}")))?;
    let entries: BTreeMap<String, Value> =
        serde_json::from_reader(BufReader::new(input.take(n))).map_err(|e| bad(e.to_string()))?;
    let mut spans = Vec::with_capacity(entries.len());
    let mut table = TensorTable::new();
    for (name, entry) in entries {
        if name == METADATA {
            continue;
        }
        let entry: Entry =
            serde_json::from_value(entry).map_err(|e| bad(format!("tensor {name:?}: {e}")))?;
        let bits = element_bits(&entry.dtype).ok_or_else(|| {
            bad(format!(
                "tensor {name:?} has the unknown dtype {}",
                entry.dtype
            ))
        })?;
        if entry.shape.len() > MAX_DIMS {
            return Err(bad(format!(
                "tensor {name:?} has {} dimensions (at most {MAX_DIMS})",
                entry.shape.len()
            )));
        }
        let bits = entry
            .shape
            .iter()
            .try_fold(bits, |acc, &d| acc.checked_mul(d))
            .ok_or_else(|| bad(format!("tensor {name:?}: its byte count overflows")))?;
        if bits % 8 != 0 {
            return Err(bad(format!(
                "tensor {name:?}: {bits} bits are not whole bytes"
            )));
        }
        let bytes = bits / 8;
        let (begin, end) = entry.data_offsets;
        if begin > end || end - begin != bytes || end > data_len {
            return Err(bad(format!(
                "tensor {name:?} of {bytes} bytes at [{begin}, {end}) in {data_len} bytes of data"
            )));
        }
        spans.push((begin, end, name.clone()));
        table.insert(name, entry.shape);
    }
    spans.sort_unstable();
    for pair in spans.windows(2) {
        if pair[1].0 < pair[0].1 {
            return Err(bad(format!(
                "tensors {:?} and {:?} overlap",
                pair[0].2, pair[1].2
            )));
        }
    }
    Ok(table)
}

/// Checks the header of the safetensors file at `path` (see the module's documentation) and
/// returns its tensor table.
pub fn check(path: &Path) -> Result<TensorTable, SafetensorsError> {
    let file = std::fs::File::open(path).map_err(|e| bad(e.to_string()))?;
    let meta = file.metadata().map_err(|e| bad(e.to_string()))?;
    if !meta.is_file() {
        return Err(bad("not a regular file"));
    }
    check_reader(file, meta.len())
}

/// The bytes of a safetensors file of F32 `tensors` (name and shape), laid out one after
/// another, its data zeros: for tests.
#[cfg(test)]
pub(crate) fn file_of(tensors: &[(&str, &[u64])]) -> Vec<u8> {
    let mut header = serde_json::Map::new();
    let mut at = 0u64;
    for (name, shape) in tensors {
        let bytes = 4 * shape.iter().product::<u64>();
        header.insert(
            name.to_string(),
            serde_json::json!({"dtype": "F32", "shape": shape, "data_offsets": [at, at + bytes]}),
        );
        at += bytes;
    }
    let header = Value::Object(header).to_string();
    let mut file = (header.len() as u64).to_le_bytes().to_vec();
    file.extend(header.as_bytes());
    file.resize(file.len() + at as usize, 0);
    file
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(bytes: &[u8]) -> Result<TensorTable, SafetensorsError> {
        check_reader(bytes, bytes.len() as u64)
    }

    /// A file whose header is `header` and whose data is `data` zero bytes.
    fn raw(header: &str, data: usize) -> Vec<u8> {
        let mut file = (header.len() as u64).to_le_bytes().to_vec();
        file.extend(header.as_bytes());
        file.resize(file.len() + data, 0);
        file
    }

    #[test]
    fn a_well_formed_file_gives_its_table_and_metadata_is_skipped() {
        let file = file_of(&[("a", &[2, 3]), ("b", &[4])]);
        let table = read(&file).unwrap();
        assert_eq!(
            table,
            TensorTable::from([("a".into(), vec![2, 3]), ("b".into(), vec![4])])
        );
        let with_metadata = raw(
            r#"{"__metadata__": {"format": "pt"}, "s": {"dtype": "BF16", "shape": [], "data_offsets": [0, 2]}}"#,
            2,
        );
        assert_eq!(read(&with_metadata).unwrap()["s"], Vec::<u64>::new());
        // Sub-byte floats: four F4 elements are two bytes.
        let packed = raw(
            r#"{"q": {"dtype": "F4", "shape": [4], "data_offsets": [0, 2]}}"#,
            2,
        );
        assert_eq!(read(&packed).unwrap()["q"], vec![4]);
    }

    #[test]
    fn crafted_headers_are_refused_with_their_reason() {
        let entry = |dtype: &str, shape: &str, begin: u64, end: u64| {
            format!(
                r#"{{"t": {{"dtype": "{dtype}", "shape": {shape}, "data_offsets": [{begin}, {end}]}}}}"#
            )
        };
        let huge_length = {
            let mut f = (1u64 << 60).to_le_bytes().to_vec();
            f.extend(b"{}");
            f
        };
        let past_the_file = {
            let mut f = 1000u64.to_le_bytes().to_vec();
            f.extend(b"{}");
            f
        };
        let two = r#"{"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}, "b": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}}"#;
        let overflow = format!("[{}, {}]", 1u64 << 40, 1u64 << 40);
        for (file, why) in [
            (vec![1u8, 2, 3], "no header length"),
            (huge_length, "at most"),
            (past_the_file, "in a file of"),
            (raw("{not json", 0), "key must be a string"),
            (raw(&entry("F33", "[1]", 0, 4), 4), "unknown dtype F33"),
            (
                raw(&entry("F32", "[1,1,1,1,1,1,1,1,1]", 0, 4), 4),
                "9 dimensions",
            ),
            (raw(&entry("F32", &overflow, 0, 4), 4), "overflows"),
            (raw(&entry("F32", "[2]", 0, 4), 8), "of 8 bytes at [0, 4)"),
            (
                raw(&entry("F4", "[3]", 0, 2), 2),
                "12 bits are not whole bytes",
            ),
            (raw(&entry("F32", "[2]", 8, 0), 8), "at [8, 0)"),
            (raw(&entry("F32", "[2]", 0, 8), 4), "in 4 bytes of data"),
            (raw(two, 8), "overlap"),
            (
                raw(r#"{"t": {"dtype": "F32", "shape": [1]}}"#, 4),
                "data_offsets",
            ),
        ] {
            let error = read(&file).expect_err(why).to_string();
            assert!(error.contains(why), "{why:?} not in {error:?}");
        }
    }
}
