//! Attack: a peer (or a file) announces a huge count inside a frame whose
//! checksum is valid. Every count is checked against the bytes left, but a
//! decoded element can be a hundred times larger in memory than its
//! smallest encoding, so reserving the announced count up front would let
//! 16 MiB of input reserve gigabytes and abort the process where memory is
//! not overcommitted (phones). What must not happen: any single allocation
//! during decoding larger than a small bound, whatever the count says.
//!
//! A counting global allocator records the largest allocation; one test
//! function runs every case, so no other test thread allocates meanwhile.

use meldb::codec::{self, frame_message, MAX_MESSAGE_PAYLOAD};
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

struct Largest;

static LARGEST: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every call is passed unchanged to the system allocator; the
// wrapper only records sizes.
unsafe impl GlobalAlloc for Largest {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LARGEST.fetch_max(layout.size(), Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LARGEST.fetch_max(new_size, Ordering::Relaxed);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Largest = Largest;

/// The bound: what a decoder may reserve before elements arrive
/// (`codec::bin::MAX_PREALLOC`), with room for small bookkeeping.
const BOUND: usize = 2 << 20;

/// A 64-bit count in the layouts' integer form.
fn count(n: u64) -> Vec<u8> {
    let mut out = vec![253];
    out.extend_from_slice(&n.to_le_bytes());
    out
}

/// `head`, then `0xff` up to `size` bytes in all: no element can decode
/// from those (255 is no valid integer marker), so the decoder fails at the
/// first element and everything it allocated was for the announcement.
/// (Elements that do decode take the memory they take: bounding that is
/// the message size limit's job.)
fn padded(mut head: Vec<u8>, size: usize) -> Vec<u8> {
    head.resize(size, 0xff);
    head
}

/// What is decoded, the bytes, and how.
type Case = (&'static str, Vec<u8>, fn(&[u8]));

/// Decodes `input` with `decode` and returns the largest allocation made.
fn largest_allocation_of(input: &[u8], decode: impl Fn(&[u8])) -> usize {
    LARGEST.store(0, Ordering::Relaxed);
    decode(input);
    LARGEST.load(Ordering::Relaxed)
}

#[test]
fn hostile_counts_reserve_a_bounded_amount_of_memory() {
    const SIZE: usize = 8 << 20;
    let n = SIZE as u64 - 16;
    let cases: Vec<Case> = vec![
        (
            "Rejections message claiming 8 million rejections",
            frame_message(&padded([vec![7], count(n)].concat(), SIZE)),
            |f| assert!(codec::decode_message(f, MAX_MESSAGE_PAYLOAD).is_err()),
        ),
        (
            "Push message claiming 8 million mutations",
            frame_message(&padded(
                [vec![8, 16], vec![1; 16], count(n - 17)].concat(),
                SIZE,
            )),
            |f| assert!(codec::decode_message(f, MAX_MESSAGE_PAYLOAD).is_err()),
        ),
        (
            "Changes batch whose compact layout claims half a million tables",
            {
                // Variant 2, seq 1, then the batch as a byte string: origin,
                // no sites, then a LEB128 table count.
                let mut batch = vec![0u8; 16];
                batch.push(0);
                let mut t = n / 16;
                while t >= 0x80 {
                    batch.push((t as u8) | 0x80);
                    t >>= 7;
                }
                batch.push(t as u8);
                let batch = padded(batch, SIZE - 16);
                let mut payload = vec![2, 1];
                payload.extend(count(batch.len() as u64));
                payload.extend(batch);
                frame_message(&payload)
            },
            |f| assert!(codec::decode_message(f, MAX_MESSAGE_PAYLOAD).is_err()),
        ),
        (
            "changeset frame claiming 8 million tables",
            codec::frame(&padded(
                [vec![16], vec![3; 16], vec![0], count(n - 30)].concat(),
                SIZE,
            )),
            |f| assert!(codec::decode_changeset(f).is_err()),
        ),
        (
            "stored row metadata claiming 8 million clock entries",
            padded(count(n), SIZE),
            |b| {
                // Decoding must fail or succeed without a large allocation;
                // the check itself reports violations as errors.
                let _ = meldb::testing::check_stored_bytes(b);
            },
        ),
    ];
    let mut over = Vec::new();
    for (what, input, decode) in cases {
        let largest = largest_allocation_of(&input, decode);
        if largest > BOUND {
            over.push(format!("{what}: {largest} bytes at once"));
        }
    }
    assert!(
        over.is_empty(),
        "over the bound of {BOUND} bytes: {over:#?}"
    );
}
