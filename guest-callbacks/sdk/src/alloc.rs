//! A small-object allocator for callbacks: size classes with free lists over the system
//! allocator.
//!
//! Every event costs a callback a few short-lived allocations: the host copies an epoch's
//! metric list into memory it asks the guest to allocate, the decisions and their strings go back
//! in fresh vectors, and the export's post-return function frees them all once the host has read
//! them. Under `dlmalloc` (Rust's allocator on `wasm32-unknown-unknown`; `wasm32-wasip2` has
//! wasi-libc's, also a dlmalloc) each allocation and each free walks bins and coalesces chunks:
//! about half of the guest-side time of an early-stopping `epoch-end` in a fuel-metered sandbox.
//! Here a block of at most [`MAX_POOLED`] bytes is rounded up to a power of two and taken from,
//! or given back to, its class's free list in a few instructions; larger blocks and stricter
//! alignments go to the system allocator.
//!
//! Freed small blocks stay in their class for reuse and are not returned to the system
//! allocator, so a callback's memory for small objects is bounded by its peak use of each class.
//! The sandbox's memory cap still bounds the whole.
//!
//! Opt in once per callback crate (the bundled callbacks do):
//!
//! ```ignore
//! #[cfg(target_arch = "wasm32")]
//! #[global_allocator]
//! static ALLOC: trainrt_guest::alloc::SizeClasses = trainrt_guest::alloc::SizeClasses::new();
//! ```
//!
//! The free lists are plain memory, not locked: [`SizeClasses`] can be a global allocator (it is
//! `Sync`) only where a program has a single thread, which is wasm32 without the `atomics`
//! target feature: `wasm32-unknown-unknown` and `wasm32-wasip2` as Rust ships them, and so every
//! callback. On any other target, a native build or a wasm build with threads, a `static` of it
//! does not compile; a local one (as the unit tests use) still works.
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::UnsafeCell;
use std::ptr::{self, NonNull};

/// The largest block served from a size class; larger ones go to the system allocator.
pub const MAX_POOLED: usize = 1024;
/// The smallest class: room for the free list's link on every target.
const MIN_CLASS: usize = 16;
/// Classes 16, 32, ..., [`MAX_POOLED`].
const CLASSES: usize = (MAX_POOLED / MIN_CLASS).trailing_zeros() as usize + 1;
/// Alignment of every pooled block: enough for any primitive on wasm32 and x86-64.
const POOL_ALIGN: usize = 16;

/// A freed block, linked into its class's free list.
struct Free {
    next: Option<NonNull<Free>>,
}

/// Size-class allocator: see the module documentation.
///
/// A global allocator only on single-threaded wasm32; on other targets this does not compile:
///
/// ```compile_fail
/// static ALLOC: trainrt_guest::alloc::SizeClasses = trainrt_guest::alloc::SizeClasses::new();
/// ```
pub struct SizeClasses {
    heads: UnsafeCell<[Option<NonNull<Free>>; CLASSES]>,
}

// SAFETY: wasm32 without the `atomics` feature has one thread (threads need shared memory and
// atomics), so no two calls ever touch `heads` at once. Nor does a call re-enter another: the
// methods call only `System` (dlmalloc, or wasi-libc's malloc on wasm32-wasip2, neither of which
// calls back into the global allocator) and themselves (`realloc`, after its own accesses to
// `heads`), and a wasm program has no signals or interrupts. The host enters the guest (an
// export, or `cabi_realloc` to pass a list) only before an export runs or while the guest is in
// one of its imports, and an allocation calls no import. Elsewhere `SizeClasses` is not `Sync`,
// so it cannot be a shared allocator there.
#[cfg(all(target_arch = "wasm32", not(target_feature = "atomics")))]
unsafe impl Sync for SizeClasses {}

impl Default for SizeClasses {
    fn default() -> Self {
        Self::new()
    }
}

impl SizeClasses {
    /// An allocator with empty free lists.
    pub const fn new() -> Self {
        Self {
            heads: UnsafeCell::new([None; CLASSES]),
        }
    }

    /// The class serving `layout`, or `None` for the system allocator.
    #[inline]
    fn class(layout: Layout) -> Option<usize> {
        if layout.size() > MAX_POOLED || layout.align() > POOL_ALIGN {
            return None;
        }
        let size = layout.size().max(MIN_CLASS).next_power_of_two();
        Some((size / MIN_CLASS).trailing_zeros() as usize)
    }

    /// The layout the system allocator is asked for when class `class` needs a fresh block.
    #[inline]
    fn class_layout(class: usize) -> Layout {
        // Sizes are powers of two from 16 to MAX_POOLED and the alignment is 16: always valid.
        Layout::from_size_align(MIN_CLASS << class, POOL_ALIGN).unwrap_or(Layout::new::<Free>())
    }
}

impl Drop for SizeClasses {
    fn drop(&mut self) {
        // Only a local allocator is ever dropped (a global one lives as long as the program):
        // hand its free blocks back. Blocks still in use were the owner's to free first.
        for (class, head) in self.heads.get_mut().iter_mut().enumerate() {
            while let Some(block) = head.take() {
                // SAFETY: a free block of this class, from `System` with the class layout.
                unsafe {
                    *head = block.as_ref().next;
                    System.dealloc(block.as_ptr().cast(), Self::class_layout(class));
                }
            }
        }
    }
}

// SAFETY: pooled blocks come from `System` with their class's layout, which covers any layout
// mapped to that class (size <= class size, align <= 16), and go back only to the free list of
// the class their layout maps to; everything else is `System`'s, with the caller's layout.
unsafe impl GlobalAlloc for SizeClasses {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let Some(class) = Self::class(layout) else {
            // SAFETY: the caller's contract for `layout`, passed through.
            return unsafe { System.alloc(layout) };
        };
        // SAFETY: no other access to `heads` runs at the same time: a shared `SizeClasses` exists
        // only where there is one thread and no re-entry (see `Sync`), and a local one is not
        // shared. No reference to `heads` outlives this call.
        let heads = unsafe { &mut *self.heads.get() };
        match heads[class] {
            Some(block) => {
                // SAFETY: `block` is a freed block of this class, linked by `dealloc`.
                heads[class] = unsafe { block.as_ref().next };
                block.as_ptr().cast()
            }
            // SAFETY: a valid, non-zero-sized layout.
            None => unsafe { System.alloc(Self::class_layout(class)) },
        }
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        let Some(class) = Self::class(layout) else {
            // SAFETY: `ptr` came from `System` with this layout (see `alloc` and `realloc`).
            return unsafe { System.dealloc(ptr, layout) };
        };
        // SAFETY: as in `alloc`.
        let heads = unsafe { &mut *self.heads.get() };
        let block = ptr.cast::<Free>();
        // SAFETY: `ptr` is a block of this class (at least 16 bytes, 16-aligned) the caller no
        // longer uses, so it may hold the link.
        unsafe { block.write(Free { next: heads[class] }) };
        heads[class] = NonNull::new(block);
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: the caller guarantees `new_size` rounded up to `layout.align()` fits an isize,
        // so this layout is valid.
        let new_layout = unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) };
        match (Self::class(layout), Self::class(new_layout)) {
            // Still fits its block: nothing to move.
            (Some(old), Some(new)) if old == new => ptr,
            // SAFETY: both system blocks: `System` may grow in place.
            (None, None) => unsafe { System.realloc(ptr, layout, new_size) },
            _ => {
                // SAFETY: allocate, copy the smaller of the two sizes, free the old block.
                unsafe {
                    let new = self.alloc(new_layout);
                    if !new.is_null() {
                        ptr::copy_nonoverlapping(ptr, new, layout.size().min(new_size));
                        self.dealloc(ptr, layout);
                    }
                    new
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout(size: usize, align: usize) -> Layout {
        Layout::from_size_align(size, align).unwrap()
    }

    #[test]
    fn classes_round_up_to_powers_of_two_and_stop_at_the_limit() {
        assert_eq!(CLASSES, 7);
        assert_eq!(SizeClasses::class(layout(1, 1)), Some(0));
        assert_eq!(SizeClasses::class(layout(16, 8)), Some(0));
        assert_eq!(SizeClasses::class(layout(17, 1)), Some(1));
        assert_eq!(SizeClasses::class(layout(100, 4)), Some(3));
        assert_eq!(SizeClasses::class(layout(MAX_POOLED, 8)), Some(CLASSES - 1));
        assert_eq!(SizeClasses::class(layout(MAX_POOLED + 1, 8)), None);
        assert_eq!(
            SizeClasses::class(layout(8, 32)),
            None,
            "stricter alignment"
        );
        assert_eq!(SizeClasses::class(layout(8, 16)), Some(0));
    }

    #[test]
    fn a_freed_block_is_reused_by_its_class_only() {
        let a = SizeClasses::new();
        unsafe {
            let small = a.alloc(layout(24, 8));
            assert!(!small.is_null());
            assert_eq!(small as usize % POOL_ALIGN, 0);
            a.dealloc(small, layout(24, 8));
            // Another size of the same class (17..=32) gets the same block back...
            let again = a.alloc(layout(30, 4));
            assert_eq!(again, small);
            // ...while the class is empty again, so another block is fresh.
            let other = a.alloc(layout(30, 4));
            assert_ne!(other, again);
            // A different class never sees it.
            a.dealloc(again, layout(30, 4));
            let bigger = a.alloc(layout(64, 8));
            assert_ne!(bigger, again);
            for (p, l) in [(other, layout(30, 4)), (bigger, layout(64, 8))] {
                a.dealloc(p, l);
            }
        }
    }

    #[test]
    fn blocks_hold_their_bytes_through_growth_across_classes_and_to_the_system() {
        let a = SizeClasses::new();
        unsafe {
            let l = layout(10, 1);
            let mut p = a.alloc(l);
            for i in 0..10 {
                p.add(i).write(i as u8);
            }
            let mut size = 10;
            // Within the class, then class to class, then out to the system and beyond.
            for new_size in [16, 40, 300, MAX_POOLED, MAX_POOLED + 1, 8192, 100] {
                p = a.realloc(p, layout(size, 1), new_size);
                assert!(!p.is_null());
                for i in 0..10 {
                    assert_eq!(
                        p.add(i).read(),
                        i as u8,
                        "byte {i} after growing to {new_size}"
                    );
                }
                size = new_size;
            }
            a.dealloc(p, layout(size, 1));
        }
    }

    #[test]
    fn many_live_blocks_do_not_overlap() {
        let a = SizeClasses::new();
        // (block, layout, the byte it was filled with)
        let mut live: Vec<(*mut u8, Layout, u8)> = Vec::new();
        unsafe {
            for round in 0..4u8 {
                for size in [1usize, 7, 16, 33, 200, 1000, 1500] {
                    let l = layout(size, 1);
                    let p = a.alloc(l);
                    let fill = round.wrapping_mul(31) ^ size as u8;
                    ptr::write_bytes(p, fill, size);
                    live.push((p, l, fill));
                }
                // Free every other block so the next round reuses them.
                let mut keep = Vec::new();
                for (i, (p, l, fill)) in live.drain(..).enumerate() {
                    if i % 2 == 0 {
                        a.dealloc(p, l);
                    } else {
                        keep.push((p, l, fill));
                    }
                }
                live = keep;
            }
            // Had two live blocks shared bytes, the later fill would show through the earlier.
            for &(p, l, fill) in &live {
                let bytes = std::slice::from_raw_parts(p, l.size());
                assert!(
                    bytes.iter().all(|&b| b == fill),
                    "block of {} overwritten",
                    l.size()
                );
            }
            for (p, l, _) in live {
                a.dealloc(p, l);
            }
        }
    }
}
