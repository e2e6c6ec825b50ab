//! sockaddr_in in and out, and errno.

use libc::{c_int, sockaddr, sockaddr_in, socklen_t};
use xstack_dataplane::tcp::Error;
use xstack_dataplane::wire::Ipv4Addr;

pub fn set_errno(e: c_int) {
    // Safety: the calling thread's errno.
    unsafe { *libc::__errno_location() = e };
}

/// -1 with errno `e`.
pub fn fail(e: c_int) -> isize {
    set_errno(e);
    -1
}

pub fn errno_of(e: Error) -> c_int {
    xstack_dataplane::sockets::errno(e)
}

/// What a sockaddr given to bind or connect is.
pub enum Given {
    V4(Ipv4Addr, u16),
    /// AF_UNSPEC (connect: dissolve the association).
    Unspec,
    /// Another family: the kernel's business.
    Other,
}

/// Reads a sockaddr the application passed.
///
/// # Safety
/// `addr` is null or points to `len` readable bytes.
pub unsafe fn given(addr: *const sockaddr, len: socklen_t) -> Result<Given, c_int> {
    if addr.is_null() {
        return Err(libc::EFAULT);
    }
    if (len as usize) < std::mem::size_of::<libc::sa_family_t>() {
        return Err(libc::EINVAL);
    }
    // Safety: at least the family is readable (checked above).
    let family = unsafe { (*addr).sa_family } as c_int;
    match family {
        libc::AF_INET => {
            if (len as usize) < std::mem::size_of::<sockaddr_in>() {
                return Err(libc::EINVAL);
            }
            // Safety: a whole sockaddr_in is readable (checked); it may
            // be unaligned.
            let sin = unsafe { std::ptr::read_unaligned(addr.cast::<sockaddr_in>()) };
            Ok(Given::V4(Ipv4Addr::from_u32(u32::from_be(sin.sin_addr.s_addr)), u16::from_be(sin.sin_port)))
        }
        libc::AF_UNSPEC => Ok(Given::Unspec),
        _ => Ok(Given::Other),
    }
}

/// Writes `a` where the application asked for an address (truncated to
/// its buffer, the full length reported, as the kernel's move_addr_to_user).
///
/// # Safety
/// `addr` and `len` are null, or `len` is readable and writable and `addr`
/// has `*len` writable bytes.
pub unsafe fn put(a: (Ipv4Addr, u16), addr: *mut sockaddr, len: *mut socklen_t) -> Result<(), c_int> {
    if addr.is_null() || len.is_null() {
        return Ok(());
    }
    let sin = sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: a.1.to_be(),
        sin_addr: libc::in_addr { s_addr: a.0.to_u32().to_be() },
        sin_zero: [0; 8],
    };
    let full = std::mem::size_of::<sockaddr_in>();
    // Safety: `len` is readable (contract).
    let room = unsafe { *len };
    if (room as i32) < 0 {
        return Err(libc::EINVAL);
    }
    let n = full.min(room as usize);
    // Safety: `addr` has `room` writable bytes (contract); `sin` is a
    // local value, not overlapping.
    unsafe {
        std::ptr::copy_nonoverlapping((&sin as *const sockaddr_in).cast::<u8>(), addr.cast::<u8>(), n);
        *len = full as socklen_t;
    }
    Ok(())
}
