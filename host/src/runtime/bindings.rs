//! Host-side bindings generated from `wit/`, one module per world.
//!
//! The host interfaces (`types`, `log`, `config`, `state`, `index`, `table`,
//! `deltas`) are
//! generated once in [`imports`] and shared by every stage world through
//! `with`, so one `Host` implementation serves all stage kinds.

/// The host interfaces every stage world may import.
pub mod imports {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "imports",
    });
}

macro_rules! stage_world {
    ($module:ident, $world:literal $(, $extra:literal => $path:path)*) => {
        pub mod $module {
            wasmtime::component::bindgen!({
                path: "../wit",
                world: $world,
                with: {
                    "weft:plugin/types": super::imports::weft::plugin::types,
                    "weft:plugin/log": super::imports::weft::plugin::log,
                    "weft:plugin/config": super::imports::weft::plugin::config,
                    "weft:plugin/state": super::imports::weft::plugin::state,
                    $($extra: $path,)*
                },
            });
        }
    };
}

stage_world!(chunker, "chunker");
/// The span chunker's texts are lowered straight from the documents
/// (`&[&str]`, borrowed), not from copies.
pub mod span_chunker {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "span-chunker",
        ownership: Borrowing { duplicate_if_necessary: true },
        with: {
            "weft:plugin/types": super::imports::weft::plugin::types,
            "weft:plugin/log": super::imports::weft::plugin::log,
            "weft:plugin/config": super::imports::weft::plugin::config,
            "weft:plugin/state": super::imports::weft::plugin::state,
        },
    });
}
stage_world!(embedder, "embedder");
stage_world!(
    retriever,
    "retriever",
    "weft:plugin/index" => super::imports::weft::plugin::index,
    "weft:plugin/table" => super::imports::weft::plugin::table
);
stage_world!(prompt_builder, "prompt-builder", "weft:plugin/table" => super::imports::weft::plugin::table);
stage_world!(
    generator,
    "generator",
    "weft:plugin/table" => super::imports::weft::plugin::table,
    "weft:plugin/deltas" => super::imports::weft::plugin::deltas
);
stage_world!(transformer, "transformer", "weft:plugin/table" => super::imports::weft::plugin::table);

pub use imports::weft::plugin::types;
