//! The C++ runtime's own demangler, `abi::__cxa_demangle` from the
//! system's `libstdc++.so.6`, loaded at run time.
//!
//! It is GNU libiberty's `cp-demangle.c`, the code `c++filt`, `nm -C`,
//! gdb and perf run, so its output is the reference the others are
//! measured against. ftail does not link libstdc++: the library is opened
//! with `dlopen` on first use, and where it is missing [`demangle`]
//! answers `None` and the caller falls back to `cpp_demangle`.

use std::ffi::{c_char, c_int, c_void, CStr, CString};
use std::sync::OnceLock;

/// `char *__cxa_demangle(const char *mangled, char *buf, size_t *len,
/// int *status)`: with `buf` null it returns a `malloc`ed string the
/// caller frees, or null with `*status` set.
type CxaDemangle =
    unsafe extern "C" fn(*const c_char, *mut c_char, *mut usize, *mut c_int) -> *mut c_char;

/// Names longer than this are not handed to libiberty: it keeps its parse
/// tree in variable-length arrays on the stack (about 72 bytes per input
/// byte), and the reader demangles on worker threads with small stacks.
pub(super) const MAX_LEN: usize = 2048;

fn load() -> Option<CxaDemangle> {
    // SAFETY: the name is a NUL-terminated constant. Loading libstdc++
    // runs only its own initialisers; the handle is never closed, so
    // the function pointer taken below stays valid for the process's
    // life.
    let handle = unsafe { libc::dlopen(c"libstdc++.so.6".as_ptr(), libc::RTLD_NOW) };
    if handle.is_null() {
        return None;
    }
    // SAFETY: `handle` is a live handle from `dlopen` and the symbol name
    // a NUL-terminated constant.
    let f: *mut c_void = unsafe { libc::dlsym(handle, c"__cxa_demangle".as_ptr()) };
    if f.is_null() {
        return None;
    }
    // SAFETY: `__cxa_demangle` has had this signature since the Itanium
    // C++ ABI defined it (`<cxxabi.h>`), in every libstdc++.
    Some(unsafe { std::mem::transmute::<*mut c_void, CxaDemangle>(f) })
}

fn demangler() -> Option<CxaDemangle> {
    static DEMANGLER: OnceLock<Option<CxaDemangle>> = OnceLock::new();
    *DEMANGLER.get_or_init(load)
}

/// Whether the system's demangler could be loaded.
pub(super) fn available() -> bool {
    demangler().is_some()
}

/// `name` demangled by libiberty with parameters, or `None` when it is not
/// a mangled C++ name, is too long, or the library is missing.
pub(super) fn demangle(name: &str) -> Option<String> {
    if name.len() > MAX_LEN {
        return None;
    }
    let f = demangler()?;
    let mangled = CString::new(name).ok()?;
    let mut status: c_int = 0;
    // SAFETY: `mangled` is NUL-terminated and outlives the call; with a
    // null buffer and length the function allocates its result with
    // `malloc`, and `status` is a valid place for it to write.
    let out = unsafe {
        f(
            mangled.as_ptr(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            &mut status,
        )
    };
    if out.is_null() {
        return None;
    }
    // SAFETY: a non-null result is a NUL-terminated string that the
    // function allocated for us; it is read once, then freed.
    let text = unsafe { CStr::from_ptr(out) }
        .to_string_lossy()
        .into_owned();
    // SAFETY: `out` came from the C library's `malloc`, which libstdc++
    // calls (whatever Rust's own allocator is), and is not used after
    // this.
    unsafe { libc::free(out.cast()) };
    (status == 0).then_some(text)
}
