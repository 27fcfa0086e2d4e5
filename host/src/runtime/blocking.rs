//! Deadlines for the WASI calls that block inside the host. An epoch
//! deadline interrupts Wasm code, not a guest waiting in `wasi:io/poll`
//! (which is what `std::thread::sleep` and every blocking read become), so a
//! plugin could sleep for an hour under a one-second `timeout_ms`. The
//! linker's `poll` and `pollable.block` are replaced by the same functions
//! run under the call's deadline; past it the call fails as a timeout.

use super::ctx::StageCtx;
use std::time::Instant;
use wasmtime::component::{Linker, Resource, ResourceTable};
use wasmtime::StoreContextMut;
use wasmtime_wasi_io::bindings::wasi::io::poll::{Host as _, HostPollable as _};
use wasmtime_wasi_io::poll::DynPollable;

/// The WASI I/O package whose `poll` the plugins' imports resolve to
/// (wasmtime links every 0.2.x import to the newest 0.2 it provides).
const POLL: &str = "wasi:io/poll@0.2.12";

/// A blocking host call that outlived its stage's deadline.
#[derive(Debug, thiserror::Error)]
#[error("blocked in a host call ({call}) past the stage's deadline")]
pub struct HostCallTimeout {
    pub call: &'static str,
}

/// Runs `fut` until `deadline` (if any) on weft's WASI tokio runtime.
fn until<T>(
    deadline: Option<Instant>,
    call: &'static str,
    fut: impl std::future::Future<Output = wasmtime::Result<T>>,
) -> wasmtime::Result<T> {
    wasmtime_wasi::runtime::in_tokio(async move {
        match deadline {
            Some(d) => tokio::time::timeout_at(d.into(), fut)
                .await
                .map_err(|_| wasmtime::Error::new(HostCallTimeout { call }))?,
            None => fut.await,
        }
    })
}

fn parts<'a>(
    store: &'a mut StoreContextMut<'_, StageCtx>,
) -> (Option<Instant>, &'a mut ResourceTable) {
    let ctx = store.data_mut();
    let deadline = ctx.call_deadline;
    (deadline, ctx.resource_table())
}

/// Shadows WASI's blocking `poll` and `pollable.block` in `linker` with
/// versions bounded by the call's deadline.
pub fn add_deadlines(linker: &mut Linker<StageCtx>) -> wasmtime::Result<()> {
    linker.allow_shadowing(true);
    let mut poll = linker.instance(POLL)?;
    poll.func_wrap(
        "poll",
        |mut store: StoreContextMut<'_, StageCtx>, (pollables,): (Vec<Resource<DynPollable>>,)| {
            let (deadline, table) = parts(&mut store);
            until(deadline, "wasi:io/poll.poll", table.poll(pollables)).map(|r| (r,))
        },
    )?;
    poll.func_wrap(
        "[method]pollable.block",
        |mut store: StoreContextMut<'_, StageCtx>, (p,): (Resource<DynPollable>,)| {
            let (deadline, table) = parts(&mut store);
            until(deadline, "wasi:io/poll.pollable.block", table.block(p))
        },
    )?;
    linker.allow_shadowing(false);
    Ok(())
}
