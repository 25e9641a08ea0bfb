//! What the columns of a target relation are, for the checks of consume_begin and the writes of
//! the sink: each insertable column with its type, and the shapes (ingest_core::spec) that depend
//! on which columns are left for the message's data.


pub use crate::sink::relation::insertable_column_types;
pub use ingest_core::spec::raw_shape_error;

