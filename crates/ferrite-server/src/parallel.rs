//! Per-shape work of one transaction spread over the machine's cores.
//!
//! A change that concerns a thousand relational shapes is a thousand independent pieces of
//! work — each shape's own state, tags and log — done while every client of those shapes waits
//! for the first response. Done on one thread they take as long as all of them together; split
//! over the cores they finish sooner (the HTTP side is idle at that moment: its clients are
//! waiting for exactly this).

/// Below this many items the work stays on the calling thread (starting threads costs more).
const MIN_ITEMS: usize = 64;
/// At most this many threads, whatever the machine has.
const MAX_THREADS: usize = 8;

/// The threads to use, found once: asking the system reads the cgroup's CPU quota from files,
/// which costs more than a small transaction's whole routing.
fn threads() -> usize {
    static THREADS: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *THREADS.get_or_init(|| std::thread::available_parallelism().map_or(1, |n| n.get()).min(MAX_THREADS))
}

/// `f` applied to every item, the results in the items' order; the items are split into one
/// contiguous part per core when there are many.
pub fn map<T: Send, R: Send>(items: Vec<T>, f: impl Fn(T) -> R + Sync) -> Vec<R> {
    if items.len() < MIN_ITEMS {
        return items.into_iter().map(f).collect();
    }
    let threads = threads();
    if threads < 2 {
        return items.into_iter().map(f).collect();
    }
    let per_part = items.len().div_ceil(threads);
    let mut parts: Vec<Vec<T>> = Vec::with_capacity(threads);
    let mut items = items.into_iter();
    loop {
        let part: Vec<T> = items.by_ref().take(per_part).collect();
        if part.is_empty() {
            break;
        }
        parts.push(part);
    }
    let f = &f;
    std::thread::scope(|scope| {
        let mut parts = parts.into_iter();
        // The calling thread takes the first part itself.
        let first = parts.next().unwrap_or_default();
        let others: Vec<_> =
            parts.map(|part| scope.spawn(move || part.into_iter().map(f).collect::<Vec<R>>())).collect();
        let mut out: Vec<R> = first.into_iter().map(f).collect();
        for handle in others {
            match handle.join() {
                Ok(results) => out.extend(results),
                Err(panic) => std::panic::resume_unwind(panic),
            }
        }
        out
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn results_keep_the_items_order_whatever_the_split() {
        for n in [0, 1, 63, 64, 65, 1000, 1001] {
            let items: Vec<usize> = (0..n).collect();
            assert_eq!(super::map(items, |i| i * 2), (0..n).map(|i| i * 2).collect::<Vec<_>>(), "{n} items");
        }
    }
}
