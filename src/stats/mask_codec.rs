//! The compact wire form of a sampling mask (`return_sampling_mask`, docs/api.md): the kept
//! token ids in ascending order, each written as its gap to the one before (the first as
//! itself, every later one as `id - previous - 1`) in LEB128 (7 bits a byte, low bits first,
//! high bit set on every byte but a number's last), the bytes in standard base64 with padding.
//! A run of adjacent ids costs one byte an id; a nucleus of a few hundred ids spread over a
//! 150,000-token vocabulary about two.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;

/// The wire form of `ids`, which must be ascending and distinct.
pub fn encode(ids: &[u32]) -> String {
    let mut bytes = Vec::with_capacity(ids.len() * 2);
    let mut next = 0u64;
    for &id in ids {
        let id = u64::from(id);
        debug_assert!(id >= next, "ids must be ascending and distinct");
        let mut gap = id - next;
        while gap >= 0x80 {
            bytes.push((gap & 0x7f) as u8 | 0x80);
            gap >>= 7;
        }
        bytes.push(gap as u8);
        next = id + 1;
    }
    STANDARD.encode(bytes)
}

/// The ids of a wire form, or why it is not one.
pub fn decode(text: &str) -> Result<Vec<u32>, String> {
    let bytes = STANDARD.decode(text).map_err(|e| e.to_string())?;
    let (mut ids, mut next, mut gap, mut shift) = (Vec::new(), 0u64, 0u64, 0u32);
    for (i, &b) in bytes.iter().enumerate() {
        if shift > 28 {
            return Err(format!("byte {i}: a gap longer than 32 bits"));
        }
        gap |= u64::from(b & 0x7f) << shift;
        shift += 7;
        if b & 0x80 == 0 {
            let id = next + gap;
            let id = u32::try_from(id).map_err(|_| format!("byte {i}: id {id} exceeds u32"))?;
            ids.push(id);
            next = u64::from(id) + 1;
            (gap, shift) = (0, 0);
        }
    }
    if shift != 0 {
        return Err("the last number is cut short".into());
    }
    Ok(ids)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_bytes() {
        // 0 → gap 0; 1 → gap 0; 200 → gap 198 = 0xC6 0x01; 49151 → gap 48950 = 0xB6 0xFE 0x02.
        let wire = encode(&[0, 1, 200, 49_151]);
        let bytes = STANDARD.decode(&wire).unwrap();
        assert_eq!(bytes, vec![0x00, 0x00, 0xC6, 0x01, 0xB6, 0xFE, 0x02]);
        assert_eq!(decode(&wire).unwrap(), vec![0, 1, 200, 49_151]);
        assert_eq!(encode(&[]), "");
        assert_eq!(decode("").unwrap(), Vec::<u32>::new());
    }

    #[test]
    fn round_trips_and_is_compact_for_runs() {
        let mut rng = crate::stats::test_rng::TestRng(5);
        for _ in 0..200 {
            let n = rng.next_u64() % 400;
            let mut ids: Vec<u32> = (0..n).map(|_| (rng.next_u64() % 152_000) as u32).collect();
            ids.sort_unstable();
            ids.dedup();
            assert_eq!(decode(&encode(&ids)).unwrap(), ids);
        }
        let extremes = [0, u32::MAX - 1, u32::MAX];
        assert_eq!(decode(&encode(&extremes)).unwrap(), extremes);
        // A run of 300 adjacent ids: one byte each, 4 base64 characters per 3 bytes.
        let run: Vec<u32> = (1000..1300).collect();
        assert_eq!(encode(&run).len(), 4 * 302usize.div_ceil(3));
    }

    #[test]
    fn bad_forms_are_refused() {
        assert!(decode("not base64!").is_err());
        assert!(decode(&STANDARD.encode([0x80])).is_err(), "cut short");
        assert!(decode(&STANDARD.encode([0xff, 0xff, 0xff, 0xff, 0xff, 0x01])).is_err());
    }
}
