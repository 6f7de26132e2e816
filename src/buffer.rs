//! Per-connection byte queues that hold memory only while they hold bytes.
//!
//! A connection owns two [`ByteQueue`]s: `inbuf` (bytes received but not yet
//! parsed into whole messages) and `outbuf` (replies the kernel has not taken
//! yet). Both are empty — and allocate nothing — for the common case of an
//! echo whose reply fits in the socket's send buffer: the reactor reads into
//! its one shared scratch buffer and writes the reply straight back, touching
//! these queues only for what is *left over*.
//!
//! Invariants:
//! - the bytes still owed come out in arrival order;
//! - an empty queue has released its allocation (capacity 0) and is a
//!   single null pointer, so an idle connection costs its slab entry and
//!   socket only;
//! - every change in held bytes/capacity is reported to a [`BufferGauge`],
//!   which is how stats (and tests) see the server's buffer memory.
//!
//! Trade-off: we free an emptied buffer instead of keeping a pool. A pool
//! saves a `malloc`/`free` pair per backpressure episode, but only buffers
//! that overflow the kernel's socket buffers ever get here, and the allocator
//! is cheap next to the system calls that filled them.

/// Totals over every connection's queues: what the server holds right now.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct BufferGauge {
    /// Bytes waiting in queues (unsent output plus unparsed input).
    pub held_bytes: usize,
    /// Heap capacity allocated for those queues.
    pub held_capacity: usize,
    /// The largest `held_bytes` ever seen (a high-water mark).
    pub peak_held_bytes: usize,
    /// The largest `held_capacity` ever seen: what `--max-memory` bounds.
    pub peak_held_capacity: usize,
}

impl BufferGauge {
    fn grew(&mut self, bytes: usize, old_capacity: usize, new_capacity: usize) {
        self.held_bytes += bytes;
        self.held_capacity = self.held_capacity + new_capacity - old_capacity;
        self.peak_held_bytes = self.peak_held_bytes.max(self.held_bytes);
        self.peak_held_capacity = self.peak_held_capacity.max(self.held_capacity);
    }

    fn shrank(&mut self, bytes: usize, old_capacity: usize, new_capacity: usize) {
        self.held_bytes -= bytes;
        self.held_capacity = self.held_capacity + new_capacity - old_capacity;
    }
}

/// A FIFO of bytes: append at the back, consume from the front.
///
/// Empty, it is one null pointer (8 bytes, no heap): most connections are
/// idle most of the time, and each has two of these.
#[derive(Debug, Default)]
pub struct ByteQueue {
    /// `None` exactly when the queue is empty.
    held: Option<Box<Held>>,
}

#[derive(Debug)]
struct Held {
    bytes: Vec<u8>,
    /// Bytes before `start` were already consumed (sent or parsed).
    start: usize,
}

/// Heap bytes of a queue holding `held`: the bytes' allocation plus the box.
fn heap_size(held: &Held) -> usize {
    held.bytes.capacity() + std::mem::size_of::<Held>()
}

impl ByteQueue {
    /// An empty queue; allocates nothing.
    pub const fn new() -> Self {
        ByteQueue { held: None }
    }

    /// No bytes held.
    pub fn is_empty(&self) -> bool {
        self.held.is_none()
    }

    /// Bytes held.
    pub fn len(&self) -> usize {
        self.as_slice().len()
    }

    /// Heap bytes allocated (0 when empty).
    pub fn capacity(&self) -> usize {
        self.held.as_deref().map_or(0, heap_size)
    }

    /// The held bytes, oldest first.
    pub fn as_slice(&self) -> &[u8] {
        match &self.held {
            Some(held) => &held.bytes[held.start..],
            None => &[],
        }
    }

    /// Append `more` at the back.
    pub fn push(&mut self, more: &[u8], gauge: &mut BufferGauge) {
        if more.is_empty() {
            return;
        }
        let old_capacity = self.capacity();
        let held = self.held.get_or_insert_with(|| {
            Box::new(Held {
                bytes: Vec::with_capacity(more.len()),
                start: 0,
            })
        });
        // Reclaim the consumed prefix before growing: once half the
        // allocation is dead space, one memmove is cheaper than a realloc.
        if held.start > 0 && held.start >= held.bytes.len() / 2 {
            held.bytes.drain(..held.start);
            held.start = 0;
        }
        held.bytes.extend_from_slice(more);
        gauge.grew(more.len(), old_capacity, self.capacity());
    }

    /// Drop the `n` oldest bytes (they were sent or parsed). Emptying the
    /// queue releases its allocation.
    pub fn consume(&mut self, n: usize, gauge: &mut BufferGauge) {
        assert!(
            n <= self.len(),
            "consume({n}) of a {}-byte queue",
            self.len()
        );
        let Some(held) = self.held.as_mut() else {
            return; // n == 0 on an empty queue
        };
        held.start += n;
        if held.start == held.bytes.len() {
            let old_capacity = self.capacity();
            self.held = None;
            gauge.shrank(n, old_capacity, 0);
        } else {
            gauge.shrank(n, 0, 0);
        }
    }

    /// Drop everything (the connection is closing), releasing the allocation.
    pub fn clear(&mut self, gauge: &mut BufferGauge) {
        let (held, old_capacity) = (self.len(), self.capacity());
        self.held = None;
        gauge.shrank(held, old_capacity, 0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_queue_allocates_nothing_and_is_one_pointer() {
        let q = ByteQueue::new();
        assert!(q.is_empty());
        assert_eq!(q.capacity(), 0);
        assert_eq!(
            std::mem::size_of::<ByteQueue>(),
            std::mem::size_of::<usize>()
        );
    }

    #[test]
    fn bytes_come_out_in_the_order_they_went_in() {
        let mut gauge = BufferGauge::default();
        let mut q = ByteQueue::new();
        q.push(b"hello ", &mut gauge);
        q.push(b"world", &mut gauge);
        q.consume(3, &mut gauge);
        assert_eq!(q.as_slice(), b"lo world");
        q.push(b"!", &mut gauge); // compacts: 3 dead bytes of 11
        assert_eq!(q.as_slice(), b"lo world!");
        assert_eq!(gauge.held_bytes, 9);
    }

    #[test]
    fn emptying_a_queue_releases_its_memory_and_the_gauge_sees_it() {
        let mut gauge = BufferGauge::default();
        let mut q = ByteQueue::new();
        q.push(&[7u8; 5000], &mut gauge);
        assert_eq!(gauge.held_bytes, 5000);
        assert!(gauge.held_capacity >= 5000);
        assert_eq!(gauge.held_capacity, q.capacity());
        q.consume(4000, &mut gauge);
        assert_eq!(gauge.held_bytes, 1000);
        q.consume(1000, &mut gauge);
        assert_eq!(q.capacity(), 0);
        assert_eq!(gauge.held_bytes, 0);
        assert_eq!(gauge.held_capacity, 0);
        assert_eq!(gauge.peak_held_bytes, 5000);
    }

    #[test]
    fn clear_drops_held_bytes_and_capacity() {
        let mut gauge = BufferGauge::default();
        let mut q = ByteQueue::new();
        q.push(b"pending", &mut gauge);
        q.consume(2, &mut gauge);
        q.clear(&mut gauge);
        assert_eq!(
            gauge,
            BufferGauge {
                held_bytes: 0,
                held_capacity: 0,
                peak_held_bytes: 7,
                peak_held_capacity: gauge.peak_held_capacity,
            }
        );
    }
}
