//! A transform that returns every record unchanged. It does no work on
//! purpose: benchmarks use a chain of these to measure what the host's call
//! boundary costs per record.

#[cfg(target_arch = "wasm32")]
mod component {
    wit_bindgen::generate!({ path: "../../wit", world: "transformer" });

    use exports::weft::plugin::transform::Guest;
    use weft::plugin::types::{PluginError, Record};

    struct Noop;

    impl Guest for Noop {
        fn transform(records: Vec<Record>) -> Vec<Result<Vec<Record>, PluginError>> {
            records.into_iter().map(|r| Ok(vec![r])).collect()
        }
    }

    export!(Noop);
}
