//! The module's own tokio runtime.
//!
//! Each module library links its own copy of tokio, so nothing tokio-shaped
//! may cross the boundary: work is spawned here and the host only waits on a
//! join handle. The runtime starts with the library's first instance and
//! stops when the host retires this library version (`shutdown`).

use std::{
    future::Future,
    pin::Pin,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Mutex,
    },
    task::{Context, Poll},
    time::{Duration, Instant},
};

use callhost_plugin_abi::ModuleError;
use tokio::runtime::{Handle, Runtime};

static RUNTIME: Mutex<Option<Runtime>> = Mutex::new(None);

fn handle() -> Option<Handle> {
    let mut slot = RUNTIME
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if slot.is_none() {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("callhost-module")
            .enable_all()
            .build()
            .ok()?;
        *slot = Some(runtime);
    }
    slot.as_ref().map(|runtime| runtime.handle().clone())
}

/// Starts the runtime if it is not running: at instance creation, so that
/// its threads do not start inside the first call's hook.
pub(crate) fn start() {
    let _ = handle();
}

/// Runs `future` on the module runtime; the returned future waits for it and
/// aborts it when dropped (the host drops hooks that miss their deadline).
pub(crate) fn spawn_joined<T: Send + 'static>(
    future: impl Future<Output = T> + Send + 'static,
) -> Result<Joined<T>, ModuleError> {
    let handle = handle().ok_or_else(|| ModuleError::new("the module runtime could not start"))?;
    Ok(Joined(handle.spawn(future)))
}

/// Background tasks started and not yet ended (finished, panicked or aborted).
static BACKGROUND: AtomicUsize = AtomicUsize::new(0);

/// Counts one background task while it exists.
struct Running;

impl Drop for Running {
    fn drop(&mut self) {
        BACKGROUND.fetch_sub(1, Ordering::SeqCst);
    }
}

pub(crate) fn spawn_detached(future: impl Future<Output = ()> + Send + 'static) {
    if let Some(handle) = handle() {
        BACKGROUND.fetch_add(1, Ordering::SeqCst);
        let running = Running;
        handle.spawn(async move {
            let _running = running;
            future.await
        });
    }
}

/// As [`spawn_detached`], but not waited for by [`settle`]: for tasks that
/// live as long as their instance (timers, writers) and would otherwise
/// make every settle wait its whole timeout.
pub(crate) fn spawn_service(future: impl Future<Output = ()> + Send + 'static) {
    if let Some(handle) = handle() {
        handle.spawn(future);
    }
}

/// Waits up to `timeout` for background tasks to end; true if they all did.
pub(crate) fn settle(timeout: Duration) -> bool {
    let until = Instant::now() + timeout;
    while BACKGROUND.load(Ordering::SeqCst) > 0 {
        if Instant::now() >= until {
            return false;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    true
}

/// Stops the runtime without waiting for its tasks.
pub fn shutdown() {
    let runtime = RUNTIME
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .take();
    if let Some(runtime) = runtime {
        runtime.shutdown_background();
    }
}

pub(crate) struct Joined<T>(tokio::task::JoinHandle<T>);

impl<T> Future for Joined<T> {
    type Output = Result<T, ModuleError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.0).poll(cx).map(|joined| {
            joined.map_err(|error| {
                if error.is_panic() {
                    ModuleError::panicked(format!(
                        "panicked: {}",
                        crate::hosted::panic_message(error.into_panic())
                    ))
                } else {
                    ModuleError::new("cancelled")
                }
            })
        })
    }
}

impl<T> Drop for Joined<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}
