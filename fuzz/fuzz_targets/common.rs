//! Helpers shared by the fuzz targets.

use fjord_protocol::batch::{compute_crc, BatchIter};

/// Recompute the CRC32C of every whole batch at the start of `data` (up to where the bytes stop
/// being whole batches), so mutations inside the CRC-covered range reach the code under test.
pub fn fix_crcs(data: &mut [u8]) {
    let mut pos = 0;
    while let Some(Ok(batch)) = BatchIter::new(&data[pos..]).next() {
        let end = pos + batch.bytes.len();
        let crc = compute_crc(&data[pos..end]);
        data[pos + 17..pos + 21].copy_from_slice(&crc.to_be_bytes());
        pos = end;
    }
}
