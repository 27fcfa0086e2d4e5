//! The index seen from the runtime: [`VectorIndex`] and [`ReadOnlyIndex`]
//! implement the runtime's [`IndexSearch`] trait here, converting the
//! index's own hit type, so the index core never names a runtime type; and
//! the registry implements the pipeline's [`Indexes`].

use super::registry::Searcher;
use super::sink::IndexSink;
use super::{IndexRegistry, Query, ReadOnlyIndex, SearchHit, SearchMode, VectorIndex};
use crate::pipeline::{DocumentSink, EmbeddingModel, Indexes, SinkError};
use crate::runtime::freshness::Offsets;
use crate::runtime::{IndexHit, IndexMode, IndexQuery, IndexSearch, SearchError};
use std::sync::Arc;
use std::time::Instant;

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

    fn wait_for(
        &self,
        need: &[(String, i32, i64)],
        deadline: Instant,
    ) -> Result<(bool, Offsets), SearchError> {
        let w = VectorIndex::wait_for(self, need, deadline).map_err(SearchError::new)?;
        Ok((
            w.met,
            w.watermarks
                .into_iter()
                .map(|((t, p), o)| (t, p, o))
                .collect(),
        ))
    }

    fn query(&self, q: &IndexQuery) -> Result<Vec<IndexHit>, SearchError> {
        let mut query = Query::new(
            match q.mode {
                IndexMode::Vector => SearchMode::Vector,
                IndexMode::Keyword => SearchMode::Keyword,
                IndexMode::Hybrid => SearchMode::Hybrid,
            },
            &q.vector,
            &q.text,
            q.k as usize,
            &q.filter,
        );
        if q.rrf_k.is_finite() && q.rrf_k > 0.0 {
            query.rrf_k = q.rrf_k;
        }
        query.vector_weight = q.vector_weight;
        query.keyword_weight = q.keyword_weight;
        VectorIndex::query(self, &query)
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

    fn query(&self, q: &IndexQuery) -> Result<Vec<IndexHit>, SearchError> {
        match self.index().map_err(SearchError::new)? {
            None => Ok(Vec::new()),
            Some(ix) => IndexSearch::query(ix.as_ref(), q),
        }
    }

    fn wait_for(
        &self,
        need: &[(String, i32, i64)],
        deadline: Instant,
    ) -> Result<(bool, Offsets), SearchError> {
        // Until the writing process creates the index there is nothing to
        // read; poll for it within the same deadline.
        loop {
            if let Some(ix) = self.index().map_err(SearchError::new)? {
                return IndexSearch::wait_for(ix.as_ref(), need, deadline);
            }
            if Instant::now() >= deadline {
                return Ok((need.is_empty(), Vec::new()));
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
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

#[cfg(test)]
mod tests {
    /// The pipeline reads a hit's source under the key the index writes.
    #[test]
    fn source_key_agrees_with_the_pipeline() {
        assert_eq!(super::super::SOURCE_META, crate::pipeline::SOURCE_META);
    }
}
