//! A bench-only chunker component that does part of the chunker's work, so
//! `cargo bench -p weft --bench boundary` can split the component's cost into
//! boundary crossing, guest algorithm and output building. Not a plugin: it is
//! built as an example (`cargo build --example boundary_probe --target
//! wasm32-wasip2 --release -p text-chunker`), never shipped.
//!
//! `config.probe` selects what each call does per document:
//! - `empty`: nothing; returns no chunks (cost: lowering the input, lifting an
//!   empty result, the call itself);
//! - `spans`: runs the chunker's splitting (`chunk_spans`) and returns no
//!   chunks (adds the guest algorithm, with no output strings);
//! - `echo`: returns the document as one chunk, moving its strings (no guest
//!   allocation per string; adds lifting the output).

// The splitting code itself, not the `text_chunker` crate: linking the crate
// would also link its own component exports, which clash with these.
#[cfg(target_arch = "wasm32")]
#[allow(dead_code)]
#[path = "../src/split.rs"]
mod split;

#[cfg(target_arch = "wasm32")]
mod component {
    wit_bindgen::generate!({ path: "../../wit", world: "chunker" });

    use exports::weft::plugin::chunk::Guest;
    use std::sync::OnceLock;
    use weft::plugin::types::{Chunk, Document, PluginError};

    #[derive(Clone, Copy, PartialEq)]
    enum Probe {
        Empty,
        Spans,
        Echo,
    }

    fn probe() -> Probe {
        static PROBE: OnceLock<Probe> = OnceLock::new();
        *PROBE.get_or_init(|| match weft::plugin::config::get("probe").as_deref() {
            Some("spans") => Probe::Spans,
            Some("echo") => Probe::Echo,
            _ => Probe::Empty,
        })
    }

    struct BoundaryProbe;

    impl Guest for BoundaryProbe {
        fn split(docs: Vec<Document>) -> Vec<Result<Vec<Chunk>, PluginError>> {
            let cfg = crate::split::ChunkConfig::chars(600, 80);
            let probe = probe();
            docs.into_iter()
                .map(|d| match probe {
                    Probe::Empty => Ok(Vec::new()),
                    Probe::Spans => {
                        std::hint::black_box(crate::split::chunk_spans(&d.text, &cfg));
                        Ok(Vec::new())
                    }
                    Probe::Echo => Ok(vec![Chunk {
                        id: d.id,
                        doc_id: String::new(),
                        seq: 0,
                        text: d.text,
                        metadata: d.metadata,
                    }]),
                })
                .collect()
        }
    }

    export!(BoundaryProbe);
}
