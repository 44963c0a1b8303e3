//! Any file handed to the server in a safetensors checkpoint is judged by the bounded header
//! read without panicking and without reading past what the file holds: the read runs over the
//! fuzzed bytes as a file of a fuzzed declared length (a sparse file's hole reads as zeros),
//! and a table it accepts describes tensors that all lie inside that length.
#![no_main]

use std::io::Read;

use entroll::engine::safetensors_header::check_reader;
use libfuzzer_sys::fuzz_target;

/// `bytes`, then zeros up to `len`: what a sparse file reads as.
struct Sparse<'a> {
    bytes: &'a [u8],
    at: u64,
    len: u64,
}

impl Read for Sparse<'_> {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        let n = out.len().min(self.len.saturating_sub(self.at) as usize);
        for (i, byte) in out[..n].iter_mut().enumerate() {
            *byte = self.bytes.get(self.at as usize + i).copied().unwrap_or(0);
        }
        self.at += n as u64;
        Ok(n)
    }
}

fuzz_target!(|input: (u32, &[u8])| {
    let (extra, bytes) = input;
    let len = bytes.len() as u64 + u64::from(extra % (1 << 20));
    match check_reader(Sparse { bytes, at: 0, len }, len) {
        Ok(table) => {
            let elements: u128 = table
                .values()
                .map(|shape| shape.iter().map(|&d| u128::from(d)).product::<u128>())
                .sum();
            assert!(elements <= u128::from(len), "{elements} elements in {len} bytes");
        }
        Err(e) => assert!(e.to_string().starts_with("not a well-formed safetensors file")),
    }
});
