//! fjord-metadata (under construction)
