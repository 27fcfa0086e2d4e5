//! `weft plugin new` scaffolds (placeholder until they land).
