//! The runtime's one kind of lock: a spin lock that yields, which can be
//! taken and released without a guard, so that a `fork` handler can hold
//! it across the fork and release it in both processes (`pthread_atfork`:
//! a child must never start with a lock some other thread of its parent
//! held). It never allocates and never calls into libc but `sched_yield`.
//!
//! Locks are held briefly (planning a module, a control command, an
//! allocation), never on the trampolines' paths, and never by a signal
//! handler.
//!
//! The slow paths' own lock, [`SlowLock`], is another kind: taken with
//! every signal blocked (so a handler never waits for the code it
//! interrupted) and marked with the holder's process id (so a forked
//! child that finds its parent's mark takes it over, whatever fork
//! handlers ran).

use std::cell::UnsafeCell;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// A lock without a guard type.
pub struct RawLock(AtomicBool);

impl RawLock {
    /// An unlocked lock.
    pub const fn new() -> RawLock {
        RawLock(AtomicBool::new(false))
    }

    /// Takes the lock, spinning briefly, then yielding the processor.
    pub fn lock(&self) {
        let mut spins = 0u32;
        while self
            .0
            .compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            spins += 1;
            if spins < 64 {
                std::hint::spin_loop();
            } else {
                // SAFETY: sched_yield has no preconditions.
                unsafe { libc::sched_yield() };
            }
        }
    }

    /// Releases the lock; only its holder (or a fork handler, for the
    /// holder) calls this.
    pub fn unlock(&self) {
        self.0.store(false, Ordering::Release);
    }
}

/// A value behind a [`RawLock`].
pub struct Locked<T> {
    lock: RawLock,
    value: UnsafeCell<T>,
}

// SAFETY: the value is only reached through `with`, which holds the lock.
unsafe impl<T: Send> Sync for Locked<T> {}

impl<T> Locked<T> {
    /// `value`, unlocked.
    pub const fn new(value: T) -> Locked<T> {
        Locked {
            lock: RawLock::new(),
            value: UnsafeCell::new(value),
        }
    }

    /// Runs `f` on the value with the lock held.
    pub fn with<R>(&self, f: impl FnOnce(&mut T) -> R) -> R {
        struct Release<'a>(&'a RawLock);
        impl Drop for Release<'_> {
            fn drop(&mut self) {
                self.0.unlock();
            }
        }
        self.lock.lock();
        let _release = Release(&self.lock);
        // SAFETY: the lock is held until `_release` drops, so this is the
        // only reference to the value.
        f(unsafe { &mut *self.value.get() })
    }

    /// The lock itself, for the fork handlers.
    pub fn raw(&self) -> &RawLock {
        &self.lock
    }
}

/// Every signal blocked for the calling thread while this lives.
pub struct SignalsBlocked(libc::sigset_t);

impl SignalsBlocked {
    /// Blocks every signal, keeping the mask to put back.
    pub fn all() -> SignalsBlocked {
        // SAFETY: sigset_t is plain data; sigfillset and pthread_sigmask
        // fill and apply it for this thread only.
        unsafe {
            let (mut all, mut old): (libc::sigset_t, libc::sigset_t) =
                (std::mem::zeroed(), std::mem::zeroed());
            libc::sigfillset(&mut all);
            libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut old);
            SignalsBlocked(old)
        }
    }
}

impl Drop for SignalsBlocked {
    fn drop(&mut self) {
        // SAFETY: putting back the mask saved by `all`.
        unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &self.0, std::ptr::null_mut()) };
    }
}

/// A lock the slow paths may take, even in signal handlers: see the
/// module's documentation.
pub struct SlowLock(AtomicU64);

impl SlowLock {
    /// An unlocked lock.
    pub const fn new() -> SlowLock {
        SlowLock(AtomicU64::new(0))
    }

    /// Runs `f` with every signal blocked and the lock held.
    pub fn with<R>(&self, f: impl FnOnce() -> R) -> R {
        let _blocked = SignalsBlocked::all();
        // SAFETY: getpid has no preconditions.
        let me = unsafe { libc::getpid() } as u64;
        let mut spins = 0u32;
        loop {
            match self
                .0
                .compare_exchange_weak(0, me, Ordering::Acquire, Ordering::Relaxed)
            {
                Ok(_) => break,
                // Left by a thread of the parent this process was forked
                // from: no thread here will release it.
                Err(other)
                    if other != 0
                        && other != me
                        && self
                            .0
                            .compare_exchange(other, me, Ordering::Acquire, Ordering::Relaxed)
                            .is_ok() =>
                {
                    break
                }
                Err(_) => {}
            }
            spins += 1;
            if spins < 64 {
                std::hint::spin_loop();
            } else {
                // SAFETY: sched_yield has no preconditions.
                unsafe { libc::sched_yield() };
            }
        }
        let r = f();
        self.0.store(0, Ordering::Release);
        r
    }
}
