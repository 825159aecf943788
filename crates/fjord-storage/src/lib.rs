//! fjord-storage (under construction)
