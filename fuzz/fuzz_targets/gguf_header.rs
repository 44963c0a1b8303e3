//! Any file handed to the server as a `.gguf` model is judged by the bounded header walk
//! without panicking, and without reading past what the file holds: the walk runs over the
//! fuzzed bytes as a file of a fuzzed declared length (a sparse file's hole reads as zeros).
#![no_main]

use std::io::{Cursor, Read, Seek, SeekFrom};

use entroll::engine::gguf_header::check_reader;
use libfuzzer_sys::fuzz_target;

/// `bytes`, then zeros up to `len`: what a sparse file reads as.
struct Sparse<'a> {
    bytes: Cursor<&'a [u8]>,
    len: u64,
}

impl Read for Sparse<'_> {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        let at = self.bytes.position();
        if at >= self.len {
            return Ok(0);
        }
        let n = out.len().min((self.len - at) as usize);
        let got = self.bytes.read(&mut out[..n])?;
        if got > 0 {
            return Ok(got);
        }
        out[..n].fill(0);
        self.bytes.set_position(at + n as u64);
        Ok(n)
    }
}

impl Seek for Sparse<'_> {
    fn seek(&mut self, to: SeekFrom) -> std::io::Result<u64> {
        self.bytes.seek(to)
    }
}

fuzz_target!(|input: (u32, &[u8])| {
    let (extra, bytes) = input;
    let len = bytes.len() as u64 + u64::from(extra % (1 << 20));
    let file = Sparse {
        bytes: Cursor::new(bytes),
        len,
    };
    if let Err(e) = check_reader(file, len) {
        assert!(e.to_string().starts_with("not a well-formed GGUF file"));
    }
});
