//! fjord-broker (under construction)
