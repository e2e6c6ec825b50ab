//! A memfd mapped shared: what a process hands another (over a unix socket
//! with SCM_RIGHTS, or across fork) so both see the same pages.

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, AtomicU64};

use nix::sys::memfd::{memfd_create, MFdFlags};
use nix::sys::mman::{mmap, munmap, MapFlags, ProtFlags};

/// Memory for rings and queues: a shared mapping of a memfd (to share
/// with another process; pages are allocated by the kernel when first
/// touched, so a region sized for many sockets costs only what is used),
/// or private heap memory (for threads of one process: no descriptor, no
/// mapping per region). Zero-filled when created.
#[derive(Debug)]
pub struct Region {
    ptr: NonNull<u8>,
    len: usize,
    backing: Backing,
}

#[derive(Debug)]
enum Backing {
    Shared(OwnedFd),
    /// A leaked `Box<[AtomicU64]>` of `len / 8` words (8-byte aligned;
    /// atomics because its bytes are written through pointers shared
    /// between threads), freed in drop. Kept as the raw pointer alone: a
    /// live Box would claim unique access to memory the views write.
    Heap,
}

// Safety: a Region hands out only atomics (`Sync` by themselves) and raw
// copies through `&self`; it owns the mapping and the descriptor, neither
// of which is tied to a thread.
unsafe impl Send for Region {}
// Safety: as above: every access through `&self` is an atomic operation
// or a copy that tolerates concurrent writers (module doc).
unsafe impl Sync for Region {}

impl Region {
    /// A new zero-filled region of `len` bytes (rounded up to pages),
    /// close-on-exec, named `name` in /proc/PID/fd.
    pub fn create(name: &str, len: usize) -> io::Result<Region> {
        let len = len.max(1).next_multiple_of(page_size());
        let fd = memfd_create(name, MFdFlags::MFD_CLOEXEC)?;
        nix::unistd::ftruncate(&fd, i64::try_from(len).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?)?;
        Region::map(fd, len)
    }

    /// A zero-filled region of `len` bytes (rounded up to 8) on the heap,
    /// for threads of this process only.
    pub fn private(len: usize) -> Region {
        let words = len.max(1).div_ceil(8);
        let heap: Box<[AtomicU64]> = std::iter::repeat_with(|| AtomicU64::new(0)).take(words).collect();
        let ptr = NonNull::new(Box::into_raw(heap).cast::<u8>()).expect("a box is never null");
        Region { ptr, len: words * 8, backing: Backing::Heap }
    }

    /// Maps a region another process created (its whole length).
    pub fn open(fd: OwnedFd) -> io::Result<Region> {
        let st = nix::sys::stat::fstat(&fd)?;
        let len = usize::try_from(st.st_size).map_err(|_| io::Error::from(io::ErrorKind::InvalidData))?;
        if len == 0 {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "empty shared region"));
        }
        Region::map(fd, len)
    }

    fn map(fd: OwnedFd, len: usize) -> io::Result<Region> {
        let nz = std::num::NonZeroUsize::new(len).ok_or(io::ErrorKind::InvalidInput)?;
        // Safety: a fresh shared mapping at an address the kernel picks
        // overlaps nothing of ours; the fd is a regular memfd of at least
        // `len` bytes (ftruncate above, or fstat for an opened one).
        let p = unsafe { mmap(None, nz, ProtFlags::PROT_READ | ProtFlags::PROT_WRITE, MapFlags::MAP_SHARED, &fd, 0) }?;
        Ok(Region { ptr: p.cast(), len, backing: Backing::Shared(fd) })
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The first byte of the mapping, for views that check their bounds
    /// once and keep pointers (they hold the region's Arc).
    pub(super) fn base(&self) -> *mut u8 {
        self.ptr.as_ptr()
    }

    /// The memfd, to hand to another process (None for private memory).
    pub fn fd(&self) -> Option<BorrowedFd<'_>> {
        match &self.backing {
            Backing::Shared(fd) => Some(fd.as_fd()),
            Backing::Heap => None,
        }
    }

    fn check(&self, off: usize, size: usize, align: usize) -> Option<*mut u8> {
        let end = off.checked_add(size)?;
        (end <= self.len && off % align == 0).then(|| self.ptr.as_ptr().wrapping_add(off))
    }

    /// The 64-bit atomic at byte offset `off` (None out of bounds or
    /// misaligned).
    pub fn u64_at(&self, off: usize) -> Option<&AtomicU64> {
        let p = self.check(off, 8, 8)?;
        // Safety: in bounds and aligned (checked), valid for as long as
        // `self` (the mapping lives until drop), and AtomicU64 has no
        // invalid bit patterns; every party accesses these words
        // atomically (a peer that does not can only garble the value).
        Some(unsafe { &*p.cast::<AtomicU64>() })
    }

    /// The 32-bit atomic at byte offset `off` (a futex word, a flag).
    pub fn u32_at(&self, off: usize) -> Option<&AtomicU32> {
        let p = self.check(off, 4, 4)?;
        // Safety: as in `u64_at`.
        Some(unsafe { &*p.cast::<AtomicU32>() })
    }

    /// Copies `data` into the region at `off`. False (nothing copied) when
    /// it does not fit.
    pub fn write(&self, off: usize, data: &[u8]) -> bool {
        let Some(p) = self.check(off, data.len(), 1) else { return false };
        // Safety: the destination range is inside the mapping (checked)
        // and cannot overlap `data`, a private buffer; no reference to
        // shared bytes is formed, so a peer writing the same bytes at the
        // same time garbles them without any other effect.
        unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), p, data.len()) };
        true
    }

    /// Copies `out.len()` bytes from the region at `off` into `out`. False
    /// (nothing copied) when the range is outside the region.
    pub fn read(&self, off: usize, out: &mut [u8]) -> bool {
        let Some(p) = self.check(off, out.len(), 1) else { return false };
        // Safety: as in `write`, the other way round.
        unsafe { std::ptr::copy_nonoverlapping(p, out.as_mut_ptr(), out.len()) };
        true
    }
}

impl Drop for Region {
    fn drop(&mut self) {
        match self.backing {
            Backing::Shared(_) => {
                // Safety: the mapping was made by `map` with this pointer
                // and length and nothing borrowed from it outlives `self`
                // (every view is tied to `&self` or holds the region's Arc).
                let _ = unsafe { munmap(self.ptr.cast(), self.len) };
            }
            Backing::Heap => {
                let words = std::ptr::slice_from_raw_parts_mut(self.ptr.as_ptr().cast::<AtomicU64>(), self.len / 8);
                // Safety: `private` leaked exactly this slice (len / 8
                // words from Box::into_raw), and no view outlives `self`.
                drop(unsafe { Box::from_raw(words) });
            }
        }
    }
}

fn page_size() -> usize {
    nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE).ok().flatten().map_or(4096, |v| v as usize)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::Ordering;

    #[test]
    fn views_are_bounded_and_aligned() {
        let r = Region::create("xs-test", 100).unwrap();
        assert_eq!(r.len(), page_size(), "rounded up to a page");
        assert!(r.u64_at(0).is_some());
        assert!(r.u64_at(4).is_none(), "misaligned");
        assert!(r.u64_at(r.len() - 8).is_some());
        assert!(r.u64_at(r.len()).is_none(), "out of bounds");
        assert!(r.u64_at(usize::MAX - 3).is_none(), "overflowing offset");
        assert!(!r.write(r.len() - 2, b"abc"));
        assert!(r.write(r.len() - 3, b"abc"));
        let mut out = [0u8; 3];
        assert!(r.read(r.len() - 3, &mut out));
        assert_eq!(&out, b"abc");
    }

    #[test]
    fn a_second_mapping_of_the_fd_sees_the_same_bytes() {
        let a = Region::create("xs-test", 8192).unwrap();
        let b = Region::open(a.fd().unwrap().try_clone_to_owned().unwrap()).unwrap();
        assert_eq!(b.len(), a.len());
        a.u64_at(64).unwrap().store(0xfeed, Ordering::Release);
        assert_eq!(b.u64_at(64).unwrap().load(Ordering::Acquire), 0xfeed);
        assert!(b.write(4000, b"hello"));
        let mut out = [0u8; 5];
        a.read(4000, &mut out);
        assert_eq!(&out, b"hello");
    }

    #[test]
    fn private_regions_are_aligned_zeroed_and_have_no_fd() {
        let r = Region::private(13);
        assert_eq!(r.len(), 16);
        assert!(r.fd().is_none());
        assert_eq!(r.u64_at(8).unwrap().load(Ordering::Relaxed), 0);
        assert!(r.write(10, b"abc"));
        let mut out = [0u8; 3];
        assert!(r.read(10, &mut out));
        assert_eq!(&out, b"abc");
    }
}
