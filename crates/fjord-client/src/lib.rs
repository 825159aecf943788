//! fjord-client (under construction)
