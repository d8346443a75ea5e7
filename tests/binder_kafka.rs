//! placeholder until the kafka binder lands
