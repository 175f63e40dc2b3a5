//! What Debezium's output owes to Java: the order a `java.util.HashMap` iterates its
//! keys in (Debezium writes transaction metadata's per-table counts and hstore values from
//! such maps), so Sluice writes the same bytes.

/// Java's `String.hashCode` (over UTF-16 code units).
pub(crate) fn java_hash(s: &str) -> i32 {
    s.encode_utf16()
        .fold(0_i32, |h, c| h.wrapping_mul(31).wrapping_add(i32::from(c)))
}

/// `keys` (in insertion order) in the order a `java.util.HashMap` of default capacity
/// iterates them: by bucket (the spread hash masked by the table size, which doubles past
/// 75% load), insertion order within a bucket (kept through resizes).
pub(crate) fn java_hashmap_order<T>(mut entries: Vec<(String, T)>) -> Vec<(String, T)> {
    let mut capacity = 16_usize;
    while entries.len() * 4 > capacity * 3 {
        capacity *= 2;
    }
    let bucket = |key: &str| {
        let h = java_hash(key) as u32;
        ((h ^ (h >> 16)) as usize) & (capacity - 1)
    };
    // A stable sort keeps insertion order within a bucket.
    entries.sort_by_key(|(k, _)| bucket(k));
    entries
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn collections_come_in_java_hashmap_order() {
        assert_eq!(java_hash("a"), 97);
        assert_eq!(java_hash("public.orders"), 762_281_482);
        // Inserted in this order into a java.util.HashMap (14 keys: one resize), its
        // keySet() iterates them as below (jshell, OpenJDK 17).
        let inserted = [
            "public.orders",
            "public.pgbench_history",
            "public.pgbench_accounts",
            "inventory.customers",
            "s1.a",
            "s2.b",
            "public.t13",
            "public.t1",
            "public.t2",
            "public.t3",
            "public.t4",
            "public.t5",
            "public.t6",
            "public.t7",
        ];
        let java = [
            "public.t13",
            "s1.a",
            "public.orders",
            "s2.b",
            "public.pgbench_history",
            "public.t7",
            "inventory.customers",
            "public.t4",
            "public.pgbench_accounts",
            "public.t3",
            "public.t6",
            "public.t5",
            "public.t2",
            "public.t1",
        ];
        let order: Vec<String> =
            java_hashmap_order(inserted.iter().map(|k| ((*k).to_owned(), ())).collect())
                .into_iter()
                .map(|(k, _)| k)
                .collect();
        assert_eq!(order, java);
    }
}
