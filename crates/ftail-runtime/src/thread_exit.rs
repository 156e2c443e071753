//! Noticing that a thread exits, with a pthread key destructor: glibc runs
//! it after the thread's start routine returned (or `pthread_exit`), while
//! the thread's TLS is still valid.

use std::sync::atomic::{AtomicU32, Ordering};

/// The key, plus one (0: not created).
static KEY: AtomicU32 = AtomicU32::new(0);

/// Creates the key; called once at start-up.
pub fn init() {
    let mut key: libc::pthread_key_t = 0;
    // SAFETY: creating a key with a plain extern "C" destructor.
    if unsafe { libc::pthread_key_create(&mut key, Some(on_exit)) } == 0 {
        KEY.store(key + 1, Ordering::Relaxed);
    }
}

/// Arms the destructor for the calling thread (any non-null value does).
pub fn watch() {
    let k = KEY.load(Ordering::Relaxed);
    if k != 0 {
        // SAFETY: setting this thread's value of a valid key; for the
        // first keys glibc stores it in the thread descriptor, allocating
        // nothing.
        unsafe { libc::pthread_setspecific(k - 1, std::ptr::dangling::<libc::c_void>()) };
    }
}

extern "C" fn on_exit(_: *mut libc::c_void) {
    let st = crate::state::current();
    // SAFETY: the exiting thread's own state.
    let st = unsafe { &mut *st };
    if crate::state::recording(st.status) {
        crate::buffer::release(st);
    }
}
