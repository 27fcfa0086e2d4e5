//! One module per `weft` command.

pub mod check;
pub mod dev;
pub mod dlq;
pub mod eval;
pub mod index;
pub mod plugin;
pub mod run;
pub mod serve;
pub mod status;
