//! The index seen from the runtime: [`VectorIndex`] and [`ReadOnlyIndex`]
//! implement the runtime's [`IndexSearch`] trait here, converting the
//! index's own hit type, so the index core never names a runtime type; and
//! the registry implements the pipeline's [`Indexes`].

use super::registry::Searcher;
use super::sink::IndexSink;
use super::{IndexRegistry, ReadOnlyIndex, SearchHit, VectorIndex};
use crate::pipeline::{DocumentSink, EmbeddingModel, Indexes, SinkError};
use crate::runtime::{IndexHit, IndexSearch, SearchError};
use std::sync::Arc;

fn to_runtime(hits: Vec<SearchHit>) -> Vec<IndexHit> {
    hits.into_iter()
        .map(|h| IndexHit {
            chunk_id: h.chunk_id,
            doc_id: h.doc_id,
            score: h.score,
            text: h.text,
            metadata: h.metadata,
        })
        .collect()
}

impl IndexSearch for VectorIndex {
    fn search(
        &self,
        vector: &[f32],
        k: u32,
        filter: &[(String, String)],
    ) -> Result<Vec<IndexHit>, SearchError> {
        VectorIndex::search(self, vector, k as usize, filter)
            .map(to_runtime)
            .map_err(SearchError::new)
    }
}

impl IndexSearch for ReadOnlyIndex {
    fn search(
        &self,
        vector: &[f32],
        k: u32,
        filter: &[(String, String)],
    ) -> Result<Vec<IndexHit>, SearchError> {
        match self.index().map_err(SearchError::new)? {
            None => Ok(Vec::new()),
            Some(ix) => IndexSearch::search(ix.as_ref(), vector, k, filter),
        }
    }
}

impl Indexes for IndexRegistry {
    fn searcher(&self, tenant: &str, name: &str) -> Result<Arc<dyn IndexSearch>, SinkError> {
        Ok(
            match IndexRegistry::searcher(self, tenant, name).map_err(SinkError::new)? {
                Searcher::Writer(w) => w as Arc<dyn IndexSearch>,
                Searcher::Reader(r) => r as Arc<dyn IndexSearch>,
            },
        )
    }

    fn sink(
        &self,
        tenant: &str,
        name: &str,
        model: &EmbeddingModel,
    ) -> Result<Arc<dyn DocumentSink>, SinkError> {
        let index = self.open(tenant, name).map_err(SinkError::new)?;
        index
            .set_model(&model.description)
            .map_err(SinkError::new)?;
        Ok(Arc::new(IndexSink {
            index,
            model: model.fingerprint.clone(),
            quota: self.quota(tenant),
        }))
    }
}
