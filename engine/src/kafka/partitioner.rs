//! Partition choice for records without a fixed partition, identical to the Java
//! producer's default: keyed records go to `toPositive(murmur2(key)) % partitions`, so a
//! key lands where a Java producer (or Kafka Connect) would have put it; unkeyed records
//! are spread over all partitions (sticky per batch, as KIP-480, so batches stay large).

/// Kafka's murmur2 (`org.apache.kafka.common.utils.Utils.murmur2`), bit for bit.
pub fn murmur2(data: &[u8]) -> i32 {
    const SEED: u32 = 0x9747_b28c;
    const M: u32 = 0x5bd1_e995;
    const R: u32 = 24;
    // Java hashes the length as an int; keys beyond 2 GiB do not exist in Kafka.
    let length = u32::try_from(data.len()).unwrap_or(u32::MAX);
    let mut h = SEED ^ length;
    let mut chunks = data.chunks_exact(4);
    for chunk in &mut chunks {
        let mut k = u32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    let rest = chunks.remainder();
    if rest.len() >= 3 {
        h ^= u32::from(rest[2]) << 16;
    }
    if rest.len() >= 2 {
        h ^= u32::from(rest[1]) << 8;
    }
    if !rest.is_empty() {
        h ^= u32::from(rest[0]);
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    // Reinterpret as Java's signed int.
    i32::from_ne_bytes(h.to_ne_bytes())
}

/// The partition the Java default partitioner picks for `key` among `partitions`.
pub fn partition_for_key(key: &[u8], partitions: i32) -> i32 {
    debug_assert!(partitions > 0);
    (murmur2(key) & 0x7fff_ffff) % partitions.max(1)
}

/// Spreads unkeyed records: all records of one batch go to one partition, and
/// successive batches rotate, so every partition gets its share.
#[derive(Debug, Default)]
pub struct StickySpreader {
    next: u32,
}

impl StickySpreader {
    /// The partition for the next unkeyed batch.
    pub fn next_partition(&mut self, partitions: i32) -> i32 {
        let n = u32::try_from(partitions.max(1)).unwrap_or(1);
        let p = self.next % n;
        self.next = self.next.wrapping_add(1);
        i32::try_from(p).unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Kafka's own vectors, from `UtilsTest.testMurmur2`.
    #[test]
    fn murmur2_matches_the_java_client() {
        let cases: [(&[u8], i32); 6] = [
            (b"21", -973_932_308),
            (b"foobar", -790_332_482),
            (b"a-little-bit-long-string", -985_981_536),
            (b"a-little-bit-longer-string", -1_486_304_829),
            (
                b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8",
                -58_897_971,
            ),
            (b"abc", 479_470_107),
        ];
        for (key, hash) in cases {
            assert_eq!(murmur2(key), hash, "{}", String::from_utf8_lossy(key));
        }
    }

    #[test]
    fn keys_land_where_java_puts_them() {
        // toPositive(-790332482) = 1357151166; 1357151166 % 50 = 16.
        assert_eq!(partition_for_key(b"foobar", 50), 16);
        for key in [&b"21"[..], b"abc", b"", b"a-little-bit-longer-string"] {
            let p = partition_for_key(key, 7);
            assert!((0..7).contains(&p));
            assert_eq!(p, (murmur2(key) & 0x7fff_ffff) % 7);
        }
    }

    #[test]
    fn unkeyed_batches_rotate_over_all_partitions() {
        let mut s = StickySpreader::default();
        let picks: Vec<i32> = (0..6).map(|_| s.next_partition(3)).collect();
        assert_eq!(picks, [0, 1, 2, 0, 1, 2]);
    }
}
